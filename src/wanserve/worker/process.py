"""`WorkerProcess`: one `wanserve worker` process. It serves no HTTP: it reaches the job database (and the broker,
when one is configured) and the storage, runs one worker per GPU set, registers them and heartbeats, and sweeps
expired leases like every other process. SIGTERM or SIGINT stops it after the running jobs finish."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass

from sqlalchemy import Engine as DBEngine

from wanserve.dispatch.base import Dispatcher
from wanserve.jobs.service import JobService
from wanserve.worker.identity import owner_is_dead
from wanserve.worker.pool import WorkerPool
from wanserve.worker.sweeper import Sweeper

logger = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    """What `wanserve.bootstrap.build_worker_process` assembles."""

    db: DBEngine
    service: JobService
    dispatcher: Dispatcher
    pool: WorkerPool
    sweeper: Sweeper
    stop_timeout_s: float = 60.0

    def run(self, stop: threading.Event | None = None) -> None:
        """Recovers jobs of dead processes on this host, starts the workers, and blocks until `stop` is set (or a
        SIGTERM/SIGINT arrives)."""
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        recovered = self.service.release_lost_jobs(owner_is_dead=owner_is_dead)
        if recovered:
            logger.warning("recovered %d jobs left running by a stopped process", len(recovered))
        self.sweeper.start()
        self.pool.start()
        try:
            stop.wait()
        finally:
            logger.info("stopping: waiting up to %.0f s for running jobs", self.stop_timeout_s)
            self.pool.stop(self.stop_timeout_s)
            self.sweeper.stop()
            self.db.dispose()
            logger.info("worker process stopped")
