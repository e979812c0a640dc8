"""Pushing "job X has new events" across processes, so event streams follow a worker on another host live.

- PostgreSQL: every transaction that appends job events also runs `pg_notify` (see `jobs.store`), delivered at
  commit. `PostgresEventListener` holds one `LISTEN` connection per process and wakes the local readers.
- Redis (when a broker is configured and the database is not PostgreSQL): `RedisEventBridge` publishes each
  `EventHub.notify` to a channel and wakes the local readers of what the other processes publish.

The event log stays the record: a push only wakes readers, who then read `job_events`. After a lost connection the
listener wakes every reader (what it missed meanwhile is re-read), and readers keep a slow re-read timeout.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import make_url

from wanserve.jobs.events import EventHub
from wanserve.jobs.store import EVENTS_CHANNEL

logger = logging.getLogger(__name__)

RECONNECT_S = 1.0


class _ListenerThread:
    """A daemon thread that runs `_listen` until closed, reconnecting after errors."""

    name = "event-push"

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        """Set while the listener is subscribed (tests and health wait on it)."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1:
                    logger.warning("%s: connection lost (%s); reconnecting", self.name, exc)
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    self.hub.notify_all()  # readers re-read what this listener may have missed
            self._closing.wait(RECONNECT_S)

    def _subscribed(self) -> None:
        self.connected.set()
        self.hub.notify_all()

    def _listen(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5)


class PostgresEventListener(_ListenerThread):
    """`LISTEN wanserve_job_events` on its own connection; every notification wakes that job's readers here."""

    name = "pg-event-listener"

    def __init__(self, database_url: str, hub: EventHub) -> None:
        super().__init__(hub)
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            self._subscribed()
            while not self._closing.is_set():
                for notify in conn.notifies(timeout=1.0):
                    self.hub.notify_local(notify.payload)


class RedisEventBridge(_ListenerThread):
    """Publishes this process's job changes to a Redis channel and wakes local readers of everyone's."""

    name = "redis-event-bridge"
    channel = "wanserve:job-events"

    def __init__(self, redis_url: str, hub: EventHub) -> None:
        import redis

        super().__init__(hub)
        self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        self._listen_client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, health_check_interval=10)
        self._publish_failing = False

    def publish(self, job_id: str) -> None:
        """Tells the other processes that `job_id` has new events (hand this to `EventHub.add_publisher`). While
        Redis is down this logs once and returns: readers elsewhere fall back to re-reading."""
        import redis

        try:
            self._redis.publish(self.channel, job_id)
        except redis.RedisError as exc:
            if not self._publish_failing:
                logger.warning("could not push job events through Redis (%s); readers elsewhere re-read", exc)
            self._publish_failing = True
            return
        self._publish_failing = False

    def _listen(self) -> None:
        pubsub = self._listen_client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self._subscribed()
            while not self._closing.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    self.hub.notify_local(message["data"].decode())
        finally:
            pubsub.close()

    def close(self) -> None:
        super().close()
        self._redis.close()
        self._listen_client.close()
