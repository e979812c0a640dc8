"""`Sweeper`: returns jobs with expired leases to the queue (or fails them after their last attempt), expires
results past retention, forgets workers long gone, and has the dispatcher re-send the messages of queued jobs that
may have been lost. Every process runs one (the API alone, `wanserve worker`), so recovery does not depend on any
one of them; each change is a guarded statement, so two sweepers never apply it twice (a re-sent message at most
arrives twice, and the lease makes the second one a no-op)."""

from __future__ import annotations

import logging
import threading

from wanserve.dispatch.base import Dispatcher
from wanserve.jobs.service import JobService
from wanserve.jobs.workers import WorkerRegistry

logger = logging.getLogger(__name__)

FORGET_WORKERS_AFTER_S = 24 * 3600.0
"""Workers stopped or lost this long ago leave `GET /v1/workers`."""


class Sweeper:
    """A thread that sweeps every `interval_s`."""

    def __init__(
        self,
        service: JobService,
        interval_s: float,
        registry: WorkerRegistry | None = None,
        dispatcher: Dispatcher | None = None,
    ):
        self.service, self.interval_s, self.registry, self.dispatcher = service, interval_s, registry, dispatcher
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()

    def sweep(self) -> None:
        """One pass; a failing step is logged and retried at the next pass, the other steps still run."""
        steps = [self.service.release_lost_jobs, self.service.expire_finished_jobs]
        if self.registry is not None:
            steps.append(lambda: self.registry.prune(FORGET_WORKERS_AFTER_S))
        if self.dispatcher is not None:
            steps.append(self.dispatcher.sweep)
        for step in steps:
            try:
                step()
            except Exception:
                logger.exception("job sweep step failed; retrying in %.0f s", self.interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
