"""The job store and service against real databases (SQLite and PostgreSQL): claiming, leases, guarded
transitions, cancel, idempotency, queue limits, retention, events."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta

import pytest

from wanserve.errors import InvalidRequestError, JobNotFoundError, JobStateError, QueueFullError
from wanserve.jobs.files import output_key
from wanserve.jobs.model import JobStatus, utcnow
from wanserve.jobs.service import JobSubmission
from wanserve.storage.base import StorageKeyNotFound

T2V = {"prompt": "a cat", "num_inference_steps": 2, "seed": 1}


def submit(service, **params):
    view, created = service.create_job(JobSubmission(params={**T2V, **params}))
    assert created
    return view


def test_claim_concurrent_workers_take_each_job_once(db_url, make_service):
    service = make_service(db_url)
    ids = {submit(service).id for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while (job := service.claim_next_job(f"w{n}", ["tiny-t2v"])) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    assert service.queue_stats() == {"running": 12}


def test_claim_fifo_order_and_attempts_counted(db_url, make_service):
    service = make_service(db_url)
    first, second = submit(service), submit(service)
    job = service.claim_next_job("w", ["tiny-t2v"])
    assert job.id == first.id and job.attempts == 1 and job.status == "running"
    assert service.claim_next_job("w", ["tiny-i2v"]) is None  # only models the worker serves
    assert service.claim_next_job("w", ["tiny-t2v"]).id == second.id


def test_finish_second_time_refused(db_url, make_service):
    service = make_service(db_url)
    job = service.claim_next_job("w", ["tiny-t2v"]) or service.claim_next_job("w", ["tiny-t2v"])
    assert job is None
    submit(service)
    job = service.claim_next_job("w", ["tiny-t2v"])
    assert service.finish_failed(job.id, "w", "boom", "first") is not None
    assert service.finish_failed(job.id, "w", "boom", "second") is None
    assert service.finish_cancelled(job.id, "w") is None
    view = service.get_job(job.id)
    assert (view.status, view.error_message) == ("failed", "first")
    finals = [e for e in service.store.events_after(job.id, 0) if e.kind == "status" and e.data["status"] == "failed"]
    assert len(finals) == 1


def test_finish_by_another_owner_refused(db_url, make_service):
    service = make_service(db_url)
    submit(service)
    job = service.claim_next_job("w1", ["tiny-t2v"])
    assert service.finish_cancelled(job.id, "w2") is None
    assert service.get_job(job.id).status == "running"


def test_release_lost_requeues_then_fails_after_max_attempts(db_url, make_service):
    service = make_service(db_url, lease_s=0.001, max_attempts=2)
    job_id = submit(service).id
    for attempt in (1, 2):
        job = service.claim_next_job(f"w{attempt}", ["tiny-t2v"])
        assert job.id == job_id and job.attempts == attempt
        changed = service.store.release_lost(3600, now=utcnow() + timedelta(seconds=1))
        assert [j.id for j in changed] == [job_id]
        # the old owner can no longer finish it
        assert service.finish_failed(job_id, f"w{attempt}", "x", "y") is None
    view = service.get_job(job_id)
    assert view.status == "failed" and view.error_type == "worker_lost" and view.attempts == 2
    statuses = [e.data["status"] for e in service.store.events_after(job_id, 0) if e.kind == "status"]
    assert statuses == ["queued", "running", "queued", "running", "failed"]


def test_release_lost_keeps_live_leases(db_url, make_service):
    service = make_service(db_url, lease_s=60)
    submit(service)
    job = service.claim_next_job("w", ["tiny-t2v"])
    assert service.release_lost_jobs() == []
    assert service.heartbeat(job.id, "w").held
    assert not service.heartbeat(job.id, "other").held


def test_release_dead_owner_without_waiting_for_expiry(db_url, make_service):
    service = make_service(db_url, lease_s=3600)
    submit(service)
    job = service.claim_next_job("dead-owner", ["tiny-t2v"])
    changed = service.release_lost_jobs(owner_is_dead=lambda owner: owner == "dead-owner")
    assert [v.id for v in changed] == [job.id] and changed[0].status == "queued"
    assert service.claim_next_job("w", ["tiny-t2v"]).attempts == 2


def test_cancel_queued_job_never_claimed(db_url, make_service):
    service = make_service(db_url)
    view = submit(service)
    assert service.cancel_job(view.id).status == "cancelled"
    assert service.claim_next_job("w", ["tiny-t2v"]) is None
    with pytest.raises(JobStateError, match="cancelled; only queued or running"):
        service.cancel_job(view.id)


def test_cancel_running_job_sets_flag(db_url, make_service):
    service = make_service(db_url)
    submit(service)
    job = service.claim_next_job("w", ["tiny-t2v"])
    assert service.cancel_job(job.id).status == "running"
    assert service.lease_state(job.id, "w").cancel_requested
    assert service.finish_cancelled(job.id, "w").status == "cancelled"


def test_release_lost_cancel_requested_becomes_cancelled(db_url, make_service):
    service = make_service(db_url, lease_s=0.001)
    submit(service)
    job = service.claim_next_job("w", ["tiny-t2v"])
    service.cancel_job(job.id)
    service.store.release_lost(3600, now=utcnow() + timedelta(seconds=1))
    assert service.get_job(job.id).status == "cancelled"


def test_create_idempotency_key_same_job(db_url, make_service):
    service = make_service(db_url)
    first, created = service.create_job(JobSubmission(params=T2V, idempotency_key="k1"))
    again, created_again = service.create_job(JobSubmission(params=T2V, idempotency_key="k1"))
    assert created and not created_again and again.id == first.id
    assert service.list_jobs().count == 1
    with pytest.raises(JobStateError, match="different request"):
        service.create_job(JobSubmission(params={**T2V, "prompt": "a dog"}, idempotency_key="k1"))


def test_create_queue_full_refused(db_url, make_service):
    service = make_service(db_url, max_queue=2)
    submit(service), submit(service)
    with pytest.raises(QueueFullError) as info:
        submit(service)
    assert info.value.retry_after_s >= 1
    assert service.list_jobs().count == 2


def test_create_invalid_params_creates_nothing(db_url, make_service):
    service = make_service(db_url)
    with pytest.raises(InvalidRequestError) as info:
        service.create_job(JobSubmission(params={**T2V, "num_frames": -5}))
    assert info.value.field == "num_frames"
    with pytest.raises(InvalidRequestError, match="not served here"):
        service.create_job(JobSubmission(params=T2V, model="tiny-vace"))
    assert service.list_jobs().count == 0


def test_get_resolved_params_and_random_weights(db_url, make_service):
    service = make_service(db_url)
    view = submit(service)
    assert view.params["num_frames"] == 9 and view.params["width"] == 64 and view.params["seed"] == 1
    assert view.random_weights and view.model == "tiny-t2v" and view.queue_position == 1
    with pytest.raises(JobNotFoundError):
        service.get_job("nope")


def test_queue_positions_strictly_ordered(db_url, make_service):
    service = make_service(db_url)
    ids = [submit(service).id for _ in range(5)]
    service.claim_next_job("w", ["tiny-t2v"])
    page = service.list_jobs(status="queued")
    by_id = {v.id: v.queue_position for v in page.data}
    assert [by_id[i] for i in ids[1:]] == [1, 2, 3, 4]


def test_expire_finished_deletes_files_keeps_row(db_url, make_service, tmp_path):
    service = make_service(db_url, retention_s=0.001)
    submit(service)
    job = service.claim_next_job("w", ["tiny-t2v"])
    service.storage.put(output_key(job.id), io.BytesIO(b"x"))
    service.finish_failed(job.id, "w", "boom", "x")
    assert service.storage.size(output_key(job.id)) == 1
    assert service.expire_finished_jobs() == [job.id]
    assert service.get_job(job.id).status == "expired"
    with pytest.raises(StorageKeyNotFound):
        service.storage.size(output_key(job.id))
    assert service.expire_finished_jobs() == []


def test_delete_running_refused_queued_deleted(db_url, make_service):
    service = make_service(db_url)
    submit(service)
    running = service.claim_next_job("w", ["tiny-t2v"])
    queued = submit(service)
    with pytest.raises(JobStateError, match="running"):
        service.delete_job(running.id)
    service.delete_job(queued.id)
    with pytest.raises(JobNotFoundError):
        service.get_job(queued.id)
    assert service.store.events_after(queued.id, 0) == []


def test_progress_events_numbered_in_order(db_url, make_service):
    service = make_service(db_url)
    submit(service)
    job = service.claim_next_job("w", ["tiny-t2v"])
    changes = [("stage", {"stage": "denoising", "step": 0, "steps": 2})]
    changes += [("step", {"stage": "denoising", "step": s, "steps": 2}) for s in (1, 2)]
    assert service.record_progress(job.id, "w", changes, [0.5, 0.5]).held
    events = service.store.events_after(job.id, 0)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [(e.kind, e.data.get("step")) for e in events[2:]] == [("stage", 0), ("step", 1), ("step", 2)]
    view = service.get_job(job.id)
    assert (view.stage, view.step, view.progress) == ("denoising", 2, 0.92)
    assert view.eta_s is not None
    assert not service.record_progress(job.id, "intruder", changes).held


def test_status_enum_final():
    assert JobStatus.EXPIRED.is_final and not JobStatus.RUNNING.is_final


@pytest.mark.postgres
def test_claim_named_job_waits_for_a_row_locked_for_a_moment(postgres_url, make_service):
    """A broker message can arrive while its sender still records it on the row (a row lock): the claim of that
    job waits for the lock instead of skipping the row and dropping the message."""
    from sqlalchemy import text, update

    from wanserve.jobs.model import Job

    service = make_service(postgres_url)
    with service.store.writing() as session:
        session.execute(text("TRUNCATE job_events, jobs, webhook_outbox"))
    job = submit(service)
    claimed = []
    with service.store.writing() as session:
        session.execute(update(Job).where(Job.id == job.id).values(dispatch_epoch="epoch"))  # holds the row lock
        claimer = threading.Thread(target=lambda: claimed.append(service.claim_next_job("w", ["tiny-t2v"], job.id)))
        claimer.start()
        with service.store.reading() as probe:
            deadline = time.monotonic() + 30
            while not probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ):
                assert time.monotonic() < deadline, "the claim never waited on the row lock"
                probe.rollback()
    claimer.join(30)
    assert claimed[0] is not None and claimed[0].id == job.id and claimed[0].status == "running"
