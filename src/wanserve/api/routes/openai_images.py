"""OpenAI-compatible images API: `POST /v1/images/generations` (text-to-image with the Wan T2V models).

OpenAI's images API answers with the image, so this route submits a `t2i` job (one frame, as Wan2.1's `t2i-14B`),
follows its event log until it ends and returns the PNG (base64) or a URL to it. The job is an ordinary job: it is
listed under `/v1/jobs`, keeps its PNG until retention, and goes on if the client disconnects. Errors use OpenAI's
shape; the mapping of fields is in `api/schemas/openai_images.py`.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ConfigDict, create_model

from wanserve.api.deps import JobServiceDep, SettingsDep, SubmitterDep
from wanserve.api.openapi import json_body
from wanserve.api.reads import run_read
from wanserve.api.routes.openai import OpenAIRoute, read_fields
from wanserve.api.schemas.openai_images import (
    PASS_THROUGH_FIELDS,
    ImageData,
    ImagesResponse,
    image_params,
    is_openai_image_model_name,
)
from wanserve.engine.registry import get_spec
from wanserve.engine.requests import TaskKind
from wanserve.errors import GenerationCancelled, InvalidRequestError, JobFailedError
from wanserve.jobs.service import JobService, JobSubmission

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


def _image_model(requested: object, service: JobService) -> str:
    """The served model the request means: its own name, or the first served model that does t2i."""
    if isinstance(requested, str) and requested and not is_openai_image_model_name(requested):
        return requested
    if requested not in (None, "") and not isinstance(requested, str):
        raise InvalidRequestError("model", f"`model` must be a string, got {requested!r}")
    for name in service.config.served_models:
        if TaskKind.T2I in get_spec(name).tasks:
            return name
    served = ", ".join(service.config.served_models)
    raise InvalidRequestError("model", f"no served model does text-to-image (t2i); this server serves {served}")


ImageCreate = create_model(
    "ImageCreate",
    __config__=ConfigDict(extra="forbid"),
    __doc__="POST /v1/images/generations (JSON or a form with the same fields).",
    prompt=(str, ...),
    model=(str | None, None),
    n=(int | None, None),
    size=(str | None, None),
    response_format=(str | None, None),
    output_format=(str | None, None),
    **{name: (Any, None) for name in sorted(PASS_THROUGH_FIELDS)},
)


@router.post("/images/generations", response_model=ImagesResponse, openapi_extra=json_body(ImageCreate))
async def create_image(
    request: Request, response: Response, service: JobServiceDep, settings: SettingsDep, owner: SubmitterDep
) -> ImagesResponse:
    """Generate an image (OpenAI `client.images.generate`); answers when the image is ready."""
    # 1. Map the request onto a t2i job and submit it
    fields = await read_fields(request)
    params, response_format = image_params(fields)
    submission = JobSubmission(
        params=params,
        model=_image_model(fields.get("model"), service),
        idempotency_key=request.headers.get("idempotency-key") or None,
        owner_key=owner or "",
    )
    try:
        view, _created = await run_in_threadpool(service.create_job, submission)
    except InvalidRequestError as exc:
        raise _in_openai_terms(exc, fields.get("size")) from None
    response.headers["x-wanserve-job-id"] = view.id
    if view.random_weights:
        response.headers["x-wanserve-random-weights"] = "true"

    # 2. Follow the job's event log until it ends (no polling: the log wakes this stream)
    async for _event in service.stream_events(view.id, 0, owner):
        pass
    view = await run_read(service.get_job, view.id, owner)
    if view.status == "cancelled":
        raise GenerationCancelled(f"image job {view.id} was cancelled")
    if view.status != "succeeded":
        raise JobFailedError(f"image job {view.id} {view.status}: {view.error_type}: {view.error_message}")

    # 3. The PNG as base64, or where to fetch it
    content = await run_in_threadpool(service.content, view.id, "video", owner)
    if response_format == "url":
        url = service.storage.url(content.key) if settings.storage_redirect else None
        data = ImageData(url=url or str(request.url_for("get_content", job_id=view.id)))
    else:
        png = await run_in_threadpool(_read_all, service, content.key)
        data = ImageData(b64_json=base64.b64encode(png).decode("ascii"))
    size = f"{view.params['width']}x{view.params['height']}"
    return ImagesResponse(created=int(view.created_at.timestamp()), data=[data], size=size)


def _in_openai_terms(exc: InvalidRequestError, size: object) -> InvalidRequestError:
    """A refused `width` / `height` is the request's `size`."""
    if exc.field not in ("width", "height"):
        return exc
    renamed = InvalidRequestError("size", f"`size` {size!r} is not allowed: {exc}")
    renamed.http_status = exc.http_status
    return renamed


def _read_all(service: JobService, key: str) -> bytes:
    with service.storage.open(key) as source:
        return source.read()
