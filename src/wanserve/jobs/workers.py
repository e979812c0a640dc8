"""`WorkerRegistry`: the `workers` table. Every worker registers (host, devices, models, state, current job) and
heartbeats; any process (the API answering `GET /v1/workers`, `/metrics`) reads who is alive.

A worker whose last heartbeat is older than `lost_after_s` shows as `lost`: it was killed or cut off. Nothing is
done to its jobs here: their leases expire and the sweeper puts them back in the queue (or fails them after their
last attempt).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from wanserve.jobs.db import make_read_session_factory, make_session_factory
from wanserve.jobs.model import WorkerRecord, utcnow

logger = logging.getLogger(__name__)

WORKER_STATES = ("starting", "idle", "busy", "error", "stopped", "lost")


@dataclass(frozen=True)
class WorkerView:
    """A worker as `GET /v1/workers` shows it."""

    id: str
    host: str
    pid: int
    devices: list[str]
    models: list[str]
    state: str
    """One of `WORKER_STATES`; `lost` when the heartbeat stopped while it was not `stopped`."""
    current_job: str | None
    jobs_done: int
    error: str | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    memory_gib: float | None = None
    """Accelerator memory it may use; None for a CPU worker."""


class WorkerRegistry:
    """Registration and heartbeats of workers, over the job database."""

    def __init__(self, engine: Engine, lost_after_s: float = 30.0):
        self._sessions = make_session_factory(engine)
        self._reads = make_read_session_factory(engine)
        self.lost_after_s = lost_after_s
        # SQLite takes one writer at a time; queue this process's writers on a lock (as `JobStore` does).
        self._lock = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with self._lock, self._sessions.begin() as session:
            yield session

    def register(
        self,
        worker_id: str,
        host: str,
        pid: int,
        devices: Sequence[str],
        models: Sequence[str],
        memory_gib: float | None = None,
    ) -> None:
        """Adds the worker as `starting` (a restarted worker id replaces its old row), with the accelerator memory
        it may use (`memory_gib`; None on the CPU), which admission plans against."""
        now = utcnow()
        with self._write() as session:
            session.execute(delete(WorkerRecord).where(WorkerRecord.id == worker_id))
            session.add(
                WorkerRecord(
                    id=worker_id,
                    host=host,
                    pid=pid,
                    devices=list(devices),
                    models=list(models),
                    state="starting",
                    jobs_done=0,
                    started_at=now,
                    heartbeat_at=now,
                    memory_gib=memory_gib,
                )  # fmt: skip
            )

    def heartbeat(
        self, worker_id: str, state: str, current_job: str | None, jobs_done: int, error: str | None = None
    ) -> None:
        """Records the worker's present state; the row's time stamp is what tells alive from lost."""
        if state not in WORKER_STATES or state == "lost":
            raise ValueError(f"`state` must be one of {', '.join(WORKER_STATES[:-1])}, got {state!r}")
        with self._write() as session:
            session.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == worker_id)
                .values(state=state, current_job=current_job, jobs_done=jobs_done, error=error, heartbeat_at=utcnow())
            )

    def list(self, now: datetime | None = None) -> list[WorkerView]:
        """Every registered worker, newest first, with `lost` for those whose heartbeat stopped."""
        now = now or utcnow()
        with self._reads() as session:
            rows = session.scalars(select(WorkerRecord).order_by(WorkerRecord.started_at.desc())).all()
        views = []
        for row in rows:
            age = (now - row.heartbeat_at).total_seconds()
            state = "lost" if row.state != "stopped" and age > self.lost_after_s else row.state
            views.append(
                WorkerView(
                    row.id,
                    row.host,
                    row.pid,
                    list(row.devices),
                    list(row.models),
                    state,
                    row.current_job if state in ("busy",) else None,
                    row.jobs_done,
                    row.error,
                    row.started_at,
                    row.heartbeat_at,
                    round(max(0.0, age), 3),
                    row.memory_gib,
                )  # fmt: skip
            )
        return views

    def memory_budget_gib(self, model: str) -> float | None:
        """The most accelerator memory one live worker serving `model` may use: what a job of it can count on.
        None when no live worker reports a limit (none registered yet, or one without an accelerator limit)."""
        budgets = [w.memory_gib for w in self.list() if model in w.models and w.state in ("starting", "idle", "busy")]
        if not budgets or any(b is None for b in budgets):
            return None
        return max(budgets)

    def prune(self, older_than_s: float, now: datetime | None = None) -> int:
        """Forgets workers not heard from for `older_than_s` (stopped or lost long ago). Returns how many."""
        cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
        with self._write() as session:
            return session.execute(delete(WorkerRecord).where(WorkerRecord.heartbeat_at < cutoff)).rowcount
