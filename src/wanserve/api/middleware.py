"""Request-level guards that run before any route: the body size limit (answered in the JSON error shape) and the
security headers of every response."""

from __future__ import annotations

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wanserve.api.errors import error_response

PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
"""Headers of the web page: its own scripts and styles only, never framed."""
COMMON_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]


class BodyLimitMiddleware:
    """Refuses request bodies over `max_body_size` bytes with a JSON 413: at once when `Content-Length` says so,
    else when the streamed body passes the limit (Starlette's limiter, whose error the app's handler shapes)."""

    def __init__(self, app: ASGIApp, max_body_size: int):
        self.max_body_size = max_body_size
        self.limited = RequestBodyLimitMiddleware(app, max_body_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_size:
                response = error_response(
                    413,
                    "payload_too_large",
                    f"the request body is {declared} bytes, more than the limit of {self.max_body_size} bytes "
                    "(`WANSERVE_MAX_REQUEST_MB`)",
                    "body",
                    {"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.limited(scope, receive, send)


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options: nosniff` on every response (downloads and errors are never sniffed as HTML)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                    headers += COMMON_SECURITY_HEADERS
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
