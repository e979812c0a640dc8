"""`Runtime`: what one `wanserve serve` process runs (built by `wanserve.bootstrap.build_runtime`).

`start()` recovers jobs left running by dead processes of this host and starts the workers (each loads and warms its
models, then takes jobs); `stop()` shuts them down; `health()` is what `/health` reports.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as DBEngine

from wanserve import __version__
from wanserve.config import Settings
from wanserve.dispatch.base import Dispatcher
from wanserve.engine.registry import get_spec
from wanserve.jobs.service import JobService
from wanserve.jobs.serving import ServingStatus, WorkersElsewhere
from wanserve.jobs.workers import WorkerRegistry
from wanserve.storage.base import Storage
from wanserve.worker.identity import owner_is_dead
from wanserve.worker.pool import WorkerPool
from wanserve.worker.sweeper import Sweeper

logger = logging.getLogger(__name__)

MIN_FREE_BYTES = 64 * 1024 * 1024
"""Below this much free space where job files or the SQLite database live, `/health` says `storage_full`."""


@dataclass
class Runtime:
    """Everything one server process runs."""

    settings: Settings
    db: DBEngine
    service: JobService
    storage: Storage
    dispatcher: Dispatcher
    models: list[str]
    tiny_fallback: bool
    devices: list[str]
    pool: WorkerPool | None = None
    registry: WorkerRegistry | None = None
    """The `workers` table: every worker of the deployment (`GET /v1/workers`, `/metrics`)."""
    sweeper: Sweeper | None = None
    serving: ServingStatus = field(default_factory=WorkersElsewhere)
    """What the workers can serve now (`/health`, and refusing jobs for models no worker can load)."""
    started_monotonic: float = field(default_factory=time.monotonic)
    extras: dict[str, Any] = field(default_factory=dict)
    """Room for other components (metrics, webhook outbox, event push) to hang their objects; those with a
    `start()` are started by `start`, those with a `close()` closed by `stop`."""

    @property
    def random_weights(self) -> bool:
        """True when any served model has random weights."""
        return any(get_spec(m).random_weights for m in self.models)

    def start(self) -> None:
        """Recovers jobs of dead processes, then starts the extras (event push, webhook outbox), the sweeper and
        the workers."""
        recovered = self.service.release_lost_jobs(owner_is_dead=owner_is_dead)
        if recovered:
            logger.warning("recovered %d jobs left running by a stopped process", len(recovered))
        for extra in self.extras.values():
            start = getattr(extra, "start", None)
            if callable(start):
                start()
        if self.sweeper is not None:
            self.sweeper.start()
        if self.pool is not None:
            self.pool.start()

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        self.dispatcher.close()
        for name, extra in self.extras.items():
            close = getattr(extra, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    logger.exception("closing %s failed", name)
        self.db.dispose()

    def memory(self) -> dict[str, Any]:
        """This process's memory, the host's, and the accelerator memory of the workers' devices (CUDA only)."""
        return _memory_of(self.devices)

    def storage_problem(self) -> str | None:
        """Why jobs cannot be stored now (a local directory of the database, inputs or outputs has less than
        `MIN_FREE_BYTES` free), or None."""
        directories = list(getattr(self.storage, "directories", {}).values())
        if self.db.dialect.name == "sqlite" and self.db.url.database not in (None, "", ":memory:"):
            directories.append(Path(self.db.url.database).parent)
        for directory in directories:
            try:
                free = shutil.disk_usage(directory).free
            except OSError:
                continue  # not created yet: nothing written there so far
            if free < MIN_FREE_BYTES:
                return (
                    f"storage full: {free // (1024 * 1024)} MiB free where job files or the database are kept "
                    f"(at least {MIN_FREE_BYTES // (1024 * 1024)} MiB needed)"
                )
        return None

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
        plan = self.settings.parallel_config().describe()
        legacy_status = {"ready": "healthy", "degraded": "healthy", "starting": "starting"}
        ready, phase, detail = state.ready, state.phase, state.detail
        storage = self.storage_problem()
        if storage is not None:
            ready, phase, detail = False, "storage_full", storage
            errors.append(storage)
        return {
            "status": legacy_status.get(phase, "unhealthy"),
            "ready": ready,
            "phase": phase,
            "detail": detail,
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
            # This process is rank 0 of its group: it serves the API, claims the jobs and writes the results.
            "rank": 0,
            "world_size": plan["world_size"],
            "pipeline_rank": 0,
            "pipeline_world_size": plan["world_size"],
            "plan": plan,
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
            "memory": self.memory(),
            "uptime": round(time.monotonic() - self.started_monotonic, 3),
            "timestamp": time.time(),
        }


def _memory_of(devices: list[str]) -> dict[str, Any]:
    import psutil

    from wanserve.worker.device_memory import device_memory

    system = psutil.virtual_memory()
    return {
        "process_rss_bytes": psutil.Process().memory_info().rss,
        "system_total_bytes": system.total,
        "system_available_bytes": system.available,
        "devices": [
            {"device": d, "allocated_bytes": a, "reserved_bytes": r, "total_bytes": t}
            for d, a, r, t in device_memory(devices)
        ],
    }
