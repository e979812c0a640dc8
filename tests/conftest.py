"""Fixtures shared by the job-service tests: databases (SQLite per test, a throwaway PostgreSQL database per run when
`WANSERVE_TEST_POSTGRES_URL` is set), a `JobService` over them, and a fake engine for worker-loop unit tests."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from wanserve.engine.requests import GenerationRequest, GenerationResult, ProgressEvent, Stage
from wanserve.errors import GenerationCancelled

POSTGRES_URL = os.environ.get("WANSERVE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end. Skips without a server."""
    if not POSTGRES_URL:
        pytest.skip("WANSERVE_TEST_POSTGRES_URL is not set (run `. .ci/start-postgres.sh`)")
    import psycopg

    admin = make_url(POSTGRES_URL)
    name = f"wanserve_test_{uuid.uuid4().hex[:10]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_postgres_database(postgres_url: str) -> str:
    """Another empty database on the test server (for tests that need their own)."""
    import psycopg

    url = make_url(postgres_url)
    name = f"{url.database}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    """An empty, migrated-on-demand database: SQLite in `tmp_path`, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url = request.getfixturevalue("postgres_url")
    from wanserve.jobs.db import create_db_engine, run_migrations

    engine = create_db_engine(url)
    run_migrations(engine)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_events, jobs RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


class FakeEngine:
    """Stands in for `Engine` in worker-loop unit tests: emits the stages and steps, honours `should_stop`,
    writes a small file. `fail_with` makes the next generation raise; `on_step` runs after each step."""

    def __init__(self, device: str = "cpu", settings=None):
        self.loaded: list[str] = []
        self.fail_with: Exception | None = None
        self.on_step = None
        self.generated: list[GenerationRequest] = []
        self.lock = threading.Lock()

    def load(self, model: str) -> None:
        self.loaded.append(model)

    def loaded_models(self) -> list[str]:
        return list(self.loaded)

    def generate(self, request, on_progress=None, should_stop=None) -> GenerationResult:
        on_progress = on_progress or (lambda e: None)
        should_stop = should_stop or (lambda: False)
        with self.lock:
            self.generated.append(request)
            on_progress(ProgressEvent(Stage.LOADING))
            on_progress(ProgressEvent(Stage.ENCODING_TEXT))
            if self.fail_with is not None:
                error, self.fail_with = self.fail_with, None
                raise error
            steps = request.num_inference_steps
            on_progress(ProgressEvent(Stage.DENOISING, 0, steps))
            for step in range(1, steps + 1):
                on_progress(ProgressEvent(Stage.DENOISING, step, steps, step_time_s=0.01))
                if self.on_step is not None:
                    self.on_step(step)
                if should_stop():
                    raise GenerationCancelled("generation stopped by request")
            on_progress(ProgressEvent(Stage.DECODING, steps, steps))
            on_progress(ProgressEvent(Stage.WRITING))
            Path(request.output_path).write_bytes(b"fake mp4")
            thumb = str(Path(request.output_path).with_suffix(".jpg"))
            Path(thumb).write_bytes(b"fake jpg")
            return GenerationResult(
                video_path=request.output_path,
                thumbnail_path=thumb,
                width=request.width,
                height=request.height,
                num_frames=request.num_frames,
                fps=request.fps,
                seed=request.seed,
                random_weights=True,
                step_times_s=(0.01,) * steps,
            )


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_service(tmp_path: Path):
    """Builds a `JobService` over a database URL (migrated), with storage in `tmp_path`."""
    from wanserve.dispatch.embedded import EmbeddedDispatcher
    from wanserve.jobs.db import create_db_engine, make_session_factory, run_migrations
    from wanserve.jobs.service import JobService, JobServiceConfig
    from wanserve.jobs.store import JobStore
    from wanserve.storage.local import LocalStorage

    engines = []

    def build(url: str, **config):
        engine = create_db_engine(url)
        engines.append(engine)
        run_migrations(engine)
        dispatcher = EmbeddedDispatcher()
        storage = LocalStorage(tmp_path / "outputs", tmp_path / "inputs")
        cfg = JobServiceConfig(served_models=("tiny-t2v", "tiny-i2v"), **config)
        service = JobService(
            JobStore(make_session_factory(engine)), storage, cfg, notify_waiting=dispatcher.notify_job_waiting
        )
        service.dispatcher = dispatcher
        return service

    yield build
    for engine in engines:
        engine.dispose()
