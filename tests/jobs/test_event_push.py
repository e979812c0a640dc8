"""Event push across processes: a change committed through one job store wakes the readers of another process's
hub at once (PostgreSQL LISTEN/NOTIFY; Redis pub/sub), and a reconnect wakes every reader."""

from __future__ import annotations

import asyncio

import pytest

from wanserve.jobs.event_push import PostgresEventListener, RedisEventBridge
from wanserve.jobs.events import EventHub
from wanserve.jobs.service import JobSubmission

T2V = {"prompt": "a cat", "num_inference_steps": 2, "seed": 1}


async def woken(hub: EventHub, job_id: str, act, timeout_s: float = 30.0) -> bool:
    """Subscribes to `job_id` on `hub`, runs `act()` in a thread, and tells whether the reader was woken."""
    with hub.subscribe(job_id) as waiter:
        await asyncio.to_thread(act)
        return await waiter.wait(timeout_s)


@pytest.mark.postgres
def test_postgres_notify_wakes_readers_of_another_process(postgres_url, make_service):
    writer = make_service(postgres_url)  # stands for the worker's process
    view, _ = writer.create_job(JobSubmission(params=T2V))
    hub = EventHub()  # stands for the API process's readers
    listener = PostgresEventListener(postgres_url, hub)
    listener.start()
    try:
        assert listener.connected.wait(30)
        claim = lambda: writer.claim_next_job("w", ["tiny-t2v"])  # noqa: E731
        assert asyncio.run(woken(hub, view.id, claim))
        other = EventHub()  # no listener: nothing wakes it
        assert not asyncio.run(woken(other, view.id, lambda: writer.cancel_job(view.id), timeout_s=0.5))
    finally:
        listener.close()


def test_redis_bridge_wakes_readers_of_another_process(redis_server):
    sender_hub, reader_hub = EventHub(), EventHub()
    sender = RedisEventBridge(redis_server.url, sender_hub)
    sender_hub.add_publisher(sender.publish)
    reader = RedisEventBridge(redis_server.url, reader_hub)
    reader.start()
    try:
        assert reader.connected.wait(30)
        assert asyncio.run(woken(reader_hub, "job-1", lambda: sender_hub.notify("job-1")))
        assert not asyncio.run(woken(reader_hub, "job-2", lambda: sender_hub.notify("job-1"), timeout_s=0.5))
    finally:
        reader.close()
        sender.close()


def test_redis_bridge_reconnects_and_wakes_every_reader(redis_server):
    hub = EventHub()
    bridge = RedisEventBridge(redis_server.url, hub)
    hub.add_publisher(bridge.publish)
    bridge.start()
    try:
        assert bridge.connected.wait(30)

        def outage() -> None:
            redis_server.stop()
            hub.notify("lost")  # publishing while Redis is down is logged, never raised
            redis_server.start()

        # A reader of any job is woken when the bridge is back: it re-reads what it may have missed.
        assert asyncio.run(woken(hub, "other-job", outage))
        assert bridge.connected.wait(30)
    finally:
        bridge.close()
