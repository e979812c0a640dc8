"""The worker loop with a fake engine: progress persisted, errors fail one job, cancel/timeout/lease loss stop it."""

from __future__ import annotations

import threading

import pytest

from wanserve.errors import WeightsNotFoundError
from wanserve.jobs.files import output_key
from wanserve.jobs.service import JobSubmission
from wanserve.storage.base import StorageKeyNotFound
from wanserve.worker.loop import Worker, WorkerConfig


@pytest.fixture
def setup(db_url, make_service, fake_engine):
    def build(**worker_config):
        service = make_service(db_url)
        config = WorkerConfig(worker_id="host:1:tok:0", **{"heartbeat_s": 60, **worker_config})
        worker = Worker(service, fake_engine, service.dispatcher, config, ["tiny-t2v"])
        return service, worker

    return build


def submit(service, steps=3):
    return service.create_job(JobSubmission(params={"prompt": "a cat", "num_inference_steps": steps}))[0]


def test_run_once_records_every_step_and_succeeds(setup):
    service, worker = setup(progress_flush_s=3600)  # steps are batched, yet every one is recorded
    job = submit(service, steps=4)
    assert worker.run_once()
    view = service.get_job(job.id)
    assert view.status == "succeeded" and view.progress == 1.0 and view.has_output
    events = service.store.events_after(job.id, 0)
    steps = [e.data["step"] for e in events if e.kind == "step"]
    assert steps == [1, 2, 3, 4]
    assert [e.data["status"] for e in events if e.kind == "status"] == ["queued", "running", "succeeded"]
    assert events[-1].data["status"] == "succeeded"
    assert not worker.run_once()


def test_run_once_engine_error_fails_job_and_next_job_runs(setup, fake_engine):
    service, worker = setup()
    bad, good = submit(service), submit(service)
    fake_engine.fail_with = WeightsNotFoundError("no weights for tiny-t2v")
    assert worker.run_once() and worker.run_once()
    failed = service.get_job(bad.id)
    assert (failed.status, failed.error_type, failed.error_message) == (
        "failed",
        "weights_not_found",
        "no weights for tiny-t2v",
    )
    assert service.get_job(good.id).status == "succeeded"


def test_run_once_unexpected_exception_is_internal_error(setup, fake_engine):
    service, worker = setup()
    job = submit(service)
    fake_engine.fail_with = RuntimeError("CUDA went away")
    worker.run_once()
    view = service.get_job(job.id)
    assert view.error_type == "internal_error" and "RuntimeError: CUDA went away" in view.error_message


def test_cancel_while_running_stops_at_next_step_without_output(setup, fake_engine):
    service, worker = setup()
    job = submit(service, steps=5)
    fake_engine.on_step = lambda step: service.cancel_job(job.id) if step == 2 else None
    worker.run_once()
    view = service.get_job(job.id)
    assert view.status == "cancelled" and view.step == 2
    with pytest.raises(StorageKeyNotFound):
        service.storage.size(output_key(job.id))


def test_timeout_fails_job_with_timeout(setup):
    service, worker = setup(task_timeout_s=1e-9)
    job = submit(service)
    worker.run_once()
    view = service.get_job(job.id)
    assert view.status == "failed" and view.error_type == "timeout" and view.step == 1


def test_lease_lost_stops_without_finishing(setup, fake_engine):
    service, worker = setup()
    job = submit(service, steps=4)

    def steal(step: int) -> None:
        if step == 1:  # another worker took the job over (as after an expired lease)
            service.store.release_lost(3600, owner_is_dead=lambda owner: True)
            service.claim_next_job("thief", ["tiny-t2v"])

    fake_engine.on_step = steal
    worker.run_once()
    view = service.get_job(job.id)
    assert view.status == "running" and view.attempts == 2
    assert service.lease_state(job.id, "thief").held


def test_hold_blocks_until_release_file(setup, tmp_path):
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "hold").touch()
    service, worker = setup(hold_dir=hold, hold_step=1)
    job = submit(service, steps=3)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_once, args=(stop,))
    reached = threading.Event()
    thread.start()
    # the worker is held after step 1: the row says so before the release file exists
    while service.get_job(job.id).step < 1:
        reached.wait(0.01)
    assert service.get_job(job.id).status == "running"
    (hold / job.id).touch()
    thread.join(10)
    assert service.get_job(job.id).status == "succeeded"
