"""`Sweeper`: the periodic upkeep every server process runs, whether or not it has workers: jobs whose lease
expired go back to the queue (or fail after their last attempt), results past retention expire, and the dispatcher
re-sends the messages of queued jobs that may have been lost."""

from __future__ import annotations

import logging
import threading

from wanserve.dispatch.base import Dispatcher
from wanserve.jobs.service import JobService

logger = logging.getLogger(__name__)


class Sweeper:
    """Runs `sweep` every `interval_s` on a thread of its own."""

    def __init__(self, service: JobService, dispatcher: Dispatcher, interval_s: float) -> None:
        self.service, self.dispatcher, self.interval_s = service, dispatcher, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> None:
        """One round; a failing step is logged and retried next round, the others still run."""
        for step in (self.service.release_lost_jobs, self.service.expire_finished_jobs, self.dispatcher.sweep):
            try:
                step()
            except Exception:
                logger.exception("sweep step %s failed; retrying in %.0f s", step.__name__, self.interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
