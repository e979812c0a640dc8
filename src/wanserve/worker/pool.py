"""`WorkerPool`: the workers of one process (`wanserve serve` or `wanserve worker`), one thread each, registered in
the `workers` table and heartbeating there so every process of the deployment sees them (`GET /v1/workers`)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from wanserve.dispatch.base import Dispatcher
from wanserve.jobs.service import JobService
from wanserve.jobs.workers import WorkerRegistry
from wanserve.worker.loop import Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as `/health` shows it."""

    worker_id: str
    device: str
    ready: bool
    current_job: str | None
    load_error: str | None
    """Why the worker stopped (it could load no model, or its loop died)."""
    models: tuple[str, ...] = ()
    """Models it serves (or is loading)."""
    model_errors: dict[str, str] = field(default_factory=dict)
    """Model -> why it could not be loaded."""
    phase: str = "loading"
    """`loading`, `warming_up` (the configured warm-up sizes, `WANSERVE_WARMUP`), `ready`, or `error`."""


class WorkerPool:
    """Starts workers and the sweeper on threads; stops them on shutdown."""

    def __init__(
        self,
        service: JobService,
        dispatcher: Dispatcher,
        workers: list[tuple[Worker, str]],
        registry: WorkerRegistry | None = None,
        heartbeat_s: float = 10.0,
    ):
        self.service, self.dispatcher = service, dispatcher
        self.workers = workers
        self.registry, self.heartbeat_s = registry, heartbeat_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._load_errors: dict[str, str] = {}

    def start(self) -> None:
        """Registers and starts every worker (each loads its models first)."""
        if self.registry is not None:
            for worker, device in self.workers:
                budget = getattr(worker.engine, "device_budget_gib", None)  # admission plans against it
                self.registry.register(worker.config.worker_id, socket.gethostname(), os.getpid(), [device],
                                       worker.models, budget() if budget else None)  # fmt: skip
            beat = threading.Thread(target=self._heartbeat_loop, name="worker-registry", daemon=True)
            beat.start()
            self._threads.append(beat)
        for worker, _device in self.workers:
            thread = threading.Thread(
                target=self._run_worker, args=(worker,), name=worker.config.worker_id, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        threading.Thread(target=self._announce_ready, name="workers-ready", daemon=True).start()

    def _announce_ready(self) -> None:
        for worker, _device in self.workers:
            while not worker.ready.wait(1.0):
                if self._stop.is_set() or self._load_errors:
                    return
        logger.info("all %d workers ready", len(self.workers))

    def _run_worker(self, worker: Worker) -> None:
        try:
            worker.run(self._stop)
        except Exception as exc:
            self._load_errors[worker.config.worker_id] = f"{type(exc).__name__}: {exc}"
            logger.exception("worker %s stopped", worker.config.worker_id)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.heartbeat()

    def heartbeat(self, stopped: bool = False) -> None:
        """Writes every worker's state to the registry (a failure is logged; the next beat retries)."""
        if self.registry is None:
            return
        for status, (worker, _device) in zip(self.status(), self.workers, strict=True):
            if stopped:
                state = "stopped"
            elif status.load_error:
                state = "error"
            elif not status.ready:
                state = "starting"
            else:
                state = "busy" if status.current_job else "idle"
            try:
                self.registry.heartbeat(status.worker_id, state, status.current_job, worker.jobs_done,
                                        status.load_error)  # fmt: skip
            except Exception:
                logger.exception("worker %s: registry heartbeat failed", status.worker_id)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops claiming; waits up to `timeout_s` for running jobs to finish (unfinished ones are recovered at
        the next start)."""
        self._stop.set()
        self.dispatcher.close()
        for thread in self._threads:
            thread.join(timeout_s)
        for worker, _device in self.workers:
            close = getattr(worker.engine, "close", None)
            if callable(close):
                close()  # a rank group's follower processes
        self.heartbeat(stopped=True)

    def is_random(self, model: str) -> bool:
        """Whether any worker serves `model` with random weights (the engine knows; the catalog guesses)."""
        from wanserve.engine.registry import get_spec

        answers = [w.engine.is_random(model) for w, _ in self.workers if hasattr(w.engine, "is_random")]
        return any(answers) if answers else get_spec(model).random_weights

    def status(self) -> list[WorkerStatus]:
        """Each worker's state, for `/health` and the serving status."""
        return [
            WorkerStatus(
                worker.config.worker_id,
                device,
                worker.ready.is_set(),
                worker.current_job,
                self._load_errors.get(worker.config.worker_id),
                tuple(worker.models),
                dict(worker.load_errors),
                "error" if worker.config.worker_id in self._load_errors else worker.phase,
            )
            for worker, device in self.workers
        ]
