"""The original `WanModel` config and keys -> diffusers transformer, checked at the released model sizes."""

from __future__ import annotations

import re

import diffusers
import pytest
import torch

from tests.models.wan_original import invert_keys, official_transformer_keys
from wanserve.errors import CheckpointError
from wanserve.models.wan_transformer import (
    convert_transformer_state_dict,
    diffusers_transformer_config,
    transformer_class_name,
)

# The released `config.json` of each original repository, and the diffusers config diffusers' own conversion
# script (scripts/convert_wan_to_diffusers.py) uses for it.
_BASE = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "eps": 1e-06, "freq_dim": 256, "text_len": 512}
_DIFFUSERS_BASE = dict(
    patch_size=[1, 2, 2], attention_head_dim=128, text_dim=4096, freq_dim=256, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-06, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
    pos_embed_seq_len=None,
)  # fmt: skip
RELEASED = {
    "Wan2.1-T2V-14B": (
        dict(model_type="t2v", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, out_dim=16),
        dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=16, out_channels=16),
    ),
    "Wan2.1-T2V-1.3B": (
        dict(model_type="t2v", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, out_dim=16),
        dict(num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16),
    ),
    "Wan2.1-I2V-14B-480P": (
        dict(model_type="i2v", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, out_dim=16),
        dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16,
             image_dim=1280, added_kv_proj_dim=5120),
    ),
    "Wan2.1-FLF2V-14B-720P": (
        dict(model_type="flf2v", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, out_dim=16),
        dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16,
             image_dim=1280, added_kv_proj_dim=5120, pos_embed_seq_len=514),
    ),
    "Wan2.2-I2V-A14B": (
        dict(model_type="i2v", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, out_dim=16),
        dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16),
    ),
    "Wan2.2-TI2V-5B": (
        dict(model_type="ti2v", dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48),
        dict(num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48),
    ),
    "Wan2.1-VACE-1.3B": (
        dict(model_type="vace", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, out_dim=16,
             vace_layers=list(range(0, 30, 2)), vace_in_dim=96),
        dict(num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16,
             vace_layers=list(range(0, 30, 2)), vace_in_channels=96),
    ),
}  # fmt: skip


def _released_shapes(name: str) -> tuple[dict, dict]:
    """(original config.json, original key -> shape) of a released model, from its diffusers model on the meta
    device. Two blocks are built; the shapes of the others repeat block 0's."""
    original, expected = RELEASED[name]
    config = {**_DIFFUSERS_BASE, **expected}
    small = {**config, "num_layers": 2}
    if "vace_layers" in small:
        small["vace_layers"] = [0]
    cls = getattr(diffusers, transformer_class_name(original))
    with torch.device("meta"):
        model = cls.from_config(small)
    state_dict = model.state_dict()
    model_type = original["model_type"]
    keys = official_transformer_keys(model_type, 2, small.get("vace_layers"), wan22=name.startswith("Wan2.2"))
    mapping = invert_keys(convert_transformer_state_dict, keys, state_dict)
    shapes = {mapping[k]: tuple(v.shape) for k, v in state_dict.items()}
    block0 = {k.removeprefix("blocks.0."): s for k, s in shapes.items() if k.startswith("blocks.0.")}
    for i in range(2, original["num_layers"]):
        shapes.update({f"blocks.{i}.{k}": s for k, s in block0.items()})
    return {**_BASE, **original}, shapes


@pytest.mark.parametrize("name", list(RELEASED))
def test_diffusers_transformer_config_matches_diffusers_conversion_script(name):
    original, shapes = _released_shapes(name)
    config = diffusers_transformer_config(original, shapes)
    assert config == {**_DIFFUSERS_BASE, **RELEASED[name][1]}


@pytest.mark.parametrize(
    ("model_type", "wan22", "cls"),
    [
        ("t2v", False, "WanTransformer3DModel"),
        ("i2v", False, "WanTransformer3DModel"),
        ("flf2v", False, "WanTransformer3DModel"),
        ("i2v", True, "WanTransformer3DModel"),
        ("vace", False, "WanVACETransformer3DModel"),
    ],
)
def test_convert_transformer_state_dict_maps_official_keys_onto_diffusers_keys(model_type, wan22, cls):
    config = dict(_DIFFUSERS_BASE, num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=3)
    if model_type in ("i2v", "flf2v") and not wan22:
        config.update(image_dim=16, added_kv_proj_dim=24, pos_embed_seq_len=10 if model_type == "flf2v" else None)
    if model_type == "vace":
        config.update(vace_layers=[0, 2], vace_in_channels=96)
    with torch.device("meta"):
        model = getattr(diffusers, cls).from_config(config)
    keys = official_transformer_keys(model_type, 3, config.get("vace_layers"), wan22=wan22)
    # invert_keys asserts the converter maps the official key set exactly onto the model's key set.
    mapping = invert_keys(convert_transformer_state_dict, keys, model.state_dict())
    assert mapping["blocks.1.norm2.weight"] == "blocks.1.norm3.weight"  # the cross-attention norm
    assert mapping["scale_shift_table"] == "head.modulation"


def test_convert_transformer_state_dict_strips_comfy_prefix():
    converted = convert_transformer_state_dict({"model.diffusion_model.head.head.weight": torch.zeros(1)})
    assert list(converted) == ["proj_out.weight"]


def test_diffusers_transformer_config_names_missing_fields():
    original, shapes = _released_shapes("Wan2.1-T2V-1.3B")
    del original["ffn_dim"], original["num_heads"]
    with pytest.raises(CheckpointError, match=r"/ckpt/config.json: missing ffn_dim, num_heads"):
        diffusers_transformer_config(original, shapes, source="/ckpt/config.json")


def test_diffusers_transformer_config_rejects_layer_count_mismatch():
    original, shapes = _released_shapes("Wan2.1-T2V-1.3B")
    shapes = {k: v for k, v in shapes.items() if not re.match(r"blocks\.29\.", k)}
    with pytest.raises(CheckpointError, match="`num_layers` is 30 but the checkpoint has 29 blocks"):
        diffusers_transformer_config(original, shapes)


def test_diffusers_transformer_config_rejects_unknown_model_type():
    original, shapes = _released_shapes("Wan2.1-T2V-1.3B")
    original["model_type"] = "s2v"
    with pytest.raises(CheckpointError, match="`model_type` 's2v' is not supported"):
        diffusers_transformer_config(original, shapes)


def test_diffusers_transformer_config_rejects_dim_disagreeing_with_tensors():
    original, shapes = _released_shapes("Wan2.1-T2V-1.3B")
    original["dim"] = 5120
    original["num_heads"] = 40
    with pytest.raises(CheckpointError, match=r"`dim` 5120 / `in_dim` 16 disagree with `patch_embedding.weight`"):
        diffusers_transformer_config(original, shapes)
