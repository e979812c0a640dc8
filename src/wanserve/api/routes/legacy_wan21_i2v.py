"""The Wan2.1 I2V multi-GPU service's API: `/video/submit`, `/video/status`, `/video/cancel`, `/admin/cleanup`,
and `/videos/{file}` (shared with the multi-device service).

Field mapping onto wanserve parameters: `image_size` "W*H" -> width, height; `infer_steps` -> num_inference_steps;
`sample_shift` -> flow_shift; `sample_solver` (unipc, dpmpp, euler) -> solver; `image_url` -> image (fetched with the
URL safety rules). The multi-GPU knobs are checked against the running workers and refused when they cannot be
honoured (see `parallel_plan`), or with `WANSERVE_PARALLEL_FIELDS=hint` run with what the workers have; the
plan used and each field not honoured show on the job and in `/video/status` (`parallel_plan`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from wanserve.api.content import content_response
from wanserve.api.deps import AdminDep, JobServiceDep, OwnerDep, SubmitterDep, get_settings
from wanserve.api.openapi import json_body
from wanserve.api.reads import run_read
from wanserve.api.routes.legacy_common import (
    LegacyRoute,
    capabilities,
    choose_model,
    copy_given,
    job_id_of,
    last_change,
    legacy_status,
    output_facts,
    public_id,
    video_url,
)
from wanserve.api.schemas.legacy import (
    WAN21_STATUS,
    RequestIdBody,
    Wan21Results,
    Wan21StatusResponse,
    Wan21SubmitRequest,
    attention_cache_params,
    parallel_plan,
    parse_body,
    parse_star_size,
)
from wanserve.engine.requests import TaskKind
from wanserve.errors import InvalidRequestError, JobNotFoundError, JobStateError
from wanserve.jobs.service import JobSubmission

logger = logging.getLogger(__name__)

router = APIRouter(tags=["legacy: Wan2.1 I2V service"], route_class=LegacyRoute)


async def read_json(request: Request) -> Any:
    """The JSON body; a malformed one is a 422 naming `body`."""
    try:
        return await request.json()
    except ValueError as exc:
        raise InvalidRequestError("body", f"the request body is not valid JSON: {exc}") from None


def i2v_params(body: Any) -> dict[str, Any]:
    """The wanserve parameters of a Wan2.1-service request (I2V and multi-device forms alike)."""
    params: dict[str, Any] = {"prompt": body.prompt}
    if body.image_size:
        params["width"], params["height"] = parse_star_size(body.image_size)
    renames = (
        ("negative_prompt", "negative_prompt"),
        ("seed", "seed"),
        ("num_frames", "num_frames"),
        ("guidance_scale", "guidance_scale"),
        ("sample_shift", "flow_shift"),
        ("loras", "loras"),
    )
    return copy_given(body, renames, params)


def rename_native_error(exc, names: dict[str, str]):
    """An `InvalidRequestError` about a wanserve field, renamed to the legacy field the client sent (every wanserve
    field its message names is renamed too)."""
    if not isinstance(exc, InvalidRequestError) or exc.field not in names:
        return exc
    message = str(exc)
    for name, legacy in names.items():
        message = message.replace(f"`{name}`", f"`{legacy}`")
    renamed = InvalidRequestError(names[exc.field], message)
    renamed.http_status = exc.http_status
    return renamed


WAN21_NAMES = {
    "image": "image_url",
    "num_inference_steps": "infer_steps",
    "flow_shift": "sample_shift",
    "solver": "sample_solver",
    "width": "image_size",
    "height": "image_size",
    "step_cache_start": "start_step",
    "step_cache_end": "end_step",
    "step_cache_interval": "attentioncache_interval",
}


@router.post("/video/submit", status_code=202, openapi_extra=json_body(Wan21SubmitRequest))
async def submit_video(request: Request, service: JobServiceDep, owner: SubmitterDep) -> dict[str, str]:
    """Queue an image-to-video job; answers `{"requestId": ...}`."""
    body = parse_body(Wan21SubmitRequest, await read_json(request))
    plan = parallel_plan(body, capabilities(request))
    model = choose_model(service, body.model, TaskKind.I2V)
    params = i2v_params(body)
    if body.infer_steps is not None:
        params["num_inference_steps"] = body.infer_steps
    params.update(attention_cache_params(body))
    submission = JobSubmission(
        params=params, model=model, inputs={"image": body.image_url}, owner_key=owner or "", parallel_plan=plan
    )
    try:
        view, _ = await run_in_threadpool(service.create_job, submission)
    except Exception as exc:  # noqa: BLE001 - renamed and re-raised
        raise rename_native_error(exc, WAN21_NAMES) from None
    return {"requestId": public_id(view.id)}


def wan21_status(view: Any) -> Wan21StatusResponse:
    """A job in the Wan2.1 I2V service's status shape."""
    status = legacy_status(view)
    results = None
    if status == "succeeded":
        facts = output_facts(view)
        results = Wan21Results(
            video_url=video_url(view.id),
            video_path=facts["video_path"],
            duration=facts["duration"],
            file_size=facts["file_size"],
        )
    return Wan21StatusResponse(
        status=WAN21_STATUS[status],
        reason=view.error_message if status in ("failed", "cancelled") else None,
        results=results,
        queue_position=view.queue_position,
        progress=round(min(1.0, max(0.0, view.progress)), 4),
        created_at=view.created_at.timestamp(),
        updated_at=last_change(view).timestamp(),
        parallel_plan=view.parallel_plan,
    )


@router.post("/video/status", response_model=Wan21StatusResponse, openapi_extra=json_body(RequestIdBody))
async def video_status(request: Request, service: JobServiceDep, owner: OwnerDep) -> Wan21StatusResponse:
    """Status of a job by `requestId`."""
    body = parse_body(RequestIdBody, await read_json(request))
    view = await run_read(service.get_job, job_id_of(body.requestId), owner)
    return wan21_status(view)


@router.post("/video/cancel", openapi_extra=json_body(RequestIdBody))
async def video_cancel(request: Request, service: JobServiceDep, owner: OwnerDep) -> dict[str, str]:
    """Cancel a job: a queued one at once, a running one at its next denoising step."""
    body = parse_body(RequestIdBody, await read_json(request))
    try:
        view = await run_in_threadpool(service.cancel_job, job_id_of(body.requestId), owner)
    except JobStateError as exc:
        return {"status": "Already finished", "message": str(exc)}
    if view.status == "cancelled":
        return {"status": "Cancelled", "message": "task cancelled"}
    return {"status": "Cancelled", "message": "cancel requested; the task stops at its next denoising step"}


@router.post("/admin/cleanup")
async def admin_cleanup(request: Request, service: JobServiceDep, admin: AdminDep) -> dict[str, Any]:
    """Deletes the files of finished jobs past the retention period now (the server also does this on its own)."""
    expired = await run_in_threadpool(service.expire_finished_jobs)
    return {"status": "ok", "cleaned": len(expired), "requestIds": [public_id(job_id) for job_id in expired]}


@router.get("/videos/{file_name}")
async def download_video(request: Request, service: JobServiceDep, owner: OwnerDep, file_name: str):
    """`/videos/<request id>.mp4` (or `.jpg` for the thumbnail) of a succeeded job."""
    stem, dot, suffix = file_name.rpartition(".")
    variants = {"mp4": ("video", "video/mp4"), "jpg": ("thumbnail", "image/jpeg")}
    if not dot or suffix.lower() not in variants:
        return JSONResponse(status_code=404, content={"detail": "Not Found"})
    variant, _media_type = variants[suffix.lower()]
    try:
        content = await run_in_threadpool(service.content, job_id_of(stem), variant, owner)
    except (JobNotFoundError, JobStateError):
        return JSONResponse(status_code=404, content={"detail": "Not Found"})
    return content_response(request, service, content, None, get_settings(request).storage_redirect)
