"""Assembling one `wanserve serve` process: database (migrated), job service, storage, dispatcher, workers.

`build_runtime(settings)` returns a `Runtime`; `start()` recovers jobs left running by dead processes of this host
and starts the workers (each loads and warms its models, then takes jobs); `stop()` shuts them down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine as DBEngine

from wanserve import __version__
from wanserve.config import Settings
from wanserve.dispatch.embedded import EmbeddedDispatcher
from wanserve.engine.registry import get_spec, tiny_models
from wanserve.jobs.db import create_db_engine, run_migrations
from wanserve.jobs.media_inputs import MediaLimits
from wanserve.jobs.service import JobService, JobServiceConfig
from wanserve.jobs.serving import ServingStatus, WorkersElsewhere
from wanserve.jobs.store import JobStore
from wanserve.storage.local import LocalStorage
from wanserve.worker.identity import owner_id, owner_is_dead
from wanserve.worker.loop import EngineLike, Worker, WorkerConfig
from wanserve.worker.pool import WorkerPool
from wanserve.worker.status import PoolServingStatus

logger = logging.getLogger(__name__)

EngineFactory = Callable[[str, Settings], EngineLike]


def default_engine_factory(device: str, settings: Settings) -> EngineLike:
    """A real `Engine` on `device` with the configured weight locations and memory options."""
    from wanserve.engine.engine import Engine

    return Engine(settings.engine_config(device))


def served_models(settings: Settings) -> tuple[list[str], bool]:
    """(models to load, whether they are the tiny fallback because no weights are configured)."""
    if settings.ulysses_size > 1 or settings.ring_size > 1:
        raise ValueError(
            f"`ULYSSES_SIZE`={settings.ulysses_size} / `RING_SIZE`={settings.ring_size}: multi-rank worker groups "
            "are not served by `wanserve serve` yet; use 1"
        )
    if settings.models:
        for name in settings.models:
            get_spec(name)  # unknown names fail at start-up, listing the catalog
        return list(dict.fromkeys(settings.models)), False
    if not settings.weights_configured:
        return [spec.name for spec in tiny_models()], True
    raise ValueError("`WANSERVE_MODELS` (or `--model`) must name the models to serve from the configured weights")


@dataclass
class Runtime:
    """Everything one server process runs."""

    settings: Settings
    db: DBEngine
    service: JobService
    storage: LocalStorage
    dispatcher: EmbeddedDispatcher
    models: list[str]
    tiny_fallback: bool
    devices: list[str]
    pool: WorkerPool | None = None
    serving: ServingStatus = field(default_factory=WorkersElsewhere)
    """What the workers can serve now (`/health`, and refusing jobs for models no worker can load)."""
    started_monotonic: float = field(default_factory=time.monotonic)
    extras: dict[str, Any] = field(default_factory=dict)
    """Room for other components (metrics, webhook sender) to hang their objects."""

    @property
    def random_weights(self) -> bool:
        """True when any served model has random weights."""
        return any(get_spec(m).random_weights for m in self.models)

    def start(self) -> None:
        """Recovers jobs of dead processes, then starts the workers."""
        recovered = self.service.release_lost_jobs(owner_is_dead=owner_is_dead)
        if recovered:
            logger.warning("recovered %d jobs left running by a stopped process", len(recovered))
        if self.pool is not None:
            self.pool.start()

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        for name, extra in self.extras.items():
            close = getattr(extra, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    logger.exception("closing %s failed", name)
        self.db.dispose()

    def health(self) -> dict[str, Any]:
        """What `/health` reports: our fields, and the Wan2.1 I2V service's (`status: "healthy"`, `rank`,
        `total_tasks`, `pipeline_world_size`, `pipeline_rank`, `config`) so its clients keep working."""
        state = self.serving.serving_state()
        counts = self.service.queue_stats()
        workers = self.pool.status() if self.pool is not None else []
        random = {m: self.pool.is_random(m) if self.pool else get_spec(m).random_weights for m in self.models}
        loaded = {m: any(w.ready and m in w.models for w in workers) for m in self.models}
        errors = [w.load_error for w in workers if w.load_error]
        errors += [f"{m}: {e}" for w in workers for m, e in w.model_errors.items()]
        legacy_status = {"ready": "healthy", "degraded": "healthy", "starting": "starting"}
        return {
            "status": legacy_status.get(state.phase, "unhealthy"),
            "ready": state.ready,
            "phase": state.phase,
            "detail": state.detail,
            "version": __version__,
            "random_weights": any(random.values()),
            "models": [
                {
                    "name": m,
                    "loaded": loaded[m],
                    "random_weights": random[m],
                    "unavailable_reason": state.unavailable_models.get(m),
                }
                for m in self.models
            ],
            "devices": self.devices,
            "rank": 0,
            "world_size": 1,
            "pipeline_rank": 0,
            "pipeline_world_size": 1,
            "total_tasks": sum(counts.values()),
            "queue_depth": counts.get("queued", 0),
            "running_jobs": counts.get("running", 0),
            "workers": [w.__dict__ for w in workers],
            "errors": errors,
            "config": {
                "device_type": self.devices[0].split(":")[0] if self.devices else "cpu",
                "device_count": len(self.devices),
                "t5_cpu": self.settings.t5_cpu,
                "max_concurrent": len(workers) or self.settings.concurrency,
            },
            "uptime": round(time.monotonic() - self.started_monotonic, 3),
            "timestamp": time.time(),
        }


def build_runtime(
    settings: Settings,
    engine_factory: EngineFactory | None = None,
    start_workers: bool = True,
    devices: list[str] | None = None,
) -> Runtime:
    """Builds (but does not start) the runtime: migrates the database, makes the service and the workers."""
    models, tiny_fallback = served_models(settings)
    if tiny_fallback:
        logger.warning(
            "no weights configured (WANSERVE_MODELS, WANSERVE_MODELS_DIR, WANSERVE_CHECKPOINT_DIR unset): serving the tiny models, "
            "which have RANDOM weights and draw noise: %s",
            ", ".join(models),
        )
    db = create_db_engine(settings.resolved_database_url)
    run_migrations(db)
    storage = LocalStorage(settings.resolved_output_dir, settings.input_dir)
    dispatcher = EmbeddedDispatcher()
    if devices is None:
        from wanserve.worker.devices import detect_devices

        devices = detect_devices() if start_workers else ["cpu"]
    concurrency = settings.concurrency or len(devices)
    config = JobServiceConfig(
        served_models=tuple(models),
        max_queue=settings.max_queue,
        max_attempts=settings.max_attempts,
        retention_s=settings.retention_s,
        lease_s=settings.lease_s,
        concurrency=concurrency,
        media=MediaLimits(max_bytes=settings.max_upload_bytes, allow_private_urls=settings.allow_private_urls),
    )
    service = JobService(JobStore.for_engine(db), storage, config, notify_waiting=dispatcher.notify_job_waiting)
    runtime = Runtime(settings, db, service, storage, dispatcher, models, tiny_fallback, devices)
    if start_workers:
        factory = engine_factory or default_engine_factory
        workers = []
        for slot in range(concurrency):
            device = devices[slot % len(devices)]
            worker_config = WorkerConfig(
                worker_id=owner_id(slot),
                task_timeout_s=settings.task_timeout_s,
                heartbeat_s=settings.lease_s / 3,
                poll_interval_s=settings.poll_interval_s,
                hold_dir=settings.hold_dir,
                hold_step=settings.hold_step,
            )
            workers.append((Worker(service, factory(device, settings), dispatcher, worker_config, models), device))
        runtime.pool = WorkerPool(service, dispatcher, workers, settings.sweep_interval_s)
        runtime.serving = service.serving = PoolServingStatus(runtime.pool, models)
    return runtime
