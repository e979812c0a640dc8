"""What the routes of the replaced services share: their error shape, job ids, model choice, result fields."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from wanserve.api.errors import ShapedErrorRoute, retry_after_headers
from wanserve.api.schemas.legacy import ParallelCapabilities, solver_name
from wanserve.engine.registry import CATALOG, get_spec
from wanserve.engine.requests import TaskKind
from wanserve.errors import InvalidRequestError, JobNotFoundError, WanserveError, redact_paths
from wanserve.jobs.service import JobService

logger = logging.getLogger(__name__)

_ERROR_CODES = {
    422: "VALIDATION_ERROR",
    413: "PAYLOAD_TOO_LARGE",
    404: "NOT_FOUND",
    409: "CONFLICT",
    429: "BUSY",
    503: "SERVICE_UNAVAILABLE",
}


def legacy_error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
    """The old services' error bodies in one: FastAPI's `detail` plus their `error` / `message` pair."""
    message = redact_paths(message)
    body: dict[str, Any] = {"detail": message, "error": _ERROR_CODES.get(status, "ERROR"), "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(status_code=status, content=body, headers=headers)


class LegacyRoute(ShapedErrorRoute):
    """Turns every error raised while handling a request into the old services' error shape."""

    def error_response(self, exc) -> Response:
        if isinstance(exc, WanserveError):
            return legacy_error(exc.http_status, str(exc), getattr(exc, "field", None), retry_after_headers(exc))
        if isinstance(exc, RequestValidationError):
            first = exc.errors()[0] if exc.errors() else {}
            field = str(first.get("loc", ("", ""))[-1]) or None
            return legacy_error(422, f"`{field}` {first.get('msg', 'is invalid')}", field)
        return legacy_error(exc.status_code, str(exc.detail), None, exc.headers)


def copy_given(body: Any, renames: tuple[tuple[str, str], ...], params: dict[str, Any]) -> dict[str, Any]:
    """Copies the fields of `body` that were given into `params` under wanserve's names, and `sample_solver` as
    `solver`."""
    for name, target in renames:
        value = getattr(body, name)
        if value is not None:
            params[target] = value
    solver = solver_name(body.sample_solver)
    if solver is not None:
        params["solver"] = solver
    return params


def capabilities(request: Request) -> ParallelCapabilities:
    """What the workers behind this app can do (one rank, no CFG parallelism, no attention cache unless set)."""
    return getattr(request.app.state, "parallel_capabilities", None) or ParallelCapabilities()


def public_id(job_id: str) -> str:
    """The old services' 32-hex request id for a job id (a UUID)."""
    return uuid.UUID(job_id).hex


def job_id_of(request_id: str) -> str:
    """A job id from a 32-hex request id or a UUID. Unknown shapes are a 404, as for an unknown id."""
    try:
        return str(uuid.UUID(request_id.strip()))
    except (ValueError, AttributeError):
        raise JobNotFoundError(f"task {request_id!r} not found") from None


def choose_model(service: JobService, requested: str | None, task: TaskKind) -> str:
    """The served model for a legacy request: the one it names (official names such as `Wan2.1-I2V-14B-720P` are
    accepted; a tiny stand-in serves for its real counterpart), else the first served model that does `task`."""
    served = service.config.served_models
    if requested:
        name = requested.strip().lower()
        if name in served:
            return name
        for candidate in served:
            if get_spec(candidate).real_counterpart == name:
                return candidate
        known = name in CATALOG
        raise InvalidRequestError(
            "model",
            f"`model` {requested!r} is {'not served here' if known else 'not a known model'}; "
            f"served: {', '.join(served)}",
        )
    for candidate in served:
        if task in get_spec(candidate).tasks:
            return candidate
    raise InvalidRequestError("model", f"no model served here does {task.value}; served: {', '.join(served)}")


def video_url(job_id: str) -> str:
    """Where the old services' clients download a result: `/videos/<request id>.mp4`."""
    return f"/videos/{public_id(job_id)}.mp4"


def output_facts(view: Any) -> dict[str, Any]:
    """Result facts of a succeeded job: its storage key (in the old `video_path` field: clients never see a server
    path), size in bytes, frames, fps, duration in seconds."""
    outputs = view.outputs or {}
    path = outputs.get("video_key")
    size = outputs.get("video_bytes")
    frames = outputs.get("num_frames")
    fps = outputs.get("fps")
    return {
        "video_path": path,
        "file_size": size,
        "frames": frames,
        "fps": fps,
        "width": outputs.get("width"),
        "height": outputs.get("height"),
        "duration": round(frames / fps, 3) if frames and fps else None,
    }


def legacy_status(view: Any) -> str:
    """The job's status, with `expired` told as the status it finished with."""
    if view.status == "expired":
        return "succeeded" if view.error_type is None else "failed"
    return view.status


def last_change(view: Any) -> datetime:
    """When the job last changed status."""
    return view.finished_at or view.started_at or view.created_at
