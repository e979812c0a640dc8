"""The Wan2.2-Animate backend's API: `POST /animate/jobs`, `GET /animate/jobs/{id}`, `GET /animate/jobs/{id}/media`.

A job names a directory prepared by the Animate preprocessing (`src_root_path`). A relative path is taken from the
server's working directory, as the backend took it; the directory must lie under the configured
`animate_jobs_root` (confined: no `..`, symlinks resolved) and hold `src_ref.png`, `src_pose.mp4`, `src_face.mp4`,
and for `replace_flag` also `src_bg.mp4` and `src_mask.mp4`; each file's bytes must be what its name says.

Field mapping: `input_prompt` -> prompt, `sampling_steps` -> num_inference_steps, `guide_scale` -> guidance_scale,
`shift` -> flow_shift, `sample_solver` -> solver, `replace_flag` -> animate_mode `replace`, `refert_num` (1 or 5)
and `clip_len` (the segment length, 4k+1; default the model's) as they are. The output is as long as the pose video
and of its size, as the official code makes it; the driving videos must agree (frame counts, frame rate, sizes).
`offload_model` is a deployment setting, refused per job. `job_id` becomes the job's idempotency key: a second job with it is a 409, as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from wanserve.api.content import content_response
from wanserve.api.deps import JobServiceDep, OwnerDep, SubmitterDep, get_settings
from wanserve.api.openapi import json_body
from wanserve.api.reads import run_read
from wanserve.api.routes.legacy_common import (
    LegacyRoute,
    choose_model,
    copy_given,
    job_id_of,
    legacy_status,
    public_id,
)
from wanserve.api.routes.legacy_wan21_i2v import read_json, rename_native_error
from wanserve.api.schemas.legacy import ANIMATE_STATUS, AnimateJobCreate, AnimateJobStatus, parse_body
from wanserve.engine.requests import TaskKind
from wanserve.errors import InvalidRequestError, JobNotFoundError, JobStateError, PayloadTooLargeError
from wanserve.jobs.service import JobService, JobSubmission
from wanserve.media.animate_sources import REPLACE_REQUIRED, SOURCE_FILES, check_present, wanted_files
from wanserve.media.inputs import IMAGE_MIME_TYPES, VIDEO_MIME_TYPES, describe_bytes, sniff_media_type
from wanserve.media.paths import confine_existing_dir, confine_path

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/animate", tags=["legacy: Wan2.2-Animate backend"], route_class=LegacyRoute)

NAMES = {
    "prompt": "input_prompt",
    "num_inference_steps": "sampling_steps",
    "guidance_scale": "guide_scale",
    "flow_shift": "shift",
    "solver": "sample_solver",
    **{target: f"src_root_path/{name}" for name, (target, _) in SOURCE_FILES.items()},
}


def read_sources(src_root_path: str, jobs_root: Path, replace: bool, max_bytes: int) -> dict[str, bytes]:
    """The job directory's files as wanserve inputs, every one confined, present and of the right type."""
    directory = confine_existing_dir(src_root_path, jobs_root, "src_root_path", base=Path.cwd())
    wanted = wanted_files(replace)
    check_present(directory, replace, "src_root_path", src_root_path)
    extra = [name for name in REPLACE_REQUIRED if not replace and (directory / name).is_file()]
    if extra:
        logger.info("animate job in %s: %s present but replace_flag is false (animate mode)", directory, extra)
    inputs: dict[str, bytes] = {}
    for name in wanted:
        field = f"src_root_path/{name}"
        real = confine_path(directory / name, jobs_root, field)  # a symlink inside must not lead outside
        size = real.stat().st_size
        if size > max_bytes:
            raise PayloadTooLargeError(field, f"`{field}` is {size} bytes, more than the limit of {max_bytes} bytes")
        data = real.read_bytes()
        target, kind = SOURCE_FILES[name]
        allowed = IMAGE_MIME_TYPES if kind == "image" else VIDEO_MIME_TYPES
        if sniff_media_type(data) not in allowed:
            raise InvalidRequestError(
                field, f"`{field}` must be {'an image' if kind == 'image' else 'a video'}, got {describe_bytes(data)}"
            )
        inputs[target] = data
    return inputs


def animate_params(body: AnimateJobCreate, model: str) -> dict[str, Any]:
    """wanserve parameters of an Animate backend request (see the module docstring)."""
    if body.offload_model is not None:
        raise InvalidRequestError(
            "offload_model", "`offload_model` is a deployment setting (memory options), not a per-job parameter"
        )
    params: dict[str, Any] = {
        "prompt": body.input_prompt or "",
        "animate_mode": "replace" if body.replace_flag else "animate",
    }
    renames = (
        ("refert_num", "refert_num"),
        ("clip_len", "clip_len"),
        ("negative_prompt", "negative_prompt"),
        ("seed", "seed"),
        ("fps", "fps"),
        ("sampling_steps", "num_inference_steps"),
        ("guide_scale", "guidance_scale"),
        ("shift", "flow_shift"),
        ("loras", "loras"),
    )
    return copy_given(body, renames, params)


def _prepare(request: Request, body: AnimateJobCreate, model: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    settings = get_settings(request)
    root = settings.resolved_animate_jobs_root
    inputs = read_sources(body.src_root_path, root, body.replace_flag, settings.max_upload_bytes)
    return animate_params(body, model), inputs


def find_job(service: JobService, job_id: str, owner: str | None) -> Any:
    """A job by the id this backend showed: the client's own `job_id`, or wanserve's id."""
    try:
        return service.get_job(job_id_of(job_id), owner)
    except JobNotFoundError:
        return service.find_by_idempotency_key(job_id, owner)


def animate_status(view: Any) -> AnimateJobStatus:
    """A job in the Animate backend's status shape."""
    status = legacy_status(view)
    message = None
    if status == "cancelled":
        message = f"cancelled: {view.error_message or 'cancelled by request'}"
    elif status == "failed":
        message = view.error_message
    outputs = view.outputs or {}
    return AnimateJobStatus(
        job_id=view.idempotency_key or public_id(view.id),
        status=ANIMATE_STATUS[status],
        output_path=outputs.get("video_key") if status == "succeeded" else None,
        message=message,
        started_at=view.started_at.isoformat() if view.started_at else None,
        finished_at=view.finished_at.isoformat() if view.finished_at else None,
    )


@router.post("/jobs", response_model=AnimateJobStatus, status_code=202, openapi_extra=json_body(AnimateJobCreate))
async def create_animate_job(request: Request, service: JobServiceDep, owner: SubmitterDep) -> AnimateJobStatus:
    """Queue an Animate job from a prepared directory."""
    body = parse_body(AnimateJobCreate, await read_json(request))
    model = choose_model(service, None, TaskKind.ANIMATE)
    params, inputs = await run_in_threadpool(_prepare, request, body, model)
    submission = JobSubmission(
        params=params, model=model, inputs=inputs, idempotency_key=body.job_id, owner_key=owner or ""
    )
    try:
        view, created = await run_in_threadpool(service.create_job, submission)
    except Exception as exc:  # noqa: BLE001 - renamed and re-raised
        raise rename_native_error(exc, NAMES) from None
    if not created:
        raise JobStateError(f"job {body.job_id!r} already exists")
    return animate_status(view)


@router.get("/jobs/{job_id}", response_model=AnimateJobStatus)
async def get_animate_job(request: Request, service: JobServiceDep, owner: OwnerDep, job_id: str) -> AnimateJobStatus:
    """Status of an Animate job."""
    view = await run_read(find_job, service, job_id, owner)
    return animate_status(view)


@router.get("/jobs/{job_id}/media")
async def get_animate_media(request: Request, service: JobServiceDep, owner: OwnerDep, job_id: str) -> Response:
    """The MP4 of a succeeded Animate job; 404 until there is one (as before). Range requests work."""
    try:
        view = await run_read(find_job, service, job_id, owner)
        content = await run_in_threadpool(service.content, view.id, "video", owner)
    except JobStateError:
        raise JobNotFoundError("Output not available yet") from None
    redirect = get_settings(request).storage_redirect
    return content_response(request, service, content, f"{job_id}.mp4", redirect)
