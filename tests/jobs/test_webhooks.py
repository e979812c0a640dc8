"""Single webhook POSTs against a real local HTTP receiver: signature, what is worth retrying, refusals."""

from __future__ import annotations

import json

import pytest

from wanserve.jobs.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookAttempt,
    WebhookConfig,
    WebhookPoster,
    encode_payload,
    sign_payload,
    verify_signature,
)

SECRET = "test-secret"
JOB = {"id": "job_1", "status": "succeeded", "outputs": {"video": "/v1/jobs/job_1/content"}, "prompt": "un chat ☕"}


def _poster(**overrides) -> WebhookPoster:
    settings = dict(secret=SECRET, allow_private_addresses=True)
    settings.update(overrides)
    return WebhookPoster(WebhookConfig(**settings))


def test_webhook_post_signed_json(receiver) -> None:
    poster = _poster()
    result = poster.post(receiver.url, encode_payload(JOB), "job.succeeded", "d1")
    poster.close()
    assert result == WebhookAttempt(delivered=True, retry=False, status_code=200)
    headers, body = receiver.received[0]
    assert json.loads(body) == JOB
    assert body == encode_payload(JOB)
    assert headers["Content-Type"] == "application/json"
    assert headers[EVENT_HEADER] == "job.succeeded" and headers[DELIVERY_HEADER] == "d1"
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    assert not verify_signature("other-secret", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET, body + b" ", headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])


@pytest.mark.parametrize(("status", "retry"), [(500, True), (503, True), (429, True), (400, False), (404, False)])
def test_webhook_post_failure_says_whether_to_retry(receiver, status: int, retry: bool) -> None:
    receiver.statuses = [status]
    result = _poster().post(receiver.url, b"{}", "job.failed", "d2")
    assert not result.delivered and result.retry is retry
    assert result.status_code == status and result.error == f"HTTP {status}"


def test_webhook_unreachable_receiver_is_retried() -> None:
    result = _poster(timeout_s=2, lease_s=5).post("http://127.0.0.1:9/hook", b"{}", "job.failed", "d3")
    assert not result.delivered and result.retry and result.status_code is None and "ConnectError" in result.error


def test_webhook_unsigned_without_secret(receiver) -> None:
    assert _poster(secret="").post(receiver.url, b"{}", "job.failed", "d4").delivered
    assert SIGNATURE_HEADER not in receiver.received[0][0]


def test_webhook_refuses_private_address_by_default(receiver) -> None:
    result = _poster(allow_private_addresses=False).post(receiver.url, b"{}", "job.failed", "d5")
    assert not result.delivered and not result.retry
    assert "`webhook_url` points to a non-public address (loopback address 127.0.0.1)" in result.error
    assert receiver.received == []


def test_webhook_backoff_doubles_up_to_the_bound() -> None:
    poster = _poster(initial_backoff_s=1.0, max_backoff_s=5.0)
    assert [poster.backoff_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


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
    with pytest.raises(ValueError, match="`lease_s` \\(10\\) must exceed `timeout_s` \\(10\\)"):
        WebhookConfig(lease_s=10, timeout_s=10)


def test_webhook_unsigned_warns_at_first_post_not_at_start(receiver, caplog) -> None:
    with caplog.at_level("WARNING", logger="wanserve.jobs.webhooks"):
        poster = _poster(secret="")
        assert "unsigned" not in caplog.text  # a server with no webhooks has nothing to be warned about
        for _ in range(2):
            assert poster.post(receiver.url, b"{}", "job.failed", "d6").delivered
            assert SIGNATURE_HEADER not in receiver.received[-1][0]
        poster.close()
    assert caplog.text.count("webhooks are sent unsigned") == 1
