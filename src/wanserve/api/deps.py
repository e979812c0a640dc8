"""FastAPI dependencies, as typed aliases: `RuntimeDep`, `JobServiceDep`, `SettingsDep`, `OwnerDep` / `CallerDep` /
`SubmitterDep` / `AdminDep` (who calls: `api.auth`), `SubmissionDep` (a `JobSubmission` from a JSON or multipart
body, owned by the caller)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from wanserve.api.auth import AdminDep, CallerDep, OwnerDep, SubmitterDep
from wanserve.api.schemas.jobs import JobCreate
from wanserve.config import Settings
from wanserve.engine.lora import parse_loras
from wanserve.engine.validation import MEDIA_FIELDS
from wanserve.errors import InvalidRequestError, PayloadTooLargeError
from wanserve.jobs.service import JobService, JobSubmission
from wanserve.worker.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_job_service(request: Request) -> JobService:
    return request.app.state.runtime.service


def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


# The dependencies are coroutines: FastAPI runs a plain-function dependency in the thread pool, and a thread hop
# per dependency costs more than a status poll's database read.
async def _runtime(request: Request) -> Runtime:
    return get_runtime(request)


async def _job_service(request: Request) -> JobService:
    return get_job_service(request)


async def _settings(request: Request) -> Settings:
    return get_settings(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
JobServiceDep = Annotated[JobService, Depends(_job_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _raise_validation(exc: ValidationError) -> None:
    from wanserve.api.errors import validation_message

    field, message = validation_message(list(exc.errors()))
    raise InvalidRequestError(field, message) from None


async def read_submission(
    request: Request,
    settings: SettingsDep,
    owner: SubmitterDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobSubmission:
    """A `JobSubmission` from `application/json` or `multipart/form-data` (files for media fields)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    inputs: dict[str, object] = {}
    if content_type == "application/json":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestError("body", f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("body", f"the request body must be a JSON object, got {type(body).__name__}")
    elif content_type == "multipart/form-data":
        form = await request.form(max_files=16, max_fields=64, max_part_size=1024 * 1024)
        body = {}
        for name in set(form.keys()):
            values = form.getlist(name)
            files = [v for v in values if isinstance(v, UploadFile)]
            if files:
                if name not in MEDIA_FIELDS:
                    raise InvalidRequestError(
                        name, f"`{name}` is not a media field; files go in: {', '.join(MEDIA_FIELDS)}"
                    )
                data = []
                for upload in files:
                    if upload.size is not None and upload.size > settings.max_upload_bytes:
                        raise PayloadTooLargeError(
                            name,
                            f"`{name}` is {upload.size} bytes, more than the limit of {settings.max_upload_bytes} bytes",
                        )
                    data.append(await upload.read())
                inputs[name] = data if name == "reference_images" else data[0]
                if name != "reference_images" and len(data) > 1:
                    raise InvalidRequestError(name, f"`{name}` takes one file, got {len(data)}")
            else:
                body[name] = values if name == "reference_images" else values[-1]
        if isinstance(body.get("loras"), str):  # a JSON list in one form field
            body["loras"] = [ref.as_dict() for ref in parse_loras(body["loras"])]
    else:
        raise HTTPException(415, f"Content-Type must be application/json or multipart/form-data, got {content_type!r}")
    try:
        create = JobCreate.model_validate(body)
    except ValidationError as exc:
        _raise_validation(exc)
    return JobSubmission(
        params=create.generation_params(),
        model=create.model,
        inputs=inputs,
        webhook_url=create.webhook_url,
        idempotency_key=idempotency_key,
        owner_key=owner,
    )


SubmissionDep = Annotated[JobSubmission, Depends(read_submission)]

__all__ = [
    "AdminDep",
    "CallerDep",
    "JobServiceDep",
    "OwnerDep",
    "RuntimeDep",
    "SettingsDep",
    "SubmissionDep",
    "SubmitterDep",
]
