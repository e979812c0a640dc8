"""One mapping from errors to HTTP responses. Body shape (OpenAI-style, plus FastAPI's `detail`):

    {"error": {"type": "invalid_request", "message": "`num_frames` must be 4k+1, got 80", "param": "num_frames",
               "code": "invalid_request"}, "detail": "<same message>"}

`WanserveError` subclasses carry their status (`422`, `404`, `409`, `413`, `429` + `Retry-After`, ...). Request
validation errors name the field; unknown fields are refused by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from wanserve.errors import InvalidRequestError, WanserveError, is_storage_full, redact_paths

logger = logging.getLogger(__name__)


class ShapedErrorRoute(APIRoute):
    """A route whose errors take another API's shape (OpenAI's, the replaced services'): subclasses say how in
    `error_response`, for the project's errors, request validation errors and HTTP exceptions alike."""

    def error_response(self, exc: WanserveError | RequestValidationError | HTTPException) -> Response:
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (WanserveError, RequestValidationError, HTTPException) as exc:
                return self.error_response(exc)

        return handle


def retry_after_headers(exc: WanserveError) -> dict[str, str] | None:
    """`Retry-After` for a full queue or a used-up key quota."""
    retry_after_s = getattr(exc, "retry_after_s", None)
    return {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None


def error_response(status: int, error_type: str, message: str, param: str | None = None, headers=None) -> JSONResponse:
    """The JSON error body every wanserve route returns (absolute server paths cut from the message)."""
    message = redact_paths(message)
    body = {"error": {"type": error_type, "message": message, "param": param, "code": error_type}, "detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """(field, message) for pydantic errors: the first error, named by its field."""
    first = errors[0]
    field = _field_of(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        unknown = [_field_of(tuple(e.get("loc", ()))) for e in errors if e.get("type") == "extra_forbidden"]
        return field, f"unknown field(s): {', '.join(f'`{u}`' for u in unknown)}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f", got {value!r}"[:120]
    return field, f"`{field}`: {first.get('msg', 'invalid value')}{shown}"


async def _wanserve_error(request: Request, exc: WanserveError) -> JSONResponse:
    headers = retry_after_headers(exc)
    param = exc.field if isinstance(exc, InvalidRequestError) else None
    if exc.http_status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(exc.http_status, exc.error_type, str(exc), param, headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    field, message = validation_message(list(exc.errors()))
    return error_response(422, "invalid_request", message, field)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    error_type = {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }
    return error_response(
        exc.status_code, error_type.get(exc.status_code, "http_error"), str(exc.detail), None, exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Any other exception: the JSON shape (507 when the disk is full), never a plain-text 500."""
    if is_storage_full(exc):
        logger.error("%s %s: storage full: %s", request.method, request.url.path, exc)
        return error_response(507, "storage_full", "the server's storage is full; retry later or ask the operator")
    logger.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "internal_error", "an unexpected error happened; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers on `app`."""
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(WanserveError, _wanserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
