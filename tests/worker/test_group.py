"""A rank group of 2 CPU processes (gloo) running jobs through the worker loop: all ranks stop at the same step on
cancel, one rank's exception fails the job with its message and the next job runs, and a rank that hangs breaks the
group within the collective timeout: the job returns to the queue by its lease and the restarted group finishes it.
"""

from __future__ import annotations

import time

import pytest
import torch.multiprocessing as mp
from tests.worker.group_engines import scripted_engine

from wanserve.config import Settings
from wanserve.jobs.service import JobSubmission
from wanserve.worker.group import GroupSpec, RankGroup
from wanserve.worker.loop import Worker, WorkerConfig

TIMEOUT_S = 3.0
LEASE_S = 1.0


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    data = tmp_path_factory.mktemp("group")
    settings = Settings(data_dir=data, world_size=2, collective_timeout_s=TIMEOUT_S, lease_s=LEASE_S)
    # Followers fork from a server that imported torch once (a fresh interpreter per rank imports it again).
    mp.get_context("forkserver").set_forkserver_preload(["tests.worker.group_engines", "wanserve.worker.group"])
    group = RankGroup(GroupSpec(["cpu", "cpu"], settings, scripted_engine, start_method="forkserver"))
    group.load("tiny-t2v")
    yield group
    group.stop()


@pytest.fixture
def worker(tmp_path, make_service, group):
    service = make_service(f"sqlite:///{tmp_path / 'jobs.db'}", lease_s=LEASE_S)
    config = WorkerConfig(worker_id="host:1:tok:0", heartbeat_s=LEASE_S / 3)
    return service, Worker(service, group, service.dispatcher, config, ["tiny-t2v"])


def submit(service, prompt: str, steps: int = 4):
    return service.create_job(JobSubmission(params={"prompt": prompt, "num_inference_steps": steps}))[0]


def test_cancel_stops_every_rank_at_the_same_step(worker, group):
    service, w = worker
    job = submit(service, "a cat", steps=5)
    rank0 = group.engine.engine
    rank0.after_step = lambda step: service.cancel_job(job.id) if step == 2 else None
    try:
        assert w.run_once()
    finally:
        rank0.after_step = None
    view = service.get_job(job.id)
    assert view.status == "cancelled" and view.step == 2
    assert group.last_steps == {0: 2, 1: 2}


def test_exception_on_rank_1_fails_the_job_with_its_message_and_the_next_job_runs(worker, group):
    service, w = worker
    bad, good = submit(service, "fail:1:2"), submit(service, "a dog")
    assert w.run_once()
    failed = service.get_job(bad.id)
    assert failed.status == "failed" and failed.error_type == "rank_failed"
    assert failed.error_message == "rank 1: RuntimeError: injected failure on rank 1 at step 2"
    assert group.last_steps == {0: 2, 1: 2}  # rank 0 stopped at the step rank 1 failed at
    assert w.run_once()
    assert service.get_job(good.id).status == "succeeded"
    assert group.last_steps == {0: 4, 1: 4}


def test_hang_on_rank_1_restarts_the_group_and_the_job_returns_by_its_lease(worker, group):
    service, w = worker
    generation = group.generation
    job = submit(service, "hang:1:1")
    started = time.monotonic()
    assert w.run_once()
    detected_s = time.monotonic() - started
    assert group.generation == generation + 1  # the followers were killed and started again
    assert detected_s < 10 * TIMEOUT_S
    assert service.get_job(job.id).status == "running"  # not finished here: left to its lease
    deadline = time.monotonic() + 60
    while service.get_job(job.id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for the lease to expire, which is what brings the job back
        service.release_lost_jobs()
    assert service.get_job(job.id).status == "queued"
    assert w.run_once()
    view = service.get_job(job.id)
    assert view.status == "succeeded" and view.attempts == 2
