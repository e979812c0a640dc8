"""LoRA per job on the tiny models: each key format diffusers' Wan loader reads changes the output (the same
factors in every format give the same frames), strength 0 equals no LoRA, jobs switch LoRAs without reloading the
base model, and LoRA files are found only where the configuration allows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wanserve.engine import engine as engine_module
from wanserve.engine.config import EngineConfig, LoraConfig
from wanserve.engine.engine import Engine
from wanserve.engine.lora import LoraRef, parse_loras, resolve_lora_file
from wanserve.engine.validation import request_from_params, request_params, resolve_request
from wanserve.errors import InvalidRequestError

DIM, FFN, LAYERS, RANK = 24, 32, 2, 4
"""The tiny transformer's sizes (engine/tiny.py)."""
BASE = {"prompt": "a cat", "seed": 3, "num_inference_steps": 2, "guidance_scale": 1.0}

# (diffusers module, original Wan module, in features, out features)
_PROJECTIONS = tuple(zip(("to_q", "to_k", "to_v", "to_out.0"), "qkvo", strict=True))
MODULES = [
    *((f"attn1.{d}", f"self_attn.{o}", DIM, DIM) for d, o in _PROJECTIONS),
    *((f"attn2.{d}", f"cross_attn.{o}", DIM, DIM) for d, o in _PROJECTIONS),
    ("ffn.net.0.proj", "ffn.0", DIM, FFN),
    ("ffn.net.2", "ffn.2", FFN, DIM),
]


def lora_factors(seed: int) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """(block, diffusers module) -> (down [rank, in], up [out, rank]), large enough to move the tiny model."""
    gen = torch.Generator().manual_seed(seed)
    return {
        (i, module): (torch.randn(RANK, fin, generator=gen) * 0.5, torch.randn(fout, RANK, generator=gen) * 0.5)
        for i in range(LAYERS)
        for module, _, fin, fout in MODULES
    }


def write_lora(path, factors, key_format: str) -> None:
    """Writes `factors` in one key format; `alpha` = rank where the format has it, so the scale is exactly 1."""
    original = {m: o for m, o, _, _ in MODULES}
    alpha = torch.tensor(float(RANK))
    sd: dict[str, torch.Tensor] = {}
    for (i, module), (down, up) in factors.items():
        if key_format == "diffusers":
            sd[f"transformer.blocks.{i}.{module}.lora_A.weight"] = down
            sd[f"transformer.blocks.{i}.{module}.lora_B.weight"] = up
        elif key_format == "wan":  # the original Wan trainer / ComfyUI layout
            prefix = f"diffusion_model.blocks.{i}.{original[module]}"
            sd.update({f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up, f"{prefix}.alpha": alpha})
        elif key_format == "kohya":  # kohya-ss / musubi-tuner
            prefix = f"lora_unet_blocks_{i}_{original[module].replace('.', '_')}"
            sd.update({f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up, f"{prefix}.alpha": alpha})
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    for key_format in ("diffusers", "wan", "kohya"):
        write_lora(root / f"style-{key_format}.safetensors", lora_factors(1), key_format)
    write_lora(root / "other.safetensors", lora_factors(2), "diffusers")
    return root


@pytest.fixture(scope="module")
def lora_engine(lora_dir):
    return Engine(EngineConfig(device="cpu", lora=LoraConfig(lora_dir=str(lora_dir), max_loaded=2)))


def run(engine, loras=(), model="tiny-t2v") -> np.ndarray:
    return engine.generate(resolve_request(model, {**BASE, "loras": list(loras)})).frames


def slice_of(frames: np.ndarray) -> list[int]:
    return frames[[0, -1], 30:32, 30:32, :].astype(int).ravel().tolist()


EXPECTED_STYLE = [127, 122, 134, 128, 123, 133, 128, 120, 130, 129, 119, 130, 98, 72, 105, 122, 88, 81, 122, 68, 111, 123, 95, 84]  # fmt: skip


@pytest.mark.parametrize("key_format", ["diffusers", "wan", "kohya"])
def test_lora_in_each_key_format_changes_the_output_the_same_way(lora_engine, key_format):
    plain = run(lora_engine)
    styled = run(lora_engine, [{"name": f"style-{key_format}", "strength": 1.0}])

    assert np.abs(plain.astype(int) - styled.astype(int)).max() > 8
    assert np.abs(np.array(slice_of(styled)) - np.array(EXPECTED_STYLE)).max() <= 1, slice_of(styled)


def test_lora_strength_zero_equals_no_lora_and_strength_moves_the_output(lora_engine):
    plain = run(lora_engine)
    zero = run(lora_engine, [{"name": "style-diffusers", "strength": 0.0}])
    half = run(lora_engine, [{"name": "style-diffusers", "strength": 0.5}])
    full = run(lora_engine, [{"name": "style-diffusers"}])

    np.testing.assert_array_equal(zero, plain)
    assert np.abs(half.astype(int) - full.astype(int)).max() > 8
    assert np.abs(half.astype(int) - plain.astype(int)).max() > 8


def test_jobs_switch_loras_without_reloading_the_base_model(lora_dir, monkeypatch):
    builds = []
    real_build = engine_module.build_tiny_components
    monkeypatch.setattr(engine_module, "build_tiny_components", lambda spec: builds.append(spec) or real_build(spec))
    engine = Engine(EngineConfig(device="cpu", lora=LoraConfig(lora_dir=str(lora_dir), max_loaded=2)))

    plain = run(engine)
    style = run(engine, [{"name": "style-diffusers"}])
    other = run(engine, [{"name": "other"}])
    style_again = run(engine, [{"name": "style-diffusers"}])
    both = run(engine, [{"name": "style-diffusers", "strength": 0.5}, {"name": "other", "strength": 0.5}])
    plain_again = run(engine)

    adapters = engine._models["tiny-t2v"].loras
    assert len(builds) == 1  # the base model was built once for six jobs
    assert adapters.loads == 2  # each LoRA file was loaded once, then selected
    assert np.abs(style.astype(int) - other.astype(int)).max() > 8
    np.testing.assert_array_equal(style_again, style)
    assert np.abs(both.astype(int) - style.astype(int)).max() > 8
    np.testing.assert_array_equal(plain_again, plain)  # LoRA off again: the base model's own output


def test_the_cache_drops_the_least_recently_used_adapter(lora_engine):
    for name in ("style-diffusers", "other", "style-wan"):
        run(lora_engine, [{"name": name}])
    adapters = lora_engine._models["tiny-t2v"].loras
    assert len(adapters.loaded) == 2
    assert set(lora_engine._models["tiny-t2v"].components["transformer"].peft_config) == set(adapters.loaded)


def test_result_and_params_record_the_loras(lora_engine, lora_dir):
    request = resolve_request("tiny-t2v", {**BASE, "loras": [{"name": "other", "strength": 0.7}]})
    result = lora_engine.generate(request)
    params = request_params(request)

    assert params["loras"] == [{"name": "other", "strength": 0.7}]
    assert request_from_params(params, {}).loras == (LoraRef(name="other", strength=0.7),)
    assert result.loras == ({"name": "other", "strength": 0.7, "file": str(lora_dir / "other.safetensors")},)


def test_lora_on_a_two_expert_model_reaches_both_experts(lora_dir):
    engine = Engine(EngineConfig(device="cpu", lora=LoraConfig(lora_dir=str(lora_dir))))
    plain = run(engine, model="tiny-t2v-moe")
    styled = run(engine, [{"name": "style-diffusers"}], model="tiny-t2v-moe")
    transformers = [engine._models["tiny-t2v-moe"].components[n] for n in ("transformer", "transformer_2")]

    assert all(len(t.peft_config) == 1 for t in transformers)
    assert np.abs(plain.astype(int) - styled.astype(int)).max() > 8


@pytest.mark.parametrize(
    "value, field, message",
    [
        ("not json", "loras", "must be a list"),
        ([{"name": "x", "path": "/y"}], "loras[0]", "exactly one of"),
        ([{"name": "../x"}], "loras[0].name", "file name"),
        ([{"name": "a/b"}], "loras[0].name", "file name"),
        ([{"name": "x", "strength": "strong"}], "loras[0].strength", "must be a number"),
        ([{"name": "x", "strength": float("nan")}], "loras[0].strength", "between"),
        ([{"name": "x", "scale": 1}], "loras[0].scale", "unknown field"),
        ([{"name": "x"}] * 9, "loras", "at most 8"),
    ],
)
def test_bad_loras_are_refused_naming_the_field(value, field, message):
    with pytest.raises(InvalidRequestError, match=message) as info:
        parse_loras(value)
    assert info.value.field == field


def test_lora_files_are_confined_to_the_configured_directories(lora_dir, tmp_path):
    config = LoraConfig(lora_dir=str(lora_dir))
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    (lora_dir / "link.safetensors").symlink_to(outside)

    assert resolve_lora_file(LoraRef(name="other"), config, "loras[0]") == lora_dir / "other.safetensors"
    assert resolve_lora_file(LoraRef(path="other.safetensors"), config, "loras[0]") == lora_dir / "other.safetensors"
    cases = [
        (LoraRef(name="missing"), config, "loras[0].name", "not a LoRA in"),
        (LoraRef(name="link"), config, "loras[0].name", "not a LoRA in"),  # a link out of the directory
        (LoraRef(path=str(outside)), config, "loras[0].path", "outside the allowed"),
        (LoraRef(path=f"{lora_dir}/../{tmp_path.name}/secret.safetensors"), config, "loras[0].path", "outside"),
        (LoraRef(name="other"), LoraConfig(), "loras[0].name", "WANSERVE_LORA_DIR"),
        (LoraRef(path=str(outside)), LoraConfig(), "loras[0].path", "no LoRA directory"),
    ]
    for ref, cfg, field, message in cases:
        with pytest.raises(InvalidRequestError, match=message) as info:
            resolve_lora_file(ref, cfg, "loras[0]")
        assert info.value.field == field
    assert resolve_lora_file(LoraRef(path=str(outside)), LoraConfig(allowed_dirs=(str(tmp_path),)), "l") == outside


def test_distilled_preset_samples_as_the_distillation_loras_are_published(lora_engine):
    # LightX2V's Wan2.1 4-step LoRA configuration: 4 steps, CFG off, shift 5, flow-matching Euler.
    request = resolve_request("tiny-t2v", {"prompt": "a cat", "seed": 1, "speed": "distilled",
                                           "loras": [{"name": "style-kohya"}]})  # fmt: skip
    params = request_params(request)
    assert {k: params[k] for k in ("num_inference_steps", "guidance_scale", "flow_shift", "solver", "speed")} == {
        "num_inference_steps": 4, "guidance_scale": 1.0, "flow_shift": 5.0, "solver": "euler", "speed": "distilled"
    }  # fmt: skip
    assert not request.fp8_gemm and not request.fp8_attention and request.step_cache == "none"
    result = lora_engine.generate(request)
    assert len(result.step_times_s) == 4 and result.speed["mode"] == "distilled"

    given = resolve_request("tiny-t2v-moe", {"prompt": "a", "speed": "distilled", "num_inference_steps": 6})
    assert (given.num_inference_steps, given.guidance_scale, given.guidance_scale_2) == (6, 1.0, 1.0)
    with pytest.raises(InvalidRequestError, match="needs classifier-free guidance"):
        resolve_request("tiny-t2v", {"prompt": "a", "speed": "distilled", "negative_prompt": "blurry"})


@pytest.fixture(scope="module")
def compiled_engine(lora_dir):
    from wanserve.engine.config import SpeedConfig

    speed = SpeedConfig(compile="blocks", compile_backend="eager")  # traces as Inductor would, without codegen
    return Engine(EngineConfig(device="cpu", speed=speed, lora=LoraConfig(lora_dir=str(lora_dir), hotswap_rank=16)))


def test_compiled_blocks_swap_loras_through_one_slot_without_recompiling(compiled_engine, lora_engine):
    from torch._dynamo.utils import counters

    plain = run(compiled_engine)  # compiles the blocks, with the empty slot in them
    graphs = counters["stats"]["unique_graphs"]
    style = run(compiled_engine, [{"name": "style-wan"}])
    other = run(compiled_engine, [{"name": "other", "strength": 0.5}])
    both = run(compiled_engine, [{"name": "style-kohya", "strength": 0.5}, {"name": "other", "strength": 0.5}])
    zero = run(compiled_engine, [{"name": "other", "strength": 0.0}])
    plain_again = run(compiled_engine)

    assert counters["stats"]["unique_graphs"] == graphs  # five LoRA changes, no new graph
    assert compiled_engine._models["tiny-t2v"].loras.loads == 3
    # The same frames as the adapters of an engine without compile (within float reordering).
    for frames, loras in (
        (plain, []),
        (style, [{"name": "style-wan"}]),
        (other, [{"name": "other", "strength": 0.5}]),
        (both, [{"name": "style-kohya", "strength": 0.5}, {"name": "other", "strength": 0.5}]),
    ):
        assert np.abs(frames.astype(int) - run(lora_engine, loras).astype(int)).max() <= 1
    np.testing.assert_array_equal(zero, plain)
    np.testing.assert_array_equal(plain_again, plain)


def test_loras_whose_ranks_overflow_the_slot_are_refused(compiled_engine):
    five = [{"name": n} for n in ("style-diffusers", "style-wan", "style-kohya", "other", "style-diffusers")]
    with pytest.raises(InvalidRequestError, match="ranks add up to 20, more than the hot-swap slot's 16"):
        run(compiled_engine, five)
