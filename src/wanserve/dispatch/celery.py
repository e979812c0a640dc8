"""`CeleryDispatcher`: "job X waits" as a Celery message over Redis, one queue per model (`WANSERVE_BROKER_URL`).

The API writes the job row first and sends only its id, to the queue `wanserve.<model>`. A worker consumes the queues
of the models it serves with a Celery worker of its own (solo pool, `acks_late`, prefetch 1: it holds at most one
message, acknowledged after the job ran). The message is a hint; the row's lease decides:

- a message for a job that is not queued any more (run by someone else, cancelled, a duplicate) is acked and dropped;
- a worker takes the named job with the same lease claim as every other worker (`JobStore.claim_next`), so a
  repeated or late message cannot run a job twice, and a finish is only accepted from the lease holder;
- a lost message cannot lose a job: the row records which broker incarnation (Redis `run_id`) holds its message
  (`jobs.dispatch_epoch`). Sending failed (Redis down at submission), or the broker restarted since: `sweep` re-sends.
  A job put back in the queue after a lost lease gets a new message. A message taken by a worker that died before
  claiming comes back after the broker's visibility timeout.

Submitting never waits on Redis: a failed send is logged and left to the sweeper.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from wanserve.dispatch.base import JobRunner
from wanserve.jobs.model import utcnow
from wanserve.jobs.store import JobStore

logger = logging.getLogger(__name__)

TASK_NAME = "wanserve.run_job"


def queue_name(model: str) -> str:
    """The broker queue of `model`'s jobs."""
    return f"wanserve.{model}"


@dataclass(frozen=True)
class CeleryConfig:
    """How the Celery dispatcher reaches Redis."""

    broker_url: str
    """`redis://host:port/db` (or `rediss://`)."""
    visibility_timeout_s: float = 600.0
    """A message taken but not acknowledged (its worker died) goes back to the queue after this. Jobs may run
    longer: a message delivered again while its job runs is dropped, the lease says who runs it."""
    redispatch_grace_s: float = 5.0
    """The sweeper leaves jobs queued less than this long alone (their message may be on its way)."""
    connect_timeout_s: float = 2.0
    """Deadline of one connection attempt to Redis, for senders."""

    def __post_init__(self) -> None:
        if not self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"`broker_url` must be a redis:// URL, got {self.broker_url!r}")
        if self.visibility_timeout_s <= 0 or self.redispatch_grace_s < 0 or self.connect_timeout_s <= 0:
            raise ValueError(
                f"timeouts must be positive, got visibility {self.visibility_timeout_s}, grace "
                f"{self.redispatch_grace_s}, connect {self.connect_timeout_s}"
            )


def make_celery_app(config: CeleryConfig, name: str):
    """A Celery app for this broker with the settings every wanserve sender and worker shares."""
    from celery import Celery

    app = Celery(name, broker=config.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=config.connect_timeout_s,
        broker_transport_options={
            "visibility_timeout": config.visibility_timeout_s,
            "socket_connect_timeout": config.connect_timeout_s,
            "socket_timeout": max(5.0, config.connect_timeout_s),
        },
    )
    return app


class CeleryDispatcher:
    """Sends job ids to per-model Celery queues; runs a Celery consumer for each local worker."""

    def __init__(self, config: CeleryConfig, store: JobStore) -> None:
        import redis

        self.config, self.store = config, store
        self._app = make_celery_app(config, "wanserve")
        self._redis = redis.Redis.from_url(
            config.broker_url, socket_connect_timeout=config.connect_timeout_s, socket_timeout=config.connect_timeout_s
        )
        self._consumers: list = []
        self._lock = threading.Lock()
        self._send_failing = False

    # 1. Sending
    def broker_epoch(self) -> str:
        """The Redis server's `run_id`: it changes whenever Redis restarts (and may have lost its queues)."""
        return str(self._redis.info("server")["run_id"])

    def send(self, job_id: str, model: str) -> bool:
        """Sends the job's message and records where it is. False (logged) when Redis could not take it."""
        try:
            # The epoch is read before sending: a restart in between makes the mark stale, which only costs a
            # duplicate message, never a lost one.
            epoch = self.broker_epoch()
            self._app.send_task(TASK_NAME, args=[job_id], queue=queue_name(model), retry=False)
        except Exception as exc:
            if not self._send_failing:
                logger.warning("job %s: broker unreachable (%s); the sweeper sends its message later", job_id, exc)
            self._send_failing = True
            return False
        if self._send_failing:
            logger.info("broker reachable again")
            self._send_failing = False
        self.store.mark_dispatched(job_id, epoch)
        return True

    def notify_job_waiting(self, job_id: str, model: str) -> None:
        try:
            self.send(job_id, model)
        except Exception:  # a database error while marking: the row stays unmarked and is re-sent
            logger.exception("job %s: could not record its message; the sweeper re-sends it", job_id)

    def sweep(self) -> None:
        """Re-sends the messages of queued jobs that no live broker incarnation holds."""
        try:
            epoch = self.broker_epoch()
        except Exception as exc:
            logger.debug("broker unreachable during the sweep: %s", exc)
            return
        lost = self.store.undispatched(epoch, utcnow() - timedelta(seconds=self.config.redispatch_grace_s))
        sent = 0
        for job_id, model in lost:
            if not self.send(job_id, model):
                break
            sent += 1
        if sent:
            logger.warning("re-sent the messages of %d queued jobs (sending failed, or the broker restarted)", sent)

    # 2. Consuming
    def serve(self, runner: JobRunner, stop: threading.Event, idle_poll_s: float) -> None:
        """Runs a Celery worker (solo pool, prefetch 1, acks late) on the queues of `runner.models` until `stop`."""
        from celery.exceptions import Reject
        from celery.worker import WorkController

        worker_name = getattr(getattr(runner, "config", None), "worker_id", "worker")
        app = make_celery_app(self.config, f"wanserve-{worker_name}")

        # `shared=False`: each local worker's app has its own task, bound to that worker.
        @app.task(name=TASK_NAME, shared=False)
        def run_job(job_id: str) -> None:
            try:
                ran = runner.run_once(stop, job_id)
            except Exception as exc:
                # The claim itself failed (database down): put the message back after a pause, not in a hot loop.
                logger.exception("job %s: could not be claimed; its message goes back to the queue", job_id)
                stop.wait(idle_poll_s)
                raise Reject(str(exc), requeue=True) from exc
            if not ran:
                logger.info("message for job %s dropped: the job is not queued any more", job_id)

        consumer = WorkController(
            app=app,
            hostname=f"{worker_name}@wanserve",
            pool_cls="solo",
            concurrency=1,
            queues=[queue_name(m) for m in runner.models],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=logging.WARNING,
        )
        with self._lock:
            if not self._consumers:
                _reset_worker_state()  # a stop requested before (an earlier run in this process) is over
            self._consumers.append(consumer)
        watcher = threading.Thread(target=self._stop_when, args=(stop,), name=f"{worker_name}-stop", daemon=True)
        watcher.start()
        logger.info("%s consuming %s", worker_name, ", ".join(queue_name(m) for m in runner.models))
        # Celery's solo pool runs tasks on this thread and looks them up in the thread's current app.
        app.set_current()
        try:
            consumer.start()
        finally:
            with self._lock:
                self._consumers.remove(consumer)
                last = not self._consumers
            if last:
                _reset_worker_state()

    def _stop_when(self, stop: threading.Event) -> None:
        stop.wait()
        _request_worker_stop()

    def close(self) -> None:
        with self._lock:
            if self._consumers:
                _request_worker_stop()
        self._redis.close()


def _request_worker_stop() -> None:
    """Asks every Celery consumer of this process for a warm stop (its job, if any, ends first).

    Celery's consumers watch one process-wide flag; stopping a thread's consumer from outside (`WorkController.stop`)
    closes its connection under its feet. The flag is what `celery.contrib.testing` uses too.
    """
    from celery.worker import state

    state.should_stop = 0


def _reset_worker_state() -> None:
    from celery.worker import state

    state.should_stop = None
