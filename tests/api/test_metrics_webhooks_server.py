"""`/metrics` counters moving as real jobs run, and a signed webhook reaching a real receiver after a 500."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wanserve.jobs.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

pytestmark = pytest.mark.integration

T2V = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2}


def scrape(server) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_move_as_jobs_run(compat_server):
    submitted = ("wanserve_jobs_submitted_total", (("kind", "t2v"), ("model", "tiny-t2v")))
    succeeded = ("wanserve_jobs_finished_total", (("model", "tiny-t2v"), ("status", "succeeded")))
    steps = ("wanserve_denoising_step_seconds_count", (("model", "tiny-t2v"),))
    latency = ("wanserve_job_duration_seconds_count", (("model", "tiny-t2v"), ("status", "succeeded")))
    done = ("wanserve_jobs", (("status", "succeeded"),))
    before = scrape(compat_server)

    job_id = httpx.post(f"{compat_server.url}/v1/jobs", json=T2V).json()["id"]
    assert scrape(compat_server)[submitted] == before.get(submitted, 0) + 1
    compat_server.wait_final(job_id)

    after = scrape(compat_server)
    assert after[succeeded] == before.get(succeeded, 0) + 1
    assert after[steps] == before.get(steps, 0) + 2
    assert after[latency] == before.get(latency, 0) + 1
    assert after[done] == before.get(done, 0) + 1
    assert after[("wanserve_queue_depth", ())] >= 0


class Receiver:
    """A webhook receiver: answers 500 once, then 200; keeps what it got."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict, bytes, int]] = []
        self.delivered = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if not receiver.deliveries else 200
                receiver.deliveries.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    receiver.delivered.set()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/wanserve"


def test_webhook_signed_and_retried_after_500(start_compat_server):
    server = start_compat_server(allow_private_urls=True, webhook_secret="s3cret")
    receiver = Receiver()
    try:
        job_id = httpx.post(f"{server.url}/v1/jobs", json={**T2V, "webhook_url": receiver.url}).json()["id"]
        assert receiver.delivered.wait(120), receiver.deliveries
    finally:
        receiver.httpd.shutdown()
    assert [status for _, _, status in receiver.deliveries] == [500, 200]
    headers, body, _ = receiver.deliveries[-1]
    assert verify_signature("s3cret", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["id"] == job_id and payload["status"] == "succeeded" and payload["content_url"]
    assert headers["X-Wanserve-Event"] == "job.succeeded"


def test_webhook_url_private_refused_by_default(compat_server):
    """The default server refuses private webhook targets when delivering (the job itself is unaffected)."""
    poster = compat_server.runtime.extras["webhooks"].poster
    result = poster.post("http://127.0.0.1:9/hook", b'{"id":"x"}', "job.succeeded", "d1")
    assert not result.delivered and not result.retry and "non-public" in result.error
