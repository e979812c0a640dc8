"""The job tables: `jobs` (one row per job, the single source of truth) and `job_events` (every status, stage and
step change of a job, in order, for the event stream).

Statuses: `queued -> running -> succeeded | failed | cancelled`, and `expired` once a finished job's files are
deleted after the retention period. A running job whose lease expires goes back to `queued` (or to `failed` with
error type `worker_lost` after its last attempt).
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobStatus(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


FINAL_STATUSES = tuple(s.value for s in JobStatus if s.is_final)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (SQLite has no time zones), hands back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; use aware UTC datetimes")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


_BigInt = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the job tables."""


class Job(Base):
    """One job. Every field a client sees comes from here."""

    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=True)
    """Queue order (FIFO). Internal; clients see `id`."""
    id: Mapped[str] = mapped_column(String(36), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    """The task: t2v, i2v, flf2v, ti2v, v2v, vace, animate."""
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=JobStatus.QUEUED.value)
    stage: Mapped[str | None] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    steps: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    """Resolved parameters as shown to clients (media inputs described, not inlined)."""
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    """Media field -> stored file path (or list of paths for `reference_images`)."""
    random_weights: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    """Times the job was claimed by a worker."""
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(160))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """video_key, thumbnail_key (storage keys, never paths), video_bytes, width, height, num_frames, fps, seed,
    stage_times_s, speed (the kernels and fast modes the run used, engine/fast.py)."""
    step_time_sum_s: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    steps_timed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    run_time_s: Mapped[float | None] = mapped_column(Float)
    """Seconds from start to finish of the successful run."""
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    owner_key: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    """Who made the job (API key id); empty when the server has no keys."""
    webhook_url: Mapped[str | None] = mapped_column(Text)
    parallel_plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The parallel plan the job runs with and each requested multi-GPU field it could not honour (set when the
    request carried such fields: the Wan2.1 services' `ulysses_size`, `vae_parallel`, ...)."""
    dispatch_epoch: Mapped[str | None] = mapped_column(String(64))
    """Broker incarnation (Redis `run_id`) that holds this queued job's message; NULL when no message is known to
    be held (never sent, sending failed, or the job went back to the queue). The sweeper re-sends those."""
    event_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    """Sequence number of the job's last event."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint("owner_key", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_status_seq", "status", "seq"),
        Index("ix_jobs_model_status", "model", "status"),
        Index("ix_jobs_expires_at", "expires_at"),
    )

    @property
    def mean_step_time_s(self) -> float | None:
        return self.step_time_sum_s / self.steps_timed if self.steps_timed else None


class OutboxStatus(str, enum.Enum):
    """Where a webhook delivery is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookOutboxRow(Base):
    """One webhook delivery of a finished job, written in the same transaction as the job's final status event.

    Whoever runs the outbox takes a lease on a due row, makes one attempt, and records the outcome; a process that
    dies mid-attempt leaves an expired lease, and the attempt counts (`attempts` is raised at claim time).
    """

    __tablename__ = "webhook_outbox"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The delivery id (`X-Wanserve-Delivery`), the same on every attempt."""
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    """No foreign key: a delivery outlives the deletion of its job (its payload is frozen at the first attempt)."""
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    """`job.succeeded`, `job.failed` or `job.cancelled`."""
    url: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(160))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_webhook_outbox_status_due", "status", "next_attempt_at"),)


class JobEvent(Base):
    """One change of a job (status, stage or step), numbered per job from 1."""

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    """`status`, `stage` or `step`."""
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class WorkerRecord(Base):
    """One worker (one GPU set of one `wanserve worker` or `wanserve serve` process), kept fresh by its heartbeat.

    A worker whose heartbeat is older than the lease is shown as `lost`; its jobs come back by lease expiry."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    """The lease owner id its jobs carry: `<host>:<pid>:<boot token>:<slot>`."""
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    devices: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    models: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    """Models it serves (loaded once `state` left `starting`)."""
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    """`starting` (loading models), `idle`, `busy`, `error` (could not load), `stopped` (shut down cleanly)."""
    current_job: Mapped[str | None] = mapped_column(String(36))
    jobs_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    """Jobs it ran to an end (any final status) since it started."""
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    memory_gib: Mapped[float | None] = mapped_column(Float)
    """Accelerator memory it may use (its device's, or a configured cap); NULL: not an accelerator (migration 0006)."""

    __table_args__ = (Index("ix_workers_heartbeat_at", "heartbeat_at"),)
