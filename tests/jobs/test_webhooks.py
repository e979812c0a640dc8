"""Webhook delivery against a real local HTTP receiver: signature, retries, refusals, never blocking the caller."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from wanserve.jobs.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfig,
    WebhookSender,
    encode_payload,
    sign_payload,
    verify_signature,
)

SECRET = "test-secret"
JOB = {"id": "job_1", "status": "succeeded", "outputs": {"video": "/v1/jobs/job_1/content"}, "prompt": "un chat ☕"}


@dataclass
class Receiver:
    """Answers POSTs with the next status in `statuses` (200 when empty) and records what it got."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    state.gate.set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.gate.wait(10)
            state.received.append((dict(self.headers.items()), body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    yield state
    state.gate.set()
    httpd.shutdown()
    httpd.server_close()


def _sender(**overrides) -> WebhookSender:
    settings = dict(secret=SECRET, initial_backoff_s=0.01, max_backoff_s=0.05, allow_private_addresses=True)
    settings.update(overrides)
    return WebhookSender(WebhookConfig(**settings))


def test_webhook_delivers_signed_json(receiver: Receiver) -> None:
    sender = _sender()
    result = sender.send(receiver.url, JOB, event="job.succeeded").result(timeout=30)
    sender.close()
    assert result.delivered and result.attempts == 1 and result.status_code == 200
    headers, body = receiver.received[0]
    assert json.loads(body) == JOB
    assert body == encode_payload(JOB)
    assert headers["Content-Type"] == "application/json"
    assert headers[EVENT_HEADER] == "job.succeeded"
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    assert not verify_signature("other-secret", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET, body + b" ", headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])


def test_webhook_retries_after_500(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    sender = _sender()
    result = sender.send(receiver.url, JOB).result(timeout=30)
    sender.close()
    assert result.delivered and result.attempts == 3 and result.status_code == 200
    assert len(receiver.received) == 3
    ids = {headers[DELIVERY_HEADER] for headers, _ in receiver.received}
    assert len(ids) == 1  # one delivery id across retries
    for headers, body in receiver.received:
        assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])


def test_webhook_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    sender = _sender(max_attempts=3)
    result = sender.send(receiver.url, JOB).result(timeout=30)
    sender.close()
    assert not result.delivered and result.attempts == 3 and result.error == "HTTP 500"
    assert len(receiver.received) == 3


def test_webhook_client_error_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    sender = _sender()
    result = sender.send(receiver.url, JOB).result(timeout=30)
    sender.close()
    assert not result.delivered and result.attempts == 1 and result.status_code == 400


def test_webhook_refuses_private_address_by_default(receiver: Receiver) -> None:
    sender = _sender(allow_private_addresses=False)
    result = sender.send(receiver.url, JOB).result(timeout=30)
    sender.close()
    assert not result.delivered and result.attempts == 1
    assert "`webhook_url` points to a non-public address (loopback address 127.0.0.1)" in result.error
    assert receiver.received == []


def test_webhook_send_does_not_block_caller(receiver: Receiver) -> None:
    receiver.gate.clear()  # the receiver holds every request until released
    sender = _sender()
    future = sender.send(receiver.url, JOB)
    assert not future.done() and sender.pending() == 1
    receiver.gate.set()
    assert future.result(timeout=30).delivered
    sender.close()
    assert sender.pending() == 0


def test_webhook_close_stops_retry_wait(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    sender = _sender(initial_backoff_s=600, max_backoff_s=600)
    future = sender.send(receiver.url, JOB)
    sender.close(timeout_s=30)
    result = future.result(timeout=30)
    assert not result.delivered and result.attempts == 1 and "gave up at shutdown" in result.error
    with pytest.raises(RuntimeError, match="closed"):
        sender.send(receiver.url, JOB)


def test_verify_signature_rejects_old_timestamp() -> None:
    body = encode_payload(JOB)
    signature = sign_payload(SECRET, body, 1_000)
    assert verify_signature(SECRET, body, "1000", signature, now_s=1_100)
    assert not verify_signature(SECRET, body, "1000", signature, now_s=1_000 + 301)
    assert not verify_signature(SECRET, body, "not-a-number", signature)


def test_webhook_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="`max_attempts` must be at least 1, got 0"):
        WebhookConfig(max_attempts=0)
    with pytest.raises(ValueError, match="`initial_backoff_s`"):
        WebhookConfig(initial_backoff_s=5, max_backoff_s=1)


def test_webhook_unsigned_warns_at_first_send_not_at_start(receiver: Receiver, caplog) -> None:
    with caplog.at_level("WARNING", logger="wanserve.jobs.webhooks"):
        sender = _sender(secret=None)
        assert "unsigned" not in caplog.text  # a server with no webhooks has nothing to be warned about
        for _ in range(2):
            result = sender.send(receiver.url, JOB).result(timeout=30)
            assert result.delivered and SIGNATURE_HEADER not in receiver.received[-1][0]
        sender.close()
    assert caplog.text.count("webhooks are sent unsigned") == 1
