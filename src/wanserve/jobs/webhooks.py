"""Webhooks: POST a finished job to the URL its submitter gave, signed, retried, off the worker's thread.

Receivers verify a delivery like this (`verify_signature` does exactly this):

    signed = f"{X-Wanserve-Timestamp}.".encode() + raw_body
    expected = "sha256=" + hmac.new(secret, signed, sha256).hexdigest()
    compare `expected` with `X-Wanserve-Signature` in constant time, and reject old timestamps.

The same `X-Wanserve-Delivery` id is sent on every retry of one delivery so a receiver can drop duplicates.
The URL is checked with the rules of `media.fetch` on every attempt (public addresses only, connection pinned to
the checked address); redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from wanserve.errors import InvalidRequestError
from wanserve.media.fetch import resolve_url

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wanserve-Signature"
TIMESTAMP_HEADER = "X-Wanserve-Timestamp"
DELIVERY_HEADER = "X-Wanserve-Delivery"
EVENT_HEADER = "X-Wanserve-Event"
_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class WebhookConfig:
    """How webhooks are signed and retried."""

    secret: str = ""
    """HMAC-SHA256 key. Empty: deliveries go out unsigned (a warning is logged at the first one)."""
    max_attempts: int = 5
    """Attempts per delivery, the first included."""
    initial_backoff_s: float = 1.0
    """Wait before the second attempt; doubled after every further failure."""
    max_backoff_s: float = 60.0
    """Upper bound of one wait between attempts."""
    timeout_s: float = 10.0
    """Deadline of one attempt (connect, send, read), in seconds."""
    allow_private_addresses: bool = False
    """Allow webhook URLs on loopback, private and other non-public addresses (tests, intranets)."""
    max_workers: int = 4
    """Deliveries in flight at once; more wait their turn."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"`max_attempts` must be at least 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"need 0 <= `initial_backoff_s` <= `max_backoff_s`, got {self.initial_backoff_s} and {self.max_backoff_s}"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"`timeout_s` must be positive, got {self.timeout_s}")
        if self.max_workers < 1:
            raise ValueError(f"`max_workers` must be at least 1, got {self.max_workers}")


@dataclass(frozen=True)
class WebhookDelivery:
    """The outcome of one delivery (all its attempts)."""

    url: str
    delivery_id: str
    delivered: bool
    attempts: int
    status_code: int | None = None
    """HTTP status of the last attempt, when one got an answer."""
    error: str | None = None


def sign_payload(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Wanserve-Signature` value for `body` sent at unix time `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str, body: bytes, timestamp: str, signature: str, tolerance_s: float = 300.0, now_s: float | None = None
) -> bool:
    """True when `signature` signs `body` at `timestamp` with `secret`, and the timestamp is within `tolerance_s`."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    now_s = time.time() if now_s is None else now_s
    if abs(now_s - sent_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign_payload(secret, body, sent_at), signature)


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class WebhookSender:
    """Delivers webhooks on a small thread pool, so the caller (the worker loop) never waits on a receiver."""

    def __init__(self, config: WebhookConfig, *, user_agent: str = "wanserve-webhook") -> None:
        self.config = config
        self._user_agent = user_agent
        self._closing = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="wanserve-webhook")
        self._pending: set[Future[WebhookDelivery]] = set()
        self._lock = threading.Lock()
        self._client = httpx.Client(trust_env=False, follow_redirects=False)
        self._warned_unsigned = False

    def send(self, url: str, payload: Mapping[str, Any], event: str = "job.finished") -> Future[WebhookDelivery]:
        """Queues one delivery and returns at once; the future resolves when it is delivered or given up."""
        body = encode_payload(payload)
        delivery_id = uuid.uuid4().hex
        if not self.config.secret and not self._warned_unsigned:
            # Said at the first webhook, not at start-up: a server nobody sends webhooks through has nothing to fix.
            self._warned_unsigned = True
            logger.warning("webhook secret is not set (WANSERVE_WEBHOOK_SECRET): webhooks are sent unsigned")
        with self._lock:
            if self._closing.is_set():
                raise RuntimeError("WebhookSender is closed")
            future = self._executor.submit(self._deliver, url, body, event, delivery_id)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def pending(self) -> int:
        """Deliveries not finished yet."""
        with self._lock:
            return len(self._pending)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stops retrying (waits between attempts end at once) and waits up to `timeout_s` for attempts in flight."""
        with self._lock:
            self._closing.set()
            pending = list(self._pending)
        deadline = time.monotonic() + timeout_s
        for future in pending:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - a failed delivery is logged by _deliver; closing must go on
                logger.debug("webhook delivery did not finish before close", exc_info=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _forget(self, future: Future[WebhookDelivery]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _deliver(self, url: str, body: bytes, event: str, delivery_id: str) -> WebhookDelivery:
        config = self.config
        status: int | None = None
        error: str | None = None
        for attempt in range(1, config.max_attempts + 1):
            retry, status, error = self._attempt(url, body, event, delivery_id)
            if error is None:
                logger.info("webhook %s delivered to %s (HTTP %s, attempt %s)", delivery_id, url, status, attempt)
                return WebhookDelivery(url, delivery_id, True, attempt, status)
            if not retry or attempt == config.max_attempts:
                break
            wait_s = min(config.initial_backoff_s * 2 ** (attempt - 1), config.max_backoff_s)
            logger.info("webhook %s to %s failed (%s); retry %s in %.1f s", delivery_id, url, error, attempt, wait_s)
            if self._closing.wait(wait_s):
                error = f"{error}; gave up at shutdown"
                break
        logger.warning("webhook %s to %s not delivered after %s attempt(s): %s", delivery_id, url, attempt, error)
        return WebhookDelivery(url, delivery_id, False, attempt, status, error)

    def _attempt(self, url: str, body: bytes, event: str, delivery_id: str) -> tuple[bool, int | None, str | None]:
        """One POST. Returns (worth retrying, HTTP status, error or None on success)."""
        try:
            pinned = resolve_url(url, "webhook_url", self.config.allow_private_addresses)
        except InvalidRequestError as exc:
            transient = "does not resolve" in str(exc)
            return transient, None, str(exc)
        timestamp = int(time.time())
        headers = {
            **pinned.headers,
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: event,
        }
        if self.config.secret:
            headers[SIGNATURE_HEADER] = sign_payload(self.config.secret, body, timestamp)
        try:
            response = self._client.post(
                pinned.connect_url,
                content=body,
                headers=headers,
                extensions=pinned.extensions,
                timeout=self.config.timeout_s,
            )
        except httpx.HTTPError as exc:
            return True, None, f"{type(exc).__name__}: {exc}"
        code = response.status_code
        if 200 <= code < 300:
            return False, code, None
        return code >= 500 or code in _RETRY_STATUSES, code, f"HTTP {code}"


WebhookNotifier = Callable[[str, Mapping[str, Any]], Any]
"""What the job service calls on completion: `(webhook_url, job_payload)`; `WebhookSender.send` fits."""
