"""The `upscale` task: FlashVSR v1.1 on an input video, and the upscale part of a chained generate-then-upscale job.

- `resolve_upscale`: an upscale request's parameters checked and filled (scale 2 or 4, input width, quality, seed);
  the output's size and length come from the input video (`fit_upscale`, at submission).
- `check_chained_upscale`: a generation request's `upscale` object checked and filled.
- `load_flashvsr_model`: the FlashVSR of a spec: the official v1.1 directory, or the tiny one built offline.
- `run_upscale`: one upscale run with progress (stage `upscaling`, one step per chunk) and stop checks; output
  frames go to a sink chunk by chunk (bounded memory) or are returned.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wanserve.engine.registry import ModelSpec, get_spec
from wanserve.engine.requests import GenerationRequest, GenerationResult, ProgressEvent, Stage, TaskKind
from wanserve.errors import GenerationCancelled, InvalidRequestError, WeightsNotFoundError

logger = logging.getLogger(__name__)

SCALES = (2, 4)
DEFAULT_SCALE = 4
DEFAULT_QUALITY = 6
MAX_INPUT_WIDTH = 3840
CHAINED_KEYS = ("model", "scale", "quality", "input_width")
FrameSink = Callable[[np.ndarray], None]


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
        raise InvalidRequestError(field, f"`{field}` must be an integer, got {value!r}")
    return int(value)


def _upscale_options(given: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """scale, quality and input_width of `given`, checked; `prefix` names the field in errors (`upscale.`)."""
    scale = _int(prefix + "scale", given.get("scale", DEFAULT_SCALE))
    if scale not in SCALES:
        raise InvalidRequestError(prefix + "scale", f"`{prefix}scale` must be 2 or 4, got {scale}")
    quality = _int(prefix + "quality", given.get("quality", DEFAULT_QUALITY))
    if not 1 <= quality <= 10:
        raise InvalidRequestError(prefix + "quality", f"`{prefix}quality` must be in 1..10, got {quality}")
    width = given.get("input_width")
    if width is not None:
        width = _int(prefix + "input_width", width)
        if not 16 <= width <= MAX_INPUT_WIDTH or width % 2:
            raise InvalidRequestError(
                prefix + "input_width",
                f"`{prefix}input_width` must be an even number of pixels in 16..{MAX_INPUT_WIDTH}, got {width}",
            )
    return {"scale": scale, "quality": quality, "input_width": width}


def resolve_upscale(spec: ModelSpec, given: Mapping[str, Any], seed: int) -> GenerationRequest:
    """An upscale request (fields already checked to apply to the task); size and length are the input's
    (`fit_upscale`)."""
    options = _upscale_options(given)
    return GenerationRequest(
        model=spec.name, task=TaskKind.UPSCALE, prompt="", video=given["video"], seed=seed, num_inference_steps=1,
        guidance_scale=1.0, width=0, height=0, num_frames=0, fps=spec.fps, **options,
    )  # fmt: skip


def fit_upscale(request: GenerationRequest, video: tuple[int, int, int, float]) -> GenerationRequest:
    """`request` with the output size and length, and the chunks (steps), that input `video` (width, height,
    frames, fps) gives."""
    from wanserve.media.chunked import scaled_height
    from wanserve.models.flashvsr.pipeline import MIN_FRAMES, chunk_count, output_frames, output_size

    width, height, frames, fps = video
    if request.input_width is not None:
        width, height = request.input_width, scaled_height(width, height, request.input_width)
    try:
        _, _, out_w, out_h = output_size(width, height, request.scale)
    except ValueError as exc:
        raise InvalidRequestError("scale", f"`video` {exc}; use `scale` 4 or a larger `input_width`") from None
    if frames < MIN_FRAMES:
        raise InvalidRequestError("video", f"`video` has {frames} frames; FlashVSR needs at least {MIN_FRAMES}")
    return request.replace(
        width=out_w, height=out_h, num_frames=output_frames(frames), num_inference_steps=chunk_count(frames),
        fps=max(1, round(fps)) if fps else request.fps,
    )  # fmt: skip


def chained_model_for(spec: ModelSpec) -> str:
    """The FlashVSR that upscales a generation of `spec` when the request names none."""
    return "tiny-flashvsr" if spec.tiny else "flashvsr-v1.1-tiny-long"


def check_chained_upscale(spec: ModelSpec, value: Any, num_frames: int) -> dict[str, Any] | None:
    """A generation request's `upscale` object, checked and filled (model, scale, quality, input_width)."""
    from wanserve.models.flashvsr.pipeline import MIN_FRAMES

    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequestError("upscale", f'`upscale` must be an object such as {{"scale": 2}}, got {value!r}')
    unknown = sorted(set(value) - set(CHAINED_KEYS))
    if unknown:
        raise InvalidRequestError("upscale", f"`upscale` has unknown key(s) {unknown}; keys: {', '.join(CHAINED_KEYS)}")
    model = value.get("model") or chained_model_for(spec)
    target = get_spec(model)
    if TaskKind.UPSCALE not in target.tasks:
        raise InvalidRequestError("upscale.model", f"`upscale.model` {model!r} does not upscale")
    if num_frames < MIN_FRAMES:
        raise InvalidRequestError(
            "upscale",
            f"`upscale` needs at least {MIN_FRAMES} frames (FlashVSR's first chunk); `num_frames` is {num_frames}",
        )
    return {"model": model, **_upscale_options(value, "upscale.")}


def chained_request(request: GenerationRequest) -> GenerationRequest:
    """The upscale part of a chained job: the generation's `upscale` options, its seed and frame rate."""
    options = dict(request.upscale)
    return GenerationRequest(
        model=options.pop("model"), task=TaskKind.UPSCALE, prompt="", seed=request.seed, fps=request.fps,
        num_inference_steps=1, guidance_scale=1.0, **options,
    )  # fmt: skip


# -- loading ------------------------------------------------------------------------------------------------------
def load_flashvsr_model(spec: ModelSpec, engine_config, device: torch.device):
    """(FlashVSR model on `device`, its directory or None). Tiny: built offline in float32."""
    from wanserve.models.flashvsr import build_random_flashvsr, load_flashvsr
    from wanserve.models.flashvsr.loading import missing_files

    if spec.tiny:
        model, path = build_random_flashvsr(spec.variant, seed=0), None
    else:
        from wanserve.engine import loading
        from wanserve.engine.config import torch_dtype

        directory = loading.resolve_model_dir(spec, engine_config.weights)
        if directory is None or missing_files(directory, spec.variant):
            where = directory or engine_config.weights.download_dir(spec.name)
            missing = missing_files(where, spec.variant) if Path(where).is_dir() else ["every file"]
            raise WeightsNotFoundError(
                f"no FlashVSR v1.1 weights for {spec.name} in {where} (missing {', '.join(missing)}): set "
                "FLASHVSR_MODEL_PATH (or WANSERVE_MODELS_DIR/<model>) to the directory of "
                "JunhaoZhuang/FlashVSR-v1.1 with posi_prompt.pth beside its files"
            )
        dtype = torch_dtype(engine_config.memory.transformer_dtype)
        model, path = load_flashvsr(directory, spec.variant, dtype=dtype), str(directory)
    for module in model.modules().values():
        module.to(device)
    model.context = model.context.to(device)
    return model, path


# -- running ------------------------------------------------------------------------------------------------------
def run_upscale(
    model,
    request: GenerationRequest,
    device: torch.device,
    upscale_config,
    random_weights: bool,
    on_progress: Callable[[ProgressEvent], None],
    should_stop: Callable[[], bool],
    sink: FrameSink | None = None,
    frames: Iterable[np.ndarray] | None = None,
) -> GenerationResult:
    """Upscales `frames` (or the request's `video`) and returns the result; with `sink` the frames go there chunk by
    chunk and the result holds none. `GenerationCancelled` when `should_stop` says so before a chunk."""
    from wanserve.media.chunked import is_transport_stream, iter_frames, reencode_transport_stream
    from wanserve.media.video import probe_video
    from wanserve.models.flashvsr import FlashVSRRun, UpscaleOptions
    from wanserve.models.flashvsr.pipeline import FrameBufferFull, chunk_count
    from wanserve.models.flashvsr.sparse_attention import SparsityConfig, default_kernel

    start = time.perf_counter()
    scratch = None
    expected = request.num_inference_steps
    if frames is None:
        source = request.video
        if isinstance(source, str) and is_transport_stream(source):
            scratch = tempfile.TemporaryDirectory(prefix="wanserve-ts-")
            source = str(reencode_transport_stream(source, Path(scratch.name) / "input.mp4"))
        expected = chunk_count(probe_video(source, "video").num_frames)
        frames = iter_frames(source, request.input_width)
    kept: list[np.ndarray] = []
    step_times: list[float] = []
    last = [time.perf_counter()]

    def on_chunk(done: int) -> None:
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        on_progress(ProgressEvent(Stage.UPSCALING, step=done, steps=max(expected, done), step_time_s=step_times[-1]))

    kernel = upscale_config.kernel if upscale_config.kernel != "auto" else default_kernel(device)
    options = UpscaleOptions(
        scale=request.scale, seed=request.seed, sparsity=SparsityConfig(), kernel=kernel,
        cache_offload=upscale_config.cache_offload, max_buffer_bytes=upscale_config.streaming_lq_max_bytes,
    )  # fmt: skip
    dtype = next(model.transformer.parameters()).dtype
    run = FlashVSRRun(model, options, device, dtype)
    on_progress(ProgressEvent(Stage.UPSCALING, step=0, steps=expected))
    try:
        run.run(frames, sink or kept.append, on_chunk=on_chunk, should_stop=should_stop)
    except InterruptedError:
        raise GenerationCancelled("upscale stopped by request") from None
    except FrameBufferFull as exc:
        raise InvalidRequestError("video", str(exc)) from None
    except ValueError as exc:
        raise InvalidRequestError("video", f"`video` cannot be upscaled: {exc}") from None
    finally:
        if scratch is not None:
            scratch.cleanup()
    video = np.concatenate(kept) if kept else np.zeros((0, 0, 0, 3), np.uint8)
    width, height = (int(video.shape[2]), int(video.shape[1])) if kept else (request.width, request.height)
    if sink is not None and run.frames_out:
        height, width = run.out_size
    logger.info("upscaled %d frames x%d in %.1f s (%d chunks)", run.frames_out, request.scale,
                time.perf_counter() - start, run.chunks_done)  # fmt: skip
    return GenerationResult(
        frames=video, width=width, height=height, num_frames=run.frames_out, fps=request.fps, seed=request.seed,
        random_weights=random_weights, stage_times_s={Stage.UPSCALING.value: time.perf_counter() - start},
        step_times_s=tuple(step_times),
    )  # fmt: skip
