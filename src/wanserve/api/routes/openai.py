"""OpenAI-compatible videos API: `/v1/videos` (create, list, retrieve, content, delete).

A client written for OpenAI's videos API (the official `openai` package included) works unchanged against these
routes. Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`. The mapping of fields and
statuses is in `api/schemas/openai.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, create_model
from starlette.datastructures import UploadFile

from wanserve.api.content import content_response
from wanserve.api.deps import JobServiceDep, OwnerDep, SettingsDep, SubmitterDep
from wanserve.api.errors import ShapedErrorRoute, retry_after_headers
from wanserve.api.openapi import json_body
from wanserve.api.reads import run_read
from wanserve.api.schemas.openai import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    OpenAIError,
    OpenAIErrorDetail,
    VideoDeleted,
    VideoList,
    VideoObject,
    is_openai_model_name,
    openai_error_type,
    parse_size,
    seconds_to_frames,
    video_object,
)
from wanserve.engine.registry import get_spec
from wanserve.errors import InvalidRequestError, WanserveError, redact_paths
from wanserve.jobs.service import JobSubmission

logger = logging.getLogger(__name__)

# Native parameters an OpenAI client may add (through `extra_body`); OpenAI's own fields map onto the rest.
PASS_THROUGH_FIELDS = frozenset(
    {
        "negative_prompt",
        "seed",
        "num_inference_steps",
        "guidance_scale",
        "guidance_scale_2",
        "boundary_ratio",
        "flow_shift",
        "solver",
        "fps",
        "crf",
        "max_sequence_length",
        "loras",
    }
)
OPENAI_FIELDS = frozenset({"model", "prompt", "seconds", "size", "input_reference", "webhook_url"})
VideoCreate = create_model(
    "VideoCreate",
    __config__=ConfigDict(extra="forbid"),
    __doc__="POST /v1/videos (JSON; the same fields as a multipart form, `input_reference` as a file).",
    prompt=(str, ...),
    model=(str | None, None),
    seconds=(str | None, None),
    size=(str | None, None),
    input_reference=(str | dict[str, str] | None, None),
    webhook_url=(str | None, None),
    **{name: (Any, None) for name in sorted(PASS_THROUGH_FIELDS)},
)
_VIDEO_FORM = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        **{name: {"type": "string"} for name in sorted(OPENAI_FIELDS | PASS_THROUGH_FIELDS)},
        "input_reference": {"type": "string", "format": "binary"},
    },
}
_RENAMED = {"image": "input_reference", "num_frames": "seconds", "width": "size", "height": "size"}


def openai_error_response(status: int, message: str, param: str | None, code: str | None) -> JSONResponse:
    """A JSON response in OpenAI's error shape."""
    message = redact_paths(message)
    body = OpenAIError(error=OpenAIErrorDetail(message=message, type=openai_error_type(status), param=param, code=code))
    return JSONResponse(status_code=status, content=body.model_dump())


class OpenAIRoute(ShapedErrorRoute):
    """Turns every error raised while handling a request into OpenAI's error shape."""

    def error_response(self, exc) -> Response:
        if isinstance(exc, WanserveError):
            response = openai_error_response(exc.http_status, str(exc), getattr(exc, "field", None), exc.error_type)
            response.headers.update(retry_after_headers(exc) or {})
            return response
        if isinstance(exc, RequestValidationError):
            first = exc.errors()[0] if exc.errors() else {}
            param = str(first.get("loc", ("", ""))[-1]) or None
            message = f"`{param}` {first.get('msg', 'is invalid')}, got {first.get('input')!r}"
            return openai_error_response(400, message, param, "invalid_value")
        response = openai_error_response(
            exc.status_code, str(exc.detail), None, "not_found" if exc.status_code == 404 else None
        )
        response.headers.update(exc.headers or {})
        return response


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


async def read_fields(request: Request) -> dict[str, Any]:
    """The create request's fields from a JSON body or a multipart / urlencoded form."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as exc:
            raise InvalidRequestError("body", f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("body", f"the request body must be a JSON object, got {type(body).__name__}")
        return body
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        fields: dict[str, Any] = {}
        loras: list[dict[str, Any]] = []
        for key, value in form.multi_items():
            # The `openai` client writes a list of objects as repeated `loras[][name]=...`, `loras[][strength]=...`
            # parts: a key seen again in the current item starts the next item.
            if key.startswith("loras[][") and key.endswith("]"):
                name = key[len("loras[][") : -1]
                if not loras or name in loras[-1]:
                    loras.append({})
                loras[-1][name] = value
                continue
            if key in fields:
                raise InvalidRequestError(key, f"`{key}` is given more than once")
            fields[key] = value
        # Nested objects arrive as `input_reference[image_url]=...` in forms.
        nested = {k: fields.pop(k) for k in list(fields) if k.startswith("input_reference[")}
        if nested:
            if "input_reference" in fields:
                raise InvalidRequestError("input_reference", "`input_reference` is given twice (file and object)")
            fields["input_reference"] = {k[len("input_reference[") : -1]: v for k, v in nested.items()}
        if loras:
            if "loras" in fields:
                raise InvalidRequestError("loras", "`loras` is given twice (JSON and form items)")
            fields["loras"] = loras
        return fields
    raise InvalidRequestError(
        "body", f"send JSON or multipart/form-data, got content type {content_type or '(none)'!r}"
    )


async def _reference_input(value: Any) -> bytes | str:
    """`input_reference` as bytes (an uploaded file) or a URL (data: or http(s), fetched by the job service)."""
    if isinstance(value, UploadFile):
        return await value.read()
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"image_url", "file_id"})
        if unknown:
            raise InvalidRequestError(f"input_reference.{unknown[0]}", f"unknown field `input_reference.{unknown[0]}`")
        if "file_id" in value:
            raise InvalidRequestError(
                "input_reference.file_id",
                "`input_reference.file_id` is not supported: upload the file or give image_url",
            )
        if isinstance(value.get("image_url"), str):
            return value["image_url"]
    raise InvalidRequestError("input_reference", f"`input_reference` must be a file or {{image_url}}, got {value!r}")


def _renamed_error(exc: InvalidRequestError, size: str | None) -> InvalidRequestError:
    """Errors about native fields, told in OpenAI's terms (`image` -> `input_reference`, `width` -> `size`)."""
    target = _RENAMED.get(exc.field)
    if target is None:
        return exc
    if target == "size":
        message = f"`size` {size!r} is not allowed: {exc}"
    else:
        message = str(exc).replace(f"`{exc.field}`", f"`{target}`")
    renamed = InvalidRequestError(target, message)
    renamed.http_status = exc.http_status
    return renamed


def build_submission(
    fields: dict[str, Any], reference: bytes | str | None, default_model: str, owner: str
) -> JobSubmission:
    """Maps an OpenAI create request onto a job submission (see `api/schemas/openai.py` for the rules)."""
    unknown = sorted(set(fields) - OPENAI_FIELDS - PASS_THROUGH_FIELDS)
    if unknown:
        raise InvalidRequestError(unknown[0], f"unknown field(s): {', '.join(f'`{u}`' for u in unknown)}")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError("prompt", f"`prompt` is required and must be a non-empty string, got {prompt!r}")
    model = fields.get("model") or default_model
    if not isinstance(model, str):
        raise InvalidRequestError("model", f"`model` must be a string, got {model!r}")
    if is_openai_model_name(model):
        model = default_model
    spec = get_spec(model)
    # An empty form field is "not given", except an empty negative prompt: that asks for none (not the default).
    params: dict[str, Any] = {
        k: fields[k]
        for k in PASS_THROUGH_FIELDS
        if fields.get(k) is not None and (fields[k] != "" or k == "negative_prompt")
    }
    params["prompt"] = prompt
    if fields.get("seconds") not in (None, ""):
        fps = spec.fps
        if "fps" in params:
            try:
                fps = int(params["fps"])
            except (TypeError, ValueError):
                raise InvalidRequestError("fps", f"`fps` must be an integer, got {params['fps']!r}") from None
        params["num_frames"] = seconds_to_frames(spec if fps == spec.fps else _with_fps(spec, fps), fields["seconds"])
    if fields.get("size") not in (None, ""):
        params["width"], params["height"] = parse_size(fields["size"])
    inputs = {"image": reference} if reference not in (None, b"", "") else {}
    return JobSubmission(
        params=params, model=model, inputs=inputs, webhook_url=fields.get("webhook_url") or None, owner_key=owner
    )


def _with_fps(spec, fps: int):
    import dataclasses

    return dataclasses.replace(spec, fps=max(1, fps))


@router.post("/videos", response_model=VideoObject, openapi_extra=json_body(VideoCreate, form=_VIDEO_FORM))
async def create_video(request: Request, service: JobServiceDep, owner: SubmitterDep) -> VideoObject:
    """Create a video job (OpenAI `client.videos.create`)."""
    fields = await read_fields(request)
    reference = None
    if fields.get("input_reference") not in (None, ""):
        reference = await _reference_input(fields["input_reference"])
    try:
        submission = build_submission(fields, reference, service.config.served_models[0], owner or "")
        submission = JobSubmission(
            params=submission.params,
            model=submission.model,
            inputs=submission.inputs,
            webhook_url=submission.webhook_url,
            idempotency_key=request.headers.get("idempotency-key") or None,
            owner_key=submission.owner_key,
        )
        view, _created = await run_in_threadpool(service.create_job, submission)
    except InvalidRequestError as exc:
        raise _renamed_error(exc, fields.get("size")) from None
    return video_object(view)


@router.get("/videos", response_model=VideoList)
async def list_videos(
    service: JobServiceDep,
    owner: OwnerDep,
    after: str | None = Query(None, max_length=64),
    limit: int = Query(DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT),
    order: str = Query("desc", pattern="^(asc|desc)$"),
) -> VideoList:
    """List video jobs (OpenAI `client.videos.list`), cursor-paged by `after`."""
    views, has_more = await run_read(service.list_jobs_after, after, limit, order == "asc", owner)
    data = [video_object(view) for view in views]
    return VideoList(
        data=data, has_more=has_more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.get("/videos/{video_id}", response_model=VideoObject)
async def retrieve_video(video_id: str, service: JobServiceDep, owner: OwnerDep) -> VideoObject:
    """One video job (OpenAI `client.videos.retrieve`)."""
    view = await run_read(service.get_job, video_id, owner)
    return video_object(view)


@router.get("/videos/{video_id}/content")
async def download_video_content(
    request: Request,
    video_id: str,
    service: JobServiceDep,
    settings: SettingsDep,
    owner: OwnerDep,
    variant: str = Query("video", max_length=32),
) -> Response:
    """The MP4 (`variant=video`) or the JPEG thumbnail (`variant=thumbnail`) of a completed video."""
    content = await run_in_threadpool(service.content, video_id, variant, owner)
    return content_response(request, service, content, f"{video_id}{content.suffix}", settings.storage_redirect)


@router.delete("/videos/{video_id}", response_model=VideoDeleted)
async def delete_video(video_id: str, service: JobServiceDep, owner: OwnerDep) -> VideoDeleted:
    """Delete a video job and its files (OpenAI `client.videos.delete`). A running job must be cancelled first."""
    await run_in_threadpool(service.delete_job, video_id, owner)
    return VideoDeleted(id=video_id)
