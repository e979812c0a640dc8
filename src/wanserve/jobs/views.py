"""What clients see of a job: `JobView` (a frozen snapshot with progress, queue position and ETA computed) and
`JobEventView`. Built from `Job` rows; no SQL here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wanserve.jobs.model import Job, JobEvent, JobStatus
from wanserve.jobs.store import ModelStats

# Share of the progress bar each stage starts at; denoising fills DENOISE_START..DENOISE_END step by step.
_STAGE_PROGRESS = {"loading": 0.0, "encoding_text": 0.02, "encoding_image": 0.04, "decoding": 0.92, "writing": 0.97}
DENOISE_START, DENOISE_END = 0.05, 0.92


def job_progress(status: str, stage: str | None, step: int, steps: int) -> float:
    """0..1: how far the job is (1.0 once succeeded)."""
    if status == JobStatus.SUCCEEDED.value:
        return 1.0
    if status == JobStatus.QUEUED.value or stage is None:
        return 0.0
    if stage == "denoising":
        fraction = step / steps if steps else 0.0
        return round(DENOISE_START + (DENOISE_END - DENOISE_START) * fraction, 4)
    return _STAGE_PROGRESS.get(stage, 0.0)


@dataclass(frozen=True)
class JobView:
    """A job as the API shows it."""

    id: str
    kind: str
    model: str
    status: str
    stage: str | None
    step: int
    steps: int
    progress: float
    queue_position: int | None
    """1 = next to run; None unless queued."""
    eta_s: float | None
    """Estimated seconds until the job finishes, from measured step times; None when nothing was measured yet."""
    params: dict[str, Any]
    error_type: str | None
    error_message: str | None
    random_weights: bool
    attempts: int
    webhook_url: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    has_output: bool
    outputs: dict[str, Any] | None
    idempotency_key: str | None
    owner_key: str
    parallel_plan: dict[str, Any] | None = None
    """The plan used and the multi-GPU fields not honoured (see `Job.parallel_plan`)."""
    segment: int = 0
    """Animate: the segment (1-based) the last finished step belongs to; 0 before the first step."""
    segments: int = 1
    """Animate: the segments the pose video is denoised in, one after the other (1 for every other job)."""


@dataclass(frozen=True)
class JobEventView:
    """One change of a job: `kind` is `status`, `stage` or `step`; `data` holds status, stage, step, steps, error."""

    job_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    created_at: datetime

    @property
    def is_final(self) -> bool:
        """True for the status event that ends the job's stream."""
        return self.kind == "status" and JobStatus(self.data["status"]).is_final

    @classmethod
    def of(cls, event: JobEvent) -> JobEventView:
        data = dict(event.data)
        data["progress"] = job_progress(data["status"], data.get("stage"), data.get("step", 0), data.get("steps", 0))
        return cls(event.job_id, event.seq, event.kind, data, event.created_at)


def _job_work_s(model: str, steps: int, stats: Mapping[str, ModelStats]) -> float | None:
    s = stats.get(model)
    return None if s is None else steps * s.step_time_s + s.overhead_s


def running_eta_s(job: Job, stats: Mapping[str, ModelStats]) -> float | None:
    """Seconds left for a running job: its remaining steps at its own measured pace, plus the model's overhead."""
    model = stats.get(job.model)
    step_time = job.mean_step_time_s or (model.step_time_s if model else None)
    if step_time is None:
        return None
    overhead = model.overhead_s if model else 0.0
    if job.stage in ("decoding", "writing"):
        overhead /= 2
    return max(0.0, (job.steps - job.step) * step_time + overhead)


def queued_etas(
    queue: Sequence[tuple[int, str, int]],
    running: Sequence[Job],
    stats: Mapping[str, ModelStats],
    concurrency: int,
) -> dict[int, float | None]:
    """Seconds until each queued job finishes, by `seq`: the running jobs' remaining work and the work of the jobs
    ahead, shared by `concurrency` workers, then the job's own run. `queue` is (seq, model, steps) in queue order."""
    shared = 0.0
    for job in running:
        left = running_eta_s(job, stats)
        if left is not None:
            shared += left
    etas: dict[int, float | None] = {}
    known = True
    for seq, model, steps in queue:
        own = _job_work_s(model, steps, stats)
        known = known and own is not None
        if not known:
            etas[seq] = None
            continue
        etas[seq] = round(shared / max(1, concurrency) + own, 3)
        shared += own
    return etas


def make_view(
    job: Job,
    queue_position: int | None = None,
    eta_s: float | None = None,
) -> JobView:
    """The `JobView` of a row."""
    outputs = job.outputs or None
    return JobView(
        id=job.id,
        kind=job.kind,
        model=job.model,
        status=job.status,
        stage=job.stage,
        step=job.step,
        steps=job.steps,
        progress=job_progress(job.status, job.stage, job.step, job.steps),
        queue_position=queue_position if job.status == JobStatus.QUEUED.value else None,
        eta_s=None if JobStatus(job.status).is_final else (None if eta_s is None else round(eta_s, 3)),
        params=dict(job.params),
        error_type=job.error_type,
        error_message=job.error_message,
        random_weights=job.random_weights,
        attempts=job.attempts,
        webhook_url=job.webhook_url,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        has_output=job.status == JobStatus.SUCCEEDED.value and outputs is not None,
        outputs=outputs,
        idempotency_key=job.idempotency_key,
        owner_key=job.owner_key,
        parallel_plan=job.parallel_plan,
        **segment_progress(job),
    )


def segment_progress(job: Job) -> dict[str, int]:
    """Animate's segment of `job.step` and its segment count, from its steps per segment (`num_inference_steps`)
    and its steps over all segments."""
    per = (job.params or {}).get("num_inference_steps")
    if job.kind != "animate" or not isinstance(per, int) or per < 1 or job.steps < per:
        return {}
    return {"segment": -(-job.step // per), "segments": max(1, job.steps // per)}
