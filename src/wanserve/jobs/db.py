"""Database connections and migrations.

SQLite (the default) runs in WAL mode with a busy timeout; every writing transaction starts with `BEGIN IMMEDIATE`
so two writers never deadlock upgrading read locks, while readers (`make_read_session_factory`) take no lock. PostgreSQL is used as is (`postgresql+psycopg://...`). Alembic
migrations live in this package (`jobs/migrations`) and run at start-up (`run_migrations`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "wanserve_read_only"
POOL_SIZE = 40
"""SQLite connections kept open: one per thread of the default thread pool (anyio's 40), so a busy API never closes
a connection to open another one a moment later."""
POOL_OVERFLOW = 20


def create_db_engine(url: str) -> Engine:
    """An engine for `url`; creates the SQLite file's directory and sets WAL mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        pool: dict = {}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # With SQLAlchemy's default pool of 5 (+10 overflow), every connection past the 5th was closed on return
            # and opened again (pragmas and all) by the next request: under 200 pollers a profile of the API showed it.
            pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        engine = create_engine(url, connect_args=connect_args, **pool)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions would defer the write lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        # Readers take no lock in WAL mode; writers take the write lock up front.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they are handed across threads as snapshots)."""
    return sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads only. On SQLite they start with a plain `BEGIN`, taking no write lock. On PostgreSQL they
    run in autocommit: no `BEGIN` and `ROLLBACK` round trips around a status poll's one `SELECT` (under READ
    COMMITTED each statement of a transaction has a snapshot of its own anyway, so no read loses consistency)."""
    options: dict = {READ_ONLY_OPTION: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    return sessionmaker(engine.execution_options(**options), expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def run_migrations(engine: Engine) -> None:
    """Brings the schema to the newest revision (idempotent; safe when several servers start together)."""
    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Two servers starting at once must not both create the tables.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7242101)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    logger.info("database schema at the newest revision (%s)", engine.url.render_as_string(hide_password=True))
