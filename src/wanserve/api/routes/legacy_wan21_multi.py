"""The Wan2.1 multi-device (NPU/GPU) service's API: `POST /submit`, `GET /status/{task_id}`,
`POST /cancel/{task_id}`.

Its versions took the input image as `image_url` (fetched with the URL safety rules) or as `image_path`, a file on
the server: that is read only from under `legacy_input_dir` (confined, symlinks resolved), and refused when no such
directory is configured. Steps are `infer_steps` or `sample_steps`. Results are served at `/videos/<id>.mp4`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from wanserve.api.deps import JobServiceDep, OwnerDep, SubmitterDep, get_settings
from wanserve.api.openapi import json_body
from wanserve.api.reads import run_read
from wanserve.api.routes.legacy_common import (
    LegacyRoute,
    capabilities,
    choose_model,
    job_id_of,
    last_change,
    legacy_status,
    output_facts,
    public_id,
    video_url,
)
from wanserve.api.routes.legacy_wan21_i2v import WAN21_NAMES, i2v_params, read_json, rename_native_error
from wanserve.api.schemas.legacy import (
    MULTI_DEVICE_STATUS,
    MultiDeviceResults,
    MultiDeviceStatusResponse,
    MultiDeviceSubmitRequest,
    MultiDeviceSubmitResponse,
    attention_cache_params,
    parallel_plan,
    parse_body,
)
from wanserve.engine.requests import TaskKind
from wanserve.errors import InvalidRequestError, JobStateError, PayloadTooLargeError
from wanserve.jobs.service import JobSubmission
from wanserve.media.paths import confine_existing_file

logger = logging.getLogger(__name__)

router = APIRouter(tags=["legacy: Wan2.1 multi-device service"], route_class=LegacyRoute)


def read_confined_file(path: str, root: Path | None, field: str, max_bytes: int) -> bytes:
    """The bytes of a server-side file named by a client, only from under `root`."""
    if root is None:
        raise InvalidRequestError(
            field,
            f"`{field}` (a file on the server) is not accepted: this server has no input directory for it "
            "(WANSERVE_LEGACY_INPUT_DIR); send `image_url` instead",
        )
    real = confine_existing_file(path, root, field)
    size = real.stat().st_size
    if size > max_bytes:
        raise PayloadTooLargeError(field, f"`{field}` is {size} bytes, more than the limit of {max_bytes} bytes")
    return real.read_bytes()


def _submission_inputs(request: Request, body: MultiDeviceSubmitRequest) -> dict[str, Any]:
    if (body.image_url is None) == (body.image_path is None):
        raise InvalidRequestError("image_url", "give exactly one of `image_url` and `image_path`")
    if body.image_url is not None:
        return {"image": body.image_url}
    settings = get_settings(request)
    root = settings.legacy_input_dir
    return {"image": read_confined_file(body.image_path, root, "image_path", settings.max_upload_bytes)}


@router.post("/submit", response_model=MultiDeviceSubmitResponse, openapi_extra=json_body(MultiDeviceSubmitRequest))
async def submit(request: Request, service: JobServiceDep, owner: SubmitterDep) -> MultiDeviceSubmitResponse:
    """Queue an image-to-video job."""
    body = parse_body(MultiDeviceSubmitRequest, await read_json(request))
    plan = parallel_plan(body, capabilities(request))
    model = choose_model(service, None, TaskKind.I2V)
    params = i2v_params(body)
    if body.infer_steps is not None and body.sample_steps is not None and body.infer_steps != body.sample_steps:
        raise InvalidRequestError(
            "sample_steps", f"`infer_steps` {body.infer_steps} and `sample_steps` {body.sample_steps} disagree"
        )
    steps = body.sample_steps if body.sample_steps is not None else body.infer_steps
    if steps is not None:
        params["num_inference_steps"] = steps
    params.update(attention_cache_params(body))
    inputs = await run_in_threadpool(_submission_inputs, request, body)
    submission = JobSubmission(params=params, model=model, inputs=inputs, owner_key=owner or "", parallel_plan=plan)
    names = {**WAN21_NAMES, "num_inference_steps": "sample_steps" if body.sample_steps is not None else "infer_steps"}
    if body.image_path is not None:
        names["image"] = "image_path"
    try:
        view, _ = await run_in_threadpool(service.create_job, submission)
    except Exception as exc:  # noqa: BLE001 - renamed and re-raised
        raise rename_native_error(exc, names) from None
    return MultiDeviceSubmitResponse(
        requestId=public_id(view.id),
        status="pending",
        message="task submitted",
        estimated_time=round(view.eta_s) if view.eta_s is not None else None,
    )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def multi_device_status(view: Any) -> MultiDeviceStatusResponse:
    """A job in the multi-device service's status shape."""
    status = legacy_status(view)
    percent = 100 if status == "succeeded" else int(min(1.0, max(0.0, view.progress)) * 100)
    results = None
    if status == "succeeded":
        facts = output_facts(view)
        size = f"{facts['width']}*{facts['height']}" if facts["width"] else None
        results = MultiDeviceResults(
            video_url=video_url(view.id),
            video_path=facts["video_path"],
            duration=facts["duration"],
            frames=facts["frames"],
            size=size,
            file_size=facts["file_size"],
        )
    messages = {
        "queued": f"queued (position {view.queue_position})" if view.queue_position else "queued",
        "running": f"{view.stage or 'starting'} ({percent}%)",
        "succeeded": "completed",
        "failed": view.error_message or "failed",
        "cancelled": view.error_message or "cancelled",
    }
    # Every stage event carries the step counts, so a finished job still reports n of n.
    total_steps = view.steps or None
    current_step = view.step
    elapsed = None
    if view.started_at is not None:
        end = view.finished_at or datetime.now(timezone.utc)
        elapsed = int((end - view.started_at).total_seconds())
    return MultiDeviceStatusResponse(
        requestId=public_id(view.id),
        status=MULTI_DEVICE_STATUS[status],
        progress=percent,
        message=messages[status],
        created_at=_iso(view.created_at),
        updated_at=_iso(last_change(view)),
        results=results,
        reason=view.error_message if status in ("failed", "cancelled") else None,
        elapsed_time=elapsed,
        current_step=current_step,
        total_steps=total_steps,
        current_stage=view.stage,
        parallel_plan=view.parallel_plan,
    )


@router.get("/status/{task_id}", response_model=MultiDeviceStatusResponse)
async def status(request: Request, service: JobServiceDep, owner: OwnerDep, task_id: str) -> MultiDeviceStatusResponse:
    """Status of a job."""
    view = await run_read(service.get_job, job_id_of(task_id), owner)
    return multi_device_status(view)


@router.post("/cancel/{task_id}")
async def cancel(request: Request, service: JobServiceDep, owner: OwnerDep, task_id: str) -> dict[str, str]:
    """Cancel a job; 400 when it already finished (as the service did)."""
    try:
        await run_in_threadpool(service.cancel_job, job_id_of(task_id), owner)
    except JobStateError as exc:
        error = JobStateError(f"Task already finished: {exc}")
        error.http_status = 400
        raise error from None
    return {"message": f"Task {task_id} cancelled successfully"}
