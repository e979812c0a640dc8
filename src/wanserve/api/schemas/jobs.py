"""Schemas of the native job API: `JobCreate` (request), `JobPublic`, `JobsPublic{data, count}`, `JobDeleted`,
`HealthPublic`. Field names follow diffusers (`num_frames`, `num_inference_steps`, `guidance_scale`, ...)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, create_model

from wanserve.engine.parameters import PARAMETERS, Parameter
from wanserve.jobs.views import JobView

_JSON_TYPES: dict[str, Any] = {
    "text": str,
    "int": int,
    "float": float,
    "bool": bool,
    "choice": str,
    "media": str,
    "media_list": list[str],
    "lora_list": list[dict[str, Any]],
    "object": dict[str, Any] | Json[dict[str, Any]],  # a JSON object; in a multipart form, its JSON text
}


def _description(param: Parameter) -> str:
    applies = f" Tasks: {param.task_names}." if param.tasks else ""
    models = " Two-expert models only." if param.two_expert_only else ""
    choices = f" One of: {', '.join(param.choices)}." if param.choices else ""
    return f"{param.help}{choices}{applies}{models}"


class _JobCreateBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model name; default: the first served model.")
    webhook_url: str | None = Field(None, description="POSTed the job when it reaches a final status.")

    def generation_params(self) -> dict[str, Any]:
        """The fields given, minus `model` and `webhook_url`."""
        return self.model_dump(exclude_none=True, exclude={"model", "webhook_url"})


# The generation fields come from the parameter table (engine/parameters.py), so the API cannot miss one.
JobCreate = create_model(
    "JobCreate",
    __base__=_JobCreateBase,
    __doc__="A new job. Omitted fields take the model's official defaults (shown in the job's `params`); a field "
    "the task does not use is refused.",
    **{p.name: (_JSON_TYPES[p.type] | None, Field(None, description=_description(p))) for p in PARAMETERS},
)


def multipart_schema() -> dict[str, Any]:
    """The OpenAPI schema of a multipart `POST /v1/jobs`: every JobCreate field as a form field, media fields as
    file uploads (`reference_images` repeatable)."""
    kinds = {
        "int": {"type": "integer"},
        "float": {"type": "number"},
        "bool": {"type": "boolean"},
        "media": {"type": "string", "format": "binary"},
    }
    properties: dict[str, Any] = {"model": {"type": "string"}}
    for param in PARAMETERS:
        if param.type == "media_list":
            schema: dict[str, Any] = {"type": "array", "items": {"type": "string", "format": "binary"}}
        elif param.type == "lora_list":
            schema = {"type": "string", "contentMediaType": "application/json"}
        else:
            schema = dict(kinds.get(param.type, {"type": "string"}))
        if param.choices:
            schema["enum"] = list(param.choices)
        properties[param.name] = {**schema, "description": _description(param)}
    properties["webhook_url"] = {"type": "string"}
    return {
        "type": "object",
        "description": "The JobCreate fields as form fields; media fields may be file uploads.",
        "properties": properties,
    }


class JobError(BaseModel):
    type: str
    message: str | None


class JobPublic(BaseModel):
    """A job."""

    id: str
    object: Literal["job"] = "job"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
    kind: str
    model: str
    stage: str | None
    step: int
    steps: int
    progress: float = Field(description="0..1")
    segment: int = Field(0, description="Animate: the segment of the last step (1-based); 0 before the first.")
    segments: int = Field(1, description="Animate: segments the pose video is denoised in, one after the other.")
    queue_position: int | None = Field(description="1 = next to run; null unless queued.")
    eta_s: float | None = Field(description="Estimated seconds to finish, from measured step times.")
    params: dict[str, Any] = Field(description="Parameters as resolved, defaults filled in.")
    error: JobError | None
    random_weights: bool = Field(description="True when the model has random weights (tiny models): noise output.")
    attempts: int
    webhook_url: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None = Field(description="When the outputs are deleted.")
    content_url: str | None = Field(description="The MP4 (the PNG of a t2i job), once succeeded.")
    thumbnail_url: str | None
    partial_url: str | None = Field(
        None, description="An upscale that failed or was cancelled: the MP4 of the frames it finished."
    )
    parallel_plan: dict[str, Any] | None = Field(
        None,
        description="Set when the request carried multi-GPU fields: the plan the job runs with and `not_honoured`, "
        "each field the server could not honour (only with `WANSERVE_PARALLEL_FIELDS=hint`; else they are refused).",
    )

    @classmethod
    def from_view(cls, view: JobView) -> JobPublic:
        base = f"/v1/jobs/{view.id}/content"
        return cls(
            id=view.id,
            status=view.status,
            kind=view.kind,
            model=view.model,
            stage=view.stage,
            step=view.step,
            steps=view.steps,
            progress=view.progress,
            segment=view.segment,
            segments=view.segments,
            queue_position=view.queue_position,
            eta_s=view.eta_s,
            params=view.params,
            error=JobError(type=view.error_type, message=view.error_message) if view.error_type else None,
            random_weights=view.random_weights,
            attempts=view.attempts,
            webhook_url=view.webhook_url,
            created_at=view.created_at,
            started_at=view.started_at,
            finished_at=view.finished_at,
            expires_at=view.expires_at,
            content_url=base if view.has_output else None,
            thumbnail_url=f"{base}?variant=thumbnail" if view.has_output else None,
            partial_url=f"{base}?variant=partial" if (view.outputs or {}).get("partial_key") else None,
            parallel_plan=view.parallel_plan,
        )


class JobsPublic(BaseModel):
    """A page of jobs, newest first, and how many match in all."""

    data: list[JobPublic]
    count: int


class JobDeleted(BaseModel):
    id: str
    object: Literal["job"] = "job"
    deleted: bool = True


class ModelHealth(BaseModel):
    name: str
    loaded: bool = Field(description="A ready worker has it loaded and warm.")
    random_weights: bool
    unavailable_reason: str | None = Field(None, description="Why no worker can load it (its jobs get a 503).")


class HealthConfig(BaseModel):
    """The Wan2.1 I2V service's `config` block."""

    device_type: str
    device_count: int
    t5_cpu: bool
    max_concurrent: int | None


class HealthPublic(BaseModel):
    """Service status: 200 when jobs can run, 503 while starting or when no worker can serve."""

    status: Literal["healthy", "starting", "unhealthy"] = Field(
        description="`healthy` once jobs can run (the Wan2.1 I2V service's word), `starting`, or `unhealthy`."
    )
    ready: bool
    phase: Literal["starting", "ready", "degraded", "unavailable", "storage_full"] = Field(
        description="`degraded`: some models cannot be served (see `models[].unavailable_reason`); `storage_full`: "
        "the disk holding job files or the database is (nearly) full, new jobs fail with `storage_full`."
    )
    detail: str
    version: str
    random_weights: bool = Field(description="True when any served model has random weights.")
    models: list[ModelHealth]
    devices: list[str]
    rank: int
    world_size: int
    pipeline_rank: int
    pipeline_world_size: int = Field(description="Ranks in one worker group.")
    plan: dict[str, Any] = Field(
        default_factory=dict,
        description="How one job spreads over the group's ranks: `world_size`, `ulysses_size`, `ring_size`, "
        "`cfg_size`, `dit_fsdp`, `t5_fsdp`, `vae_parallel`.",
    )
    total_tasks: int = Field(description="Jobs in the store, any status.")
    queue_depth: int
    running_jobs: int
    workers: list[dict[str, Any]]
    errors: list[str]
    config: HealthConfig
    memory: dict[str, Any] = Field(
        description="`process_rss_bytes`, `system_total_bytes`, `system_available_bytes`, and per CUDA device "
        "`devices[{device, allocated_bytes, reserved_bytes, total_bytes}]`."
    )
    uptime: float = Field(description="Seconds since this process started.")
    timestamp: float = Field(description="Unix seconds.")
