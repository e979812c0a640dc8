"""App extensions for the compatibility and safety parts: OpenAI and legacy routes, Prometheus metrics, webhooks.

`create_app` calls each `install_*` with the app and its runtime (see `api.app.EXTENSIONS`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import FastAPI

from wanserve import __version__
from wanserve.api.metrics import DeviceMemory, ServiceMetrics, WorkerGauges, metrics_router
from wanserve.api.routes import legacy_animate, legacy_wan21_i2v, legacy_wan21_multi, openai, openai_images
from wanserve.api.schemas.jobs import JobPublic
from wanserve.api.schemas.legacy import ParallelCapabilities
from wanserve.jobs.model import Job
from wanserve.jobs.outbox import WebhookOutbox
from wanserve.jobs.views import JobView, make_view
from wanserve.jobs.webhooks import WebhookConfig, WebhookPoster
from wanserve.worker.device_memory import device_memory
from wanserve.worker.identity import owner_id, owner_is_dead

if TYPE_CHECKING:
    from wanserve.worker.runtime import Runtime

logger = logging.getLogger(__name__)

_MODEL_CACHE_SIZE = 1024


def install_compat_routes(app: FastAPI, runtime: Runtime) -> None:
    """OpenAI's `/v1/videos` and `/v1/images/generations`, and the replaced services' routes."""
    # The Wan2.1 services' multi-GPU knobs are checked against the worker group's plan (no attention cache): what
    # does not fit is refused by name, or reported as not honoured in hint mode.
    hint = runtime.settings.parallel_fields == "hint"
    app.state.parallel_capabilities = ParallelCapabilities.of_plan(runtime.settings.parallel_config(), hint=hint)
    app.include_router(openai.router)
    app.include_router(openai_images.router)
    app.include_router(legacy_wan21_i2v.router)
    app.include_router(legacy_wan21_multi.router)
    app.include_router(legacy_animate.router)


def install_metrics(app: FastAPI, runtime: Runtime) -> None:
    """`/metrics`, fed by the job service's listeners and read from its store at scrape time."""
    service = runtime.service
    metrics = ServiceMetrics(
        job_counts=service.queue_stats,
        queue_depth=lambda: service.queue_stats().get("queued", 0),
        devices=lambda: [DeviceMemory(*stats) for stats in device_memory(runtime.devices)],
        workers=lambda: [
            WorkerGauges(w.id, w.host, w.state, w.heartbeat_age_s, w.jobs_done)
            for w in (runtime.registry.list() if runtime.registry is not None else [])
        ],
    )
    models: OrderedDict[str, str] = OrderedDict()  # job id -> model, for labelling step times (workers' threads)
    lock = threading.Lock()

    def remember(job_id: str, model: str) -> None:
        with lock:
            models[job_id] = model
            while len(models) > _MODEL_CACHE_SIZE:
                models.popitem(last=False)

    def model_of(job_id: str) -> str:
        with lock:
            model = models.get(job_id)
        if model is None:
            model = service.store.get(job_id).model
            remember(job_id, model)
        return model

    def created(view: JobView) -> None:
        remember(view.id, view.model)
        metrics.job_submitted(view.model, view.kind)

    def steps(job_id: str, step_times_s: Sequence[float]) -> None:
        model = model_of(job_id)
        for step_time_s in step_times_s:
            metrics.step_observed(model, step_time_s)

    def finished(view: JobView) -> None:
        with lock:
            models.pop(view.id, None)
        total_s = (view.finished_at - view.created_at).total_seconds() if view.finished_at else None
        run_s = (view.finished_at - view.started_at).total_seconds() if view.finished_at and view.started_at else None
        metrics.job_finished(view.model, view.status, total_s, run_s)

    service.add_created_listener(created)
    service.add_step_listener(steps)
    service.add_final_listener(finished)
    runtime.extras["metrics"] = metrics
    app.include_router(metrics_router(metrics))


def install_webhooks(app: FastAPI, runtime: Runtime) -> None:
    """Delivers the webhook outbox of every finished job that has a `webhook_url`, signed (see `jobs.outbox`)."""
    settings = runtime.settings
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    poster = WebhookPoster(
        WebhookConfig(
            secret=secret,
            max_attempts=settings.webhook_max_attempts,
            initial_backoff_s=settings.webhook_backoff_s,
            allow_private_addresses=settings.allow_private_urls,
        ),
        user_agent=f"wanserve/{__version__}",
    )

    def payload(job: Job) -> dict:
        return JobPublic.from_view(make_view(job)).model_dump(mode="json")

    outbox = WebhookOutbox(runtime.service.store, poster, payload, owner_id("webhooks"), owner_is_dead)
    runtime.service.add_final_listener(lambda view: outbox.wake() if view.webhook_url else None)
    runtime.extras["webhooks"] = outbox


COMPAT_EXTENSIONS = (install_compat_routes, install_metrics, install_webhooks)
