"""The native job API under `/v1/jobs`: create, list, get, cancel, delete, content, events (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from wanserve.api.content import content_response
from wanserve.api.deps import JobServiceDep, OwnerDep, SettingsDep, SubmissionDep
from wanserve.api.reads import run_read
from wanserve.api.schemas.jobs import JobCreate, JobDeleted, JobPublic, JobsPublic, multipart_schema
from wanserve.errors import InvalidRequestError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {"schema": multipart_schema()},
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    openapi_extra=_CREATE_BODY,
    responses={200: {"model": JobPublic, "description": "The job made earlier with this `Idempotency-Key`."}},
)
def create_job(submission: SubmissionDep, service: JobServiceDep, response: Response) -> JobPublic:
    """Queues a generation job (JSON, or multipart with file uploads). `Idempotency-Key`: same key, same job."""
    view, created = service.create_job(submission)
    if not created:
        response.status_code = 200
    return JobPublic.from_view(view)


@router.get("", response_model=JobsPublic)
async def list_jobs(
    service: JobServiceDep,
    owner: OwnerDep,
    status: str | None = None,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobsPublic:
    """Jobs newest first, optionally filtered by status and model."""
    page = await run_read(service.list_jobs, status, model, limit, offset, owner)
    return JobsPublic(data=[JobPublic.from_view(v) for v in page.data], count=page.count)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, service: JobServiceDep, owner: OwnerDep) -> JobPublic:
    """A job: status, stage, step, progress, queue position, ETA, parameters, error."""
    # A coroutine with one hop to the thread pool: a plain function would cost FastAPI two (call and serialize).
    return JobPublic.from_view(await run_read(service.get_job, job_id, owner))


@router.post("/{job_id}/cancel", response_model=JobPublic)
async def cancel_job(job_id: str, service: JobServiceDep, owner: OwnerDep) -> JobPublic:
    """Queued: cancelled at once. Running: stops at the next denoising step. Finished: 409."""
    return JobPublic.from_view(await run_in_threadpool(service.cancel_job, job_id, owner))


@router.delete("/{job_id}", response_model=JobDeleted)
def delete_job(job_id: str, service: JobServiceDep, owner: OwnerDep) -> JobDeleted:
    """Deletes a job that is not running, with its files. Running: 409 (cancel it first)."""
    service.delete_job(job_id, owner)
    return JobDeleted(id=job_id)


@router.get(
    "/{job_id}/content",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}, "image/png": {}, "image/jpeg": {}}},
        206: {"description": "The byte range asked for with `Range`."},
        307: {"description": "Redirect to a presigned storage URL (`WANSERVE_STORAGE_REDIRECT`)."},
    },
)
def get_content(
    request: Request,
    job_id: str,
    service: JobServiceDep,
    settings: SettingsDep,
    owner: OwnerDep,
    variant: Literal["video", "thumbnail", "partial"] = "video",
) -> Response:
    """The MP4 of a succeeded job (the PNG of a t2i job), its JPEG thumbnail with `?variant=thumbnail`, or with
    `?variant=partial` the `<id>_partial.mp4` an upscale left when it failed or was cancelled. Range requests work."""
    content = service.content(job_id, variant, owner)
    name = f"{job_id}_partial.mp4" if variant == "partial" else f"{job_id}{content.suffix}"
    return content_response(request, service, content, name, settings.storage_redirect)


async def _existing_job(job_id: str, service: JobServiceDep, owner: OwnerDep) -> str:
    await run_read(service.get_job, job_id, owner)  # 404 before the stream starts
    return job_id


MAX_EVENT_ID = 2**31 - 1
"""Event numbers fit a signed 32-bit column; a larger `Last-Event-ID` is no event this server wrote."""


async def _last_event_id(last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> int:
    """The event number to resume after: 0 without the header; 422 for anything but an ASCII number in range."""
    if last_event_id is None or last_event_id.strip() == "":
        return 0
    value = last_event_id.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= MAX_EVENT_ID):
        raise InvalidRequestError(
            "Last-Event-ID", f"`Last-Event-ID` must be an event number (0 to {MAX_EVENT_ID}), got {value[:40]!r}"
        )
    return int(value)


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def stream_events(
    job_id: Annotated[str, Depends(_existing_job)],
    service: JobServiceDep,
    owner: OwnerDep,
    after: Annotated[int, Depends(_last_event_id)],
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: every status, stage and step change in order (`event:` status|stage|step, `id:` its
    number), ending with the final status. Reconnect with `Last-Event-ID` to resume."""
    async for event in service.stream_events(job_id, after, owner):
        yield ServerSentEvent(event=event.kind, id=str(event.seq), data=event.data)


__all__ = ["router", "JobCreate"]
