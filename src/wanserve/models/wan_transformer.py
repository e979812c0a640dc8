"""The original Wan DiT checkpoint (`WanModel` of the Wan-Video repositories) as a diffusers transformer.

The original `config.json` holds `WanModel`'s own argument names (`dim`, `ffn_dim`, `num_heads`, `num_layers`,
`in_dim`, `out_dim`, `model_type`, ...). `WanModel` leaves `text_dim`, `patch_size`, `qk_norm` and
`cross_attn_norm` out of its config, so those come from the tensor shapes. Key renaming is diffusers' own
`convert_wan_transformer_to_diffusers` (what `WanTransformer3DModel.from_single_file` uses), plus the one key
it misses: the FLF2V image position embedding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from wanserve.errors import CheckpointError

# Model types of `WanModel` (Wan2.1: t2v, i2v, flf2v, vace; Wan2.2: t2v, i2v, ti2v; s2v/animate are other
# classes).
ORIGINAL_MODEL_TYPES = ("t2v", "i2v", "flf2v", "ti2v", "vace")
_REQUIRED_CONFIG_KEYS = ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim")
# `WanModel` computes RoPE tables for 1024 positions per axis; diffusers calls it `rope_max_seq_len`.
_ROPE_MAX_SEQ_LEN = 1024


def is_vace(original_config: Mapping) -> bool:
    """Whether an original config is a VACE model: Wan2.1's `VaceWanModel` says `model_type` 'vace'; VideoX-Fun's
    `VaceWanTransformer3DModel` (Wan2.2-VACE-Fun) keeps `model_type` 't2v' (it hard-codes it,
    videox_fun/models/wan_transformer3d_vace.py:197 at 804a425) and is known by its class name and `vace_layers`."""
    return (
        original_config.get("model_type") == "vace"
        or "vace" in str(original_config.get("_class_name", "")).lower()
        or "vace_layers" in original_config
    )


def transformer_class_name(original_config: Mapping) -> str:
    """The diffusers class that runs an original `WanModel` config."""
    return "WanVACETransformer3DModel" if is_vace(original_config) else "WanTransformer3DModel"


def diffusers_transformer_config(
    original_config: Mapping, shapes: Mapping[str, tuple[int, ...]], source: str = "config.json"
) -> dict:
    """The diffusers config for an original `WanModel` config and the shapes of its checkpoint's tensors.

    `shapes` maps original key names (prefix `model.diffusion_model.` allowed) to tensor shapes. Raises
    `CheckpointError` naming `source` when a field is missing or disagrees with the tensors.
    """
    missing = [k for k in _REQUIRED_CONFIG_KEYS if k not in original_config]
    if missing:
        raise CheckpointError(f"{source}: missing {', '.join(missing)} (an original Wan `WanModel` config)")
    model_type = original_config.get("model_type", "t2v")
    if model_type not in ORIGINAL_MODEL_TYPES:
        raise CheckpointError(
            f"{source}: `model_type` {model_type!r} is not supported; supported: {', '.join(ORIGINAL_MODEL_TYPES)}"
        )
    shapes = {k.removeprefix("model.diffusion_model."): tuple(v) for k, v in shapes.items()}
    dim, heads = int(original_config["dim"]), int(original_config["num_heads"])
    if dim % heads:
        raise CheckpointError(f"{source}: `dim` {dim} is not divisible by `num_heads` {heads}")

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(f"{source}: the checkpoint has no tensor {key!r}")
        return shapes[key]

    patch = shape("patch_embedding.weight")
    if patch[0] != dim or patch[1] != int(original_config["in_dim"]):
        raise CheckpointError(
            f"{source}: `dim` {dim} / `in_dim` {original_config['in_dim']} disagree with "
            f"`patch_embedding.weight` of shape {list(patch)}"
        )
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    if len(layers) != int(original_config["num_layers"]):
        raise CheckpointError(
            f"{source}: `num_layers` is {original_config['num_layers']} but the checkpoint has {len(layers)} blocks"
        )
    config = dict(
        patch_size=list(patch[2:]),
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        in_channels=int(original_config["in_dim"]),
        out_channels=int(original_config["out_dim"]),
        text_dim=shape("text_embedding.0.weight")[1],
        freq_dim=int(original_config.get("freq_dim", 256)),
        ffn_dim=int(original_config["ffn_dim"]),
        num_layers=int(original_config["num_layers"]),
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        qk_norm="rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in shapes else None,
        eps=float(original_config.get("eps", 1e-6)),
        image_dim=None,
        added_kv_proj_dim=None,
        rope_max_seq_len=_ROPE_MAX_SEQ_LEN,
        pos_embed_seq_len=None,
    )
    # Wan2.1 I2V / FLF2V carry a CLIP projection and image key/value projections; Wan2.2 I2V does not.
    if "img_emb.proj.0.weight" in shapes:
        config["image_dim"] = shapes["img_emb.proj.0.weight"][0]
        config["added_kv_proj_dim"] = shape("blocks.0.cross_attn.k_img.weight")[1]
    if "img_emb.emb_pos" in shapes:
        config["pos_embed_seq_len"] = shapes["img_emb.emb_pos"][1]
    if is_vace(original_config):
        vace_layers = original_config.get("vace_layers")
        if vace_layers is None:
            vace_layers = list(range(0, config["num_layers"], 2))
        config["vace_layers"] = [int(i) for i in vace_layers]
        config["vace_in_channels"] = int(original_config.get("vace_in_dim") or config["in_channels"])
    return config


def convert_transformer_state_dict(state_dict: dict) -> dict:
    """Renames original `WanModel` keys to `WanTransformer3DModel` / `WanVACETransformer3DModel` keys."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    state_dict = dict(state_dict)
    for key in [k for k in state_dict if k.endswith("img_emb.emb_pos")]:
        # diffusers' single-file converter leaves this FLF2V key alone (its conversion script renames it).
        state_dict["condition_embedder.image_embedder.pos_embed"] = state_dict.pop(key)
    return convert_wan_transformer_to_diffusers(state_dict)
