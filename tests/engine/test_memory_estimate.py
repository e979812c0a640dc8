"""Memory estimates: parameter counts against real-size models built on the meta device, the activation formula
against traced forwards of real-size blocks (fake tensors: no memory, no compute), and stored estimates."""

from __future__ import annotations

import functools

import pytest
import torch

from wanserve.engine.architectures import ARCHITECTURES, PARAM_COUNTS, build_on_meta, count_parameters
from wanserve.engine.config import MemoryConfig
from wanserve.engine.memory_estimate import (
    GIB,
    component_bytes,
    denoise_activation_bytes,
    estimate_memory,
    latent_tokens,
    weights_bytes,
)
from wanserve.engine.registry import get_spec, real_models, tiny_models

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@functools.cache
def _meta(key: str) -> torch.nn.Module:
    return build_on_meta(key)


def _loaded_bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Parameter bytes of `module` loaded in `dtype` as `from_pretrained` does (meta tensors: nothing allocated)."""
    module = module.to(dtype)
    keep = getattr(module, "_keep_in_fp32_modules", None) or ()
    diffusers_model = type(module).__module__.startswith("diffusers")
    if keep and (diffusers_model or dtype == torch.float16):
        for name, sub in module.named_modules():
            if name and name.split(".")[-1] in keep:
                sub.to(torch.float32)
    return sum(p.numel() * p.element_size() for p in module.parameters())


@pytest.mark.parametrize("key", sorted(PARAM_COUNTS))
def test_stored_param_counts_are_those_of_the_real_configs_built_on_meta(key):
    module = _meta(key)

    assert all(p.is_meta for p in module.parameters())
    assert count_parameters(module) == PARAM_COUNTS[key]


def test_param_counts_match_the_published_sizes():
    # FACTS.md: the I2V/FLF2V DiT carries ~2.1B of image key/value projections; VACE-14B ~17.3B per expert.
    assert PARAM_COUNTS["dit-14b"].total / 1e9 == pytest.approx(14.29, abs=0.01)
    assert PARAM_COUNTS["dit-14b-i2v"].total / 1e9 == pytest.approx(16.39, abs=0.01)
    assert PARAM_COUNTS["dit-vace-14b"].total / 1e9 == pytest.approx(17.34, abs=0.01)
    assert PARAM_COUNTS["dit-5b"].total / 1e9 == pytest.approx(5.00, abs=0.01)
    assert PARAM_COUNTS["umt5-xxl"].total * 2 / GIB == pytest.approx(10.58, abs=0.01)


_WAN_MODELS = [s for s in real_models() if s.pipeline != "FlashVSR"]
"""FlashVSR (upscale) has no estimate yet: it is not a Wan pipeline (docs/upscale.md)."""


@pytest.mark.parametrize("memory", [MemoryConfig(), MemoryConfig(transformer_dtype="float16", vae_dtype="bfloat16")])
@pytest.mark.parametrize("spec", _WAN_MODELS, ids=lambda s: s.name)
def test_weights_estimate_within_5_percent_of_meta_model_parameter_bytes(spec, memory):
    arch = ARCHITECTURES[spec.name]
    dtypes = {
        "transformer": memory.transformer_dtype,
        "transformer_2": memory.transformer_dtype,
        "text_encoder": memory.text_encoder_dtype,
        "image_encoder": memory.image_encoder_dtype,
        "vae": memory.vae_dtype,
    }
    actual = {name: _loaded_bytes(_meta(key), DTYPES[dtypes[name]]) for name, key in arch.components().items()}

    estimated = component_bytes(arch, memory)
    for name, nbytes in actual.items():
        assert estimated[name] == pytest.approx(nbytes, rel=0.05), name
    assert weights_bytes(spec, memory) == pytest.approx(sum(actual.values()), rel=0.05)


def test_every_real_model_has_an_architecture_and_tiny_ones_none():
    assert set(ARCHITECTURES) == {s.name for s in _WAN_MODELS}
    for spec in _WAN_MODELS:
        assert (ARCHITECTURES[spec.name].experts, "image_encoder" in ARCHITECTURES[spec.name].components()) == (
            spec.experts,
            spec.image_encoder,
        )
    assert all(estimate_memory(spec) is None for spec in tiny_models())


def _traced_activation_bytes(key: str, latent: tuple[int, ...], ti2v: bool = False, **inputs) -> int:
    """Peak bytes one forward of a one-block real-width transformer allocates, traced with fake tensors."""
    import diffusers
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from wanserve.engine.architectures import TRANSFORMER_CONFIGS

    class_name, config = TRANSFORMER_CONFIGS[key]
    config = dict(config, num_layers=1)
    if "vace_layers" in config:
        config = dict(config, num_layers=2, vace_layers=[0, 1])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with FakeTensorMode():
            model = getattr(diffusers, class_name)(**config).eval()
            x = torch.randn(*latent)
            tokens = latent[2] * latent[3] // 2 * latent[4] // 2
            timestep = torch.full((1, tokens), 999) if ti2v else torch.tensor([999])
            text = torch.randn(1, 512, 4096)
            extra = {name: torch.randn(*shape) for name, shape in inputs.items()}
            tracker = MemTracker()
            tracker.track_external(model)
            with tracker, torch.inference_mode():
                model(x, timestep, text, return_dict=False, **extra)
            snapshot = tracker.get_tracker_snapshot("peak")
    finally:
        torch.set_default_dtype(previous)
    (per_device,) = snapshot.values()
    return next(v for k, v in per_device.items() if str(k).endswith("ACT"))


@pytest.mark.parametrize(
    ("model", "key", "latent", "kwargs"),
    [
        ("wan2.1-t2v-14b", "dit-14b", (1, 16, 11, 30, 52), {}),
        ("wan2.1-t2v-1.3b", "dit-1.3b", (1, 16, 11, 30, 52), {}),
        ("wan2.2-ti2v-5b", "dit-5b", (1, 48, 11, 22, 40), {"ti2v": True}),
        ("wan2.1-vace-14b", "dit-vace-14b", (1, 16, 11, 30, 52), {"control_hidden_states": (1, 96, 11, 30, 52)}),
    ],
)
def test_denoise_activation_formula_matches_a_traced_real_size_forward(model, key, latent, kwargs):
    spec = get_spec(model)
    tokens = latent[2] * latent[3] // 2 * latent[4] // 2
    traced = _traced_activation_bytes(key, latent, **kwargs)

    formula = denoise_activation_bytes(spec, ARCHITECTURES[model], MemoryConfig(), tokens)
    if key == "dit-vace-14b":  # the trace has 2 VACE layers, the model 8: take the 6 missing hints off
        formula -= 6 * 2.0 * 5120 * tokens
    assert formula == pytest.approx(traced, rel=0.10)


def test_latent_tokens_follow_the_vae_stride_and_patch():
    assert latent_tokens(get_spec("wan2.1-t2v-14b"), 832, 480, 81) == 21 * 30 * 52 == 32_760
    assert latent_tokens(get_spec("wan2.1-t2v-14b"), 1280, 720, 81) == 75_600
    assert latent_tokens(get_spec("wan2.2-ti2v-5b"), 1280, 704, 121) == 31 * 22 * 40
    assert latent_tokens(get_spec("wan2.1-t2v-14b"), 1024, 1024, 1) == 4096


def test_estimate_wan21_14b_480p_stored_values():
    """Measured on the H200 (benchmarks/results/2026-12-02-h200-memory-14b-480p-no-offload.json): peak 48.54 GiB,
    denoising 41.71 GiB."""
    estimate = estimate_memory(get_spec("wan2.1-t2v-14b"), MemoryConfig(), 832, 480, 81)

    assert estimate.as_dict() == {
        "weights_gib": 37.72,
        "device_weights_gib": 37.72,
        "denoise_activations_gib": 3.47,
        "decode_activations_gib": 10.85,
        "peak_gib": 48.57,
        "offload": "none",
    }


def test_estimate_follows_the_memory_options():
    spec = get_spec("wan2.2-t2v-a14b")
    base = estimate_memory(spec)
    t5_gib = PARAM_COUNTS["umt5-xxl"].total * 2 / GIB

    on_cpu = estimate_memory(spec, MemoryConfig(text_encoder_on_cpu=True))
    model = estimate_memory(spec, MemoryConfig(offload="model"))
    group = estimate_memory(spec, MemoryConfig(offload="group", vae_tiling=True))
    group_stream = estimate_memory(spec, MemoryConfig(offload="group", group_offload_use_stream=True, vae_tiling=True))
    tiled = estimate_memory(spec, MemoryConfig(vae_tiling=True))

    assert base.peak_gib - on_cpu.peak_gib == pytest.approx(t5_gib, abs=0.01)
    # Model offload: one expert (not both, not the text encoder) next to the activations.
    assert model.device_weights_gib == pytest.approx(PARAM_COUNTS["dit-14b"].total * 2 / GIB, abs=0.1)
    assert base.peak_gib > model.peak_gib > group_stream.peak_gib > group.peak_gib
    # Group offload keeps the non-block layers and one group of blocks (two with the prefetch stream).
    assert group_stream.device_weights_gib - group.device_weights_gib == pytest.approx(
        PARAM_COUNTS["dit-14b"].per_block * 2 / GIB, abs=0.01
    )
    assert tiled.decode_activations_gib < base.decode_activations_gib / 3
    assert base.weights_gib == model.weights_gib == group.weights_gib == 64.39


def test_estimate_grows_with_the_request_size():
    spec = get_spec("wan2.1-t2v-14b")
    small = estimate_memory(spec, width=832, height=480, num_frames=81)
    large = estimate_memory(spec, width=1280, height=720, num_frames=81)
    image = estimate_memory(spec, width=1024, height=1024, num_frames=1)

    assert large.denoise_activations_gib / small.denoise_activations_gib == pytest.approx(75_600 / 32_760, rel=0.01)
    assert large.peak_gib > small.peak_gib
    assert image.denoise_activations_gib < small.denoise_activations_gib
