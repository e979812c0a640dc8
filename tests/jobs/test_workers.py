"""`WorkerRegistry`: registration, heartbeats, `lost` after a lease without one, pruning. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from wanserve.jobs.db import create_db_engine, run_migrations
from wanserve.jobs.model import utcnow
from wanserve.jobs.workers import WorkerRegistry


@pytest.fixture
def registry(db_url):
    engine = create_db_engine(db_url)
    run_migrations(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM workers"))
    yield WorkerRegistry(engine, lost_after_s=30)
    engine.dispose()


def test_register_heartbeat_then_lost_without_heartbeat(registry):
    registry.register("h:1:t:0", "h", 1, ["cuda:0"], ["tiny-t2v"])
    (starting,) = registry.list()
    assert (starting.state, starting.devices, starting.models, starting.jobs_done) == (
        "starting", ["cuda:0"], ["tiny-t2v"], 0)  # fmt: skip
    registry.heartbeat("h:1:t:0", "busy", "job-1", 3)
    (busy,) = registry.list()
    assert (busy.state, busy.current_job, busy.jobs_done) == ("busy", "job-1", 3)
    (later,) = registry.list(now=utcnow() + timedelta(seconds=31))
    assert later.state == "lost" and later.current_job is None and later.heartbeat_age_s > 30


def test_stopped_worker_is_not_lost_and_old_rows_are_pruned(registry):
    registry.register("h:1:t:0", "h", 1, ["cpu"], ["tiny-t2v"])
    registry.heartbeat("h:1:t:0", "stopped", None, 5)
    registry.register("h:2:t:0", "h", 2, ["cpu"], ["tiny-t2v"])
    states = {w.id: w.state for w in registry.list(now=utcnow() + timedelta(hours=1))}
    assert states == {"h:1:t:0": "stopped", "h:2:t:0": "lost"}
    assert registry.prune(older_than_s=3600, now=utcnow() + timedelta(hours=2)) == 2
    assert registry.list() == []


def test_reregistering_replaces_the_row_and_bad_state_is_refused(registry):
    registry.register("h:1:t:0", "h", 1, ["cpu"], ["a"])
    registry.heartbeat("h:1:t:0", "idle", None, 9)
    registry.register("h:1:t:0", "h", 1, ["cpu"], ["b"])
    (row,) = registry.list()
    assert (row.models, row.jobs_done, row.state) == (["b"], 0, "starting")
    with pytest.raises(ValueError, match="`state` must be one of"):
        registry.heartbeat("h:1:t:0", "lost", None, 0)
