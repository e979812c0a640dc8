"""The Wan2.1 CLIP `.pth` -> `CLIPVisionModel`: keys, inferred config, the official forward and preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel

from tests.models.wan_original import official_clip_keys
from wanserve.engine.original_loading import load_clip
from wanserve.errors import CheckpointError
from wanserve.models.wan_clip import (
    CLIP_MEAN,
    CLIP_STD,
    clip_vision_config_from_state_dict,
    convert_clip_state_dict,
)

# `clip_xlm_roberta_vit_h_14` in wan/modules/clip.py: the visual tower's sizes.
RELEASED = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024)  # fmt: skip


def _official_shapes(width: int, mlp: int, layers: int, patch: int, grid: int, out_dim: int) -> dict:
    """Shapes of the official `XLMRobertaCLIP` visual keys (textual tower: a one-block stand-in)."""
    shapes = {
        "log_scale": (),
        "visual.patch_embedding.weight": (width, 3, patch, patch),
        "visual.cls_embedding": (1, 1, width),
        "visual.pos_embedding": (1, grid * grid + 1, width),
        "visual.pre_norm.weight": (width,),
        "visual.pre_norm.bias": (width,),
        "visual.post_norm.weight": (width,),
        "visual.post_norm.bias": (width,),
        "visual.head": (width, out_dim),
    }
    for i in range(layers):
        b = f"visual.transformer.{i}."
        for n in ("norm1", "norm2"):
            shapes[b + f"{n}.weight"], shapes[b + f"{n}.bias"] = (width,), (width,)
        shapes[b + "attn.to_qkv.weight"], shapes[b + "attn.to_qkv.bias"] = (3 * width, width), (3 * width,)
        shapes[b + "attn.proj.weight"], shapes[b + "attn.proj.bias"] = (width, width), (width,)
        shapes[b + "mlp.0.weight"], shapes[b + "mlp.0.bias"] = (mlp, width), (mlp,)
        shapes[b + "mlp.2.weight"], shapes[b + "mlp.2.bias"] = (width, mlp), (width,)
    for key in official_clip_keys(layers, 1):
        if key.startswith("textual."):
            shapes[key] = (4, 4) if key.endswith("weight") else (4,)
    return shapes


def _random_official(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    shapes = _official_shapes(width=32, mlp=48, layers=3, patch=16, grid=2, out_dim=24)
    return {k: torch.randn(s, generator=gen) * 0.3 + (1.0 if "norm" in k and k.endswith("weight") else 0.0)
            for k, s in shapes.items()}  # fmt: skip


def _official_visual(sd: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """`VisionTransformer.forward(x, use_31_block=True)` of wan/modules/clip.py, restated for the test."""
    b = pixels.shape[0]
    width = sd["visual.cls_embedding"].shape[-1]
    x = F.conv2d(pixels, sd["visual.patch_embedding.weight"], stride=sd["visual.patch_embedding.weight"].shape[-1])
    x = torch.cat([sd["visual.cls_embedding"].expand(b, -1, -1), x.flatten(2).permute(0, 2, 1)], dim=1)
    x = F.layer_norm(x + sd["visual.pos_embedding"], (width,), sd["visual.pre_norm.weight"], sd["visual.pre_norm.bias"])
    layers = len({k.split(".")[2] for k in sd if k.startswith("visual.transformer.")})
    for i in range(layers - 1):  # use_31_block: every block but the last
        p = f"visual.transformer.{i}."
        h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        q, k, v = (
            F.linear(h, sd[p + "attn.to_qkv.weight"], sd[p + "attn.to_qkv.bias"])
            .view(b, -1, 3, heads, width // heads)
            .unbind(2)
        )
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + F.linear(a.transpose(1, 2).reshape(b, -1, width), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        h = F.gelu(F.linear(h, sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"]))
        x = x + F.linear(h, sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
    return x


def test_clip_vision_config_from_state_dict_reads_released_sizes():
    shapes = _official_shapes(width=1280, mlp=5120, layers=32, patch=14, grid=16, out_dim=1024)
    original = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    config = clip_vision_config_from_state_dict(original)
    assert {k: getattr(config, k) for k in RELEASED} == RELEASED
    assert (config.hidden_act, config.layer_norm_eps) == ("gelu", 1e-5)


def test_convert_clip_state_dict_maps_released_visual_keys_onto_transformers_keys():
    shapes = _official_shapes(width=1280, mlp=5120, layers=32, patch=14, grid=16, out_dim=1024)
    original = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    with torch.device("meta"):
        model = CLIPVisionModel(CLIPVisionConfig(**RELEASED, hidden_act="gelu"))
    converted = convert_clip_state_dict(original)
    expected = {k if k.startswith("vision_model.") else f"vision_model.{k}": v for k, v in model.state_dict().items()}
    assert set(converted) == set(expected)
    assert all(converted[k].shape == expected[k].shape for k in converted)


def test_load_clip_matches_official_visual_forward(tmp_path):
    official = _random_official()
    torch.save(official, tmp_path / "clip.pth")
    model, processor = load_clip(tmp_path / "clip.pth", torch.float32)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        actual = model(pixels, output_hidden_states=True).hidden_states[-2]
    expected = _official_visual(official, pixels, heads=2)
    assert (actual - expected).abs().max().item() <= 1e-5
    assert processor.size["height"] == processor.size["width"] == 32


def test_clip_image_processor_follows_official_preprocessing(tmp_path):
    torch.save(_random_official(), tmp_path / "clip.pth")
    _, processor = load_clip(tmp_path / "clip.pth", torch.float32)
    # A smooth, non-square image: the official code squashes it to a square without cropping.
    y, x = np.mgrid[0:48, 0:80]
    array = np.stack([x * 3, y * 5, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    pixels = processor(images=Image.fromarray(array), return_tensors="pt").pixel_values
    # wan/modules/clip.py `CLIPModel.visual`: [-1, 1] tensor, bicubic resize, back to [0, 1], CLIP mean/std.
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    official = F.interpolate(tensor, size=(32, 32), mode="bicubic", align_corners=False).mul(0.5).add(0.5)
    official = (official - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    assert pixels.shape == official.shape == (1, 3, 32, 32)
    # Interpolation kernels differ (PIL antialiased bicubic vs. torch bicubic), so compare loosely.
    assert (pixels - official).abs().mean().item() < 0.02
    assert (pixels - official).abs().max().item() < 0.05


def test_convert_clip_state_dict_names_unexpected_key():
    official = _random_official()
    official["visual.transformer.0.attn.rel_pos"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"clip.pth: unexpected key 'visual.transformer.0.attn.rel_pos'"):
        convert_clip_state_dict(official, source="clip.pth")
