"""Request and response shapes of the services wanserve replaces, so their clients keep working unchanged.

1. The Wan2.1 I2V multi-GPU service (`/video/submit`, `/video/status`, `/video/cancel`): statuses `InQueue`,
   `InProgress`, `Succeed`, `Failed`, `Cancelled`; `progress` 0..1; times as unix seconds.
2. The Wan2.1 multi-device service (`/submit`, `/status/{task_id}`, `/cancel/{task_id}`): statuses `pending`,
   `running`, `succeed`, `failed`, `cancelled`; `progress` 0..100; times as ISO 8601.
3. The Wan2.2-Animate backend (`/animate/jobs`): statuses `pending`, `running`, `succeeded`, `failed`.

Every request model forbids unknown fields: a misspelt parameter is an error naming it, never dropped.
Parameters left out take the model's official defaults (not the old services' own defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wanserve.errors import InvalidRequestError

WAN21_STATUS = {
    "queued": "InQueue",
    "running": "InProgress",
    "succeeded": "Succeed",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
MULTI_DEVICE_STATUS = {
    "queued": "pending",
    "running": "running",
    "succeeded": "succeed",
    "failed": "failed",
    "cancelled": "cancelled",
}
ANIMATE_STATUS = {
    "queued": "pending",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "failed",  # the backend had no cancelled status; `message` says it was cancelled
}
SOLVER_NAMES = {"unipc": "unipc", "dpmpp": "dpm++", "dpm++": "dpm++", "euler": "euler"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class ParallelOptions(_Strict):
    """The multi-GPU knobs of the Wan2.1 services. Checked against what the running workers can do."""

    vae_parallel: bool | None = None
    ulysses_size: int | None = Field(None, ge=1)
    dit_fsdp: bool | None = None
    t5_fsdp: bool | None = None
    cfg_size: int | None = Field(None, ge=1)
    use_attentioncache: bool | None = None
    start_step: int | None = Field(None, ge=0)
    attentioncache_interval: int | None = Field(None, ge=1)
    end_step: int | None = Field(None, ge=1)


class Wan21SubmitRequest(ParallelOptions):
    """POST /video/submit."""

    model: str | None = None
    prompt: str
    image_url: str
    image_size: str | None = None
    """`"1280*720"` (width*height)."""
    negative_prompt: str | None = None
    seed: int | None = None
    num_frames: int | None = None
    guidance_scale: float | None = None
    infer_steps: int | None = None
    sample_shift: float | None = None
    sample_solver: str | None = None
    loras: list[dict[str, Any]] | None = None
    """wanserve's: LoRAs for this job (`[{"name" | "path", "strength"}]`, docs/lora.md)."""


class RequestIdBody(_Strict):
    """POST /video/status and /video/cancel."""

    requestId: str = Field(min_length=1, max_length=64)  # noqa: N815 (the old services' spelling)


class Wan21Results(BaseModel):
    video_url: str
    video_path: str | None = None
    duration: float | None = None
    file_size: int | None = None


class Wan21StatusResponse(BaseModel):
    """Answer of POST /video/status."""

    status: Literal["InQueue", "InProgress", "Succeed", "Failed", "Cancelled"]
    reason: str | None = None
    results: Wan21Results | None = None
    queue_position: int | None = None
    progress: float = Field(ge=0, le=1)
    created_at: float | None = None
    updated_at: float | None = None
    parallel_plan: dict[str, Any] | None = None
    """wanserve's: the plan the job runs with and each multi-GPU field not honoured (hint mode)."""


class MultiDeviceSubmitRequest(ParallelOptions):
    """POST /submit. The service's versions took `image_url` + `infer_steps`, later `image_path` + `sample_steps`."""

    prompt: str
    image_url: str | None = None
    image_path: str | None = None
    image_size: str | None = None
    num_frames: int | None = None
    guidance_scale: float | None = None
    infer_steps: int | None = None
    sample_steps: int | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    sample_solver: str | None = None
    sample_shift: float | None = None
    loras: list[dict[str, Any]] | None = None
    """wanserve's: LoRAs for this job (docs/lora.md)."""


class MultiDeviceSubmitResponse(BaseModel):
    requestId: str  # noqa: N815
    status: str
    message: str
    estimated_time: int | None = None


class MultiDeviceResults(BaseModel):
    video_url: str
    video_path: str | None = None
    duration: float | None = None
    frames: int | None = None
    size: str | None = None
    file_size: int | None = None


class MultiDeviceStatusResponse(BaseModel):
    """Answer of GET /status/{task_id}."""

    requestId: str  # noqa: N815
    status: Literal["pending", "running", "succeed", "failed", "cancelled"]
    progress: int = Field(ge=0, le=100)
    message: str
    created_at: str
    updated_at: str
    results: MultiDeviceResults | None = None
    reason: str | None = None
    elapsed_time: int | None = None
    current_step: int | None = None
    total_steps: int | None = None
    current_stage: str | None = None
    parallel_plan: dict[str, Any] | None = None
    """wanserve's: the plan the job runs with and each multi-GPU field not honoured (hint mode)."""


class AnimateJobCreate(_Strict):
    """POST /animate/jobs."""

    src_root_path: str
    job_id: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """The client's own id for the job (letters, digits, `.`, `_`, `-`; no path separators): it is looked up again
    as `/animate/jobs/{job_id}`."""
    replace_flag: bool = False
    clip_len: int | None = None
    refert_num: int | None = None
    shift: float | None = None
    sample_solver: str | None = None
    sampling_steps: int | None = None
    guide_scale: float | None = None
    input_prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    offload_model: bool | None = None
    fps: int | None = None
    loras: list[dict[str, Any]] | None = None
    """wanserve's: LoRAs for this job (docs/lora.md)."""


class AnimateJobStatus(BaseModel):
    """Answer of POST /animate/jobs and GET /animate/jobs/{id}."""

    job_id: str
    status: Literal["pending", "running", "succeeded", "failed"]
    output_path: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class ParallelCapabilities:
    """What the workers serving these routes can do, for the Wan2.1 services' multi-GPU knobs."""

    world_size: int = 1
    """Ranks in one worker group."""
    cfg_parallel: bool = False
    attention_cache: bool = True
    """The engine's `interval` step cache (engine/fast.py) serves the NPU service's attention cache."""
    hint: bool = False
    """`WANSERVE_PARALLEL_FIELDS=hint`: run with what the workers have and report each field not honoured, instead
    of refusing the request (for clients such as the Wan2.1 I2V service's, which always send `ulysses_size: 8`)."""
    plan: dict[str, Any] | None = None
    """The group's plan (`ParallelConfig.describe()`): a request's sizes must be 1 or the plan's, its switches
    false or the plan's. None: only `world_size` and `cfg_parallel` are known."""

    @classmethod
    def of_plan(cls, config: Any, hint: bool = False) -> ParallelCapabilities:
        """What a group running `config` (a `ParallelConfig`) offers."""
        return cls(config.world_size, config.cfg_degree == 2, True, hint, config.describe())

    def offers(self) -> str:
        if self.plan is None:
            return f"{self.world_size} rank(s)"
        sizes = ", ".join(f"`{k}` {v}" for k, v in self.plan.items() if k != "world_size")
        return f"{self.world_size} rank(s) with {sizes}"


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validates `data` as `model`; the first problem becomes an `InvalidRequestError` naming its field."""
    if not isinstance(data, dict):
        raise InvalidRequestError("body", f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        if first["type"] == "extra_forbidden":
            message = f"unknown field `{field}`"
        elif first["type"] == "missing":
            message = f"`{field}` is required"
        else:
            message = f"`{field}` {first['msg'][0].lower()}{first['msg'][1:]}, got {first.get('input')!r}"
        raise InvalidRequestError(field, message) from None


def parse_star_size(value: str, field: str = "image_size") -> tuple[int, int]:
    """`"1280*720"` -> (1280, 720)."""
    parts = value.replace("x", "*").split("*") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InvalidRequestError(field, f"`{field}` must look like 1280*720 (width*height), got {value!r}")
    return int(parts[0]), int(parts[1])


PARALLEL_FIELDS = tuple(ParallelOptions.model_fields)
_CACHE_FIELDS = ("start_step", "attentioncache_interval", "end_step")


def unhonoured_parallel_options(options: ParallelOptions, capabilities: ParallelCapabilities) -> list[dict[str, Any]]:
    """Each multi-GPU option the workers cannot honour: `{field, requested, used, reason}`, in field order."""
    world = capabilities.world_size
    found: list[dict[str, Any]] = []

    def add(field: str, used: Any, reason: str) -> None:
        found.append({"field": field, "requested": getattr(options, field), "used": used, "reason": reason})

    plan = capabilities.plan
    if plan is not None:
        for field in ("ulysses_size", "cfg_size"):
            value = getattr(options, field)
            if value is not None and value not in (1, plan[field]):
                add(field, plan[field], f"`{field}` {value} does not fit this server's worker group, which offers "
                                        f"{capabilities.offers()}")  # fmt: skip
        for field in ("dit_fsdp", "t5_fsdp", "vae_parallel"):
            if getattr(options, field) and not plan[field]:
                add(field, False, f"`{field}` true does not fit this server's worker group, which offers "
                                  f"{capabilities.offers()}")  # fmt: skip
    else:
        if options.ulysses_size is not None and options.ulysses_size > world:
            add(
                "ulysses_size",
                world,
                f"`ulysses_size` {options.ulysses_size} is more than the {world} rank(s) of this server's worker group",
            )
        cfg_size = options.cfg_size or 1
        if cfg_size > 1 and (not capabilities.cfg_parallel or cfg_size > world):
            add(
                "cfg_size",
                1,
                f"`cfg_size` {cfg_size} needs CFG parallelism over {cfg_size} ranks; this server's worker group has "
                f"{world} rank(s) and {'supports' if capabilities.cfg_parallel else 'no'} CFG parallelism",
            )
        for field in ("dit_fsdp", "t5_fsdp", "vae_parallel"):
            if getattr(options, field) and world < 2:
                add(field, False, f"`{field}` true needs a worker group of 2 or more ranks; this server runs {world}")
    if options.use_attentioncache and not capabilities.attention_cache:
        add("use_attentioncache", False, "`use_attentioncache` true: no attention cache is available on this server")
        for field in _CACHE_FIELDS:
            if getattr(options, field) is not None:
                add(field, None, f"`{field}` configures the attention cache, which this server does not have")
    return found


def parallel_plan(options: ParallelOptions, capabilities: ParallelCapabilities) -> dict[str, Any] | None:
    """Checks the multi-GPU options against the workers. By default the first one that cannot be honoured is a
    422 naming it (nothing is silently ignored); in hint mode the job runs with what the workers have. Returns the
    plan the job runs with and `not_honoured` (None when the request carried no multi-GPU field)."""
    if options.use_attentioncache:
        start = options.start_step if options.start_step is not None else 0
        end = options.end_step
        if end is not None and end <= start:
            raise InvalidRequestError("end_step", f"`end_step` {end} must be after `start_step` {start}")
    unhonoured = unhonoured_parallel_options(options, capabilities)
    if unhonoured and not capabilities.hint:
        first = unhonoured[0]
        raise InvalidRequestError(first["field"], first["reason"])
    given = [f for f in PARALLEL_FIELDS if getattr(options, f) is not None]
    if not given:
        return None
    world = capabilities.world_size
    if capabilities.plan is not None:
        # The group runs its plan for every job; the fields the request gave fit it (or are reported in hint mode).
        plan: dict[str, Any] = {**capabilities.plan}
        plan["use_attentioncache"] = bool(options.use_attentioncache) and capabilities.attention_cache
        plan["not_honoured"] = unhonoured
        return plan
    plan = {
        "world_size": world,
        "ulysses_size": min(options.ulysses_size or 1, world),
        "cfg_size": 1 if any(u["field"] == "cfg_size" for u in unhonoured) else options.cfg_size or 1,
        "use_attentioncache": bool(options.use_attentioncache) and capabilities.attention_cache,
    }
    for field in ("dit_fsdp", "t5_fsdp", "vae_parallel"):
        plan[field] = bool(getattr(options, field)) and world >= 2
    plan["not_honoured"] = unhonoured
    return plan


def attention_cache_params(options: ParallelOptions) -> dict[str, Any]:
    """The Wan2.1 NPU service's attention cache (`use_attentioncache`, `start_step`, `attentioncache_interval`,
    `end_step`) as the engine's `interval` step cache: inside [start_step, end_step) the blocks run every
    `attentioncache_interval` steps and reuse the last residual in between. Empty when it is not asked for."""
    if not options.use_attentioncache:
        return {}
    params: dict[str, Any] = {"step_cache": "interval"}
    for name, field in (("start_step", "step_cache_start"), ("end_step", "step_cache_end"),
                        ("attentioncache_interval", "step_cache_interval")):  # fmt: skip
        if getattr(options, name) is not None:
            params[field] = getattr(options, name)
    return params


def solver_name(value: str | None, field: str = "sample_solver") -> str | None:
    """The old services' solver names (`unipc`, `dpmpp`, `euler`) as wanserve's."""
    if value is None:
        return None
    try:
        return SOLVER_NAMES[value.lower()]
    except (KeyError, AttributeError):
        raise InvalidRequestError(field, f"`{field}` must be one of unipc, dpmpp, euler, got {value!r}") from None
