"""Webhooks: POST a finished job to the URL its submitter gave, signed. One attempt at a time: `jobs.outbox` keeps
the deliveries in the database and schedules attempts and retries, so no process crash loses one.

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
import time
from collections.abc import Mapping
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
    poll_s: float = 1.0
    """How often a process looks for deliveries due (jobs finished in this process wake it at once)."""
    max_workers: int = 2
    """Deliveries in flight at once in one process; more wait their turn."""
    lease_s: float = 60.0
    """How long one attempt holds its delivery; another process takes it over after this (must exceed
    `timeout_s`, so two attempts of one delivery are never in flight together)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"`max_attempts` must be at least 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"need 0 <= `initial_backoff_s` <= `max_backoff_s`, got {self.initial_backoff_s} and {self.max_backoff_s}"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"`timeout_s` must be positive, got {self.timeout_s}")
        if self.poll_s <= 0:
            raise ValueError(f"`poll_s` must be positive, got {self.poll_s}")
        if self.max_workers < 1:
            raise ValueError(f"`max_workers` must be at least 1, got {self.max_workers}")
        if self.lease_s <= self.timeout_s:
            raise ValueError(f"`lease_s` ({self.lease_s:g}) must exceed `timeout_s` ({self.timeout_s:g})")


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


@dataclass(frozen=True)
class WebhookAttempt:
    """The outcome of one POST."""

    delivered: bool
    retry: bool
    """Worth another attempt (network error, 5xx, 408/425/429, a name that did not resolve)."""
    status_code: int | None = None
    """HTTP status, when the receiver answered."""
    error: str | None = None


class WebhookPoster:
    """Makes single, signed webhook POSTs; `jobs.outbox` decides when to try (and try again)."""

    def __init__(self, config: WebhookConfig, *, user_agent: str = "wanserve-webhook") -> None:
        self.config = config
        self._user_agent = user_agent
        self._client = httpx.Client(trust_env=False, follow_redirects=False)
        self._warned_unsigned = False

    def backoff_s(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt."""
        return min(self.config.initial_backoff_s * 2 ** max(0, attempts - 1), self.config.max_backoff_s)

    def post(self, url: str, body: bytes, event: str, delivery_id: str) -> WebhookAttempt:
        """One POST of `body` (already encoded, see `encode_payload`) to `url`."""
        try:
            pinned = resolve_url(url, "webhook_url", self.config.allow_private_addresses)
        except InvalidRequestError as exc:
            return WebhookAttempt(False, "does not resolve" in str(exc), None, str(exc))
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
        elif not self._warned_unsigned:
            # Said at the first webhook, not at start-up: a server nobody sends webhooks through has nothing to fix.
            self._warned_unsigned = True
            logger.warning("webhook secret is not set (WANSERVE_WEBHOOK_SECRET): webhooks are sent unsigned")
        try:
            response = self._client.post(
                pinned.connect_url,
                content=body,
                headers=headers,
                extensions=pinned.extensions,
                timeout=self.config.timeout_s,
            )
        except httpx.HTTPError as exc:
            return WebhookAttempt(False, True, None, f"{type(exc).__name__}: {exc}")
        code = response.status_code
        if 200 <= code < 300:
            return WebhookAttempt(True, False, code)
        return WebhookAttempt(False, code >= 500 or code in _RETRY_STATUSES, code, f"HTTP {code}")

    def close(self) -> None:
        self._client.close()
