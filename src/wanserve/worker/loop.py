"""The worker loop: claim a job, run it on the engine with progress and stop checks, record how it ended.

One `Worker` runs one job at a time. It goes through `JobService` for every database change; an exception in a job
fails that job (with its error type and message) and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wanserve.dispatch.base import Dispatcher
from wanserve.engine.requests import (
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProgressEvent,
    Stage,
    StopCallback,
    TaskKind,
)
from wanserve.engine.upscale import chained_request
from wanserve.errors import GenerationCancelled, GroupBroken, WanserveError, is_storage_full
from wanserve.jobs.model import Job
from wanserve.jobs.service import JobService
from wanserve.media.outputs import Mp4Writer, write_output_files
from wanserve.worker.upscale import run_upscale_part

logger = logging.getLogger(__name__)


class EngineLike(Protocol):
    """What a worker needs of `wanserve.engine.engine.Engine`."""

    def load(self, model: str) -> None: ...

    def loaded_models(self) -> list[str]: ...

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
        write_video=None,
    ) -> GenerationResult: ...


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker behaves."""

    worker_id: str
    """Lease owner id: `<host>:<pid>:<boot token>:<slot>` (see `worker.identity`)."""
    task_timeout_s: float = 3600.0
    heartbeat_s: float = 10.0
    """Lease renewal period (a third of the lease)."""
    poll_interval_s: float = 2.0
    progress_flush_s: float = 0.2
    """Step events are written in batches at most this often; stage changes at once."""
    hold_dir: Path | None = None
    """Test-only: while `<hold_dir>/hold` exists, block after step `hold_step` until `<hold_dir>/<job id>` exists."""
    hold_step: int = 1
    warmup: tuple[tuple[str, GenerationRequest], ...] = ()
    """(model, request) run once after the model loads and before the first job is claimed (engine/warmup.py);
    no output is written."""


class _ProgressRecorder:
    """Turns engine progress events into job events, batching steps so the database is not written per step."""

    def __init__(self, service: JobService, job_id: str, owner: str, flush_s: float):
        self._service, self._job_id, self._owner, self._flush_s = service, job_id, owner, flush_s
        self._pending: list[tuple[str, dict]] = []
        self._step_times: list[float] = []
        self._stage: str | None = None
        self._step = -1
        self._last_flush = time.monotonic()

    def flush_quietly(self) -> None:
        """Flushes what is pending; a failure here must not hide the job's own outcome."""
        try:
            self.flush()
        except Exception:
            logger.exception("job %s: could not record its last progress", self._job_id)

    def add(self, event: ProgressEvent) -> None:
        stage = event.stage.value
        values = {"stage": stage, "step": event.step, "steps": event.steps}
        urgent = False
        if stage != self._stage:
            self._pending.append(("stage", values))
            self._stage, self._step, urgent = stage, event.step, True
        elif event.step != self._step:
            self._pending.append(("step", values))
            self._step = event.step
        if event.step_time_s is not None:
            self._step_times.append(event.step_time_s)
        if urgent or time.monotonic() - self._last_flush >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._service.record_progress(self._job_id, self._owner, self._pending, self._step_times)
            self._pending, self._step_times = [], []
        self._last_flush = time.monotonic()


class _Heartbeat(threading.Thread):
    """Renews a job's lease every `period_s` until stopped; remembers when the lease was lost."""

    def __init__(self, service: JobService, job_id: str, owner: str, period_s: float):
        super().__init__(name=f"heartbeat-{job_id[:8]}", daemon=True)
        self._service, self._job_id, self._owner, self._period_s = service, job_id, owner, period_s
        self._stop_event = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._period_s):
            try:
                state = self._service.heartbeat(self._job_id, self._owner)
            except Exception:
                logger.exception("job %s: heartbeat failed; retrying", self._job_id)
                continue
            if not state.held:
                logger.warning("job %s: lease lost; stopping at the next step", self._job_id)
                self.lost.set()
                return

    def stop(self) -> None:
        self._stop_event.set()


class Worker:
    """Runs queued jobs of `models` on `engine`, one at a time."""

    def __init__(
        self,
        service: JobService,
        engine: EngineLike,
        dispatcher: Dispatcher,
        config: WorkerConfig,
        models: Sequence[str],
    ):
        self.service, self.engine, self.dispatcher, self.config = service, engine, dispatcher, config
        self.models = list(models)
        self.current_job: str | None = None
        self.jobs_done = 0
        """Jobs this worker ran to an end (any outcome)."""
        self.ready = threading.Event()
        """Set once the models are loaded (and warmed up) and the worker takes jobs."""
        self.phase = "loading"
        """`loading`, `warming_up` (running the configured warm-up sizes), then `ready` (`/health` shows it)."""
        self.load_errors: dict[str, str] = {}
        """Model -> why it could not be loaded; the worker serves the others and never claims its jobs."""

    def load_models(self) -> None:
        """Loads every model, then runs its configured warm-up sizes, so the first job pays no loading or first-call
        (compile) time. A model that fails to load or to warm up is left out (and reported through
        `load_errors`); a worker that can load none raises."""
        for model in self.models:
            started = time.monotonic()
            try:
                self.engine.load(model)
            except Exception as exc:
                self.load_errors[model] = f"{type(exc).__name__}: {exc}"
                logger.error("%s: %s could not be loaded: %s", self.config.worker_id, model, self.load_errors[model])
                continue
            logger.info("%s: %s loaded in %.1f s", self.config.worker_id, model, time.monotonic() - started)
            self._warm_up(model)
        self.models = [m for m in self.models if m not in self.load_errors]
        if not self.models:
            raise RuntimeError(
                "no model could be loaded: " + "; ".join(f"{m}: {e}" for m, e in self.load_errors.items())
            )
        self.phase = "ready"
        self.ready.set()

    def _warm_up(self, model: str) -> None:
        """Runs `model`'s warm-up requests (frames discarded); a failure leaves the model out like a load error."""
        for name, request in self.config.warmup:
            if name != model:
                continue
            self.phase = "warming_up"
            size = f"{request.width}x{request.height}x{request.num_frames}"
            started = time.monotonic()
            try:
                self.engine.generate(request)
            except Exception as exc:
                self.load_errors[model] = f"warm-up at {size} failed: {type(exc).__name__}: {exc}"
                logger.error("%s: %s: %s", self.config.worker_id, model, self.load_errors[model])
                return
            logger.info("%s: %s warmed up at %s in %.1f s", self.config.worker_id, model, size,
                        time.monotonic() - started)  # fmt: skip

    def run(self, stop: threading.Event) -> None:
        """Loads the models, then runs the jobs the dispatcher hands over until `stop` is set."""
        self.load_models()
        self.dispatcher.serve(self, stop, self.config.poll_interval_s)

    def run_once(self, stop: threading.Event | None = None, job_id: str | None = None) -> bool:
        """Claims one job (the job `job_id` when a broker message names it, only while it is queued) and runs it to
        its end. False when there was nothing to claim."""
        job = self.service.claim_next_job(self.config.worker_id, self.models, job_id)
        if job is None:
            return False
        self.current_job = job.id
        try:
            self._run_job(job, stop or threading.Event())
        finally:
            self.current_job = None
            self.jobs_done += 1
        return True

    def _run_job(self, job: Job, stop: threading.Event) -> None:
        owner = self.config.worker_id
        logger.info("%s: running job %s (attempt %d)", owner, job.id, job.attempts)
        deadline = time.monotonic() + self.config.task_timeout_s
        recorder = _ProgressRecorder(self.service, job.id, owner, self.config.progress_flush_s)
        heartbeat = _Heartbeat(self.service, job.id, owner, self.config.heartbeat_s)
        reason: list[str] = []  # why should_stop said yes: "lease", "cancel", "timeout" or "shutdown"

        def should_stop() -> bool:
            if heartbeat.lost.is_set():
                reason.append("lease")
            elif time.monotonic() > deadline:
                reason.append("timeout")
            else:
                state = self.service.lease_state(job.id, owner)
                if not state.held:
                    reason.append("lease")
                elif state.cancel_requested:
                    reason.append("cancel")
            return bool(reason)

        def on_progress(event: ProgressEvent) -> None:
            recorder.add(event)
            hold = self.config.hold_dir
            if hold is not None and event.step == self.config.hold_step and event.step_time_s is not None:
                if not (hold / "hold").exists():
                    return
                recorder.flush()
                self._hold(job.id, stop, heartbeat)

        heartbeat.start()
        scratch = tempfile.TemporaryDirectory(prefix=f"wanserve-{job.id[:8]}-")
        partial: dict = {}  # an upscale that stops early: the joined segments written so far (worker/upscale.py)
        try:
            # 1. Inputs from storage to this host; 2. generate (and upscale); 3. encode beside them; 4. store.
            inputs = self.service.files.fetch_inputs(job.inputs, scratch.name)
            request = self.service.generation_request(job, inputs)
            if request.task == TaskKind.UPSCALE:
                result, encoded = run_upscale_part(
                    self.engine, request, scratch.name, on_progress, should_stop, partial
                )
            elif request.upscale:
                # A chained job: its generated frames go through FlashVSR as stage `upscaling`.
                result = self.engine.generate(request, on_progress=on_progress, should_stop=should_stop)
                result, encoded = run_upscale_part(
                    self.engine, chained_request(request), scratch.name, on_progress, should_stop, partial,
                    frames=result.frames,
                )  # fmt: skip
            elif request.task == TaskKind.T2I:
                result = self.engine.generate(request, on_progress=on_progress, should_stop=should_stop)
                steps = len(result.step_times_s)
                on_progress(ProgressEvent(Stage.WRITING, step=steps, steps=steps))
                encoded = write_output_files(result.frames, os.path.join(scratch.name, "output.png"), request.fps,
                                             request.crf)  # fmt: skip
            else:
                # The MP4 is encoded as the VAE decodes (engine/decode_stream.py): by the time `generate` returns,
                # the file is written; the `writing` stage that follows is only its closing.
                writer = Mp4Writer(os.path.join(scratch.name, "output.mp4"), request.fps, request.crf)
                result = self.engine.generate(
                    request, on_progress=on_progress, should_stop=should_stop, write_video=writer
                )
                steps = len(result.step_times_s)
                on_progress(ProgressEvent(Stage.WRITING, step=steps, steps=steps))
                encoded = writer.files
            files = self.service.files.store_outputs(job.id, encoded.path, encoded.thumbnail_path)
            recorder.flush()
        except GenerationCancelled:
            recorder.flush_quietly()
            cause = reason[0] if reason else "cancel"
            partial_outputs = self._store_partial(job.id, partial) if cause != "lease" else None
            if cause == "lease":
                logger.warning("job %s: stopped after losing its lease; its new owner finishes it", job.id)
            elif cause == "timeout":
                self.service.finish_failed(
                    job.id,
                    owner,
                    "timeout",
                    f"the job ran longer than the task timeout of {self.config.task_timeout_s:g} s",
                    outputs=partial_outputs,
                )
            else:
                self.service.finish_cancelled(job.id, owner, outputs=partial_outputs)
            return
        except GroupBroken as exc:
            # The rank group restarted; the job is not finished here: its lease expires and it is queued again.
            recorder.flush_quietly()
            logger.error("job %s: %s; it returns to the queue when its lease expires", job.id, exc)
            return
        except WanserveError as exc:
            recorder.flush_quietly()
            logger.warning("job %s failed: %s: %s", job.id, exc.error_type, exc)
            outputs = self._store_partial(job.id, partial)
            self.service.finish_failed(job.id, owner, exc.error_type, str(exc), outputs=outputs)
            return
        except Exception as exc:
            recorder.flush_quietly()
            if is_storage_full(exc):
                logger.error("job %s failed: storage full: %s", job.id, exc)
                message = f"no space left to write the job's files ({type(exc).__name__}: {exc})"
                self.service.finish_failed(job.id, owner, "storage_full", message)
                return
            logger.exception("job %s failed with an unexpected error", job.id)
            outputs = self._store_partial(job.id, partial)
            self.service.finish_failed(job.id, owner, "internal_error", f"{type(exc).__name__}: {exc}", outputs=outputs)
            return
        finally:
            heartbeat.stop()
            scratch.cleanup()
        view = self.service.finish_succeeded(job.id, owner, result, files)
        if view is not None:
            logger.info("job %s succeeded in %.2f s", job.id, (view.finished_at - view.started_at).total_seconds())

    def _store_partial(self, job_id: str, partial: dict) -> dict | None:
        """Stores the partial MP4 of an upscale that stopped early; its outputs entry, or None."""
        if not partial.get("path"):
            return None
        try:
            key, size = self.service.files.store_partial(job_id, partial["path"])
        except Exception:
            logger.exception("job %s: could not store its partial output", job_id)
            return None
        return {"partial_key": key, "partial_bytes": size, "partial_frames": partial.get("num_frames", 0)}

    def _hold(self, job_id: str, stop: threading.Event, heartbeat: _Heartbeat) -> None:
        """Test hook: blocks until `<hold_dir>/<job id>` exists (or the worker stops or loses the lease)."""
        release = self.config.hold_dir / job_id
        logger.info("job %s: holding after step %d until %s exists", job_id, self.config.hold_step, release)
        while not release.exists() and not stop.is_set() and not heartbeat.lost.is_set():
            stop.wait(0.02)
