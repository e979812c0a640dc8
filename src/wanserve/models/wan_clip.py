"""The Wan2.1 I2V / FLF2V CLIP checkpoint (`models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`).

The file holds the official `XLMRobertaCLIP` (wan/modules/clip.py): a ViT-H/14 `visual` tower, an XLM-RoBERTa
`textual` tower and `log_scale`. Wan uses only the visual tower's penultimate hidden states
(`use_31_block=True`), which is what diffusers' Wan pipelines take from a transformers `CLIPVisionModel`
(`hidden_states[-2]`). The textual tower, `log_scale` and the visual projection `head` are not needed and are
skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from wanserve.errors import CheckpointError

# Official open-clip ViT-H/14: width 1280 in 16 heads (not stored in the file). Other widths (the tiny test
# models)
# use heads of 16 channels.
_HEADS_BY_WIDTH = {1280: 16}
_HEAD_WIDTH_DEFAULT = 16
# The official `AttentionBlock(activation='gelu')` and `LayerNorm(eps=1e-5)` of `clip_xlm_roberta_vit_h_14`.
HIDDEN_ACT = "gelu"
LAYER_NORM_EPS = 1e-5
# The official transforms (wan/modules/clip.py, `_clip`): the OpenAI CLIP mean and std.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_SKIPPED = re.compile(r"(textual\..*|log_scale|visual\.head)")
_LAYER_RENAMES = {
    "norm1.": "layer_norm1.",
    "norm2.": "layer_norm2.",
    "attn.proj.": "self_attn.out_proj.",
    "mlp.0.": "mlp.fc1.",
    "mlp.2.": "mlp.fc2.",
}


def clip_vision_config_from_state_dict(state_dict: Mapping, source: str = "CLIP checkpoint"):
    """The `CLIPVisionConfig` of the official visual tower that has these tensors."""
    from transformers import CLIPVisionConfig

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"{source}: no tensor {key!r}; this is not an official Wan CLIP state dict")
        return tuple(state_dict[key].shape)

    width, _, patch, _ = shape("visual.patch_embedding.weight")
    positions = shape("visual.pos_embedding")[1]
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise CheckpointError(f"{source}: {positions} positions is not a square grid plus one class token")
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"visual\.transformer\.(\d+)\.", k))}
    heads = _HEADS_BY_WIDTH.get(width, width // _HEAD_WIDTH_DEFAULT)
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=shape("visual.transformer.0.mlp.0.weight")[0],
        projection_dim=shape("visual.head")[1] if "visual.head" in state_dict else width,
        num_hidden_layers=len(layers),
        num_attention_heads=heads,
        num_channels=3,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act=HIDDEN_ACT,
        layer_norm_eps=LAYER_NORM_EPS,
    )


def convert_clip_state_dict(state_dict: Mapping, source: str = "CLIP checkpoint") -> dict:
    """Renames the official visual tower's keys to `CLIPVisionModel` keys (splitting the fused q/k/v)."""
    converted = {}
    for key, value in state_dict.items():
        if _SKIPPED.fullmatch(key):
            continue
        new = _convert_key(key, value, converted)
        if new is False:
            raise CheckpointError(f"{source}: unexpected key {key!r} for the official Wan CLIP")
    return converted


def _convert_key(key: str, value, out: dict) -> bool | None:
    prefix = "vision_model."
    if key == "visual.cls_embedding":
        out[prefix + "embeddings.class_embedding"] = value.reshape(-1)
    elif key == "visual.pos_embedding":
        out[prefix + "embeddings.position_embedding.weight"] = value.reshape(value.shape[-2], value.shape[-1])
    elif key == "visual.patch_embedding.weight":
        out[prefix + "embeddings.patch_embedding.weight"] = value
    elif key.startswith("visual.pre_norm."):
        out[prefix + "pre_layrnorm." + key.rsplit(".", 1)[1]] = value
    elif key.startswith("visual.post_norm."):
        out[prefix + "post_layernorm." + key.rsplit(".", 1)[1]] = value
    else:
        m = re.fullmatch(r"visual\.transformer\.(\d+)\.(.+)", key)
        if not m:
            return False
        layer, rest = f"{prefix}encoder.layers.{m.group(1)}.", m.group(2)
        if rest.startswith("attn.to_qkv."):
            q, k, v = value.chunk(3, dim=0)
            kind = rest.rsplit(".", 1)[1]
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{layer}self_attn.{name}.{kind}"] = part
            return None
        for old, new in _LAYER_RENAMES.items():
            if rest.startswith(old):
                out[layer + new + rest[len(old) :]] = value
                return None
        return False
    return None


def clip_image_processor_class() -> type:
    """transformers' `CLIPImageProcessor`, or its PIL twin when torchvision is absent: transformers would fall back
    to the PIL one anyway, but warn at every load about an optional package nobody asked for."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil


def wan_clip_image_processor(image_size: int):
    """A `CLIPImageProcessor` doing the official preprocessing: a bicubic resize of the whole image to a
    square `image_size` (no crop, aspect ratio not kept), then the CLIP mean and std.

    The official code interpolates float tensors without antialiasing; transformers resizes with antialiasing,
    so pixels differ slightly where the input is much larger than `image_size`.
    """
    from transformers.image_utils import PILImageResampling

    return clip_image_processor_class()(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )
