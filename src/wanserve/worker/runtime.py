"""`Runtime`: what one `wanserve serve` process runs (built by `wanserve.bootstrap.build_runtime`).

`start()` recovers jobs left running by dead processes of this host and starts the workers (each loads and warms its
models, then takes jobs); `stop()` shuts them down; `health()` is what `/health` reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine as DBEngine

from wanserve import __version__
from wanserve.config import Settings
from wanserve.dispatch.base import Dispatcher
from wanserve.engine.registry import get_spec
from wanserve.jobs.service import JobService
from wanserve.storage.local import LocalStorage
from wanserve.worker.identity import owner_is_dead
from wanserve.worker.pool import WorkerPool

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything one server process runs."""

    settings: Settings
    db: DBEngine
    service: JobService
    storage: LocalStorage
    dispatcher: Dispatcher
    models: list[str]
    tiny_fallback: bool
    devices: list[str]
    pool: WorkerPool | None = None
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
        """What `/health` reports."""
        counts = self.service.queue_stats()
        workers = self.pool.status() if self.pool is not None else []
        ready = bool(workers) and all(w.ready for w in workers)
        random = {m: self.pool.is_random(m) if self.pool else get_spec(m).random_weights for m in self.models}
        errors = [w.load_error for w in workers if w.load_error]
        status = "error" if errors else "ok" if ready else "starting"
        return {
            "status": status,
            "version": __version__,
            "random_weights": any(random.values()),
            "models": [{"name": m, "loaded": ready, "random_weights": random[m]} for m in self.models],
            "devices": self.devices,
            "rank": 0,
            "world_size": 1,
            "queue_depth": counts.get("queued", 0),
            "running_jobs": counts.get("running", 0),
            "workers": [w.__dict__ for w in workers],
            "errors": errors,
        }
