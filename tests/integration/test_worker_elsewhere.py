"""A job run by a worker in another process than the API that follows it: the API process here runs no workers
(`start_workers=False`, uvicorn in a thread of the test), the worker is a `wanserve serve` subprocess consuming the
Celery queue over a real `redis-server`, both over one PostgreSQL database. The event stream shows every step as the
worker records it (pushed by LISTEN/NOTIFY), and a cancel made through the API stops the job within one denoising
step."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest
import uvicorn

from wanserve.api.app import create_app
from wanserve.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 4}


@pytest.fixture
def api_only(tmp_path):
    """`api_only(database_url, broker_url)` -> base URL of an API process without workers (stopped at the end)."""
    running = []

    def start(database_url: str, broker_url: str) -> str:
        settings = Settings(
            data_dir=tmp_path / "api", database_url=database_url, broker_url=broker_url, models=["tiny-t2v"]
        )
        app = create_app(settings, start_workers=False)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no start-up polling
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(60)


def test_stream_and_cancel_follow_a_worker_in_another_process(
    start_server, redis_server, fresh_postgres_url, api_only, hold_for, sse
):
    database = fresh_postgres_url()
    worker = start_server(
        {"WANSERVE_DATABASE_URL": database, "WANSERVE_BROKER_URL": redis_server.url}, name="elsewhere"
    )
    hold = hold_for(worker)
    url = api_only(database, redis_server.url)

    # 1. Every step of a job run elsewhere reaches this API's stream, in order.
    hold.off()
    done = httpx.post(f"{url}/v1/jobs", json={**JOB, "seed": 1}).json()["id"]
    events = sse(url, done)
    steps = [e["data"]["step"] for e in events if e["event"] == "step"]
    assert steps == [1, 2, 3, 4]
    assert [e["data"]["status"] for e in events if e["event"] == "status"] == ["queued", "running", "succeeded"]
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))

    # 2. A cancel made here stops the job there at the next step boundary.
    hold.on()
    job_id = httpx.post(f"{url}/v1/jobs", json={**JOB, "seed": 2}).json()["id"]
    sse(url, job_id, until=lambda e: e["event"] == "step" and e["data"]["step"] == 1)
    response = httpx.post(f"{url}/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "running"
    hold.release(job_id)
    events = sse(url, job_id)
    job = httpx.get(f"{url}/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["error"]["type"] == "cancelled"
    assert max(e["data"]["step"] for e in events) == 1 and job["step"] == 1
    assert httpx.get(f"{url}/v1/jobs/{job_id}/content").status_code == 409
