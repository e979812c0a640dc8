"""The FastAPI application: `create_app(settings)`.

The runtime (database, `JobService`, workers) is built when the app is created; the lifespan starts the workers and
stops them at shutdown. Routes reach it through `api.deps` (`JobServiceDep`, `RuntimeDep`, `SettingsDep`).

To add routes or hooks, append to `ROUTERS` (plain `APIRouter`s) or `EXTENSIONS` (functions called with the app and
the runtime at creation, for routers that need runtime objects or listeners on `runtime.service`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from wanserve import __version__
from wanserve.api.auth import AuthMiddleware, check_open_service
from wanserve.api.errors import install_error_handlers
from wanserve.api.extensions import COMPAT_EXTENSIONS
from wanserve.api.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from wanserve.api.openapi import finish_openapi
from wanserve.api.routes import health, jobs, models, web, workers
from wanserve.api.schemas.jobs import JobCreate
from wanserve.bootstrap import EngineFactory, build_key_ring, build_runtime
from wanserve.config import Settings
from wanserve.worker.runtime import Runtime

logger = logging.getLogger(__name__)

ROUTERS: list[APIRouter] = [health.router, jobs.router, models.router, web.router, workers.router]
"""Routers every app includes."""

Extension = Callable[[FastAPI, Runtime], None]
EXTENSIONS: list[Extension] = [*COMPAT_EXTENSIONS]
"""Called as `extension(app, runtime)` by `create_app`, in order."""


def _description(runtime: Runtime) -> str:
    text = "Generate videos with the Wan models through a job API: submit a job, follow it, download the MP4."
    if runtime.random_weights:
        text += (
            "\n\n**This server runs models with RANDOM weights** "
            f"({', '.join(runtime.models)}): outputs are noise. Configure real weights to serve real models."
        )
    return text


def create_app(
    settings: Settings | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    start_workers: bool = True,
    runtime: Runtime | None = None,
) -> FastAPI:
    """The wanserve app. `start_workers=False` serves the API only (jobs queue; another process runs them)."""
    settings = settings or Settings()
    runtime = runtime or build_runtime(settings, engine_factory=engine_factory, start_workers=start_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    # `/docs` and `/redoc` load Swagger UI and ReDoc from files the fastapi-offline package ships (served under
    # /static-offline-docs), not from a CDN: they work on a host without internet access.
    app = FastAPIOffline(title="wanserve", version=__version__, description=_description(runtime), lifespan=lifespan)
    app.state.runtime = runtime
    install_error_handlers(app)
    # Middleware added last runs first: CORS answers preflights, then the key is checked, then the body size.
    app.add_middleware(BodyLimitMiddleware, max_body_size=settings.max_request_bytes)
    app.state.keys = keys = build_key_ring(settings, runtime.db)
    check_open_service(settings.host, settings.allow_open, keys)
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app.add_middleware(AuthMiddleware, keys=keys, metrics_token=metrics_token)
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    for router in ROUTERS:
        app.include_router(router)
    web.mount_static(app)
    for extension in EXTENSIONS:
        extension(app, runtime)
    finish_openapi(app, (JobCreate,))
    return app
