"""The dispatcher interface: how "job X is waiting" travels from whoever queued it to the workers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol


class JobRunner(Protocol):
    """A worker as a dispatcher sees it: it serves `models` and runs one job at a time."""

    models: Sequence[str]

    def run_once(self, stop: threading.Event | None = None, job_id: str | None = None) -> bool:
        """Claims a queued job (the job `job_id` when given, else the oldest of `models`) and runs it to its end.
        False when there was nothing to claim."""


class Dispatcher(Protocol):
    """Carries "a job is waiting" to the workers. Holds no job state: the job row (and its lease) decides who runs
    a job, so a lost, repeated or late message can neither lose a job nor run it twice."""

    def notify_job_waiting(self, job_id: str, model: str) -> None:
        """Called after a job was committed as `queued` (new, or put back after a lost lease). Never raises: a
        message that could not be sent is re-sent by `sweep`."""

    def serve(self, runner: JobRunner, stop: threading.Event, idle_poll_s: float) -> None:
        """Worker side: hands waiting jobs to `runner` until `stop` is set (blocks the calling thread)."""

    def sweep(self) -> None:
        """Called by the sweeper: re-sends the messages of queued jobs that may have been lost."""

    def close(self) -> None:
        """Wakes every waiting worker so it can stop, and releases connections."""
