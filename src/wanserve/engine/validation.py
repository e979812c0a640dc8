"""Turning user-supplied generation parameters into a fully resolved, validated `GenerationRequest`.

Every check names the field and the bad value. Nothing is rounded or clamped: a value the model cannot take is
rejected.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from typing import Any

from wanserve.engine import sizes
from wanserve.engine.lora import parse_loras
from wanserve.engine.parameters import (
    ANIMATE_MODES,
    BY_NAME,
    DISTILLED_DEFAULTS,
    MEDIA_FIELDS,
    SOLVERS,
    SPEED_PRESETS,
    STEP_CACHES,
    applicable,
    not_applicable_reason,
)
from wanserve.engine.registry import ModelSpec, get_spec
from wanserve.engine.requests import GenerationRequest, TaskKind
from wanserve.errors import InvalidRequestError

MAX_STEPS = 200
MAX_PROMPT_CHARS = 10_000
MAX_SEED = 2**32 - 1
REFERT_NUMS = (1, 5)
ANIMATE_SHAPE_FIELDS = ("width", "height", "num_frames")
"""Animate's size and length are the pose video's (engine/sizes.py): resolved and shown, never given."""

_REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(GenerationRequest))
USER_FIELDS = frozenset(BY_NAME)
"""Every field a request may give (the parameter table's names)."""

# The inputs each task needs. Which inputs it accepts at all is the parameter table's `tasks`.
_REQUIRED_INPUTS: dict[TaskKind, frozenset[str]] = {
    TaskKind.I2V: frozenset({"image"}),
    TaskKind.FLF2V: frozenset({"image", "last_image"}),
    TaskKind.V2V: frozenset({"video"}),
    TaskKind.ANIMATE: frozenset({"image", "pose_video", "face_video"}),
    TaskKind.UPSCALE: frozenset({"video"}),
    TaskKind.CONTROL: frozenset({"video"}),
}


def task_inputs(task: TaskKind) -> tuple[frozenset[str], frozenset[str]]:
    """(media inputs `task` requires, media inputs it accepts)."""
    accepted = frozenset(name for name in MEDIA_FIELDS if BY_NAME[name].applies_to(task, experts=1))
    return _REQUIRED_INPUTS.get(task, frozenset()), accepted


def infer_task(spec: ModelSpec, given: Mapping[str, Any]) -> TaskKind:
    """The task implied by the inputs given, when the request does not name one."""
    has = {name for name in MEDIA_FIELDS if given.get(name)}
    candidates: list[TaskKind] = []
    if spec.pipeline == "WanAnimatePipeline":
        candidates.append(TaskKind.ANIMATE)
    if spec.pipeline == "WanFunControlPipeline":
        candidates.append(TaskKind.CONTROL)
    if "last_image" in has:
        candidates.append(TaskKind.FLF2V)
    if has & {"mask", "reference_images"} or ("video" in has and TaskKind.VACE in spec.tasks):
        candidates.append(TaskKind.VACE)
    if "video" in has:
        candidates.append(TaskKind.V2V)
    if "image" in has:
        candidates += [TaskKind.TI2V, TaskKind.I2V]
    candidates.append(spec.default_task)
    for task in candidates:
        if task in spec.tasks:
            return task
    return spec.default_task


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequestError(field, f"`{field}` must be an integer, got {value!r}")
    try:
        as_float = float(value)
    except ValueError:
        raise InvalidRequestError(field, f"`{field}` must be an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise InvalidRequestError(field, f"`{field}` must be an integer, got {value!r}")
    return int(as_float)


def _float(field: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidRequestError(field, f"`{field}` must be a number, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(field, f"`{field}` must be a number, got {value!r}") from None
    if result != result or result in (float("inf"), float("-inf")):
        raise InvalidRequestError(field, f"`{field}` must be a finite number, got {value!r}")
    return result


def _in_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidRequestError(field, f"`{field}` must be between {low:g} and {high:g}, got {value:g}")


def _check_size(spec: ModelSpec, field: str, value: int) -> None:
    factor = spec.spatial_factor
    if value < factor or value > spec.max_side:
        raise InvalidRequestError(
            field, f"`{field}` must be between {factor} and {spec.max_side} for {spec.name}, got {value}"
        )
    if value % factor:
        raise InvalidRequestError(field, f"`{field}` must be a multiple of {factor} for {spec.name}, got {value}")


def _check_frames(spec: ModelSpec, value: int) -> None:
    k = spec.temporal_factor
    if value < 1 or value > spec.max_frames:
        raise InvalidRequestError(
            "num_frames", f"`num_frames` must be between 1 and {spec.max_frames} for {spec.name}, got {value}"
        )
    if (value - 1) % k:
        raise InvalidRequestError("num_frames", f"`num_frames` must be {k}k+1 (for example 81), got {value}")


def _bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidRequestError(field, f"`{field}` must be true or false, got {value!r}")


def field_applies(name: str, task: TaskKind) -> bool:
    """Whether a request of `task` may give `name`, beyond the parameter table's own task rules: Animate takes
    its size and length from the pose video."""
    return not (task == TaskKind.ANIMATE and name in ANIMATE_SHAPE_FIELDS)


def resolve_request(model: str, params: Mapping[str, Any], probe_inputs: bool = True) -> GenerationRequest:
    """Validates `params` against the model's spec and fills every default. Raises `InvalidRequestError`.

    With `probe_inputs` the media inputs that decide the output shape (an image task's image, Animate's pose
    video) are read here and the size is resolved (engine/sizes.py); the job service reads them itself and calls
    `sizes.fit_to_inputs`."""
    spec = get_spec(model)
    unknown = sorted(set(params) - USER_FIELDS)
    if unknown:
        raise InvalidRequestError(unknown[0], f"unknown field(s): {', '.join(f'`{u}`' for u in unknown)}")
    # An empty media field ("" or []) counts as not given, as does any None.
    given = {
        key: value
        for key, value in params.items()
        if value is not None and not (key in MEDIA_FIELDS and value in ("", [], ()))
    }

    # 1. Task and its inputs
    if "task" in given:
        try:
            task = TaskKind(given["task"])
        except ValueError:
            choices = ", ".join(t.value for t in TaskKind)
            raise InvalidRequestError("task", f"`task` must be one of {choices}, got {given['task']!r}") from None
    else:
        task = infer_task(spec, given)
    if task not in spec.tasks:
        served = ", ".join(t.value for t in spec.tasks)
        raise InvalidRequestError("task", f"`task` {task.value!r} is not served by {spec.name} (serves: {served})")
    # A field the task (or a one-expert model) does not use is refused, never accepted and ignored.
    used = set(applicable(task, spec.experts))
    for name in sorted(set(given) - used, key=list(BY_NAME).index):
        raise InvalidRequestError(name, not_applicable_reason(name, task, spec.name, spec.experts))
    present = {name for name in MEDIA_FIELDS if name in given}
    for name in sorted(task_inputs(task)[0] - present):
        raise InvalidRequestError(name, f"`{name}` is required for task {task.value!r} ({spec.name})")
    if task == TaskKind.VACE and not present:
        raise InvalidRequestError("video", "task 'vace' needs a control `video` or `reference_images`")
    for name in sorted(n for n in given if not field_applies(n, task)):
        raise InvalidRequestError(
            name, f"`{name}` is not used by task 'animate': the output's size and length are the pose video's"
        )
    if task == TaskKind.UPSCALE:
        from wanserve.engine.upscale import resolve_upscale

        seed = _int("seed", given["seed"]) if "seed" in given else secrets.randbelow(MAX_SEED + 1)
        _in_range("seed", seed, 0, MAX_SEED)
        request = resolve_upscale(spec, given, seed)
        return sizes.fit_to_inputs(spec, request, probe_shapes(request)) if probe_inputs else request

    # 2. Text
    prompt = given.get("prompt", "")
    if not isinstance(prompt, str):
        raise InvalidRequestError("prompt", f"`prompt` must be a string, got {type(prompt).__name__}")
    if not prompt.strip() and spec.default_prompt:
        prompt = spec.default_prompt  # Animate's official default prompt
    if not prompt.strip() and task in (TaskKind.T2V, TaskKind.T2I, TaskKind.V2V, TaskKind.VACE, TaskKind.CONTROL):
        raise InvalidRequestError("prompt", f"`prompt` must not be empty for task {task.value!r}")
    negative = given.get("negative_prompt", spec.default_negative_prompt)
    if not isinstance(negative, str):
        raise InvalidRequestError("negative_prompt", f"`negative_prompt` must be a string, got {negative!r}")
    for field, text in (("prompt", prompt), ("negative_prompt", negative)):
        if len(text) > MAX_PROMPT_CHARS:
            raise InvalidRequestError(
                field, f"`{field}` must be at most {MAX_PROMPT_CHARS} characters, got {len(text)}"
            )

    # 3. Shape (for image tasks the size is an area; Animate's shape is the pose video's: engine/sizes.py)
    allow_untrained = _bool("allow_untrained_size", given.get("allow_untrained_size", False))
    default_w, default_h = spec.default_size_for(task)
    width = _int("width", given.get("width", default_w))
    height = _int("height", given.get("height", default_h))
    num_frames = _int("num_frames", given.get("num_frames", 1 if task == TaskKind.T2I else spec.num_frames))
    if task != TaskKind.ANIMATE:
        _check_size(spec, "width", width)
        _check_size(spec, "height", height)
        sizes.check_size(spec, width, height, allow_untrained, task=task)
        _check_frames(spec, num_frames)
    if task == TaskKind.T2I and num_frames != 1:
        # One frame, as Wan2.1's `t2i-14B` asserts (the PNG-only `fps` and `crf` are refused by the table).
        raise InvalidRequestError("num_frames", f"`num_frames` must be 1 for task 't2i' (one image), got {num_frames}")

    # 4. Sampling (the `distilled` speed preset has its own defaults: engine/parameters.py DISTILLED_DEFAULTS)
    preset = DISTILLED_DEFAULTS if given.get("speed") == "distilled" else {}
    steps = _int("num_inference_steps", given.get("num_inference_steps", preset.get("num_inference_steps",
                                                                                    spec.num_inference_steps)))  # fmt: skip
    _in_range("num_inference_steps", steps, 1, MAX_STEPS)
    guidance = _float("guidance_scale", given.get("guidance_scale", preset.get("guidance_scale", spec.guidance_scale)))
    _in_range("guidance_scale", guidance, 0.0, 50.0)
    # Classifier-free guidance runs only when `guidance_scale` > 1 (diffusers decides on it alone, for both
    # experts): a negative prompt or a second guidance scale given with it off would be ignored, so they are refused.
    if guidance <= 1.0:
        for field in ("negative_prompt", "guidance_scale_2"):
            if given.get(field) not in (None, ""):
                raise InvalidRequestError(
                    field, f"`{field}` needs classifier-free guidance: set `guidance_scale` above 1 (got {guidance:g})"
                )
    guidance_2 = boundary = None
    if spec.experts > 1:
        guidance_2 = _float(
            "guidance_scale_2", given.get("guidance_scale_2", preset.get("guidance_scale_2", spec.guidance_scale_2))
        )
        _in_range("guidance_scale_2", guidance_2, 0.0, 50.0)
        boundary = _float("boundary_ratio", given.get("boundary_ratio", spec.boundary_ratio))
        _in_range("boundary_ratio", boundary, 0.0, 1.0)
    flow_shift = _float("flow_shift", given.get("flow_shift", preset.get("flow_shift",
                                                                         spec.default_flow_shift(width, height))))  # fmt: skip
    _in_range("flow_shift", flow_shift, 0.01, 100.0)
    solver = given.get("solver", preset.get("solver", spec.solver))
    if solver not in SOLVERS:
        raise InvalidRequestError("solver", f"`solver` must be one of {', '.join(SOLVERS)}, got {solver!r}")
    seed = _int("seed", given["seed"]) if "seed" in given else secrets.randbelow(MAX_SEED + 1)
    _in_range("seed", seed, 0, MAX_SEED)
    strength = _float("strength", given.get("strength", 0.8))
    if not 0.0 < strength <= 1.0:
        raise InvalidRequestError("strength", f"`strength` must be in (0, 1], got {strength:g}")

    # 5. Output
    fps = _int("fps", given.get("fps", spec.fps))
    _in_range("fps", fps, 1, 120)
    crf = _int("crf", given.get("crf", 18))
    _in_range("crf", crf, 0, 51)
    max_len = _int("max_sequence_length", given.get("max_sequence_length", 512))
    _in_range("max_sequence_length", max_len, 1, 512)
    mode = given.get("animate_mode", "animate")
    if mode not in ANIMATE_MODES:
        raise InvalidRequestError("animate_mode", f"`animate_mode` must be animate or replace, got {mode!r}")
    if task == TaskKind.ANIMATE:
        replace_inputs = {"background_video", "mask"}
        if mode == "replace" and not replace_inputs <= present:
            raise InvalidRequestError(
                sorted(replace_inputs - present)[0], "animate_mode 'replace' needs `background_video` and `mask`"
            )
        for name in sorted(replace_inputs & present) if mode == "animate" else ():
            raise InvalidRequestError(name, f"`{name}` is used only with animate_mode 'replace'; remove it")
    conditioning_scale = _float("conditioning_scale", given.get("conditioning_scale", 1.0))
    _in_range("conditioning_scale", conditioning_scale, 0.0, 10.0)
    refert_num = _int("refert_num", given.get("refert_num", 1))
    if refert_num not in REFERT_NUMS:
        raise InvalidRequestError("refert_num", f"`refert_num` must be 1 or 5, got {refert_num}")
    clip_len = GenerationRequest.clip_len  # used by Animate only (the table refuses it for other tasks)
    if task == TaskKind.ANIMATE:
        clip_len = _int("clip_len", given.get("clip_len", spec.num_frames))
        # The official `clip_len`: any 4k+1 (animate.py asks for it; diffusers rounds other values, wanserve refuses).
        k = spec.temporal_factor
        if clip_len < k + 1 or clip_len > spec.max_frames or (clip_len - 1) % k:
            raise InvalidRequestError(
                "clip_len",
                f"`clip_len` must be {k}k+1 between {k + 1} and {spec.max_frames} for {spec.name}, got {clip_len}",
            )
    refs = given.get("reference_images", ())
    if not isinstance(refs, list | tuple):
        raise InvalidRequestError("reference_images", "`reference_images` must be a list")
    # 6. LoRAs (their shape here; their files are found by the job service and the engine: engine/lora.py)
    loras = parse_loras(given.get("loras"))
    # 7. Speed modes (engine/fast.py): the preset, then any field given on its own
    speed = _resolve_speed(spec, task, given, steps)
    from wanserve.engine.upscale import check_chained_upscale

    chained = check_chained_upscale(spec, given.get("upscale"), num_frames)

    request = GenerationRequest(
        model=spec.name,
        task=task,
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        num_frames=num_frames,
        num_inference_steps=steps,
        guidance_scale=guidance,
        guidance_scale_2=guidance_2,
        boundary_ratio=boundary,
        flow_shift=flow_shift,
        solver=solver,
        seed=seed,
        fps=fps,
        crf=crf,
        strength=strength,
        max_sequence_length=max_len,
        animate_mode=mode,
        image=given.get("image"),
        last_image=given.get("last_image"),
        video=given.get("video"),
        mask=given.get("mask"),
        reference_images=tuple(refs),
        pose_video=given.get("pose_video"),
        face_video=given.get("face_video"),
        background_video=given.get("background_video"),
        allow_untrained_size=allow_untrained,
        conditioning_scale=conditioning_scale,
        refert_num=refert_num,
        loras=loras,
        clip_len=clip_len,
        **speed,
        upscale=chained,
    )
    if not probe_inputs:
        return request
    request = sizes.fit_to_inputs(spec, request, probe_shapes(request))
    if task == TaskKind.ANIMATE:
        from wanserve.engine.inputs import probe_media

        probe_media(request)  # the driving videos agree (length, frame rate, size), as the job service checks
    return request


def _resolve_speed(spec: ModelSpec, task: TaskKind, given: Mapping[str, Any], steps: int) -> dict[str, Any]:
    """The `speed` preset and the fields that override it, as the request's speed fields (engine/fast.py)."""
    from wanserve.engine.fast import FIRSTBLOCK_THRESHOLD, TEACACHE_MODELS, TEACACHE_THRESHOLDS, teacache_key

    preset = given.get("speed", "exact")
    if preset not in SPEED_PRESETS:
        raise InvalidRequestError("speed", f"`speed` must be one of {', '.join(SPEED_PRESETS)}, got {preset!r}")
    fast = preset in ("fast", "fastest")  # `distilled` changes the sampling (section 4), not the kernels
    fp8_gemm = _bool("fp8_gemm", given.get("fp8_gemm", fast))
    fp8_attention = _bool("fp8_attention", given.get("fp8_attention", fast))
    tea = teacache_key(spec.name, spec.real_counterpart)
    cacheable = field_applies_cache(spec, task)
    default_cache = ("teacache" if tea else "firstblock") if preset == "fastest" and cacheable else "none"
    cache = given.get("step_cache", default_cache)
    if cache not in STEP_CACHES:
        raise InvalidRequestError("step_cache", f"`step_cache` must be one of {', '.join(STEP_CACHES)}, got {cache!r}")
    if cache != "none" and not cacheable:
        raise InvalidRequestError(
            "step_cache", f"`step_cache` {cache!r} cannot skip {spec.name}'s blocks: its model adds control or face "
            "features between them; use `none`",
        )  # fmt: skip
    if cache == "teacache" and tea is None:
        with_coefficients = ", ".join(TEACACHE_MODELS)
        raise InvalidRequestError(
            "step_cache", f"`step_cache` 'teacache' needs TeaCache's published coefficients, which exist for "
            f"{with_coefficients}; not for {spec.name}: use 'firstblock'",
        )  # fmt: skip
    threshold = 0.0
    schedule = _interval_schedule(given, steps) if cache == "interval" else (0, 0, 0)
    for field in ("step_cache_start", "step_cache_end", "step_cache_interval"):
        if cache != "interval" and given.get(field) is not None:
            raise InvalidRequestError(field, f"`{field}` sets the schedule of `step_cache` 'interval', got {cache!r}")
    if cache in ("none", "interval"):
        if given.get("step_cache_threshold") is not None:
            raise InvalidRequestError(
                "step_cache_threshold",
                "`step_cache_threshold` needs a `step_cache` of teacache or firstblock (or `speed` 'fastest')",
            )
    else:
        default = TEACACHE_THRESHOLDS[tea] if cache == "teacache" else FIRSTBLOCK_THRESHOLD
        threshold = _float("step_cache_threshold", given.get("step_cache_threshold", default))
        if not 0.0 < threshold <= 1.0:
            raise InvalidRequestError(
                "step_cache_threshold", f"`step_cache_threshold` must be in (0, 1], got {threshold:g}"
            )
    start, end, interval = schedule
    return dict(
        speed=preset, fp8_gemm=fp8_gemm, fp8_attention=fp8_attention, step_cache=cache, step_cache_threshold=threshold,
        step_cache_start=start, step_cache_end=end, step_cache_interval=interval,
    )  # fmt: skip


def _interval_schedule(given: Mapping[str, Any], steps: int) -> tuple[int, int, int]:
    """(start, end, interval) of the `interval` step cache: inside [start, end) the blocks run every `interval` steps
    (from `start` on), outside it always."""
    from wanserve.engine.fast import TEACACHE_RET_STEPS

    start = _int("step_cache_start", given.get("step_cache_start", min(TEACACHE_RET_STEPS, steps - 1)))
    end = _int("step_cache_end", given.get("step_cache_end", steps))
    interval = _int("step_cache_interval", given.get("step_cache_interval", 2))
    _in_range("step_cache_start", start, 0, steps - 1)
    _in_range("step_cache_end", end, 1, MAX_STEPS)  # past the last step: the window runs to the end
    if end <= start:
        raise InvalidRequestError("step_cache_end", f"`step_cache_end` {end} must be after `step_cache_start` {start}")
    if interval < 2:
        raise InvalidRequestError(
            "step_cache_interval", f"`step_cache_interval` must be at least 2 (1 skips nothing), got {interval}"
        )
    return start, end, interval


def field_applies_cache(spec: ModelSpec, task: TaskKind) -> bool:
    """Whether a step cache can run for `task` on `spec` (a plain stack of blocks: not VACE, not Animate)."""
    from wanserve.engine.fast import CACHEABLE_PIPELINES

    return BY_NAME["step_cache"].applies_to(task, spec.experts) and spec.pipeline in CACHEABLE_PIPELINES


def probe_shapes(request: GenerationRequest) -> sizes.InputShapes:
    """Reads the inputs that decide the output shape: the image of an image task, Animate's pose video."""
    from wanserve.media.images import load_image
    from wanserve.media.video import probe_video

    image = pose = video = None
    if request.task == TaskKind.UPSCALE and request.video is not None:
        info = probe_video(request.video, field="video")
        video = (info.width, info.height, info.num_frames, info.fps)
    if request.task in sizes.IMAGE_SIZED_TASKS and request.image is not None:
        image = load_image(request.image, field="image").size
    if request.task == TaskKind.ANIMATE and request.pose_video is not None:
        info = probe_video(request.pose_video, field="pose_video")
        pose = (info.width, info.height, info.num_frames)
    return sizes.InputShapes(image=image, pose_video=pose, video=video)


def request_params(request: GenerationRequest) -> dict[str, Any]:
    """The resolved parameters as plain JSON values: `model` and the parameters the request's task uses on its
    model (a t2v job shows no `strength`), media inputs replaced by a short description."""
    experts = get_spec(request.model).experts
    out: dict[str, Any] = {"model": request.model}
    for name in applicable(request.task, experts):
        value = getattr(request, name)
        if name == "reference_images":
            out[name] = [_describe(v) for v in value]
        elif name in MEDIA_FIELDS:
            out[name] = None if value is None else _describe(value)
        elif isinstance(value, TaskKind):
            out[name] = value.value
        elif name == "loras":
            out[name] = [ref.as_dict() for ref in value]
        else:
            out[name] = value
    return out


def request_from_params(params: Mapping[str, Any], inputs: Mapping[str, Any]) -> GenerationRequest:
    """The `GenerationRequest` of parameters `resolve_request` resolved earlier (a job's stored `params`) and its
    stored media `inputs`. Nothing is validated again: validation ran once, when the job was submitted."""
    values = {k: v for k, v in params.items() if k in _REQUEST_FIELDS and k not in MEDIA_FIELDS}
    values.update({k: v for k, v in inputs.items() if k in MEDIA_FIELDS})
    values["task"] = TaskKind(values["task"])
    if "reference_images" in values:
        values["reference_images"] = tuple(values["reference_images"])
    if "loras" in values:
        values["loras"] = parse_loras(values["loras"])
    return GenerationRequest(**values)


def _describe(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and value.startswith("data:"):
        return f"<data URL, {len(value)} chars>"
    return str(value)
