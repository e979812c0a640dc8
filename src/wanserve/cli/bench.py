"""`wanserve bench ...`: measurements that ship with the package."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from wanserve.cli.bench_serve import add_serve_command
from wanserve.errors import WanserveError

console = Console(stderr=True)
bench_app = typer.Typer(
    help="Benchmarks: the engine against stock diffusers on this GPU; a running service.", no_args_is_help=True
)


@bench_app.callback()
def bench() -> None:
    """Benchmarks: `engine` (the engine against stock diffusers on this GPU), `serve` (a running service)."""


add_serve_command(bench_app)


BENCH_MODELS = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b")
"""Single-expert text-to-video models, which stock `WanPipeline` runs from the same components."""


def _check_fast_mode(model: str, spec: str, width: int, height: int, frames: int) -> None:
    """`--fast-mode SPEC` resolves as a job's request would, or the command stops naming the bad part."""
    from wanserve.bench.engine import mode_params
    from wanserve.engine.validation import resolve_request
    from wanserve.errors import InvalidRequestError

    try:
        params = mode_params(spec)
        resolve_request(model, {"prompt": "x", "width": width, "height": height, "num_frames": frames, **params})
    except (ValueError, InvalidRequestError) as error:
        raise typer.BadParameter(f"`--fast-mode` {spec!r}: {error}") from None


def _parse_shape(text: str, option: str) -> tuple[int, int, int]:
    try:
        size, frames = text.rsplit("x", 1) if text.count("x") == 2 else (text, "81")
        width, height = (int(v) for v in size.split("x"))
        return width, height, int(frames)
    except ValueError:
        raise typer.BadParameter(f"`{option}` must be WxH or WxHxFRAMES, got {text!r}") from None


@bench_app.command("engine")
def bench_engine(
    model: str = typer.Option("wan2.1-t2v-14b", "--model", "-m", help="A real-size model to build."),
    size: str = typer.Option("832x480", "--size", help="Video size WxH."),
    frames: int = typer.Option(81, "--frames", help="Frames (4k+1)."),
    steps: int = typer.Option(3, "--steps", help="Denoising steps timed, after a 2-step warm-up."),
    mode: str = typer.Option("exact", "--mode", help="exact (the engine's default speed options) or stock."),
    forward_size: list[str] = typer.Option([], "--forward-size", help="Extra WxHxF shapes for forward timing."),
    random_weights: bool = typer.Option(
        True, "--random-weights/--weights", help="Real-size random weights (the only kind this command builds)."
    ),
    no_stock: bool = typer.Option(False, "--no-stock", help="Skip stock diffusers (no ratios)."),
    fast_mode: list[str] = typer.Option(
        [],
        "--fast-mode",
        help="Also measure this speed preset (fast, fastest) against exact mode, optionally with request fields "
        "over it (`fast+step_cache=interval+step_cache_interval=3`). Repeatable.",
    ),
    job_steps: int = typer.Option(40, "--job-steps", help="Steps of the whole job (a step-cache mode runs them all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the JSON report here."),
) -> None:
    """The engine against stock diffusers in one process on one CUDA GPU: per forward, per step with CFG, whole job by stage, achieved TFLOP/s, the exact floor from kernels measured in the same run, peak memory."""  # noqa: E501
    from wanserve.bench.engine import EngineBenchConfig, run_engine_bench

    if model not in BENCH_MODELS:
        raise typer.BadParameter(f"`--model` must be one of {', '.join(BENCH_MODELS)}, got {model!r}")
    if not random_weights:
        raise typer.BadParameter("`--weights`: only real-size random weights are built by this command so far")
    width, height, _ = _parse_shape(f"{size}x{frames}", "--size")
    for spec in fast_mode:  # checked before minutes of model building
        _check_fast_mode(model, spec, width, height, frames)
    config = EngineBenchConfig(
        model=model, width=width, height=height, frames=frames, steps=steps, mode=mode,
        forward_sizes=tuple(_parse_shape(s, "--forward-size") for s in forward_size), run_stock=not no_stock,
        fast_modes=tuple(fast_mode), job_steps=job_steps,
        progress=lambda message: console.print(f"[dim]bench:[/] {message}"),
        on_partial=(lambda partial: out.write_text(json.dumps(partial, indent=2) + "\n")) if out else (lambda r: None),
    )  # fmt: skip
    try:
        report = run_engine_bench(config)
    except WanserveError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    if as_json:
        typer.echo(text)
    else:
        derived = report.get("derived", {})
        console.print(f"[bold]{model}[/] {report['size']} on {report['gpu']} ({report['weights']})")
        console.print(f"engine step {report['engine']['step_s_median']} s, speed {report['engine']['speed']}")
        for key in ("step_speedup", "job_speedup", "frames_vs_stock"):
            if key in derived:
                console.print(f"{key}: {derived[key]}")


def register(app: typer.Typer) -> None:
    """Adds `wanserve bench`."""
    app.add_typer(bench_app, name="bench")
