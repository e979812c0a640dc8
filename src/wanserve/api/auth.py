"""Who may call: `AuthMiddleware` checks the bearer key of every request (but `/health/live` and the web page's
static files) and leaves the `Caller` in the request's state; `CallerDep`, `OwnerDep` and `SubmitterDep` hand it to
routes.

- No key exists (and no `WANSERVE_API_KEY`): the service is open (`OPEN_CALLER`, sees everything). `check_open_service`
  allows that only on a loopback address or with `--allow-open`.
- Once a key exists every request needs `Authorization: Bearer <key>` (the form the OpenAI client sends).
- `/metrics`: an admin key, or `WANSERVE_METRICS_TOKEN`. `/admin/...`: an admin key.
- Submissions: a key's `rate_per_min` and `max_running` are enforced by `SubmitterDep` (429 with `Retry-After`).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from wanserve.api.errors import error_response
from wanserve.errors import WanserveError
from wanserve.jobs.keys import OPEN_CALLER, RATE_WINDOW_S, Caller, KeyRing
from wanserve.jobs.model import utcnow

PUBLIC_PATHS = frozenset({"/health/live", "/", "/favicon.ico"})
"""Paths anyone may read: the liveness probe, and the web page (it holds no data and asks for the key)."""
PUBLIC_PREFIXES = ("/web/",)
METRICS_PATH = "/metrics"
ADMIN_PREFIX = "/admin/"
CREATE_KEY_HINT = "create one with `wanserve keys create --name NAME` (add `--admin` for an operator key)"


class QuotaExceededError(WanserveError):
    """A key's submission rate or concurrent-job quota is used up."""

    http_status = 429
    error_type = "rate_limited"

    def __init__(self, message: str, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(message)


def is_loopback(host: str) -> bool:
    """Whether `host` (a listening address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_open_service(host: str, allow_open: bool, keys: KeyRing) -> None:
    """Refuses (ValueError) to serve without keys on a non-loopback address unless `allow_open`."""
    if keys.keys_required() or allow_open or is_loopback(host):
        return
    raise ValueError(
        f"no API key exists and the server would listen on {host}, reachable from other machines: {CREATE_KEY_HINT}, "
        "or start with `--allow-open` (WANSERVE_ALLOW_OPEN=1) to serve without keys"
    )


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class AuthMiddleware:
    """Checks the key of every request (pure ASGI, so streaming responses pass untouched)."""

    def __init__(self, app: ASGIApp, keys: KeyRing, metrics_token: str | None = None):
        self.app = app
        self.keys = keys
        self.metrics_token = metrics_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        token = _bearer(scope["headers"])
        metrics_token = path == METRICS_PATH and token and self.metrics_token
        if metrics_token and hmac.compare_digest(token.encode(), metrics_token.encode()):
            await self.app(scope, receive, send)
            return
        caller = await self._caller(token)
        if caller is None:
            message = (
                "a valid `Authorization: Bearer <API key>` header is required"
                if token is None
                else "the API key in `Authorization: Bearer` is not valid (unknown, revoked or empty)"
            )
            response = error_response(401, "unauthorized", message, "Authorization", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if not caller.admin and (path == METRICS_PATH or path.startswith(ADMIN_PREFIX)):
            response = error_response(403, "forbidden", f"`{path}` needs an admin key", "Authorization")
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    async def _caller(self, token: str | None) -> Caller | None:
        # Both reads are cached by the key ring; only a cache miss goes to the thread pool (off the event loop).
        required = self.keys.keys_required_cached()
        if required is None:
            required = await run_in_threadpool(self.keys.keys_required)
        if not required:
            return OPEN_CALLER
        if not token:
            return None
        caller = self.keys.caller_cached(token)
        if caller is False:
            caller = await run_in_threadpool(self.keys.caller, token)
        return caller


async def get_caller(request: Request) -> Caller:
    """The caller `AuthMiddleware` found (the open caller where no middleware runs, as in bare unit apps)."""
    return getattr(request.state, "caller", OPEN_CALLER)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_owner(caller: CallerDep) -> str | None:
    """The owner filter of the caller's reads: its key id, or None for an admin (every job)."""
    return caller.owner_filter


OwnerDep = Annotated[str | None, Depends(get_owner)]


async def check_submission(request: Request, caller: CallerDep) -> str:
    """The owner of a job the caller submits (its key id), after its rate limit and quota. 429 with
    `Retry-After` when either is used up."""
    if caller.rate_per_min is None and caller.max_running is None:
        return caller.key_id
    keys: KeyRing = request.app.state.keys
    recent, unfinished, oldest = await run_in_threadpool(keys.store.usage, caller.key_id)
    if caller.max_running is not None and unfinished >= caller.max_running:
        raise QuotaExceededError(
            f"API key {caller.key_id!r} has {unfinished} jobs queued or running, its limit (`max_running`) is "
            f"{caller.max_running}; wait for one to finish",
            5,
        )
    if caller.rate_per_min is not None and recent >= caller.rate_per_min:
        wait_s = RATE_WINDOW_S - ((utcnow() - oldest).total_seconds() if oldest is not None else 0.0)
        raise QuotaExceededError(
            f"API key {caller.key_id!r} made {recent} jobs in the last minute, its limit (`rate_per_min`) is "
            f"{caller.rate_per_min}",
            max(1, math.ceil(wait_s)),
        )
    return caller.key_id


SubmitterDep = Annotated[str, Depends(check_submission)]
"""The owner key of a new job (rate limit and quota checked)."""


async def require_admin(caller: CallerDep) -> Caller:
    """403 unless the caller is an admin (or the service is open)."""
    if not caller.admin:
        from fastapi import HTTPException

        raise HTTPException(403, "this route needs an admin key")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
