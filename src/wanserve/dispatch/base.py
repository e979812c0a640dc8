"""The dispatcher interface."""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    """Carries "a job is waiting" from whoever queued it to the workers. Holds no job state."""

    def notify_job_waiting(self, job_id: str) -> None:
        """Called after a job was committed as `queued` (new, or put back after a lost lease)."""

    def wait_for_job(self, timeout_s: float) -> bool:
        """Worker side: blocks until a job may be waiting or `timeout_s` passes. True when notified."""

    def close(self) -> None:
        """Wakes every waiting worker so it can stop."""
