"""The Celery dispatcher against a real `redis-server` and real databases: one message per job on its model's
queue, the lease deciding who runs a job, lost messages re-sent by the sweeper, submissions kept while Redis is
down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from wanserve.dispatch.celery import CeleryConfig, CeleryDispatcher, queue_name
from wanserve.jobs.db import create_db_engine, run_migrations
from wanserve.jobs.service import JobService, JobServiceConfig, JobSubmission
from wanserve.jobs.store import JobStore
from wanserve.storage.local import LocalStorage
from wanserve.worker.loop import Worker, WorkerConfig

T2V = {"prompt": "a cat", "num_inference_steps": 2, "seed": 1, "width": 64, "height": 64, "num_frames": 5}


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        threading.Event().wait(0.05)


class Setup:
    """A job service whose dispatcher is Celery over the test's Redis, and workers consuming it on threads."""

    def __init__(self, db_url: str, redis_url: str, tmp_path: Path) -> None:
        self.db = create_db_engine(db_url)
        run_migrations(self.db)
        store = JobStore.for_engine(self.db)
        self.dispatcher = CeleryDispatcher(CeleryConfig(redis_url, redispatch_grace_s=0.0), store)
        self.service = JobService(
            store,
            LocalStorage.under(tmp_path, "outputs", "inputs"),
            JobServiceConfig(served_models=("tiny-t2v", "tiny-i2v")),
            notify_waiting=self.dispatcher.notify_job_waiting,
        )
        self.redis = redis.Redis.from_url(redis_url)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def submit(self) -> str:
        view, created = self.service.create_job(JobSubmission(params=T2V))
        assert created
        return view.id

    def start_worker(self, engine, name: str = "w0") -> Worker:
        worker = Worker(self.service, engine, self.dispatcher, WorkerConfig(worker_id=name), ["tiny-t2v"])
        thread = threading.Thread(target=self.dispatcher.serve, args=(worker, self.stop, 0.2), daemon=True)
        thread.start()
        self.threads.append(thread)
        return worker

    def status(self, job_id: str) -> str:
        return self.service.get_job(job_id).status

    def queued_messages(self) -> int:
        return self.redis.llen(queue_name("tiny-t2v"))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()
        self.dispatcher.close()
        self.redis.close()
        self.db.dispose()


@pytest.fixture
def setup(db_url, redis_server, tmp_path):
    built = Setup(db_url, redis_server.url, tmp_path)
    yield built
    built.close()


def test_submission_sends_the_job_id_to_its_model_queue(setup, redis_server):
    job_id = setup.submit()
    assert setup.queued_messages() == 1
    assert setup.service.store.get(job_id).dispatch_epoch == setup.dispatcher.broker_epoch()


def test_worker_runs_each_job_once_from_its_message(setup, fake_engine):
    ids = [setup.submit() for _ in range(3)]
    setup.dispatcher.notify_job_waiting(ids[0], "tiny-t2v")  # a repeated message
    setup.start_worker(fake_engine)
    wait_until(lambda: all(setup.status(j) == "succeeded" for j in ids))
    wait_until(lambda: setup.queued_messages() == 0)
    assert [r.seed for r in fake_engine.generated] == [1, 1, 1] and len(fake_engine.generated) == 3
    assert all(setup.service.get_job(j).attempts == 1 for j in ids)


def test_message_for_a_job_not_queued_any_more_is_dropped(setup, fake_engine):
    cancelled, kept = setup.submit(), setup.submit()
    setup.service.cancel_job(cancelled)
    setup.start_worker(fake_engine)
    wait_until(lambda: setup.status(kept) == "succeeded")
    wait_until(lambda: setup.queued_messages() == 0)
    assert setup.status(cancelled) == "cancelled" and len(fake_engine.generated) == 1


def test_submission_kept_while_redis_is_down_and_sent_by_the_sweeper(setup, redis_server, fake_engine):
    redis_server.stop()
    job_id = setup.submit()  # the row is written; the message could not be sent
    assert setup.status(job_id) == "queued" and setup.service.store.get(job_id).dispatch_epoch is None
    setup.dispatcher.sweep()  # Redis still down: nothing to do, nothing raised
    redis_server.start()
    setup.dispatcher.sweep()
    assert setup.queued_messages() == 1
    setup.start_worker(fake_engine)
    wait_until(lambda: setup.status(job_id) == "succeeded")


def test_messages_lost_in_a_redis_restart_are_sent_again(setup, redis_server, fake_engine):
    ids = [setup.submit() for _ in range(2)]
    redis_server.stop()
    redis_server.start()  # no persistence: the queue is gone, as after a crash
    assert setup.queued_messages() == 0
    setup.dispatcher.sweep()
    assert setup.queued_messages() == 2
    setup.dispatcher.sweep()  # already held by this Redis: not sent twice
    assert setup.queued_messages() == 2
    setup.start_worker(fake_engine)
    wait_until(lambda: all(setup.status(j) == "succeeded" for j in ids))


def test_job_back_in_the_queue_after_a_lost_lease_gets_a_new_message(setup, fake_engine):
    job_id = setup.submit()
    setup.redis.delete(queue_name("tiny-t2v"))  # the message was consumed by a worker that then died
    job = setup.service.claim_next_job("dead-worker", ["tiny-t2v"])
    assert job.id == job_id
    released = setup.service.store.release_lost(3600.0, owner_is_dead=lambda owner: owner == "dead-worker")
    assert [j.status for j in released] == ["queued"] and released[0].dispatch_epoch is None
    setup.dispatcher.sweep()
    assert setup.queued_messages() == 1
    setup.start_worker(fake_engine)
    wait_until(lambda: setup.status(job_id) == "succeeded")
    assert setup.service.get_job(job_id).attempts == 2


def test_celery_config_refuses_other_brokers():
    with pytest.raises(ValueError, match="`broker_url` must be a redis:// URL, got 'amqp://x'"):
        CeleryConfig("amqp://x")
