"""`wanserve generate`: one generation from the command line, with a progress bar."""

from __future__ import annotations

import dataclasses
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
    "writing": "Writing output",
    "upscaling": "Upscaling",
}


def parse_upscale(value: str | None) -> dict | None:
    """`--upscale 2` (the scale) or `--upscale '{"scale": 2, "quality": 8}'` as the `upscale` object."""
    import json

    if value is None:
        return None
    if value.strip().isdigit():
        return {"scale": int(value)}
    try:
        parsed = json.loads(value)
    except ValueError:
        raise typer.BadParameter(
            f'give a scale (2) or a JSON object ({{"scale": 2}}), got {value!r}', param_hint="--upscale"
        ) from None
    return parsed


def parse_size(size: str) -> tuple[int, int]:
    """`832x480` (or `832*480`, as the Wan scripts write it) as (width, height)."""
    parts = size.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise typer.BadParameter(f"`size` must look like 832x480, got {size!r}", param_hint="--size")
    return int(parts[0]), int(parts[1])


def parse_lora_flag(value: str) -> dict[str, object]:
    """`--lora` as a `loras` item: `PATH[:STRENGTH]` (a file: an existing one, or any value with a `/` or a LoRA
    file suffix) or `NAME[:STRENGTH]` (a file of the LoRA directory)."""
    from wanserve.engine.lora import LORA_SUFFIXES

    target, strength = value, None
    head, sep, tail = value.rpartition(":")
    if sep and head:
        try:
            strength = float(tail)
            target = head
        except ValueError:
            pass
    if os.sep in target or "/" in target or target.endswith(LORA_SUFFIXES) or Path(target).is_file():
        item: dict[str, object] = {"path": str(Path(target).expanduser().resolve())}
    else:
        item = {"name": target}
    return item if strength is None else {**item, "strength": strength}


def _help(name: str) -> str:
    """The flag's help: the parameter table's text (engine/parameters.py), shared with the API docs."""
    from wanserve.engine.parameters import BY_NAME

    return BY_NAME[name].help.split(" An uploaded file")[0]


def generate(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model name (see `wanserve models`); required, except with `--src-root`."
    ),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help=_help("prompt")),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt", help=_help("negative_prompt")),
    image: Path | None = typer.Option(None, "--image", help=_help("image")),
    last_image: Path | None = typer.Option(None, "--last-image", help=_help("last_image")),
    video: Path | None = typer.Option(None, "--video", help=_help("video")),
    mask: Path | None = typer.Option(None, "--mask", help=_help("mask")),
    reference_images: list[Path] = typer.Option(
        [], "--reference-image", help=_help("reference_images") + " Repeatable."
    ),
    pose_video: Path | None = typer.Option(None, "--pose-video", help=_help("pose_video")),
    face_video: Path | None = typer.Option(None, "--face-video", help=_help("face_video")),
    background_video: Path | None = typer.Option(None, "--background-video", help=_help("background_video")),
    task: str | None = typer.Option(None, "--task", help=_help("task")),
    animate_mode: str | None = typer.Option(None, "--animate-mode", help=_help("animate_mode")),
    size: str | None = typer.Option(
        None, "--size", help="WIDTHxHEIGHT, e.g. 832x480 (model default if omitted); an area for i2v/flf2v/ti2v."
    ),
    allow_untrained_size: bool = typer.Option(False, "--allow-untrained-size", help=_help("allow_untrained_size")),
    num_frames: int | None = typer.Option(None, "--frames", help=_help("num_frames")),
    num_inference_steps: int | None = typer.Option(
        None, "--steps", "--sampling-steps", help=_help("num_inference_steps")
    ),
    guidance_scale: float | None = typer.Option(None, "--guidance", help=_help("guidance_scale")),
    guidance_scale_2: float | None = typer.Option(None, "--guidance-2", help=_help("guidance_scale_2")),
    boundary_ratio: float | None = typer.Option(None, "--boundary-ratio", help=_help("boundary_ratio")),
    flow_shift: float | None = typer.Option(None, "--shift", help=_help("flow_shift")),
    solver: str | None = typer.Option(None, "--solver", help=_help("solver")),
    strength: float | None = typer.Option(None, "--strength", help=_help("strength")),
    conditioning_scale: float | None = typer.Option(None, "--conditioning-scale", help=_help("conditioning_scale")),
    refert_num: int | None = typer.Option(None, "--refert-num", help=_help("refert_num")),
    clip_len: int | None = typer.Option(None, "--clip-len", help=_help("clip_len")),
    src_root: Path | None = typer.Option(
        None,
        "--src-root",
        help="Animate: a directory made by the Animate preprocessing (src_ref.png, src_pose.mp4, src_face.mp4; "
        "src_bg.mp4, src_mask.mp4 with `--animate-mode replace`), as the Animate backend's CLI took it. The model "
        "is then the first Animate model of WANSERVE_MODELS (else wan2.2-animate-14b), and a JSON status (job id, "
        "video path, timestamps) is printed on stdout at the end.",
    ),
    max_sequence_length: int | None = typer.Option(None, "--max-sequence-length", help=_help("max_sequence_length")),
    speed: str | None = typer.Option(None, "--speed", help=_help("speed")),
    fp8_gemm: bool | None = typer.Option(None, "--fp8-gemm/--no-fp8-gemm", help=_help("fp8_gemm")),
    fp8_attention: bool | None = typer.Option(None, "--fp8-attention/--no-fp8-attention", help=_help("fp8_attention")),
    step_cache: str | None = typer.Option(None, "--step-cache", help=_help("step_cache")),
    step_cache_threshold: float | None = typer.Option(
        None, "--step-cache-threshold", help=_help("step_cache_threshold")
    ),
    step_cache_start: int | None = typer.Option(None, "--step-cache-start", help=_help("step_cache_start")),
    step_cache_end: int | None = typer.Option(None, "--step-cache-end", help=_help("step_cache_end")),
    step_cache_interval: int | None = typer.Option(None, "--step-cache-interval", help=_help("step_cache_interval")),
    seed: int | None = typer.Option(None, "--seed", help=_help("seed")),
    fps: int | None = typer.Option(None, "--fps", help=_help("fps")),
    crf: int | None = typer.Option(None, "--crf", help=_help("crf")),
    loras: list[str] = typer.Option(
        [],
        "--lora",
        help="A LoRA file PATH[:STRENGTH], or NAME[:STRENGTH] in WANSERVE_LORA_DIR (strength default 1). Repeatable.",
    ),
    scale: int | None = typer.Option(None, "--scale", help=_help("scale")),
    input_width: int | None = typer.Option(None, "--input-width", help=_help("input_width")),
    quality: int | None = typer.Option(None, "--quality", help=_help("quality")),
    upscale: str | None = typer.Option(None, "--upscale", help=_help("upscale") + " Or just the scale: --upscale 2."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the MP4 (the PNG for t2i); out.mp4 / out.png if omitted."
    ),
    device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, npu, mps or cpu (auto if omitted)."),
    model_path: Path | None = typer.Option(None, "--model-path", help="Directory holding the model's weights."),
) -> None:
    """Generate one video and write it as an MP4, or one image (`--task t2i`) as a PNG; a JPEG thumbnail goes beside
    it."""
    from wanserve.config import Settings
    from wanserve.engine.engine import Engine
    from wanserve.engine.parameters import PARAMETERS
    from wanserve.engine.registry import get_spec
    from wanserve.engine.requests import TaskKind
    from wanserve.engine.validation import resolve_request

    # Every flag is named after its parameter (the table's names), except `--size` for width and height.
    given = locals()
    params = {}
    for param in PARAMETERS:
        value = given.get(param.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) for v in value] or None
        elif value is False:  # a flag not given: not sent (a task that does not use it refuses it when given)
            value = None
        params[param.name] = value
    if size:
        params["width"], params["height"] = parse_size(size)
    params["loras"] = [parse_lora_flag(v) for v in loras] or None
    # A LoRA file named on the command line is readable where it is (the user at the shell chose it).
    lora_dirs = tuple(str(Path(x["path"]).parent) for x in params["loras"] or () if "path" in x)
    status = None
    params["upscale"] = parse_upscale(upscale)
    try:
        if src_root is not None:
            status = AnimateCliStatus()
            model = _animate_sources(src_root, model, params)
        elif model is None:
            raise typer.BadParameter("`--model` is required (see `wanserve models`)", param_hint="--model")
        request = resolve_request(model, params)
        image_task = request.task == TaskKind.T2I
        out = out or Path("out.png" if image_task else "out.mp4")
        if image_task and out.suffix.lower() != ".png":
            raise typer.BadParameter(f"task t2i writes a PNG; give a .png path, got {str(out)!r}", param_hint="--out")
        spec = get_spec(model)
        explicit = ((model, str(model_path)),) if model_path else ()
        settings = Settings()
        config = dataclasses.replace(
            settings.engine_config(device, explicit), lora=settings.lora_config(extra_dirs=lora_dirs)
        )
        engine = Engine(config)
        if spec.random_weights:
            console.print(f"[yellow]{model} has random weights: the output will be noise, not a picture.[/]")
        if status is not None:
            status.running()
        result, files = _run_with_progress(engine, request, out.resolve())
    except WanserveError as exc:
        console.print(f"[red]error:[/] {exc}")
        if status is not None:
            status.print("failed", message=str(exc))
        raise typer.Exit(code=2) from None
    except BaseException as exc:
        if status is not None and not isinstance(exc, typer.Exit | typer.BadParameter):
            status.print("failed", message=f"{type(exc).__name__}: {exc}")
        raise
    shape = "one image" if image_task else f"{result.num_frames} frames, {result.fps} fps"
    console.print(
        f"[green]wrote[/] {files.path} ({result.width}x{result.height}, {shape}, seed {result.seed}) "
        f"and {os.path.basename(files.thumbnail_path)}"
    )
    if status is not None:
        status.print("succeeded", video_path=str(files.path), frames=result.num_frames, fps=result.fps)


class AnimateCliStatus:
    """The JSON status the Animate backend's CLI printed at the end: job id, status, video path, timestamps."""

    def __init__(self):
        import uuid

        self.job_id = uuid.uuid4().hex
        self.created_at = _now()
        self.started_at: str | None = None

    def running(self) -> None:
        self.started_at = _now()

    def print(self, status: str, message: str | None = None, video_path: str | None = None, **facts) -> None:
        import json

        body = {
            "job_id": self.job_id,
            "status": status,
            "video_path": video_path,
            "output_path": video_path,
            "message": message,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": _now(),
            **facts,
        }
        typer.echo(json.dumps(body))


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


def _animate_sources(src_root: Path, model: str | None, params: dict) -> str:
    """Fills `params` with the job directory's files (media flags given as well are refused) and returns the
    model: `--model`, else the first Animate model of WANSERVE_MODELS, else wan2.2-animate-14b."""
    from wanserve.config import Settings
    from wanserve.engine.registry import get_spec
    from wanserve.engine.requests import TaskKind
    from wanserve.errors import InvalidRequestError
    from wanserve.media.animate_sources import source_paths

    if params.get("task") not in (None, TaskKind.ANIMATE.value):
        raise InvalidRequestError("task", f"`--src-root` is an Animate job directory; `task` {params['task']!r}")
    replace = params.get("animate_mode") == "replace"
    for name, path in source_paths(src_root, replace, field="src_root").items():
        if params.get(name) is not None:
            raise InvalidRequestError(name, f"`{name}` comes from `src_root` {str(src_root)!r}; do not give it too")
        params[name] = path
    params["task"] = TaskKind.ANIMATE.value
    if model is not None:
        return model
    animate = [m for m in Settings().models if TaskKind.ANIMATE in get_spec(m).tasks]
    return animate[0] if animate else "wan2.2-animate-14b"


def _run_with_progress(engine, request, out: Path):
    import shutil
    import tempfile

    from wanserve.engine.requests import TaskKind
    from wanserve.engine.upscale import chained_request
    from wanserve.media.outputs import Mp4Writer, thumbnail_path_for, write_output_files
    from wanserve.worker.upscale import run_upscale_part

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
                if event.segments > 1 and event.segment:
                    label = f"{label} {event.segment}/{event.segments}"
                progress.update(bar, description=label, total=event.steps, completed=event.step, rate=rate)
            else:
                progress.update(bar, description=label)

        def on_upscale(event):
            if event.stage.value == "upscaling":
                rate = f"{event.step_time_s:.2f} s/chunk" if event.step_time_s else ""
                progress.update(
                    bar, description=_STAGE_LABELS["upscaling"], total=event.steps, completed=event.step, rate=rate
                )
            else:
                on_progress(event)

        if request.task == TaskKind.UPSCALE or request.upscale:
            # FlashVSR: written in segments, joined with the input's audio (worker/upscale.py, as a job does).
            with tempfile.TemporaryDirectory(prefix="wanserve-upscale-") as scratch:
                frames = None
                if request.task != TaskKind.UPSCALE:
                    frames = engine.generate(request, on_progress=on_progress).frames
                    request = chained_request(request)
                partial: dict = {}
                try:
                    result, files = run_upscale_part(engine, request, scratch, on_upscale, None, partial, frames=frames)
                except BaseException:
                    if partial.get("path"):
                        kept = out.with_name(out.stem + "_partial.mp4")
                        shutil.move(partial["path"], kept)
                        console.print(f"[yellow]kept the {partial['num_frames']} frames done in[/] {kept}")
                    raise
                shutil.move(files.path, out)
                shutil.move(files.thumbnail_path, thumbnail_path_for(out))
                files = type(files)(str(out), thumbnail_path_for(out), files.media_type)
        elif out.suffix.lower() == ".mp4" and request.task != TaskKind.T2I:
            # Encoded as the VAE decodes (engine/decode_stream.py), as a job's MP4 is.
            writer = Mp4Writer(out, request.fps, request.crf)
            result = engine.generate(request, on_progress=on_progress, write_video=writer)
            files = writer.files
        else:
            result = engine.generate(request, on_progress=on_progress)
            progress.update(bar, description=_STAGE_LABELS["writing"], rate="")
            files = write_output_files(result.frames, out, fps=request.fps, crf=request.crf)
        progress.update(bar, description="Done", rate="")
    return result, files


def register(app: typer.Typer) -> None:
    """Adds `wanserve generate`."""
    app.command("generate")(generate)
