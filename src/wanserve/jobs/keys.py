"""API keys: who may call the service, which jobs are theirs, and how much they may submit.

A key is shown once, at creation, as `wsk_<id>_<secret>`; the database keeps only the SHA-256 of the secret (the
secret is 32 random bytes, so a fast hash is enough: there is nothing to brute-force). `id` is public: it is the
`owner_key` of every job the key makes, so a key lists, reads, downloads, cancels and deletes only its own jobs. An
admin key sees every job and may call the administrative routes.

`KeyRing` is what the API asks on every request; it caches what it read for `cache_s` seconds, so a key revoked by
another process (`wanserve keys revoke`) stops working within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Boolean, Engine, Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from wanserve.jobs.model import FINAL_STATUSES, Base, Job, UTCDateTime, utcnow

TOKEN_PREFIX = "wsk_"
_TOKEN_RE = re.compile(r"^wsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
RATE_WINDOW_S = 60.0
"""Submissions are counted over this window for a key's `rate_per_min`."""


class ApiKey(Base):
    """One API key (its secret's hash, never the secret)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    rate_per_min: Mapped[int | None] = mapped_column(Integer)
    """Job submissions allowed per minute; None: no limit."""
    max_running: Mapped[int | None] = mapped_column(Integer)
    """Jobs queued or running at once; None: no limit."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id (the owner of the jobs it makes), whether it is an admin, and its limits.
    `key_id` is empty when the service runs open (no keys)."""

    key_id: str
    admin: bool
    name: str = ""
    rate_per_min: int | None = None
    max_running: int | None = None

    @property
    def owner_filter(self) -> str | None:
        """The owner whose jobs this caller sees; None: every job (admins, and an open service)."""
        return None if self.admin else self.key_id


OPEN_CALLER = Caller(key_id="", admin=True, name="open")
"""The caller of a service with no keys: everything is allowed (on loopback, or with `--allow-open`)."""


@dataclass(frozen=True)
class CreatedKey:
    """A new key: its row and the token, shown once."""

    key: ApiKey
    token: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_limit(name: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 1_000_000:
        raise ValueError(f"`{name}` must be between 1 and 1000000, got {value}")
    return value


class KeyStore:
    """The `api_keys` table."""

    def __init__(self, engine: Engine):
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(
        self, name: str = "", admin: bool = False, rate_per_min: int | None = None, max_running: int | None = None
    ) -> CreatedKey:
        """A new key; the token is returned here and never again."""
        if len(name) > 128 or not name.isprintable():
            raise ValueError(f"`name` must be at most 128 printable characters, got {name[:40]!r}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = ApiKey(
            id=key_id,
            name=name,
            secret_sha256=_digest(secret),
            admin=admin,
            rate_per_min=_check_limit("rate_per_min", rate_per_min),
            max_running=_check_limit("max_running", max_running),
        )
        with self._sessions.begin() as session:
            session.add(row)
        return CreatedKey(row, f"{TOKEN_PREFIX}{key_id}_{secret}")

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        with self._sessions() as session:
            query = select(ApiKey).order_by(ApiKey.created_at)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return list(session.scalars(query))

    def revoke(self, key_id: str) -> ApiKey:
        """Revokes the key `key_id`; `KeyError` when there is no such key."""
        with self._sessions.begin() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise KeyError(key_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return row

    def any_active(self) -> bool:
        with self._sessions() as session:
            return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def active(self, key_id: str) -> ApiKey | None:
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            return row if row is not None and row.revoked_at is None else None

    def usage(self, key_id: str) -> tuple[int, int, datetime | None]:
        """(jobs made in the last `RATE_WINDOW_S`, jobs queued or running, when the oldest of the former was made)."""
        since = utcnow() - timedelta(seconds=RATE_WINDOW_S)
        with self._sessions() as session:
            recent, oldest = session.execute(
                select(func.count(), func.min(Job.created_at)).where(Job.owner_key == key_id, Job.created_at > since)
            ).one()
            unfinished = session.scalar(
                select(func.count()).where(Job.owner_key == key_id, Job.status.not_in(FINAL_STATUSES))
            )
        if oldest is not None and oldest.tzinfo is None:
            oldest = UTCDateTime().process_result_value(oldest, None)
        return int(recent), int(unfinished or 0), oldest


class KeyRing:
    """Checks bearer tokens against the key store, caching what it read for `cache_s` seconds. Thread-safe."""

    def __init__(self, store: KeyStore, cache_s: float = 2.0, static_admin_token: str | None = None):
        self.store = store
        self.cache_s = cache_s
        self._static = static_admin_token
        self._lock = threading.Lock()
        self._any: tuple[float, bool] | None = None
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}

    def keys_required_cached(self) -> bool | None:
        """`keys_required` when it is known without reading the database (None when it is not)."""
        if self._static:
            return True
        cached = self._any
        return cached[1] if cached is not None and time.monotonic() - cached[0] <= self.cache_s else None

    def caller_cached(self, token: str) -> Caller | None | bool:
        """`caller(token)` when it is known without reading the database; False when it is not."""
        match = _TOKEN_RE.match(token)
        if match is None:
            return self.caller(token)  # no database read for a token of another shape
        cached = self._keys.get(match.group(1))
        if cached is None or time.monotonic() - cached[0] > self.cache_s:
            return False
        return self.caller(token)

    def keys_required(self) -> bool:
        """Whether callers need a key: some key exists (or `WANSERVE_API_KEY` is set)."""
        if self._static:
            return True
        now = time.monotonic()
        with self._lock:
            cached = self._any
        if cached is None or now - cached[0] > self.cache_s:
            cached = (now, self.store.any_active())
            with self._lock:
                self._any = cached
        return cached[1]

    def caller(self, token: str) -> Caller | None:
        """The caller a bearer token belongs to, or None when it is no valid key."""
        if self._static and hmac.compare_digest(token.encode(), self._static.encode()):
            return Caller(key_id="env", admin=True, name="WANSERVE_API_KEY")
        match = _TOKEN_RE.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        now = time.monotonic()
        with self._lock:
            cached = self._keys.get(key_id)
        if cached is None or now - cached[0] > self.cache_s:
            cached = (now, self.store.active(key_id))
            with self._lock:
                if len(self._keys) > 10_000:
                    self._keys.clear()
                self._keys[key_id] = cached
        row = cached[1]
        if row is None or not hmac.compare_digest(_digest(secret), row.secret_sha256):
            return None
        return Caller(row.id, row.admin, row.name, row.rate_per_min, row.max_running)

    def forget(self) -> None:
        """Drops the cache (after this process created or revoked a key)."""
        with self._lock:
            self._any = None
            self._keys.clear()
