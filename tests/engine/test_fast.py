"""Fast modes on CPU with the tiny models: each changes the output, is recorded, and is gone after its job (the next
exact job gives the exact frames again, with no reload); the TeaCache decision rule; the refusals at submission."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine.test_stored_slices import COMMON, _moves, generate
from wanserve.engine.fast import TEACACHE_COEFFICIENTS, apply_teacache, remove_teacache
from wanserve.engine.validation import resolve_request
from wanserve.errors import InvalidRequestError


def _run(engine, **params):
    request = resolve_request("tiny-t2v", {**COMMON, **params})
    return engine.generate(request)


def test_fp8_modes_change_the_output_and_leave_the_model_exact_afterwards(engine):
    exact = generate(engine, "tiny-t2v")
    transformer = engine.load("tiny-t2v").components["transformer"]

    gemm = _run(engine, fp8_gemm=True)
    attention = _run(engine, fp8_attention=True)
    again = generate(engine, "tiny-t2v")

    assert _moves(exact, gemm.frames) > 0 and _moves(exact, attention.frames) > 0
    assert _moves(gemm.frames, attention.frames) > 0
    assert gemm.speed["fp8_gemm"] == "emulated" and "fp8_attention" not in gemm.speed
    assert attention.speed["fp8_attention"] == "emulated" and "fp8_gemm" not in attention.speed
    assert np.array_equal(again, exact)  # the FP8 layers and the attention route are removed after each job
    assert engine.load("tiny-t2v").components["transformer"] is transformer  # the same model: no reload


def test_speed_presets_resolve_to_their_modes(engine):
    fast = _run(engine, speed="fast")
    assert fast.speed["mode"] == "fast"
    assert fast.speed["fp8_gemm"] == fast.speed["fp8_attention"] == "emulated"
    assert "step_cache" not in fast.speed
    # tiny-t2v stands in for Wan2.1-T2V-1.3B, whose TeaCache coefficients exist: `fastest` adds TeaCache there.
    request = resolve_request("tiny-t2v", {**COMMON, "speed": "fastest"})
    assert (request.step_cache, request.step_cache_threshold) == ("teacache", 0.08)
    # Without coefficients (the two-expert model) `fastest` takes FirstBlockCache; VACE gets no step cache.
    moe = resolve_request("tiny-t2v-moe", {**COMMON, "speed": "fastest"})
    assert (moe.step_cache, moe.step_cache_threshold) == ("firstblock", 0.1)
    assert resolve_request("tiny-vace", {**COMMON, "task": "t2v", "speed": "fastest"}).step_cache == "none"
    # A field given with the preset overrides it.
    assert resolve_request("tiny-t2v", {**COMMON, "speed": "fast", "fp8_attention": False}).fp8_attention is False


def test_teacache_skips_blocks_and_is_removed_after_the_job(engine):
    exact = generate(engine, "tiny-t2v", num_inference_steps=8)

    cached = _run(engine, num_inference_steps=8, step_cache="teacache")

    # The first 5 steps and the last always run: steps 6 and 7 of 8, in both guidance branches, are skipped.
    assert cached.speed["step_cache_skipped_forwards"] == "4"
    assert _moves(exact, cached.frames) > 0
    blocks = engine.load("tiny-t2v").components["transformer"].blocks
    assert all(not getattr(b, "_diffusers_hook", None) or not b._diffusers_hook.hooks for b in blocks)
    assert np.array_equal(generate(engine, "tiny-t2v", num_inference_steps=8), exact)


def test_teacache_runs_the_blocks_once_the_rescaled_change_adds_up_to_the_threshold(engine):
    """The decision rule alone, on synthetic modulations: accumulate the polynomial of the relative L1 change and run
    the blocks (resetting the sum) when it reaches the threshold."""
    transformer = engine.load("tiny-t2v").components["transformer"]
    coefficients = (0.0, 0.0, 0.0, 1.0, 0.0)  # rescaled change = relative change, to make the sums readable
    head = apply_teacache(transformer, threshold=0.25, coefficients=coefficients, steps=20)
    try:
        state = head.state_manager._state_cls()
        state.residual = torch.zeros(1)
        base = torch.ones(2, 6, 4)
        decisions = [head._decide(state, base) for _ in range(5)]  # the 5 retained steps always run
        # each later step changes the modulation by 10%: 0.1, 0.2 (skip, skip), 0.3 >= 0.25 (run), then again
        for i in range(6):
            decisions.append(head._decide(state, base * 1.1 ** (i + 1)))
    finally:
        remove_teacache(transformer)
    assert decisions == [True] * 5 + [False, False, True, False, False, True]
    assert set(TEACACHE_COEFFICIENTS) == {"t2v-1.3b", "t2v-14b", "i2v-480p", "i2v-720p"}


def test_interval_cache_skips_on_its_schedule(engine):
    exact = generate(engine, "tiny-t2v", num_inference_steps=8)

    cached = _run(engine, num_inference_steps=8, step_cache="interval", step_cache_start=1, step_cache_end=7,
                  step_cache_interval=3)  # fmt: skip

    # Steps 1..6 are the window; 1 and 4 run, 2, 3, 5 and 6 reuse the residual: 4 steps x 2 guidance branches.
    assert cached.speed["step_cache_skipped_forwards"] == "8"
    assert cached.speed["step_cache"] == "interval (every 3 steps from step 1 to 7)"
    assert _moves(exact, cached.frames) > 0
    other = _run(engine, num_inference_steps=8, step_cache="interval", step_cache_start=2, step_cache_end=7,
                 step_cache_interval=2)  # fmt: skip
    assert other.speed["step_cache_skipped_forwards"] == "4"  # 3 and 5 skipped; 2, 4 and 6 run


def test_firstblock_threshold_decides_how_much_is_skipped(engine):
    low = _run(engine, num_inference_steps=8, step_cache="firstblock", step_cache_threshold=0.1)
    high = _run(engine, num_inference_steps=8, step_cache="firstblock", step_cache_threshold=0.5)
    assert _moves(low.frames, high.frames) > 0
    assert high.speed["step_cache"] == "firstblock (threshold 0.5)"


@pytest.mark.parametrize(
    ("model", "params", "field", "message"),
    [
        ("tiny-t2v", {"speed": "turbo"}, "speed", "must be one of exact, fast, fastest"),
        ("tiny-t2v-moe", {"step_cache": "teacache"}, "step_cache", "needs TeaCache's published coefficients"),
        ("tiny-vace", {"task": "t2v", "step_cache": "firstblock"}, "step_cache", "cannot skip tiny-vace's blocks"),
        ("tiny-t2v", {"step_cache_threshold": 0.2}, "step_cache_threshold", "needs a `step_cache`"),
        ("tiny-t2v", {"step_cache": "firstblock", "step_cache_threshold": 0}, "step_cache_threshold", "(0, 1]"),
        ("tiny-t2v", {"step_cache": "magic"}, "step_cache", "must be one of none, teacache, firstblock, interval"),
        ("tiny-t2v", {"fp8_gemm": "maybe"}, "fp8_gemm", "fp8_gemm"),
        (
            "tiny-t2v",
            {"num_inference_steps": 8, "step_cache": "interval", "step_cache_interval": 1},
            "step_cache_interval",
            "at least 2",
        ),
        (
            "tiny-t2v",
            {"num_inference_steps": 8, "step_cache": "interval", "step_cache_start": 5, "step_cache_end": 3},
            "step_cache_end",
            "after",
        ),
        ("tiny-t2v", {"step_cache": "teacache", "step_cache_start": 3}, "step_cache_start", "'interval'"),
        (
            "tiny-t2v",
            {"num_inference_steps": 8, "step_cache": "interval", "step_cache_threshold": 0.2},
            "step_cache_threshold",
            "teacache",
        ),
    ],
)
def test_fast_fields_are_refused_with_the_field_named(model, params, field, message):
    with pytest.raises(InvalidRequestError) as info:
        resolve_request(model, {**COMMON, **params})
    assert info.value.field == field and message in str(info.value)


def test_fp8_matmuls_add_one_compiled_graph_for_all_blocks():
    """With regional compile every block shares one graph; a job with FP8 matmuls adds one more for all blocks (a
    per-block variant would recompile once per block and hit Dynamo's recompile limit on a 40-block model)."""
    from torch._dynamo.utils import counters

    from wanserve.engine.config import EngineConfig, SpeedConfig
    from wanserve.engine.engine import Engine

    engine = Engine(EngineConfig(device="cpu", speed=SpeedConfig(compile="blocks", compile_backend="eager")))
    torch._dynamo.reset()
    counters.clear()
    _run(engine)
    exact_graphs = counters["stats"]["unique_graphs"]
    _run(engine, fp8_gemm=True)
    assert counters["stats"]["unique_graphs"] == exact_graphs + 1
    _run(engine)  # back to exact: the first graph is reused
    assert counters["stats"]["unique_graphs"] == exact_graphs + 1


def test_fp8_attention_rounds_self_attention_only(monkeypatch):
    """Cross-attention (fewer keys than queries: the text tokens) stays in the model's dtype; self-attention is
    rounded as FP8 inputs are. Both through the engine's own attention backend, as a job in a fast mode runs it."""
    from wanserve.engine import fast, speed

    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 64, 2, 16, generator=generator)
    own_keys = torch.randn(1, 64, 2, 16, generator=generator)
    text_keys = torch.randn(1, 8, 2, 16, generator=generator)

    def both():
        return (
            speed.wanserve_attention(query, own_keys, own_keys),
            speed.wanserve_attention(query, text_keys, text_keys),
        )

    exact_self, exact_cross = both()
    monkeypatch.setitem(fast._FP8_ATTENTION, "on", True)
    fp8_self, fp8_cross = both()

    assert torch.equal(fp8_cross, exact_cross)
    assert not torch.allclose(fp8_self, exact_self, atol=1e-4)
    assert torch.allclose(fp8_self, exact_self, atol=0.1)  # FP8 rounding, not another computation
