"""`wanserve generate`: one generation from the command line, with a progress bar."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from wanserve.errors import WanserveError

console = Console(stderr=True)

_STAGE_LABELS = {
    "loading": "Loading model",
    "encoding_text": "Encoding prompt",
    "encoding_image": "Encoding inputs",
    "denoising": "Denoising",
    "decoding": "Decoding video",
    "writing": "Writing MP4",
}


def parse_size(size: str) -> tuple[int, int]:
    """`832x480` (or `832*480`, as the Wan scripts write it) as (width, height)."""
    parts = size.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise typer.BadParameter(f"`size` must look like 832x480, got {size!r}", param_hint="--size")
    return int(parts[0]), int(parts[1])


def generate(
    model: str = typer.Option(..., "--model", "-m", help="Model name (see `wanserve models`)."),
    prompt: str = typer.Option("", "--prompt", "-p", help="What the video shows."),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt", help="What to avoid."),
    image: Path | None = typer.Option(None, "--image", help="First frame (i2v, flf2v, ti2v, animate reference)."),
    last_image: Path | None = typer.Option(None, "--last-image", help="Last frame (flf2v)."),
    video: Path | None = typer.Option(None, "--video", help="Input video (v2v, or the VACE control video)."),
    mask: Path | None = typer.Option(None, "--mask", help="VACE mask video (white = generate)."),
    reference_image: list[Path] = typer.Option([], "--reference-image", help="VACE reference image (repeatable)."),
    task: str | None = typer.Option(None, "--task", help="t2v, i2v, flf2v, ti2v, v2v, vace (inferred if omitted)."),
    size: str | None = typer.Option(
        None, "--size", help="WIDTHxHEIGHT, e.g. 832x480 (model default if omitted); an area for i2v/flf2v/ti2v."
    ),
    allow_untrained_size: bool = typer.Option(
        False, "--allow-untrained-size", help="Run a size outside the model's trained sizes."
    ),
    conditioning_scale: float | None = typer.Option(
        None, "--conditioning-scale", help="vace: weight of the control signal (default 1)."
    ),
    refert_num: int | None = typer.Option(
        None, "--refert-num", help="animate: frames carried between segments, 1 or 5."
    ),
    frames: int | None = typer.Option(None, "--frames", help="Number of frames, 4k+1 (e.g. 81)."),
    steps: int | None = typer.Option(None, "--steps", help="Denoising steps."),
    guidance: float | None = typer.Option(None, "--guidance", help="Classifier-free guidance scale."),
    guidance_2: float | None = typer.Option(None, "--guidance-2", help="Low-noise expert guidance (A14B)."),
    shift: float | None = typer.Option(None, "--shift", help="Flow shift of the sampler."),
    strength: float | None = typer.Option(None, "--strength", help="v2v: how much of the input is replaced (0..1]."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (random if omitted)."),
    fps: int | None = typer.Option(None, "--fps", help="Frames per second of the MP4."),
    crf: int | None = typer.Option(None, "--crf", help="H.264 quality, 0 (lossless) to 51."),
    out: Path = typer.Option(Path("out.mp4"), "--out", "-o", help="Where to write the MP4."),
    device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, npu, mps or cpu (auto if omitted)."),
    model_path: Path | None = typer.Option(None, "--model-path", help="Directory holding the model's weights."),
) -> None:
    """Generate one video and write it as an MP4 (plus a JPEG thumbnail beside it)."""
    from wanserve.config import Settings
    from wanserve.engine.engine import Engine
    from wanserve.engine.registry import get_spec
    from wanserve.engine.validation import resolve_request

    params = dict(
        prompt=prompt, negative_prompt=negative_prompt, task=task, num_frames=frames, num_inference_steps=steps,
        guidance_scale=guidance, guidance_scale_2=guidance_2, flow_shift=shift, strength=strength, seed=seed,
        fps=fps, crf=crf,
        image=str(image) if image else None, last_image=str(last_image) if last_image else None,
        video=str(video) if video else None, mask=str(mask) if mask else None,
        reference_images=[str(p) for p in reference_image] or None,
        allow_untrained_size=allow_untrained_size or None, conditioning_scale=conditioning_scale,
        refert_num=refert_num,
    )  # fmt: skip
    if size:
        params["width"], params["height"] = parse_size(size)
    try:
        request = resolve_request(model, params)
        spec = get_spec(model)
        explicit = ((model, str(model_path)),) if model_path else ()
        engine = Engine(Settings().engine_config(device, explicit))
        if spec.random_weights:
            console.print(f"[yellow]{model} has random weights: the video will be noise, not a picture.[/]")
        result, files = _run_with_progress(engine, request, out.resolve())
    except WanserveError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    console.print(
        f"[green]wrote[/] {files.video_path} ({result.width}x{result.height}, {result.num_frames} frames, "
        f"{result.fps} fps, seed {result.seed}) and {os.path.basename(files.thumbnail_path)}"
    )


def _run_with_progress(engine, request, out: Path):
    from wanserve.media.outputs import write_video_files

    columns = (
        TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}"),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(_STAGE_LABELS["loading"], total=None, rate="")

        def on_progress(event):
            label = _STAGE_LABELS[event.stage.value]
            if event.stage.value == "denoising":
                rate = f"{event.step_time_s:.2f} s/step" if event.step_time_s else ""
                progress.update(bar, description=label, total=event.steps, completed=event.step, rate=rate)
            else:
                progress.update(bar, description=label)

        result = engine.generate(request, on_progress=on_progress)
        progress.update(bar, description=_STAGE_LABELS["writing"], rate="")
        files = write_video_files(result.frames, out, fps=request.fps, crf=request.crf)
        progress.update(bar, description="Done", rate="")
    return result, files


def register(app: typer.Typer) -> None:
    """Adds `wanserve generate`."""
    app.command("generate")(generate)
