"""`Sweeper`: the periodic upkeep every process runs, with or without workers: jobs whose lease expired go back to
the queue (or fail after their last attempt), results past retention expire, and the dispatcher re-sends the
messages of queued jobs that may have been lost. Each change is a guarded statement, so two sweepers never apply it
twice (a re-sent message at most arrives twice, and the lease makes the second one a no-op)."""

from __future__ import annotations

import logging
import threading

from wanserve.dispatch.base import Dispatcher
from wanserve.jobs.service import JobService

logger = logging.getLogger(__name__)


class Sweeper:
    """A thread that sweeps every `interval_s`."""

    def __init__(self, service: JobService, interval_s: float, dispatcher: Dispatcher | None = None) -> None:
        self.service, self.interval_s, self.dispatcher = service, interval_s, dispatcher
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
        if self.dispatcher is not None:
            steps.append(self.dispatcher.sweep)
        for step in steps:
            try:
                step()
            except Exception:
                logger.exception("sweep step %s failed; retrying in %.0f s", step.__name__, self.interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
