"""In-process pub/sub that wakes event-stream readers when a job changes.

The database is the source of truth: a notification only says "job X has new events"; readers then fetch them from
`job_events` in order. Changes made by other processes (a worker on another host) arrive through a push
(`jobs.event_push`: PostgreSQL LISTEN/NOTIFY or Redis pub/sub), which calls `notify_local`; readers also re-read on a
timeout, as a safety net for a push that was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)


class EventWaiter:
    """One reader's wake-up flag, bound to the event loop it was made on."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Thread-safe: sets the flag from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the reader is gone
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout_s: float) -> bool:
        """Waits until woken or `timeout_s` passes; True when woken."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._event.clear()


class EventHub:
    """Job id -> waiting readers. `notify` is called after every committed change of a job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[EventWaiter]] = {}
        self._publishers: list[Callable[[str], None]] = []

    def add_publisher(self, publish: Callable[[str], None]) -> None:
        """Also hands every `notify` to `publish(job_id)` (a push to other processes); its errors are logged."""
        self._publishers.append(publish)

    def notify(self, job_id: str) -> None:
        """Wakes every reader of `job_id` here (from any thread) and tells the other processes."""
        self.notify_local(job_id)
        for publish in self._publishers:
            try:
                publish(job_id)
            except Exception as exc:  # readers elsewhere fall back to their re-read timeout
                logger.warning("could not push the events of job %s to other processes: %s", job_id, exc)

    def notify_local(self, job_id: str) -> None:
        """Wakes every reader of `job_id` in this process only."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for waiter in waiters:
            waiter.wake()

    def notify_all(self) -> None:
        """Wakes every reader here (after a push connection was re-made: what it missed is re-read)."""
        with self._lock:
            waiters = [w for readers in self._waiters.values() for w in readers]
        for waiter in waiters:
            waiter.wake()

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[EventWaiter]:
        """Registers a reader on the running event loop for as long as the block lasts."""
        waiter = EventWaiter(asyncio.get_running_loop())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                readers = self._waiters.get(job_id)
                if readers is not None:
                    readers.discard(waiter)
                    if not readers:
                        del self._waiters[job_id]
