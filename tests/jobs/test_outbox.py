"""The webhook outbox against real databases (SQLite and PostgreSQL) and a real local receiver: a delivery is written
with the final status, retried with backoff, given up after its last attempt, frozen, and leased so two processes
never have one delivery in flight together."""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import select

from wanserve.jobs.media_inputs import MediaLimits
from wanserve.jobs.model import WebhookOutboxRow
from wanserve.jobs.outbox import WebhookOutbox
from wanserve.jobs.service import JobSubmission
from wanserve.jobs.webhooks import DELIVERY_HEADER, EVENT_HEADER, WebhookConfig, WebhookPoster

T2V = {"prompt": "a cat", "num_inference_steps": 2, "seed": 1}
PRIVATE_URLS = MediaLimits(allow_private_urls=True)  # the receiver listens on 127.0.0.1


def outbox(service, owner: str = "host:1:tok:webhooks", owner_is_dead=None, **config) -> WebhookOutbox:
    settings = dict(secret="s", initial_backoff_s=0.0, allow_private_addresses=True, timeout_s=5, lease_s=30)
    settings.update(config)
    poster = WebhookPoster(WebhookConfig(**settings))
    return WebhookOutbox(service.store, poster, lambda job: {"id": job.id, "status": job.status}, owner, owner_is_dead)


def failed_job(service, url: str | None) -> str:
    """A job with `webhook_url` = `url` that ran and failed."""
    view, _ = service.create_job(JobSubmission(params=T2V, webhook_url=url))
    job = service.claim_next_job("w", ["tiny-t2v"])
    assert job.id == view.id
    service.finish_failed(job.id, "w", "internal_error", "boom")
    return job.id


def rows(service) -> list[WebhookOutboxRow]:
    with service.store.reading() as session:
        return list(session.scalars(select(WebhookOutboxRow)))


def test_outbox_row_written_with_final_status_only_when_webhook_set(db_url, make_service, receiver):
    service = make_service(db_url, media=PRIVATE_URLS)
    failed_job(service, None)
    assert rows(service) == []
    job_id = failed_job(service, receiver.url)
    queued, _ = service.create_job(JobSubmission(params=T2V, webhook_url=receiver.url))
    service.cancel_job(queued.id)
    events = {row.job_id: row.event for row in rows(service)}
    assert events == {job_id: "job.failed", queued.id: "job.cancelled"}
    assert all(row.status == "pending" and row.attempts == 0 and row.payload is None for row in rows(service))


def test_outbox_retries_with_one_delivery_id_then_delivers(db_url, make_service, receiver):
    service = make_service(db_url, media=PRIVATE_URLS)
    job_id = failed_job(service, receiver.url)
    receiver.statuses = [500, 503]
    box = outbox(service)
    while box.deliver_one():
        pass
    [row] = rows(service)
    assert (row.status, row.attempts, row.last_status_code, row.lease_owner) == ("delivered", 3, 200, None)
    assert row.payload == {"id": job_id, "status": "failed"}
    assert [h[DELIVERY_HEADER] for h, _ in receiver.received] == [row.id] * 3
    assert {h[EVENT_HEADER] for h, _ in receiver.received} == {"job.failed"}
    assert not box.deliver_one()  # nothing is sent again


def test_outbox_gives_up_after_max_attempts(db_url, make_service, receiver):
    service = make_service(db_url, media=PRIVATE_URLS)
    failed_job(service, receiver.url)
    receiver.statuses = [500] * 10
    box = outbox(service, max_attempts=3)
    while box.deliver_one():
        pass
    [row] = rows(service)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "HTTP 500")
    assert len(receiver.received) == 3


def test_outbox_client_error_not_retried(db_url, make_service, receiver):
    service = make_service(db_url, media=PRIVATE_URLS)
    failed_job(service, receiver.url)
    receiver.statuses = [400]
    box = outbox(service)
    while box.deliver_one():
        pass
    [row] = rows(service)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, 400)


def test_outbox_backoff_makes_a_failed_delivery_wait(db_url, make_service, receiver):
    service = make_service(db_url, media=PRIVATE_URLS)
    failed_job(service, receiver.url)
    receiver.statuses = [503]
    box = outbox(service, initial_backoff_s=30, max_backoff_s=60)
    assert box.deliver_one() and not box.deliver_one()  # the retry is due in 30 s, not now
    assert 25 < box.seconds_until_due() <= 30
    assert len(receiver.received) == 1


def test_outbox_lease_keeps_a_delivery_in_flight_in_one_process(db_url, make_service, receiver):
    """While one process's attempt hangs on the receiver, another finds nothing due; once the first process is
    known dead its lease is freed and the other takes over (the cut-short attempt counts)."""
    service = make_service(db_url, media=PRIVATE_URLS)
    failed_job(service, receiver.url)
    receiver.gate.clear()
    first = outbox(service, owner="host:1:a:webhooks")
    in_flight = threading.Thread(target=first.deliver_one)
    in_flight.start()
    try:
        second = outbox(service, owner="host:2:b:webhooks", owner_is_dead=lambda owner: owner.endswith(":a:webhooks"))
        assert receiver.arrived.wait(30)  # the first attempt is in flight
        assert rows(service)[0].lease_owner == "host:1:a:webhooks"
        assert not second.deliver_one()
        assert second.release_dead(second.owner_is_dead) == 1
        receiver.gate.set()
        in_flight.join(30)
        # The first attempt's outcome is ignored: its lease was taken away.
        [row] = rows(service)
        assert row.status == "pending" and row.attempts == 1
        assert second.deliver_one()
    finally:
        receiver.gate.set()
        in_flight.join(30)
    [row] = rows(service)
    assert (row.status, row.attempts, row.lease_owner) == ("delivered", 2, None)


def test_outbox_job_deleted_before_first_attempt_fails_the_delivery(db_url, make_service, receiver):
    service = make_service(db_url, media=PRIVATE_URLS)
    job_id = failed_job(service, receiver.url)
    service.delete_job(job_id)
    assert outbox(service).deliver_one()
    [row] = rows(service)
    assert row.status == "failed" and "was deleted before its webhook was sent" in row.last_error
    assert receiver.received == []


def test_outbox_threads_deliver_each_once(db_url, make_service, receiver):
    service = make_service(db_url, media=PRIVATE_URLS)
    ids = {failed_job(service, receiver.url) for _ in range(6)}
    box = outbox(service, max_workers=2, poll_s=0.05)
    box.start()
    try:
        deadline = time.monotonic() + 60
        while any(row.status != "delivered" for row in rows(service)) and time.monotonic() < deadline:
            box.wake()
            receiver.arrived.wait(0.1)
    finally:
        box.close()
    assert {row.status for row in rows(service)} == {"delivered"}
    assert sorted(json.loads(body)["id"] for _, body in receiver.received) == sorted(ids)
