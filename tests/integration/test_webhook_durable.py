"""Durable webhooks with real processes: the receiver is down for the first 3 attempts, and the server process that
finished the job is killed (SIGKILL) while its first attempt is in flight. Another server process over the same
PostgreSQL database takes the delivery over and the receiver gets exactly one successful delivery, signed, with
the same delivery id on every attempt."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest
from sqlalchemy import create_engine, text

from wanserve.jobs.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}
SECRET = "outbox-secret"


class FlakyReceiver:
    """Answers 503 to the first `down_for` requests, 200 after. The first request is held until `release` is set
    (so the test can kill the sender while that attempt is in flight)."""

    def __init__(self, down_for: int) -> None:
        self.requests: list[tuple[dict, bytes, int]] = []
        self.first_arrived, self.release, self.succeeded = threading.Event(), threading.Event(), threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    number = len(receiver.requests) + 1
                    status = 503 if number <= down_for else 200
                    receiver.requests.append((dict(self.headers.items()), body, status))
                if number == 1:
                    receiver.first_arrived.set()
                    receiver.release.wait(60)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone
                if status == 200:
                    receiver.succeeded.set()

            def log_message(self, *args) -> None:
                pass

        lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/wanserve"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_webhook_survives_a_killed_sender_and_a_receiver_down_for_3_attempts(start_server, fresh_postgres_url, sse):
    database = fresh_postgres_url()
    env = {
        "WANSERVE_DATABASE_URL": database,
        "WANSERVE_ALLOW_PRIVATE_URLS": "true",
        "WANSERVE_WEBHOOK_SECRET": SECRET,
        "WANSERVE_WEBHOOK_BACKOFF_S": "0.2",
    }
    receiver = FlakyReceiver(down_for=3)
    try:
        finisher = start_server(env, name="webhook-finisher")
        job_id = httpx.post(f"{finisher.url}/v1/jobs", json={**JOB, "webhook_url": receiver.url}).json()["id"]
        assert sse(finisher.url, job_id)[-1]["data"]["status"] == "succeeded"
        assert receiver.first_arrived.wait(60)
        finisher.kill()  # mid-attempt: the delivery's lease is held by a dead process
        receiver.release.set()

        takeover = start_server(env, name="webhook-takeover")
        assert receiver.succeeded.wait(60), receiver.requests
        assert httpx.get(f"{takeover.url}/v1/jobs/{job_id}").json()["status"] == "succeeded"
    finally:
        receiver.close()

    assert [status for _, _, status in receiver.requests] == [503, 503, 503, 200]
    assert len({headers[DELIVERY_HEADER] for headers, _, _ in receiver.requests}) == 1
    headers, body, _ = receiver.requests[-1]
    assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["id"] == job_id and payload["status"] == "succeeded" and payload["content_url"]
    engine = create_engine(database)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, attempts, lease_owner FROM webhook_outbox")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("delivered", 4, None)]  # nothing left to send again
