"""`EmbeddedDispatcher`: in-process workers sleep on a condition; a queued job wakes one of them."""

from __future__ import annotations

import threading


class EmbeddedDispatcher:
    """Wake-ups for workers running in this process. Workers still poll (`wait_for_job` times out) so jobs queued
    by other processes sharing the database are found too."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False

    def notify_job_waiting(self, job_id: str) -> None:
        with self._cond:
            self._pending += 1
            self._cond.notify()

    def wait_for_job(self, timeout_s: float) -> bool:
        with self._cond:
            if not self._pending and not self._closed:
                self._cond.wait(timeout_s)
            if self._pending:
                self._pending -= 1
                return True
            return False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
