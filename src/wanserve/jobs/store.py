"""`JobStore`: every SQL statement about jobs. Each state change is one guarded statement, so a job reaches a final
state at most once whatever the races (two workers, a cancel and a finish, a sweep and a heartbeat).

Claiming: PostgreSQL picks a row with `SELECT ... FOR UPDATE SKIP LOCKED`; SQLite (one writer at a time, `BEGIN
IMMEDIATE`) relies on the conditional `UPDATE ... WHERE status = 'queued'`. Both then set a lease (owner + expiry)
that the worker renews by heartbeat.

Every change also appends a `JobEvent` in the same transaction, numbered per job through `jobs.event_seq`; on
PostgreSQL the same transaction sends `NOTIFY wanserve_job_events, '<job id>'` (delivered at commit) so readers in
other processes wake at once. A final status of a job with a `webhook_url` also writes its webhook outbox row in
that transaction (`jobs.outbox` delivers it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from wanserve.errors import JobNotFoundError, JobStateError, QueueFullError
from wanserve.jobs.db import make_read_session_factory, make_session_factory
from wanserve.jobs.model import FINAL_STATUSES, Job, JobEvent, JobStatus, WebhookOutboxRow, utcnow

logger = logging.getLogger(__name__)

Q, R = JobStatus.QUEUED.value, JobStatus.RUNNING.value
EVENTS_CHANNEL = "wanserve_job_events"
"""PostgreSQL `NOTIFY` channel; the payload is the id of a job that has new events."""


@dataclass(frozen=True)
class LeaseState:
    """What a worker learns when it touches its job: is the lease still its own, is a cancel requested."""

    held: bool
    cancel_requested: bool = False


@dataclass(frozen=True)
class ModelStats:
    """Measured timings of a model's recent successful jobs (for ETAs)."""

    step_time_s: float
    overhead_s: float
    """Seconds a job spends outside denoising (loading inputs, encoding, decoding, writing)."""


def job_snapshot(job: Job) -> dict[str, Any]:
    """The fields an event carries: enough for a client to redraw its progress."""
    return {
        "status": job.status,
        "stage": job.stage,
        "step": job.step,
        "steps": job.steps,
        "attempts": job.attempts,
        "error": {"type": job.error_type, "message": job.error_message} if job.error_type else None,
    }


def _select_jobs():
    """Jobs with their queue position (None unless queued) computed in the same statement, so the positions of
    a page are one consistent snapshot even while workers claim jobs."""
    ranked = select(Job.seq, func.row_number().over(order_by=Job.seq).label("pos")).where(Job.status == Q).subquery()
    return select(Job, ranked.c.pos).outerjoin(ranked, ranked.c.seq == Job.seq)


_AHEAD = aliased(Job)
_JOB_BY_ID = select(
    Job,
    case(
        (
            Job.status == Q,
            select(func.count())
            .select_from(_AHEAD)
            .where(_AHEAD.status == Q, _AHEAD.seq <= Job.seq)
            .correlate(Job)
            .scalar_subquery(),
        ),
        else_=None,
    ),
).where(Job.id == bindparam("job_id"))
"""A job and, while queued, its 1-based queue position (an index range scan of `ix_jobs_status_seq`), in one
statement: one round trip to the database per status poll, and one snapshot. Built once: a status poll is the
hottest read, and building a statement costs more than running it."""


def _with_positions(rows) -> list[Job]:
    jobs = []
    for job, position in rows:
        job.queue_position = position  # a plain attribute, read by `JobService`; not a column
        jobs.append(job)
    return jobs


class JobStore:
    """SQL access to the job tables. Methods return detached `Job` rows (safe to read from any thread)."""

    def __init__(self, sessions: sessionmaker[Session], read_sessions: sessionmaker[Session] | None = None):
        self._sessions = sessions
        self._reads = read_sessions or sessions
        bind = sessions.kw.get("bind")
        # SQLite has one writer at a time and its busy handler waits by sleeping (up to 100 ms a try): writers of
        # this process queue on a lock instead, and are woken the moment the previous one commits.
        sqlite = bind is not None and bind.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if sqlite else contextlib.nullcontext()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        """A writing transaction (committed at the end of the block)."""
        with self._write_lock, self._sessions.begin() as session:
            yield session

    def writing(self) -> contextlib.AbstractContextManager[Session]:
        """A writing transaction, for the tables that live next to the jobs (`jobs.outbox`)."""
        return self._write()

    def reading(self) -> contextlib.AbstractContextManager[Session]:
        """A read-only session (no lock taken on SQLite)."""
        return self._reads()

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._sessions.kw["bind"].dialect.name

    @classmethod
    def for_engine(cls, engine: Engine) -> JobStore:
        """A store over `engine`, with lock-free read sessions."""
        return cls(make_session_factory(engine), make_read_session_factory(engine))

    # 1. Creating and reading
    def create(self, job: Job, max_queue: int, retry_after_s: int = 5) -> tuple[Job, bool]:
        """Inserts `job` (queued). Returns (job, True), or (existing job, False) for a known idempotency key.

        Raises `QueueFullError` when `max_queue` jobs already wait.
        """
        if job.idempotency_key:
            existing = self.by_idempotency_key(job.owner_key, job.idempotency_key)
            if existing is not None:
                return existing, False
        try:
            with self._write() as session:
                depth = session.scalar(select(func.count()).select_from(Job).where(Job.status == Q))
                if depth >= max_queue:
                    raise QueueFullError(
                        f"the queue is full ({depth} jobs waiting, limit {max_queue}); retry later", retry_after_s
                    )
                job.status, job.event_seq = Q, 1
                job.created_at = job.updated_at = utcnow()
                session.add(job)
                session.flush()
                session.add(JobEvent(job_id=job.id, seq=1, kind="status", data=job_snapshot(job)))
        except IntegrityError:
            # Two requests with one idempotency key raced: the other one won.
            existing = self.by_idempotency_key(job.owner_key, job.idempotency_key) if job.idempotency_key else None
            if existing is None:
                raise
            return existing, False
        return job, True

    def by_idempotency_key(self, owner_key: str | None, key: str) -> Job | None:
        """The job `owner_key` made with `key` (None: any owner's, the newest)."""
        conditions = [Job.idempotency_key == key] + ([] if owner_key is None else [Job.owner_key == owner_key])
        with self._reads() as session:
            return session.scalar(select(Job).where(*conditions).order_by(Job.seq.desc()).limit(1))

    def get(self, job_id: str) -> Job:
        """The job (with its queue position while queued, read in the same statement); raises `JobNotFoundError`."""
        with self._reads() as session:
            row = session.execute(_JOB_BY_ID, {"job_id": job_id}).first()
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        job = row[0]
        job.queue_position = row[1]
        return job

    def list(
        self,
        status: str | None = None,
        model: str | None = None,
        owner_key: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """Jobs newest first, and how many match in all."""
        conditions = []
        if status:
            conditions.append(Job.status == status)
        if model:
            conditions.append(Job.model == model)
        if owner_key is not None:
            conditions.append(Job.owner_key == owner_key)
        with self._reads() as session:
            count = session.scalar(select(func.count()).select_from(Job).where(*conditions))
            query = _select_jobs().where(*conditions).order_by(Job.seq.desc()).limit(limit).offset(offset)
            return _with_positions(session.execute(query)), count

    def page_after(
        self, after_id: str | None, limit: int, ascending: bool = False, owner_key: str | None = None
    ) -> tuple[list[Job], bool]:
        """Up to `limit` jobs following the job `after_id` in creation order (newest first unless `ascending`), and
        whether more follow. Raises `JobNotFoundError` for an unknown `after_id`."""
        conditions = [] if owner_key is None else [Job.owner_key == owner_key]
        with self._reads() as session:
            if after_id is not None:
                seq = session.scalar(select(Job.seq).where(Job.id == after_id, *conditions))
                if seq is None:
                    raise JobNotFoundError(f"job {after_id!r} not found")
                conditions.append(Job.seq > seq if ascending else Job.seq < seq)
            order = Job.seq.asc() if ascending else Job.seq.desc()
            rows = _with_positions(session.execute(_select_jobs().where(*conditions).order_by(order).limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def queue_positions(self, seqs: Iterable[int]) -> dict[int, int]:
        """Position in the queue (1 = next to run) of each queued job given by `seq`, from one consistent read."""
        wanted = sorted(set(seqs))
        if not wanted:
            return {}
        ranked = (
            select(Job.seq, func.row_number().over(order_by=Job.seq).label("pos")).where(Job.status == Q).subquery()
        )
        with self._reads() as session:
            rows = session.execute(select(ranked.c.seq, ranked.c.pos).where(ranked.c.seq.in_(wanted)))
            return {seq: pos for seq, pos in rows}

    def queued_up_to(self, seq: int | None) -> list[tuple[int, str, int]]:
        """(seq, model, steps) of the queued jobs up to and including `seq` (None: all), in queue order."""
        conditions = [Job.status == Q] if seq is None else [Job.status == Q, Job.seq <= seq]
        with self._reads() as session:
            rows = session.execute(select(Job.seq, Job.model, Job.steps).where(*conditions).order_by(Job.seq))
            return [(q, m, s) for q, m, s in rows]

    def running(self) -> list[Job]:
        with self._reads() as session:
            return list(session.scalars(select(Job).where(Job.status == R).order_by(Job.seq)))

    def counts(self) -> dict[str, int]:
        """Number of jobs per status."""
        with self._reads() as session:
            return {s: n for s, n in session.execute(select(Job.status, func.count()).group_by(Job.status))}

    def model_stats(self, recent: int = 200) -> dict[str, ModelStats]:
        """Mean step time and overhead of each model over the `recent` latest successful jobs (an index range
        scan, however many jobs the table holds)."""
        latest = (
            select(Job.model, Job.step_time_sum_s, Job.steps_timed, Job.run_time_s)
            .where(Job.status == JobStatus.SUCCEEDED.value)
            .order_by(Job.seq.desc())
            .limit(recent)
            .subquery()
        )
        query = select(
            latest.c.model,
            func.sum(latest.c.step_time_sum_s),
            func.sum(latest.c.steps_timed),
            func.sum(latest.c.run_time_s),
            func.count(),
        ).where(latest.c.steps_timed > 0, latest.c.run_time_s.is_not(None))
        stats: dict[str, ModelStats] = {}
        with self._reads() as session:
            for model, step_sum, steps, run_sum, n in session.execute(query.group_by(latest.c.model)):
                step_time = step_sum / steps
                stats[model] = ModelStats(step_time, max(0.0, (run_sum - step_sum) / n))
        return stats

    def events_after(self, job_id: str, after_seq: int, limit: int = 500) -> list[JobEvent]:
        """The job's events numbered above `after_seq`, in order."""
        with self._reads() as session:
            query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
            return list(session.scalars(query.order_by(JobEvent.seq).limit(limit)))

    # 2. Worker side
    def claim_next(self, owner: str, models: Sequence[str], lease_s: float, job_id: str | None = None) -> Job | None:
        """Takes the oldest queued job of one of `models` for `owner`, with a lease; None when there is none.
        With `job_id` (a broker message names the job) only that job is taken, and only while it is queued."""
        if not models:
            return None
        for _ in range(20):
            with self._write() as session:
                query = select(Job.id).where(Job.status == Q, Job.model.in_(list(models)))
                if job_id is None:
                    query = query.order_by(Job.seq).limit(1).with_for_update(skip_locked=True)
                else:
                    # The named job is waited for, not skipped: a row locked for a moment (its sender recording the
                    # message) must not make its own message look stale.
                    query = query.where(Job.id == job_id).with_for_update()
                picked = session.scalar(query)
                if picked is None:
                    return None
                now = utcnow()
                won = session.execute(
                    update(Job)
                    .where(Job.id == picked, Job.status == Q)
                    .values(
                        status=R,
                        lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease_s),
                        attempts=Job.attempts + 1,
                        started_at=now,
                        stage=None,
                        step=0,
                        step_time_sum_s=0.0,
                        steps_timed=0,
                        cancel_requested=False,
                        updated_at=now,
                    )
                ).rowcount
                if won:
                    return self._append_events(session, picked, [("status", None)])
            # Another claimer took it between our read and our update (SQLite without row locks): try the next one.
        return None

    def mark_dispatched(self, job_id: str, epoch: str) -> bool:
        """Records that broker incarnation `epoch` holds the message of the queued job `job_id`."""
        with self._write() as session:
            return bool(
                session.execute(
                    update(Job).where(Job.id == job_id, Job.status == Q).values(dispatch_epoch=epoch)
                ).rowcount
            )

    def undispatched(self, epoch: str, queued_before: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(id, model) of queued jobs, oldest first, whose message is not known to be held by broker incarnation
        `epoch` (never sent, sending failed, or sent to a broker that restarted since), queued before
        `queued_before` (so a message on its way is not sent twice)."""
        with self._reads() as session:
            query = (
                select(Job.id, Job.model)
                .where(Job.status == Q, Job.updated_at < queued_before)
                .where(or_(Job.dispatch_epoch.is_(None), Job.dispatch_epoch != epoch))
                .order_by(Job.seq)
                .limit(limit)
            )
            return [(job_id, model) for job_id, model in session.execute(query)]

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> LeaseState:
        """Extends the lease if `owner` still holds it."""
        now = utcnow()
        with self._write() as session:
            held = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == R, Job.lease_owner == owner)
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
            ).rowcount
            cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id)) if held else False
        return LeaseState(bool(held), bool(cancel))

    def lease_state(self, job_id: str, owner: str) -> LeaseState:
        """Whether `owner` still holds the job's lease and whether a cancel was requested (read only)."""
        with self._reads() as session:
            row = session.execute(
                select(Job.status, Job.lease_owner, Job.cancel_requested).where(Job.id == job_id)
            ).first()
        if row is None:
            return LeaseState(False)
        status, lease_owner, cancel = row
        return LeaseState(status == R and lease_owner == owner, bool(cancel))

    def record_progress(
        self,
        job_id: str,
        owner: str,
        changes: Sequence[tuple[str, dict[str, Any]]],
        step_time_s: Sequence[float] = (),
    ) -> LeaseState:
        """Applies stage/step changes `[(kind, {"stage":..,"step":..,"steps":..}), ...]`, one event each, in order."""
        if not changes:
            return self.lease_state(job_id, owner)
        last = {}
        for _, values in changes:
            last.update(values)
        with self._write() as session:
            held = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == R, Job.lease_owner == owner)
                .values(
                    **last,
                    step_time_sum_s=Job.step_time_sum_s + sum(step_time_s),
                    steps_timed=Job.steps_timed + len(step_time_s),
                    updated_at=utcnow(),
                )
            ).rowcount
            if not held:
                return LeaseState(False)
            job = self._append_events(session, job_id, [(kind, values) for kind, values in changes])
            return LeaseState(True, job.cancel_requested)

    def finish(self, job_id: str, owner: str, status: JobStatus, retention_s: float, **values: Any) -> Job | None:
        """Moves a running job owned by `owner` to a final status. None if the lease was lost (nothing changes)."""
        assert status.is_final and status != JobStatus.EXPIRED
        now = utcnow()
        with self._write() as session:
            done = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == R, Job.lease_owner == owner)
                .values(
                    status=status.value,
                    stage=None,  # a finished job is in no stage (its last one was "writing" or where it stopped)
                    finished_at=now,
                    expires_at=now + timedelta(seconds=retention_s),
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                    **values,
                )
            ).rowcount
            if not done:
                return None
            return self._append_events(session, job_id, [("status", None)])

    # 3. Client side
    def request_cancel(self, job_id: str, retention_s: float) -> Job:
        """Cancels a queued job at once; marks a running one for cancellation. 409 for a finished job."""
        now = utcnow()
        with self._write() as session:
            cancelled = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == Q)
                .values(
                    status=JobStatus.CANCELLED.value,
                    cancel_requested=True,
                    finished_at=now,
                    expires_at=now + timedelta(seconds=retention_s),
                    error_type="cancelled",
                    error_message="cancelled by request before it started",
                    updated_at=now,
                )
            ).rowcount
            if cancelled:
                return self._append_events(session, job_id, [("status", None)])
            marked = session.execute(
                update(Job).where(Job.id == job_id, Job.status == R).values(cancel_requested=True, updated_at=now)
            ).rowcount
            job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        if not marked:
            raise JobStateError(f"job {job_id!r} is {job.status}; only queued or running jobs can be cancelled")
        return job

    def delete(self, job_id: str) -> Job:
        """Deletes a job that is not running (its events go with it). Returns the deleted row."""
        with self._write() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            if job is None:
                raise JobNotFoundError(f"job {job_id!r} not found")
            gone = session.execute(delete(Job).where(Job.id == job_id, Job.status != R)).rowcount
            if not gone:
                raise JobStateError(f"job {job_id!r} is running; cancel it before deleting it")
            session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
        return job

    # 4. Sweeps
    def release_lost(
        self,
        retention_s: float,
        now: datetime | None = None,
        owner_is_dead: Callable[[str], bool] | None = None,
    ) -> list[Job]:
        """Running jobs whose lease expired (or whose owner is known dead) go back to `queued`; to `failed`
        (`worker_lost`) after their last attempt; to `cancelled` when a cancel was requested. Returns them."""
        now = now or utcnow()
        with self._reads() as session:
            rows = session.execute(select(Job.id, Job.lease_owner, Job.lease_expires_at).where(Job.status == R)).all()
        lost = [
            (job_id, owner)
            for job_id, owner, expires in rows
            if expires is None or expires < now or (owner_is_dead is not None and owner and owner_is_dead(owner))
        ]
        changed = []
        for job_id, owner in lost:
            with self._write() as session:
                row = session.execute(
                    select(Job.attempts, Job.max_attempts, Job.cancel_requested).where(Job.id == job_id)
                ).first()
                if row is None:
                    continue
                attempts, max_attempts, cancel = row
                final = {"finished_at": now, "expires_at": now + timedelta(seconds=retention_s)}
                if cancel:
                    values = dict(final, status=JobStatus.CANCELLED.value, error_type="cancelled")
                    values["error_message"] = "cancelled by request; its worker stopped before finishing"
                elif attempts >= max_attempts:
                    values = dict(final, status=JobStatus.FAILED.value, error_type="worker_lost")
                    values["error_message"] = (
                        f"the worker running this job stopped ({owner}); gave up after {attempts} attempts"
                    )
                else:
                    # Back to the queue: its old message was consumed, so it needs a new one.
                    values = {"status": Q, "stage": None, "step": 0, "dispatch_epoch": None}
                done = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == R, Job.lease_owner == owner)
                    .values(lease_owner=None, lease_expires_at=None, updated_at=now, **values)
                ).rowcount
                if done:
                    job = self._append_events(session, job_id, [("status", None)])
                    logger.warning(
                        "job %s: lease of %s lost after attempt %d; now %s", job_id, owner, job.attempts, job.status
                    )
                    changed.append(job)
        return changed

    def expire_finished(self, now: datetime | None = None) -> list[Job]:
        """Finished jobs past their retention become `expired`. Returns them (their files are to be deleted)."""
        now = now or utcnow()
        with self._reads() as session:
            ids = session.scalars(
                select(Job.id).where(Job.status.in_(FINAL_STATUSES), Job.status != "expired", Job.expires_at < now)
            ).all()
        expired = []
        for job_id in ids:
            with self._write() as session:
                done = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status.in_(FINAL_STATUSES), Job.status != "expired")
                    .values(status=JobStatus.EXPIRED.value, updated_at=now)
                ).rowcount
                if done:
                    expired.append(self._append_events(session, job_id, [("status", None)]))
        return expired

    # 5. Events
    def _append_events(self, session: Session, job_id: str, changes: Sequence[tuple[str, dict | None]]) -> Job:
        """Numbers and inserts one event per change; the row lock taken here orders concurrent writers."""
        n = len(changes)
        session.execute(update(Job).where(Job.id == job_id).values(event_seq=Job.event_seq + n))
        job = session.scalar(select(Job).where(Job.id == job_id).execution_options(populate_existing=True))
        first = job.event_seq - n + 1
        snapshot = job_snapshot(job)
        for i, (kind, values) in enumerate(changes):
            data = dict(snapshot)
            if values:
                data.update(values)
            session.add(JobEvent(job_id=job_id, seq=first + i, kind=kind, data=data))
        final = job.status in FINAL_STATUSES and job.status != JobStatus.EXPIRED.value
        if final and job.webhook_url and any(kind == "status" for kind, _ in changes):
            session.add(
                WebhookOutboxRow(
                    id=uuid.uuid4().hex, job_id=job_id, event=f"job.{job.status}", url=job.webhook_url, attempts=0
                )
            )
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_notify(EVENTS_CHANNEL, job_id)))
        return job
