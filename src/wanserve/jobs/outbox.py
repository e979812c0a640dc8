"""The webhook outbox: durable webhook deliveries, sent by whichever process runs it.

`JobStore` writes one `webhook_outbox` row in the same transaction as the final status event of a job that has a
`webhook_url`, so a delivery exists exactly when the job's event log says it finished. `WebhookOutbox` then:

1. claims a due row with a lease (`attempts` is raised at claim time, so an attempt cut short by a crash counts);
2. freezes the payload at the first attempt (the documented job object, built by the `payload_for` it was given);
3. makes one signed POST (`jobs.webhooks.WebhookPoster`) and records the outcome: delivered, failed for good, or
   due again after an exponential backoff.

The lease (longer than one attempt's timeout) means no two attempts of one delivery are in flight at once, in any
number of processes; a process that dies mid-attempt leaves an expired lease (or a dead owner, released at once on
its own host) and another process takes over. A receiver sees the same `X-Wanserve-Delivery` id on every attempt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from wanserve.errors import JobNotFoundError
from wanserve.jobs.model import Job, OutboxStatus, WebhookOutboxRow, utcnow
from wanserve.jobs.store import JobStore
from wanserve.jobs.webhooks import WebhookAttempt, WebhookPoster, encode_payload

logger = logging.getLogger(__name__)

PENDING = OutboxStatus.PENDING.value
PayloadBuilder = Callable[[Job], dict[str, Any]]
"""Turns a finished job row into the webhook body (the API's job object)."""


def _free_lease(now):
    return or_(WebhookOutboxRow.lease_expires_at.is_(None), WebhookOutboxRow.lease_expires_at < now)


class WebhookOutbox:
    """Delivers due webhook outbox rows on `config.max_workers` threads of this process."""

    def __init__(
        self,
        store: JobStore,
        poster: WebhookPoster,
        payload_for: PayloadBuilder,
        owner: str,
        owner_is_dead: Callable[[str], bool] | None = None,
    ) -> None:
        self.store, self.poster, self.payload_for, self.owner = store, poster, payload_for, owner
        self.owner_is_dead = owner_is_dead
        """Tells a crashed process's lease owner id (whose deliveries are freed before their lease runs out)."""
        self.config = poster.config
        self._wake = threading.Condition()
        self._woken = False
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    # 1. The rows
    def claim_due(self) -> WebhookOutboxRow | None:
        """Takes the most overdue pending delivery whose lease is free; None when none is due."""
        now = utcnow()
        with self.store.writing() as session:
            query = (
                select(WebhookOutboxRow.id)
                .where(WebhookOutboxRow.status == PENDING, WebhookOutboxRow.next_attempt_at <= now, _free_lease(now))
                .order_by(WebhookOutboxRow.next_attempt_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            picked = session.scalar(query)
            if picked is None:
                return None
            won = session.execute(
                update(WebhookOutboxRow)
                .where(WebhookOutboxRow.id == picked, WebhookOutboxRow.status == PENDING, _free_lease(now))
                .values(
                    lease_owner=self.owner,
                    lease_expires_at=now + timedelta(seconds=self.config.lease_s),
                    attempts=WebhookOutboxRow.attempts + 1,
                )
            ).rowcount
            if not won:
                return None
            return session.get(WebhookOutboxRow, picked, populate_existing=True)

    def _record(self, row: WebhookOutboxRow, attempt: WebhookAttempt) -> str:
        """Stores the outcome of an attempt made under our lease; returns the row's new status."""
        now = utcnow()
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
        }
        if attempt.delivered:
            values.update(status=OutboxStatus.DELIVERED.value, finished_at=now)
        elif not attempt.retry or row.attempts >= self.config.max_attempts:
            values.update(status=OutboxStatus.FAILED.value, finished_at=now)
        else:
            values["next_attempt_at"] = now + timedelta(seconds=self.poster.backoff_s(row.attempts))
        with self.store.writing() as session:
            kept = session.execute(
                update(WebhookOutboxRow)
                .where(WebhookOutboxRow.id == row.id, WebhookOutboxRow.lease_owner == self.owner)
                .values(**values)
            ).rowcount
        if not kept:
            logger.warning("webhook %s: lease lost during an attempt; its outcome is left to the new owner", row.id)
        return values.get("status", PENDING)

    def _payload(self, row: WebhookOutboxRow) -> dict[str, Any] | None:
        """The frozen payload, made (and stored) at the first attempt; None when the job is gone."""
        if row.payload is not None:
            return row.payload
        try:
            payload = self.payload_for(self.store.get(row.job_id))
        except JobNotFoundError:
            return None
        with self.store.writing() as session:
            session.execute(
                update(WebhookOutboxRow)
                .where(WebhookOutboxRow.id == row.id, WebhookOutboxRow.payload.is_(None))
                .values(payload=payload)
            )
            stored = session.scalar(select(WebhookOutboxRow.payload).where(WebhookOutboxRow.id == row.id))
        return stored

    def release_dead(self, owner_is_dead: Callable[[str], bool]) -> int:
        """Frees the leases of owners known to be dead (a crashed process of this host), without waiting them out."""
        with self.store.reading() as session:
            owners = session.scalars(
                select(WebhookOutboxRow.lease_owner)
                .where(WebhookOutboxRow.status == PENDING, WebhookOutboxRow.lease_owner.is_not(None))
                .distinct()
            ).all()
        dead = [owner for owner in owners if owner_is_dead(owner)]
        if not dead:
            return 0
        with self.store.writing() as session:
            freed = session.execute(
                update(WebhookOutboxRow)
                .where(WebhookOutboxRow.status == PENDING, WebhookOutboxRow.lease_owner.in_(dead))
                .values(lease_owner=None, lease_expires_at=None)
            ).rowcount
        logger.warning("freed %d webhook deliveries left in flight by stopped processes", freed)
        return freed

    def seconds_until_due(self) -> float | None:
        """Seconds until the next pending delivery is due (0 when one is); None when none is pending."""
        with self.store.reading() as session:
            due = session.scalar(
                select(func.min(WebhookOutboxRow.next_attempt_at)).where(WebhookOutboxRow.status == PENDING)
            )
        if due is None:
            return None
        if due.tzinfo is None:  # an aggregate bypasses the column type on SQLite
            due = due.replace(tzinfo=utcnow().tzinfo)
        return max(0.0, (due - utcnow()).total_seconds())

    # 2. Delivering
    def deliver_one(self) -> bool:
        """Makes one attempt of a due delivery. False when none was due."""
        row = self.claim_due()
        if row is None:
            return False
        payload = self._payload(row)
        if payload is None:
            attempt = WebhookAttempt(False, False, None, f"job {row.job_id} was deleted before its webhook was sent")
        else:
            attempt = self.poster.post(row.url, encode_payload(payload), row.event, row.id)
        status = self._record(row, attempt)
        if status == PENDING:
            logger.info(
                "webhook %s to %s: attempt %d failed (%s); retrying", row.id, row.url, row.attempts, attempt.error
            )
        elif attempt.delivered:
            logger.info(
                "webhook %s delivered to %s (HTTP %s, attempt %d)", row.id, row.url, attempt.status_code, row.attempts
            )
        else:
            logger.warning(
                "webhook %s to %s not delivered after %d attempt(s): %s", row.id, row.url, row.attempts, attempt.error
            )
        return True

    def wake(self) -> None:
        """Looks for due deliveries now (a job of this process just finished)."""
        with self._wake:
            self._woken = True
            self._wake.notify_all()

    def start(self) -> None:
        """Starts the delivering threads."""
        for i in range(self.config.max_workers):
            thread = threading.Thread(target=self._run, name=f"webhook-outbox-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                if self.deliver_one():
                    continue
                if self.owner_is_dead is not None and self.release_dead(self.owner_is_dead):
                    continue
                wait_s = self.seconds_until_due()
            except Exception:
                logger.exception("webhook outbox: delivery round failed; retrying")
                wait_s = None
            wait_s = self.config.poll_s if wait_s is None else min(max(wait_s, 0.01), self.config.poll_s)
            with self._wake:
                if not self._woken and not self._closing.is_set():
                    self._wake.wait(wait_s)
                self._woken = False

    def close(self, timeout_s: float = 15.0) -> None:
        """Stops taking deliveries; an attempt in flight finishes (bounded by the attempt timeout)."""
        self._closing.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout_s)
        self.poster.close()
