"""`wanserve bench engine`: the engine against stock diffusers on one GPU, in one process, on the same components.

One run measures, in this order (stock first: the engine's speed options change the shared transformer in place):
1. the kernel ceilings: a bf16 matmul and attention at the model's shape (cuDNN SDPA, FlashAttention-3 if present);
2. stock diffusers: seconds per transformer forward at each size, and a `WanPipeline` run (seconds per step with CFG,
   total, frames);
3. the engine in the chosen mode: the same forwards and a generation (per step, per stage), plus the MP4 write;
4. ratios, achieved TFLOP/s from the analytic FLOP count, the exact floor (matmul FLOPs at the measured matmul rate
   plus attention FLOPs at the fastest exact attention kernel), peak memory, and the deviation of the engine's frames
   from stock's (relative L2 and cosine; exact mode must stay within bf16 noise).
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MODES = ("exact", "stock")
"""`exact`: the engine's default speed options (FA3 or cuDNN attention, regional compile). `stock`: none."""


@dataclass(frozen=True)
class EngineBenchConfig:
    """What one `bench engine` run measures."""

    model: str = "wan2.1-t2v-14b"
    width: int = 832
    height: int = 480
    frames: int = 81
    steps: int = 3
    """Denoising steps timed per pipeline run (after a 2-step warm-up); whole-job times are extrapolated to `job_steps`."""
    job_steps: int = 40
    mode: str = "exact"
    forward_sizes: tuple[tuple[int, int, int], ...] = ()
    """More (width, height, frames) shapes at which only transformer forwards are timed (for example 720p)."""
    forward_reps: int = 3
    run_stock: bool = True
    fast_modes: tuple[str, ...] = ()
    """Speed presets (`fast`, `fastest`) measured after exact mode on the same components and seed: forwards, a
    generation (`steps`; a mode with a step cache runs all `job_steps`, since its skipping shows only over a whole
    schedule), whole-job time and the deviation of the frames from exact mode's."""
    progress: Callable[[str], None] = field(default=lambda message: None, compare=False)
    on_partial: Callable[[dict], None] = field(default=lambda report: None, compare=False)
    """Called with the report so far after each phase (a run cut short still leaves its measurements)."""


def timed_cuda(fn: Callable[[], Any], reps: int, warmup: int = 1) -> float:
    """Median seconds of `fn` over `reps` runs, timed with CUDA events after `warmup` runs."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def measure_kernels(heads: int, tokens: int, head_dim: int = 128) -> dict[str, float]:
    """TFLOP/s of a bf16 8192^3 matmul and of attention at this shape (cuDNN SDPA; FA3 when importable)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wanserve.engine.speed import fa3_available

    out: dict[str, float] = {}
    mats = [torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    out["matmul_bf16_tflops"] = 2 * 8192**3 / timed_cuda(lambda: mats[0] @ mats[1], reps=20, warmup=5) / 1e12
    mats.clear()
    flops = 4 * tokens * tokens * head_dim * heads
    q = torch.randn(1, heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
        out["attention_cudnn_tflops"] = flops / timed_cuda(fn, reps=5) / 1e12
    if fa3_available():
        from flash_attn_interface import flash_attn_func

        qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        out["attention_fa3_tflops"] = flops / timed_cuda(lambda: flash_attn_func(qt, kt, vt), reps=5) / 1e12
    return {key: round(value, 1) for key, value in out.items()}


def _forward_seconds(transformer, config: EngineBenchConfig, size: tuple[int, int, int]) -> float:
    from wanserve.engine.realsize import forward_inputs

    inputs = forward_inputs(config.model, *size, device="cuda")
    with torch.inference_mode():
        return timed_cuda(lambda: transformer(**inputs), reps=config.forward_reps, warmup=1)


def _stock_pipeline(components: dict, config: EngineBenchConfig, steps: int) -> tuple[np.ndarray, float, list[float]]:
    from diffusers import WanPipeline

    pipe = WanPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    marks: list[float] = []

    def on_step(p, i, t, kwargs):
        torch.cuda.synchronize()
        marks.append(time.perf_counter())
        return {}

    torch.cuda.synchronize()
    start = time.perf_counter()
    marks.append(start)
    frames = pipe(
        prompt="a cat surfing a wave at sunset", negative_prompt="", height=config.height, width=config.width,
        num_frames=config.frames, num_inference_steps=steps, guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(42), output_type="np", callback_on_step_end=on_step,
    ).frames[0]  # fmt: skip
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    step_times = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]
    return (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8), total, step_times


def _engine_generate(engine, config: EngineBenchConfig, steps: int, **extra):
    """One generation as a job runs it: the MP4 encoded on a writer thread while the VAE decodes (so the `decoding`
    stage holds the encode too). Returns the request, the result, its frames (kept as they were written) and the
    seconds from the call to the closed MP4."""
    from wanserve.engine.validation import resolve_request
    from wanserve.media.outputs import Mp4Writer

    request = resolve_request(
        config.model,
        dict(prompt="a cat surfing a wave at sunset", negative_prompt="", width=config.width, height=config.height,
             num_frames=config.frames, num_inference_steps=steps, guidance_scale=5.0, flow_shift=5.0, seed=42,
             **extra),
    )  # fmt: skip
    kept: list[np.ndarray] = []

    def write_video(frames, num_frames: int) -> None:
        def keep():
            for frame in frames:
                kept.append(frame)
                yield frame

        with tempfile.TemporaryDirectory() as tmp:
            Mp4Writer(Path(tmp) / "bench.mp4", 16, 18)(keep(), num_frames)

    torch.cuda.synchronize()
    start = time.perf_counter()
    result = engine.generate(request, write_video=write_video)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    return request, result, np.stack(kept), total


def _write_seconds(frames: np.ndarray) -> float:
    from wanserve.media.outputs import write_video_files

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_video_files(frames, Path(tmp) / "bench.mp4", fps=16, crf=18)
        return time.perf_counter() - start


def deviation(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Relative L2 distance and cosine similarity of two videos (as float, 0..255)."""
    a, b = reference.astype(np.float64).ravel(), other.astype(np.float64).ravel()
    norm = np.linalg.norm(a)
    return {
        "rel_l2": float(np.linalg.norm(a - b) / norm) if norm else 0.0,
        "cosine": float(a @ b / (norm * np.linalg.norm(b))) if norm and np.linalg.norm(b) else 1.0,
        "max_abs": float(np.abs(a - b).max()),
    }


def run_engine_bench(config: EngineBenchConfig, components: dict | None = None, random_weights: bool = True) -> dict:
    """Runs the whole measurement (see the module docstring) and returns it as a JSON-able dict."""
    from wanserve.engine.architectures import ARCHITECTURES
    from wanserve.engine.config import EngineConfig, SpeedConfig
    from wanserve.engine.engine import Engine
    from wanserve.engine.realsize import build_random_components, forward_flops, latent_tokens

    if not torch.cuda.is_available():
        from wanserve.errors import WanserveError

        raise WanserveError("`wanserve bench engine` needs a CUDA GPU; none is visible to torch here")
    if config.mode not in MODES:
        raise ValueError(f"`mode` must be one of {', '.join(MODES)}, got {config.mode!r}")
    say = config.progress
    sizes = [(config.width, config.height, config.frames), *config.forward_sizes]
    heads = ARCHITECTURES[config.model].transformer_config["num_attention_heads"]
    report: dict[str, Any] = {
        "model": config.model, "weights": "random (real-size)" if random_weights else "trained",
        "size": f"{config.width}x{config.height}x{config.frames}", "steps_timed": config.steps, "mode": config.mode,
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
    }  # fmt: skip
    import diffusers

    report["diffusers"] = diffusers.__version__

    # 1. Kernel ceilings
    say("measuring the matmul and attention kernels")
    report["kernels"] = measure_kernels(heads, latent_tokens(config.width, config.height, config.frames))
    config.on_partial(report)

    # 2. Stock diffusers (before the engine touches the shared transformer)
    say(f"building {config.model} with random weights" if components is None else "using the given components")
    components = components if components is not None else build_random_components(config.model, "cuda")
    transformer = components["transformer"]
    stock: dict[str, Any] = {}
    if config.run_stock:
        for size in sizes:
            say(f"stock forward at {size}")
            stock[f"forward_s_{size[0]}x{size[1]}x{size[2]}"] = round(_forward_seconds(transformer, config, size), 4)
        say("stock pipeline (warm-up, then timed)")
        _stock_pipeline(components, config, 2)
        torch.cuda.reset_peak_memory_stats()
        stock_frames, stock_total, stock_steps = _stock_pipeline(components, config, config.steps)
        stock["step_s_median"] = round(statistics.median(stock_steps[1:] or stock_steps), 4)
        stock["pipeline_total_s"] = round(stock_total, 3)
        stock["mp4_write_s"] = round(_write_seconds(stock_frames), 3)
        stock["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report["stock"] = stock
    config.on_partial(report)

    # 3. The engine in the chosen mode
    speed = SpeedConfig(compile="blocks") if config.mode == "exact" else SpeedConfig(attention="native", compile="none")
    engine = Engine(EngineConfig(device="cuda", speed=speed))
    engine.adopt(config.model, components, random_weights=random_weights)
    say(f"engine warm-up ({config.mode}: attention and compile applied here)")
    start = time.perf_counter()
    _engine_generate(engine, config, 2)
    ours: dict[str, Any] = {"warmup_s": round(time.perf_counter() - start, 1)}
    for size in sizes:
        say(f"engine forward at {size}")
        ours[f"forward_s_{size[0]}x{size[1]}x{size[2]}"] = round(_forward_seconds(transformer, config, size), 4)
        report["engine"] = ours
        config.on_partial(report)
    say("engine generation (timed)")
    torch.cuda.reset_peak_memory_stats()
    request, result, frames, total = _engine_generate(engine, config, config.steps)
    ours["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    ours["speed"] = dict(result.speed)
    ours["step_s_median"] = round(statistics.median(result.step_times_s[1:] or result.step_times_s), 4)
    ours["generate_total_s"] = round(total, 3)
    ours["stage_times_s"] = {k: round(v, 3) for k, v in result.stage_times_s.items()}
    ours["mp4_write_s"] = 0.0  # encoded while the VAE decodes: inside `decoding`
    report["engine"] = ours

    # 4. Ratios, achieved rates, the exact floor, deviation
    kernels = report["kernels"]
    attention_rate = max(kernels.get("attention_fa3_tflops", 0.0), kernels["attention_cudnn_tflops"])
    derived: dict[str, Any] = {}
    for size in sizes:
        key = f"{size[0]}x{size[1]}x{size[2]}"
        flops = forward_flops(config.model, *size)
        floor = flops["matmul"] / (kernels["matmul_bf16_tflops"] * 1e12) + flops["attention"] / (attention_rate * 1e12)
        engine_s = ours[f"forward_s_{key}"]
        derived[key] = {
            "forward_tflop": round((flops["matmul"] + flops["attention"]) / 1e12, 1),
            "exact_floor_s": round(floor, 4),
            "engine_tflops": round((flops["matmul"] + flops["attention"]) / engine_s / 1e12, 1),
            "engine_fraction_of_floor": round(floor / engine_s, 4),
        }
        if stock:
            derived[key]["forward_speedup"] = round(stock[f"forward_s_{key}"] / engine_s, 4)
    if stock:
        derived["step_speedup"] = round(stock["step_s_median"] / ours["step_s_median"], 4)
        stages = ours["stage_times_s"]
        other_engine = stages.get("loading", 0) + stages.get("encoding_text", 0) + stages.get("decoding", 0)
        stock_other = stock["pipeline_total_s"] - sum(stock_steps)
        engine_job = other_engine + config.job_steps * ours["step_s_median"] + ours["mp4_write_s"]
        stock_job = stock_other + config.job_steps * stock["step_s_median"] + stock["mp4_write_s"]
        derived[f"job_{config.job_steps}_steps_s"] = {"engine": round(engine_job, 2), "stock": round(stock_job, 2)}
        derived["job_speedup"] = round(stock_job / engine_job, 4)
        derived["frames_vs_stock"] = deviation(stock_frames, frames)
    report["derived"] = derived
    config.on_partial(report)

    # 5. Fast modes, each against exact mode (and stock) from this same run
    if config.fast_modes:
        report["fast_modes"] = {}
    for mode in config.fast_modes:
        report["fast_modes"][mode] = _fast_mode(
            engine, config, components, mode, report, frames, stock, stock_frames if stock else None
        )
        config.on_partial(report)
    return report


def mode_params(mode: str) -> dict[str, Any]:
    """A measured mode's request fields: a speed preset, optionally with fields over it joined by `+`
    (`fast+step_cache=interval+step_cache_interval=3`); values are read as JSON where they parse, else as text.
    The request validation checks them like any job's."""
    preset, *fields = mode.split("+")
    params: dict[str, Any] = {"speed": preset}
    for field_ in fields:
        name, sep, value = field_.partition("=")
        if not sep or not name:
            raise ValueError(f"a mode's extra fields are `name=value`, got {field_!r} in {mode!r}")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


def _fast_mode(
    engine, config: EngineBenchConfig, components: dict, mode: str, report: dict, exact, stock: dict, stock_frames
) -> dict[str, Any]:
    """One speed preset measured against exact mode's frames `exact` (and stock's, when run)."""
    from wanserve.engine.fast import FastOptions, fast_modes, options_for
    from wanserve.engine.registry import get_spec
    from wanserve.engine.validation import resolve_request

    say = config.progress
    spec = get_spec(config.model)
    params = mode_params(mode)
    probe = resolve_request(config.model, {"prompt": "x", "width": config.width, "height": config.height,
                                           "num_frames": config.frames, **params})  # fmt: skip
    options = options_for(spec, probe)
    entry: dict[str, Any] = {"options": {"fp8_gemm": options.fp8_gemm, "fp8_attention": options.fp8_attention,
                                         "step_cache": options.step_cache,
                                         "step_cache_threshold": options.step_cache_threshold}}  # fmt: skip
    matmul_only = FastOptions(fp8_gemm=options.fp8_gemm, fp8_attention=options.fp8_attention)
    # Forwards at the job's size only (the extra `forward_sizes` are exact mode's), and once per FP8 variant: a
    # step cache on top does not change what one forward costs.
    key = f"forward_s_{config.width}x{config.height}x{config.frames}"
    variant = {"fp8_gemm": options.fp8_gemm, "fp8_attention": options.fp8_attention}
    measured = next((m for m in report.get("fast_modes", {}).values() if m.get("forward_variant") == variant), None)
    if measured is not None:
        entry[key] = measured[key]
    elif not matmul_only.exact:
        say(f"{mode}: forward (the first run compiles the mode's variant)")
        with fast_modes(components, matmul_only, steps=1):
            size = (config.width, config.height, config.frames)
            entry[key] = round(_forward_seconds(components["transformer"], config, size), 4)
    entry["forward_variant"] = variant
    steps = config.job_steps if options.step_cache != "none" else config.steps
    say(f"{mode}: generation of {steps} steps")
    torch.cuda.reset_peak_memory_stats()
    _, result, frames, total = _engine_generate(engine, config, steps, **params)
    entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    entry["steps_run"] = steps
    entry["speed"] = dict(result.speed)
    entry["step_s_median"] = round(statistics.median(result.step_times_s[1:] or result.step_times_s), 4)
    entry["step_s_mean"] = round(statistics.mean(result.step_times_s), 4)
    entry["generate_total_s"] = round(total, 3)
    entry["stage_times_s"] = {k: round(v, 3) for k, v in result.stage_times_s.items()}
    entry["mp4_write_s"] = 0.0  # encoded while the VAE decodes: inside `decoding`
    stages = result.stage_times_s
    if steps == config.job_steps:  # measured: the whole schedule ran
        job = total + entry["mp4_write_s"]
        entry["job_measured"] = True
    else:
        other = stages.get("loading", 0) + stages.get("encoding_text", 0) + stages.get("decoding", 0)
        job = other + config.job_steps * entry["step_s_median"] + entry["mp4_write_s"]
        entry["job_measured"] = False
        entry["frames_vs_exact"] = deviation(exact, frames)
        if stock_frames is not None:
            entry["frames_vs_stock"] = deviation(stock_frames, frames)
    entry[f"job_{config.job_steps}_steps_s"] = round(job, 2)
    derived = report.get("derived", {})
    if stock and f"job_{config.job_steps}_steps_s" in derived:
        stock_job = derived[f"job_{config.job_steps}_steps_s"]["stock"]
        entry["job_speedup_vs_stock"] = round(stock_job / job, 4)
        entry["step_speedup_vs_stock"] = round(stock["step_s_median"] / entry["step_s_median"], 4)
    exact_step = report["engine"]["step_s_median"]
    entry["step_speedup_vs_exact"] = round(exact_step / entry["step_s_median"], 4)
    return entry
