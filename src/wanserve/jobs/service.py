"""`JobService`: the one entry point to jobs for the API (create, get, list, cancel, delete, content, events,
health) and for workers (claim, heartbeat, progress, finish). Knows nothing of HTTP or torch.

Stable names other packages code against:
- `JobSubmission(params, model=None, inputs={}, webhook_url=None, idempotency_key=None, owner_key="")`
- `JobService.create_job(submission) -> (JobView, created: bool)`; `get_job`, `list_jobs -> JobPage`,
  `cancel_job`, `delete_job`, `content(job_id, variant)` (a storage key), `stream_events(job_id, after_seq)` (async iterator
  of `JobEventView`, ends after the final status), `queue_stats()`.
- `JobService.add_final_listener(callback)`: `callback(JobView)` after every job reaches a final status in this
  process (webhooks, metrics). Called on the thread that made the change; exceptions are logged, never raised.
  `add_created_listener(callback(JobView))` and `add_step_listener(callback(job_id, step_times_s))` likewise.
- Worker side: `claim_next_job`, `heartbeat`, `lease_state`, `record_progress`, `generation_request`,
  `finish_succeeded`, `finish_failed`, `finish_cancelled`, `release_lost_jobs`, `expire_finished_jobs`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wanserve.engine.config import LoraConfig, MemoryConfig
from wanserve.engine.inputs import effective_steps, probe_media
from wanserve.engine.lora import resolve_loras
from wanserve.engine.memory_estimate import fit_advice
from wanserve.engine.registry import get_spec
from wanserve.engine.requests import GenerationRequest, GenerationResult
from wanserve.engine.sizes import fit_to_inputs
from wanserve.engine.validation import (
    MEDIA_FIELDS,
    probe_shapes,
    request_from_params,
    request_params,
    resolve_request,
)
from wanserve.errors import (
    InsufficientMemoryError,
    InvalidRequestError,
    JobNotFoundError,
    JobStateError,
    QueueFullError,
    StorageFullError,
    is_storage_full,
    redact_paths,
)
from wanserve.jobs.events import EventHub
from wanserve.jobs.files import MEDIA_TYPES, VARIANTS, JobFiles, OutputKeys
from wanserve.jobs.media_inputs import MediaLimits, StoredInput, load_input
from wanserve.jobs.model import Job, JobStatus, utcnow
from wanserve.jobs.serving import ServingStatus, check_servable
from wanserve.jobs.store import JobStore, LeaseState, ModelStats
from wanserve.jobs.views import JobEventView, JobView, make_view, queued_etas, running_eta_s
from wanserve.media.fetch import resolve_url
from wanserve.storage.base import Storage, StorageKeyNotFound

logger = logging.getLogger(__name__)

STATS_TTL_S = 2.0
ETA_TTL_S = 0.5
"""Queued jobs' ETAs may be this old when other processes changed the queue (this process's changes show at once)."""

FinalListener = Callable[[JobView], None]
CreatedListener = Callable[[JobView], None]
StepListener = Callable[[str, Sequence[float]], None]
"""`(job_id, step_times_s)`: denoising step durations a worker of this process just reported."""


@dataclass(frozen=True)
class JobServiceConfig:
    """Limits and policies of the job service (built from `Settings`)."""

    served_models: tuple[str, ...]
    """Models the workers of this deployment run; the first is the default `model`."""
    max_queue: int = 256
    max_attempts: int = 3
    retention_s: float = 24 * 3600.0
    lease_s: float = 30.0
    concurrency: int = 1
    media: MediaLimits = field(default_factory=MediaLimits)
    event_poll_s: float = 1.0
    """Event streams re-read the database this often when no in-process notification came."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Where a job's LoRA files may be (checked at submission; the workers read the same directories)."""
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    """The workers' memory options: a request's memory estimate is computed with them (admission)."""

    def __post_init__(self) -> None:
        if not self.served_models:
            raise ValueError("`served_models` must name at least one model")


@dataclass(frozen=True)
class JobSubmission:
    """A request for a new job, as any API edge (native, OpenAI, legacy) hands it over.

    `params` uses the diffusers field names (prompt, num_frames, ...). Media inputs may be in `params` or in
    `inputs`: file bytes, a `data:` URL, or an http(s) URL (fetched with the limits of `MediaLimits`).
    """

    params: Mapping[str, Any]
    model: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    idempotency_key: str | None = None
    owner_key: str = ""
    parallel_plan: Mapping[str, Any] | None = None
    """The parallel plan the job will run with and the requested fields it cannot honour (legacy routes)."""


@dataclass(frozen=True)
class JobContent:
    """A stored output of a job: its storage key (never a path), length and media type."""

    job_id: str
    key: str
    size: int
    media_type: str
    suffix: str


@dataclass(frozen=True)
class JobPage:
    """One page of jobs and how many match in all."""

    data: list[JobView]
    count: int


class JobService:
    """Jobs for the API and the workers. Thread-safe; one per process."""

    def __init__(
        self,
        store: JobStore,
        storage: Storage,
        config: JobServiceConfig,
        hub: EventHub | None = None,
        notify_waiting: Callable[[str, str], None] | None = None,
        serving: ServingStatus | None = None,
    ):
        self.store = store
        self.serving = serving
        """Who knows whether a model can be served (the workers); None: never refuse for that reason."""
        self.memory_budget: Callable[[str], float | None] | None = None
        """Model -> accelerator memory (GiB) the workers serving it may use (the worker registry); a request whose
        memory estimate exceeds it is refused at submission. None, or a None answer: not checked."""
        self.storage = storage
        self.files = JobFiles(storage)
        self.config = config
        self.hub = hub or EventHub()
        self._notify_waiting = notify_waiting or (lambda job_id, model: None)
        self._stats_cache: tuple[float, Mapping[str, ModelStats]] | None = None
        self._eta_cache: tuple[float, int, Mapping[int, float | None]] | None = None
        self._eta_refresh = threading.Lock()
        self._final_listeners: list[FinalListener] = []
        self._created_listeners: list[CreatedListener] = []
        self._step_listeners: list[StepListener] = []

    # 1. Creating
    def create_job(self, submission: JobSubmission) -> tuple[JobView, bool]:
        """Validates, stores inputs and queues a job. Returns (job, created); `created` is False when the
        idempotency key was seen before (the earlier job is returned). Raises `InvalidRequestError` (422/413),
        `QueueFullError` (429)."""
        model = self._check_model(submission.model)
        check_servable(self.serving, model)
        params = dict(submission.params)
        media = {name: params.pop(name) for name in MEDIA_FIELDS if params.get(name) not in (None, "", [])}
        for name, value in submission.inputs.items():
            if name not in MEDIA_FIELDS:
                raise InvalidRequestError(
                    name, f"`{name}` is not a media input; media inputs: {', '.join(MEDIA_FIELDS)}"
                )
            if value not in (None, "", []):
                media[name] = value
        webhook_url = _check_webhook_url(submission.webhook_url, self.config.media.allow_private_urls)
        key = _check_idempotency_key(submission.idempotency_key)

        # 1. Validate every parameter before touching any file (placeholders stand in for media inputs).
        placeholders = {n: ["pending"] * len(v) if n == "reference_images" else "pending" for n, v in media.items()}
        for name, value in media.items():
            if name == "reference_images" and not isinstance(value, list | tuple):
                raise InvalidRequestError(name, f"`{name}` must be a list of images, got {type(value).__name__}")
        request = resolve_request(model, {**params, **placeholders}, probe_inputs=False)
        resolve_loras(request.loras, self.config.lora)  # a missing or forbidden LoRA file is a 422 now
        fingerprint = _fingerprint(model, params, media, webhook_url)
        if key:
            existing = self.store.by_idempotency_key(submission.owner_key, key)
            if existing is not None:
                return self._same_request(existing, fingerprint), False

        # 2. Read every input (decode data URLs, fetch URLs, sniff types) before the job exists.
        loaded: dict[str, StoredInput | list[StoredInput]] = {}
        for name, value in media.items():
            if name == "reference_images":
                loaded[name] = [load_input(f"{name}[{i}]", v, self.config.media) for i, v in enumerate(value)]
            else:
                loaded[name] = load_input(name, value, self.config.media)
        data = {n: [x.data for x in v] if isinstance(v, list) else v.data for n, v in loaded.items()}
        # The output's shape follows some inputs (an image task's aspect ratio, Animate's pose video): resolved
        # now, so the job shows the size it will make before it runs.
        request = fit_to_inputs(get_spec(model), request, probe_shapes(request.replace(**data)))
        # Probe them as the run will read them (images decode, videos long enough): a bad input is a 422 now,
        # never a failed job later.
        probe_media(request.replace(**data))
        self._check_fits(request)

        # 3. Write inputs, then queue the row (a worker may claim it the moment it commits).
        job_id = str(uuid.uuid4())
        paths: dict[str, Any] = {}
        public = request_params(request)
        try:
            for name, item in loaded.items():
                if isinstance(item, list):
                    paths[name] = [self.files.save_input(job_id, f"{name}-{i}", x.data) for i, x in enumerate(item)]
                    public[name] = [x.description for x in item]
                else:
                    paths[name] = self.files.save_input(job_id, name, item.data)
                    public[name] = item.description
            job = Job(
                id=job_id,
                kind=request.task.value,
                model=model,
                params=public,
                inputs=paths,
                # Animate denoises its segments one after the other: all their steps, known from the pose video.
                steps=effective_steps(get_spec(model), request)
                if request.task.value == "animate"
                else request.num_inference_steps,
                random_weights=get_spec(model).random_weights,
                max_attempts=self.config.max_attempts,
                webhook_url=webhook_url,
                idempotency_key=key,
                request_fingerprint=fingerprint,
                owner_key=submission.owner_key,
                parallel_plan=dict(submission.parallel_plan) if submission.parallel_plan is not None else None,
            )
            row, created = self.store.create(job, self.config.max_queue)
        except QueueFullError as exc:
            self.files.delete_inputs(job_id)
            raise QueueFullError(str(exc), self._retry_after_s(model, request.num_inference_steps)) from None
        except Exception as exc:
            self.files.delete_inputs(job_id)
            if is_storage_full(exc):
                logger.error("job %s not queued: storage full: %s", job_id, exc)
                raise StorageFullError(
                    "the server's storage is full; the job was not queued. Retry later or ask the operator"
                ) from None
            raise
        except BaseException:
            self.files.delete_inputs(job_id)
            raise
        if not created:
            self.files.delete_inputs(job_id)
            return self._same_request(row, fingerprint), False
        logger.info("job %s queued (%s, %s, %d steps)", job_id, model, request.task.value, request.num_inference_steps)
        self._notify_waiting(job_id, model)
        self._changed(job_id)
        view = self._view(row)
        self._call(self._created_listeners, view)
        return view, True

    def _check_model(self, model: str | None) -> str:
        if model is None or model == "":
            return self.config.served_models[0]
        if not isinstance(model, str):
            raise InvalidRequestError("model", f"`model` must be a string, got {model!r}")
        get_spec(model)  # unknown names: UnknownModelError listing the catalog
        if model not in self.config.served_models:
            served = ", ".join(self.config.served_models)
            raise InvalidRequestError("model", f"`model` {model!r} is not served here; served: {served}")
        return model

    def _same_request(self, job: Job, fingerprint: str) -> JobView:
        if job.request_fingerprint != fingerprint:
            raise JobStateError(
                f"`Idempotency-Key` {job.idempotency_key!r} was used for a different request (job {job.id})"
            )
        return self._view(job)

    # 2. Reading
    def get_job(self, job_id: str, owner_key: str | None = None) -> JobView:
        """The job with its queue position and ETA; `JobNotFoundError` (also for another owner's job)."""
        return self._view(self._get(job_id, owner_key))

    def find_by_idempotency_key(self, key: str, owner_key: str | None = None) -> JobView:
        """The job made with `Idempotency-Key` `key` (by `owner_key`; None: by anyone, for an admin or an open
        service); `JobNotFoundError` when there is none."""
        job = self.store.by_idempotency_key(owner_key, key)
        if job is None:
            raise JobNotFoundError(f"job {key!r} not found")
        return self._view(job)

    def _get(self, job_id: str, owner_key: str | None) -> Job:
        job = self.store.get(job_id)
        if owner_key is not None and job.owner_key != owner_key:
            raise JobNotFoundError(f"job {job_id!r} not found")
        return job

    def list_jobs(
        self,
        status: str | None = None,
        model: str | None = None,
        limit: int = 20,
        offset: int = 0,
        owner_key: str | None = None,
    ) -> JobPage:
        """Jobs newest first, filtered by status and model."""
        if status is not None and status not in {s.value for s in JobStatus}:
            choices = ", ".join(s.value for s in JobStatus)
            raise InvalidRequestError("status", f"`status` must be one of {choices}, got {status!r}")
        if not 1 <= limit <= 1000:
            raise InvalidRequestError("limit", f"`limit` must be between 1 and 1000, got {limit}")
        if offset < 0:
            raise InvalidRequestError("offset", f"`offset` must be 0 or more, got {offset}")
        rows, count = self.store.list(status, model, owner_key, limit, offset)
        return JobPage(self._views(rows), count)

    def list_jobs_after(
        self, after: str | None = None, limit: int = 20, ascending: bool = False, owner_key: str | None = None
    ) -> tuple[list[JobView], bool]:
        """Cursor paging: up to `limit` jobs after the job `after` (newest first unless `ascending`), and whether
        more follow. `JobNotFoundError` for an unknown cursor."""
        if not 1 <= limit <= 1000:
            raise InvalidRequestError("limit", f"`limit` must be between 1 and 1000, got {limit}")
        rows, has_more = self.store.page_after(after, limit, ascending, owner_key)
        return self._views(rows), has_more

    def _view(self, job: Job) -> JobView:
        return self._views([job])[0]

    def _views(self, jobs: Sequence[Job]) -> list[JobView]:
        """Views with queue positions from one consistent read, and ETAs from measured step times."""
        queued = [j for j in jobs if j.status == JobStatus.QUEUED.value]
        running = [j for j in jobs if j.status == JobStatus.RUNNING.value]
        # Rows read by the store carry the position they had in the same statement; others are looked up.
        unknown = [j.seq for j in queued if getattr(j, "queue_position", None) is None]
        positions = self.store.queue_positions(unknown)
        positions.update({j.seq: j.queue_position for j in queued if getattr(j, "queue_position", None) is not None})
        stats = self._model_stats() if queued or running else {}
        etas: Mapping[int, float | None] = {}
        if queued and stats:
            etas = self._queued_etas(max(j.seq for j in queued), stats)
        views = []
        for job in jobs:
            eta = running_eta_s(job, stats) if job.status == JobStatus.RUNNING.value else etas.get(job.seq)
            views.append(make_view(job, positions.get(job.seq), eta))
        return views

    def _queued_etas(self, up_to_seq: int, stats: Mapping[str, ModelStats]) -> Mapping[int, float | None]:
        """ETAs of the whole queue, computed at most every `ETA_TTL_S` seconds (and again after any change this
        process makes): polls of queued jobs share one read of the queue instead of reading it each."""
        cached = self._eta_cache
        if self._eta_fresh(cached, up_to_seq):
            return cached[2]
        # One thread reads the queue at a time (under 200 pollers, several did at once after every submission). The
        # others answer from the previous read when it holds their job, or wait for the new one when it does not.
        known = cached is not None and up_to_seq <= cached[1]
        if not self._eta_refresh.acquire(blocking=not known):
            return cached[2]
        try:
            cached = self._eta_cache
            if not self._eta_fresh(cached, up_to_seq):
                now = time.monotonic()
                queue = self.store.queued_up_to(None)
                etas = queued_etas(queue, self.store.running(), stats, self.config.concurrency)
                cached = self._eta_cache = (now, max((seq for seq, _, _ in queue), default=0), etas)
        finally:
            self._eta_refresh.release()
        return cached[2]

    @staticmethod
    def _eta_fresh(cached: tuple[float, int, Mapping[int, float | None]] | None, up_to_seq: int) -> bool:
        return cached is not None and time.monotonic() - cached[0] <= ETA_TTL_S and up_to_seq <= cached[1]

    def _changed(self, job_id: str) -> None:
        """After this process changed job `job_id`: ETAs are recomputed (by the next poll), event readers woken."""
        cached = self._eta_cache
        if cached is not None:
            self._eta_cache = (-math.inf, cached[1], cached[2])
        self.hub.notify(job_id)

    def _model_stats(self) -> Mapping[str, ModelStats]:
        """Per-model timings, re-read at most every `STATS_TTL_S` seconds."""
        now = time.monotonic()
        cached = self._stats_cache
        if cached is None or now - cached[0] > STATS_TTL_S:
            cached = self._stats_cache = (now, self.store.model_stats())
        return cached[1]

    def _retry_after_s(self, model: str, steps: int) -> int:
        """Seconds a client should wait when the queue is full: about one job's run, shared by the workers."""
        s = self._model_stats().get(model)
        run_s = 5.0 if s is None else steps * s.step_time_s + s.overhead_s
        return max(1, min(600, round(run_s / max(1, self.config.concurrency))))

    def content(self, job_id: str, variant: str = "video", owner_key: str | None = None) -> JobContent:
        """Where a succeeded job's `video` (MP4; PNG for t2i) or `thumbnail` (JPEG) is stored. 409 when there is none
        (yet)."""
        if variant not in VARIANTS:
            raise InvalidRequestError("variant", f"`variant` must be video, thumbnail or partial, got {variant!r}")
        job = self._get(job_id, owner_key)
        if job.status == JobStatus.EXPIRED.value:
            raise JobStateError(f"job {job_id!r} expired; its files were deleted")
        if variant == "partial":
            if not (job.outputs or {}).get("partial_key"):
                raise JobStateError(f"job {job_id!r} is {job.status}; it has no partial output")
        elif job.status != JobStatus.SUCCEEDED.value or not job.outputs:
            raise JobStateError(f"job {job_id!r} is {job.status}; content exists once it succeeded")
        key = job.outputs.get(f"{variant}_key")
        try:
            size = self.storage.size(key) if key else None
        except StorageKeyNotFound:
            size = None
        if size is None:
            raise JobStateError(f"job {job_id!r}: its {variant} file is gone from storage")
        suffix = os.path.splitext(key)[1]
        return JobContent(job.id, key, size, MEDIA_TYPES[suffix], suffix)

    async def stream_events(
        self, job_id: str, after_seq: int = 0, owner_key: str | None = None
    ) -> AsyncIterator[JobEventView]:
        """Every event of the job numbered above `after_seq`, in order, live; ends after the final status."""
        await asyncio.to_thread(self._get, job_id, owner_key)
        last = after_seq
        with self.hub.subscribe(job_id) as waiter:
            while True:
                events = await asyncio.to_thread(self.store.events_after, job_id, last)
                for event in events:
                    view = JobEventView.of(event)
                    last = event.seq
                    yield view
                    if view.is_final:
                        return
                if not events:
                    woken = await waiter.wait(self.config.event_poll_s)
                    if not woken:
                        await asyncio.to_thread(self._get, job_id, owner_key)  # deleted meanwhile: 404 ends it

    def queue_stats(self) -> dict[str, int]:
        """Jobs per status (queued, running, ...)."""
        return self.store.counts()

    # 3. Changing, client side
    def cancel_job(self, job_id: str, owner_key: str | None = None) -> JobView:
        """Queued: cancelled at once. Running: stops at the next step boundary. Finished: `JobStateError` (409)."""
        self._get(job_id, owner_key)
        job = self.store.request_cancel(job_id, self.config.retention_s)
        self._changed(job_id)
        view = self._view(job)
        if job.status == JobStatus.CANCELLED.value:
            self.files.delete_inputs(job_id)
            self._final(view)
        logger.info("job %s: cancel requested (%s)", job_id, job.status)
        return view

    def delete_job(self, job_id: str, owner_key: str | None = None) -> None:
        """Deletes a job that is not running and its files. 409 for a running job."""
        self._get(job_id, owner_key)
        self.store.delete(job_id)
        self.files.delete_all(job_id)
        self._changed(job_id)

    def add_final_listener(self, callback: FinalListener) -> None:
        """Calls `callback(JobView)` whenever a job of this process reaches a final status."""
        self._final_listeners.append(callback)

    def add_created_listener(self, callback: CreatedListener) -> None:
        """Calls `callback(JobView)` whenever this process queues a new job (metrics)."""
        self._created_listeners.append(callback)

    def add_step_listener(self, callback: StepListener) -> None:
        """Calls `callback(job_id, step_times_s)` whenever a worker of this process reports step times (metrics)."""
        self._step_listeners.append(callback)

    def _final(self, view: JobView) -> None:
        self._call(self._final_listeners, view)

    @staticmethod
    def _call(listeners: Sequence[Callable[..., None]], *args: Any) -> None:
        for callback in listeners:
            try:
                callback(*args)
            except Exception:
                logger.exception("listener %r failed for %s", callback, args[0] if args else None)

    # 4. Worker side
    def claim_next_job(self, owner: str, models: Sequence[str], job_id: str | None = None) -> Job | None:
        """The oldest queued job of `models` (or the job `job_id`, while it is queued), now running under `owner`'s
        lease; None when there is none."""
        job = self.store.claim_next(owner, models, self.config.lease_s, job_id)
        if job is not None:
            self._changed(job.id)
        return job

    def heartbeat(self, job_id: str, owner: str) -> LeaseState:
        """Renews the lease; tells whether it is still held and whether a cancel was requested."""
        return self.store.heartbeat(job_id, owner, self.config.lease_s)

    def lease_state(self, job_id: str, owner: str) -> LeaseState:
        return self.store.lease_state(job_id, owner)

    def record_progress(
        self, job_id: str, owner: str, changes: Sequence[tuple[str, dict[str, Any]]], step_times_s: Sequence[float] = ()
    ) -> LeaseState:
        """Persists stage/step changes (one event each) and wakes event readers."""
        state = self.store.record_progress(job_id, owner, changes, step_times_s)
        self._changed(job_id)
        if step_times_s and state.held:
            self._call(self._step_listeners, job_id, tuple(step_times_s))
        return state

    def _check_fits(self, request: GenerationRequest) -> None:
        """Refuses (422) a request whose memory estimate exceeds what the workers serving its model may use,
        saying what would fit (fewer frames, a smaller size, a memory option)."""
        budget = self.memory_budget(request.model) if self.memory_budget is not None else None
        if budget is None:
            return
        spec = get_spec(request.model)
        advice = fit_advice(spec, self.config.memory, request.width, request.height, request.num_frames, budget)
        if advice is not None:
            raise InsufficientMemoryError(advice.field, advice.message(spec.name, "the largest worker's device"))

    def generation_request(self, job: Job, input_paths: Mapping[str, Any]) -> GenerationRequest:
        """The engine request of a claimed job: its stored parameters (validated once, at submission) and its
        inputs at `input_paths` (what `files.fetch_inputs` copied to this host)."""
        return request_from_params({**job.params, "model": job.model}, input_paths)

    def finish_succeeded(self, job_id: str, owner: str, result: GenerationResult, files: OutputKeys) -> JobView | None:
        """Marks the job succeeded with its outputs. None when the lease was lost (someone else owns it now)."""
        job = self.store.get(job_id)
        run_time_s = (utcnow() - job.started_at).total_seconds() if job.started_at else None
        outputs = {
            "video_key": files.video_key,
            "thumbnail_key": files.thumbnail_key,
            "video_bytes": files.video_bytes,
            "width": result.width,
            "height": result.height,
            "num_frames": result.num_frames,
            "fps": result.fps,
            "seed": result.seed,
            "stage_times_s": dict(result.stage_times_s),
            "loras": list(result.loras),
            "speed": dict(result.speed),
        }
        values = {"outputs": outputs, "run_time_s": run_time_s, "random_weights": result.random_weights}
        return self._finish(job_id, owner, JobStatus.SUCCEEDED, values)

    def finish_failed(
        self, job_id: str, owner: str, error_type: str, message: str, outputs: dict[str, Any] | None = None
    ) -> JobView | None:
        """Marks the job failed with a type and a message a user can act on; `outputs` holds what it left (an
        upscale's partial MP4: `partial_key`, `partial_bytes`, `partial_frames`)."""
        values = {"error_type": error_type, "error_message": redact_paths(message)[:4000]}
        if outputs:
            values["outputs"] = outputs
        return self._finish(job_id, owner, JobStatus.FAILED, values)

    def finish_cancelled(self, job_id: str, owner: str, outputs: dict[str, Any] | None = None) -> JobView | None:
        """Marks a running job cancelled (it stopped at a step boundary; an upscale leaves its partial MP4)."""
        values = {"error_type": "cancelled", "error_message": "cancelled by request while running"}
        if outputs:
            values["outputs"] = outputs
        return self._finish(job_id, owner, JobStatus.CANCELLED, values)

    def _finish(self, job_id: str, owner: str, status: JobStatus, values: dict[str, Any]) -> JobView | None:
        job = self.store.finish(job_id, owner, status, self.config.retention_s, **values)
        if job is None:
            logger.warning(
                "job %s: lease lost before it could be marked %s; left to its new owner", job_id, status.value
            )
            return None
        self.files.delete_inputs(job_id)
        self._changed(job_id)
        view = self._view(job)
        self._final(view)
        return view

    # 5. Sweeps
    def release_lost_jobs(self, owner_is_dead: Callable[[str], bool] | None = None) -> list[JobView]:
        """Expired leases (and owners known dead) back to queued, or failed `worker_lost` after the last attempt."""
        changed = self.store.release_lost(self.config.retention_s, owner_is_dead=owner_is_dead)
        views = []
        for job in changed:
            self._changed(job.id)
            view = self._view(job)
            views.append(view)
            if job.status == JobStatus.QUEUED.value:
                self._notify_waiting(job.id, job.model)
            else:
                self.files.delete_inputs(job.id)
                self._final(view)
        return views

    def expire_finished_jobs(self) -> list[str]:
        """Finished jobs past retention: files deleted, rows kept as `expired`. Returns their ids."""
        expired = self.store.expire_finished()
        for job in expired:
            self.files.delete_all(job.id)
            self._changed(job.id)
        if expired:
            logger.info("expired %d finished jobs past retention", len(expired))
        return [job.id for job in expired]


def _check_webhook_url(url: str | None, allow_private_addresses: bool) -> str | None:
    """The URL checked now by the rules every delivery attempt applies again (`media.fetch.resolve_url`: http(s),
    no credentials, a host that resolves to public addresses only), so a webhook that could never be sent is a 422
    at submission, not a job whose webhook silently never arrives."""
    if url is None or url == "":
        return None
    if not isinstance(url, str) or len(url) > 2048 or not url.lower().startswith(("http://", "https://")):
        shown = str(url)[:80] if not isinstance(url, str) or "@" not in url else "(a URL with credentials)"
        raise InvalidRequestError(
            "webhook_url", f"`webhook_url` must be an http(s) URL of at most 2048 characters, got {shown!r}"
        )
    resolve_url(url, "webhook_url", allow_private_addresses)
    return url


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None or key == "":
        return None
    if len(key) > 255 or not key.isprintable():
        raise InvalidRequestError(
            "Idempotency-Key", f"`Idempotency-Key` must be 1-255 printable characters, got {key[:40]!r}..."
        )
    return key


def _fingerprint(model: str, params: Mapping[str, Any], media: Mapping[str, Any], webhook_url: str | None) -> str:
    """A hash of what the client sent (media by content), to tell a retried request from a different one."""

    def digest(value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            return "sha256:" + hashlib.sha256(value).hexdigest()
        if isinstance(value, list | tuple):
            return [digest(v) for v in value]
        return value if isinstance(value, str) else repr(value)

    body = {"model": model, "params": params, "media": {k: digest(v) for k, v in media.items()}, "webhook": webhook_url}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=repr).encode()).hexdigest()
