"""Acceptance: tiny checkpoints in the original Wan layouts load to the same components as the diffusers layout.

Each tiny model is written twice from the same weights (see tests/models/wan_original.py): once with
`save_pretrained` (diffusers layout), once as the official files with the official key names. Both are loaded
with `load_components` and their forward outputs compared.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from tests.models.wan_original import write_tiny_checkpoints
from wanserve.engine.loading import load_components
from wanserve.engine.registry import get_spec

ATOL = 1e-4
# (spec, what it stands for): every original layout wanserve loads.
LAYOUTS = {
    "tiny-t2v": "Wan2.1 T2V",
    "tiny-i2v": "Wan2.1 I2V with CLIP",
    "tiny-flf2v": "Wan2.1 FLF2V with CLIP and image position embedding",
    "tiny-t2v-moe": "Wan2.2 A14B, two experts",
    "tiny-ti2v": "Wan2.2 TI2V with the Wan2.2 VAE",
    "tiny-vace": "Wan2.1 VACE",
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def loaded(request, tmp_path_factory):
    """(spec, components in memory, loaded from diffusers layout, loaded from original layout)."""
    spec = get_spec(request.param)
    components, diffusers_dir, original_dir = write_tiny_checkpoints(spec, tmp_path_factory.mktemp(spec.name))
    from_diffusers = load_components(spec, diffusers_dir, dtype=torch.float32)
    from_original = load_components(spec, original_dir, dtype=torch.float32)
    return spec, components, from_diffusers, from_original


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


def _transformer_inputs(transformer, seed: int = 0) -> dict:
    c = transformer.config
    gen = torch.Generator().manual_seed(seed)
    inputs = dict(
        hidden_states=torch.randn(1, c.in_channels, 3, 8, 8, generator=gen),
        timestep=torch.tensor([637]),
        encoder_hidden_states=torch.randn(1, 7, c.text_dim, generator=gen),
        return_dict=False,
    )
    if c.image_dim is not None:
        # FLF2V: the first and last frames' CLIP tokens, stacked on the batch axis.
        shape = (2, c.pos_embed_seq_len // 2) if c.pos_embed_seq_len else (1, 5)
        inputs["encoder_hidden_states_image"] = torch.randn(*shape, c.image_dim, generator=gen)
    if hasattr(c, "vace_in_channels"):
        inputs["control_hidden_states"] = torch.randn(1, c.vace_in_channels, 3, 8, 8, generator=gen)
        inputs["control_hidden_states_scale"] = torch.ones(len(c.vace_layers))
    return inputs


def test_load_original_gives_same_components(loaded):
    spec, _, from_diffusers, from_original = loaded
    assert set(from_original) == set(from_diffusers)
    expected = {"tokenizer", "text_encoder", "vae", "transformer", "scheduler"}
    expected |= {"transformer_2"} if spec.experts == 2 else set()
    expected |= {"image_encoder", "image_processor"} if spec.image_encoder else set()
    assert set(from_original) == expected
    assert type(from_original["transformer"]) is type(from_diffusers["transformer"])


def test_load_original_transformers_match_diffusers_layout(loaded):
    spec, _, from_diffusers, from_original = loaded
    for name in ("transformer", "transformer_2")[: spec.experts]:
        inputs = _transformer_inputs(from_diffusers[name])
        with torch.no_grad():
            expected = from_diffusers[name](**inputs)[0]
            actual = from_original[name](**inputs)[0]
        assert _max_diff(actual, expected) <= ATOL, name
    if spec.experts == 2:  # the experts are different networks, loaded into the right slots
        assert not torch.equal(
            from_original["transformer"].proj_out.weight, from_original["transformer_2"].proj_out.weight
        )


def test_load_original_vae_matches_diffusers_layout(loaded):
    spec, _, from_diffusers, from_original = loaded
    if spec.name not in ("tiny-t2v", "tiny-ti2v"):
        pytest.skip("the same tiny Wan2.1 VAE as tiny-t2v")
    channels = from_diffusers["vae"].config.in_channels // (from_diffusers["vae"].config.patch_size or 1) ** 2
    video = torch.rand(1, channels, 5, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = from_diffusers["vae"].encode(video).latent_dist.mode()
        assert _max_diff(from_original["vae"].encode(video).latent_dist.mode(), latents) <= ATOL
        decoded = from_diffusers["vae"].decode(latents).sample
        assert _max_diff(from_original["vae"].decode(latents).sample, decoded) <= ATOL


def test_load_original_text_encoder_and_tokenizer_match_diffusers_layout(loaded):
    spec, _, from_diffusers, from_original = loaded
    if spec.name != "tiny-t2v":
        pytest.skip("the same tiny UMT5 as tiny-t2v")
    # Long enough for relative positions beyond the exact buckets (the max distance matters there).
    prompt = "a cat and a dog on the video of a cat in the dog with the cat and a video " * 3
    ids = from_diffusers["tokenizer"](prompt, return_tensors="pt").input_ids
    assert torch.equal(from_original["tokenizer"](prompt, return_tensors="pt").input_ids, ids)
    assert ids.shape[1] > 40
    with torch.no_grad():
        expected = from_diffusers["text_encoder"](ids).last_hidden_state
        actual = from_original["text_encoder"](ids).last_hidden_state
    assert _max_diff(actual, expected) <= ATOL


def test_load_original_image_encoder_matches_diffusers_layout(loaded):
    spec, _, from_diffusers, from_original = loaded
    if not spec.image_encoder:
        pytest.skip(f"{spec.name} has no CLIP image encoder")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # What diffusers' Wan I2V pipeline feeds the transformer: the penultimate hidden states.
        expected = from_diffusers["image_encoder"](pixels, output_hidden_states=True).hidden_states[-2]
        actual = from_original["image_encoder"](pixels, output_hidden_states=True).hidden_states[-2]
    assert _max_diff(actual, expected) <= ATOL


def test_load_original_matches_components_written(loaded):
    spec, components, _, from_original = loaded
    for name in ("text_encoder", "vae", "transformer", "transformer_2", "image_encoder"):
        if name not in components:
            continue
        written = components[name].state_dict()
        for key, value in from_original[name].state_dict().items():
            assert torch.equal(value, written[key]), (name, key)


def test_generate_from_original_layout_matches_diffusers_layout(loaded):
    spec, _, from_diffusers, from_original = loaded
    if spec.name not in ("tiny-t2v-moe", "tiny-i2v"):
        pytest.skip("whole generations run for the two-expert and the CLIP layouts")
    videos = []
    for components in (from_diffusers, from_original):
        cls = getattr(diffusers, spec.pipeline)
        pipe = cls(**components, **({"boundary_ratio": spec.boundary_ratio} if spec.boundary_ratio else {}))
        pipe.set_progress_bar_config(disable=True)
        kwargs = dict(
            prompt="a cat in the video",
            negative_prompt="a dog",
            height=64,
            width=64,
            num_frames=9,
            num_inference_steps=2,
            guidance_scale=spec.guidance_scale,
            generator=torch.Generator().manual_seed(0),
            max_sequence_length=32,
            output_type="np",
        )
        if spec.guidance_scale_2 is not None:
            kwargs["guidance_scale_2"] = spec.guidance_scale_2
        if spec.image_encoder:
            # At the CLIP input size, so the tiny processor (resize + crop) and the official one (squash) agree.
            image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            kwargs["image"] = Image.fromarray(image)
        videos.append(pipe(**kwargs).frames[0])
    assert videos[0].shape == (9, 64, 64, 3)
    assert np.abs(videos[0] - videos[1]).max() <= ATOL


def test_load_vace_fun_a14b_from_its_original_layout(tmp_path):
    """Wan2.2-VACE-Fun-A14B's only published layout: VideoX-Fun `VaceWanTransformer3DModel` folders
    `high_noise_model/` and `low_noise_model/` (config `model_type` 't2v', hard-coded there, with `vace_layers` and
    `vace_in_dim`; the key names of Wan's `WanModel` blocks plus `vace_blocks.N.before_proj/after_proj` and
    `vace_patch_embedding`: videox_fun/models/wan_transformer3d_vace.py:25-241 at 804a425), `Wan2.1_VAE.pth` and
    the T5 `.pth`. Tiny weights, loaded through the catalog's own spec."""
    import dataclasses
    import json

    from tests.models.wan_original import write_original_layout
    from wanserve.engine import layouts
    from wanserve.engine.tiny import build_tiny_components

    real = get_spec("wan2.2-vace-fun-a14b")
    tiny = dataclasses.replace(get_spec("tiny-vace"), experts=2, boundary_ratio=real.boundary_ratio)
    components = build_tiny_components(tiny)
    original = write_original_layout(tiny, components, tmp_path / "Wan2.2-VACE-Fun-A14B")
    for folder in ("high_noise_model", "low_noise_model"):
        config_path = original / folder / "config.json"
        config = json.loads(config_path.read_text())
        config.update(_class_name="VaceWanTransformer3DModel", model_type="t2v")
        config_path.write_text(json.dumps(config))
    assert layouts.detect_layout(original) == "original"
    assert layouts.missing_files(real, original, "original") == ()

    loaded = load_components(real, original, dtype=torch.float32)
    assert type(loaded["scheduler"]).__name__ == "FlowMatchEulerDiscreteScheduler"  # the 'Flow' sampler
    for name in ("transformer", "transformer_2"):
        assert type(loaded[name]) is diffusers.WanVACETransformer3DModel
        written = components[name].state_dict()
        for key, value in loaded[name].state_dict().items():
            assert torch.equal(value, written[key]), (name, key)
    assert not torch.equal(loaded["transformer"].proj_out.weight, loaded["transformer_2"].proj_out.weight)
