"""`EmbeddedDispatcher`: in-process workers sleep on a condition; a queued job wakes one of them."""

from __future__ import annotations

import logging
import threading

from wanserve.dispatch.base import JobRunner

logger = logging.getLogger(__name__)


class EmbeddedDispatcher:
    """Wake-ups for workers running in this process. Workers still poll (`wait_for_job` times out) so jobs queued
    by other processes sharing the database are found too."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False

    def notify_job_waiting(self, job_id: str, model: str) -> None:
        with self._cond:
            self._pending += 1
            self._cond.notify()

    def wait_for_job(self, timeout_s: float) -> bool:
        """Blocks until a job may be waiting or `timeout_s` passes. True when notified."""
        with self._cond:
            if not self._pending and not self._closed:
                self._cond.wait(timeout_s)
            if self._pending:
                self._pending -= 1
                return True
            return False

    def serve(self, runner: JobRunner, stop: threading.Event, idle_poll_s: float) -> None:
        """Claims and runs jobs until `stop` is set; sleeps until woken (or `idle_poll_s`) when none is waiting."""
        while not stop.is_set():
            try:
                ran = runner.run_once(stop)
            except Exception:
                logger.exception("unexpected error in the worker loop; continuing")
                ran = False
            if not ran and not stop.is_set():
                self.wait_for_job(idle_poll_s)

    def sweep(self) -> None:
        """Nothing to re-send: in-process workers poll the database."""

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
