"""Fixtures shared by the job-service tests: databases (SQLite per test, a throwaway PostgreSQL database per run when
`WANSERVE_TEST_POSTGRES_URL` is set), a `JobService` over them, and a fake engine for worker-loop unit tests."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


@pytest.fixture
def fresh_postgres_url(postgres_url: str):
    """Makes another empty database on the test server: `fresh_postgres_url()` returns its URL."""
    return lambda: new_postgres_database(postgres_url)


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
        conn.execute(text("TRUNCATE job_events, jobs, webhook_outbox RESTART IDENTITY CASCADE"))
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

    def generate(self, request, on_progress=None, should_stop=None, write_video=None) -> GenerationResult:
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
            frames = np.zeros((request.num_frames, request.height, request.width, 3), dtype=np.uint8)
            if write_video is not None:  # as the real engine: the frames go to the writer, the result holds none
                write_video(iter(frames), len(frames))
                frames = frames[:0]
            return GenerationResult(
                frames=frames,
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
    from wanserve.jobs.db import create_db_engine, run_migrations
    from wanserve.jobs.service import JobService, JobServiceConfig
    from wanserve.jobs.store import JobStore
    from wanserve.storage.local import LocalStorage

    engines = []

    def build(url: str, **config):
        engine = create_db_engine(url)
        engines.append(engine)
        run_migrations(engine)
        dispatcher = EmbeddedDispatcher()
        storage = LocalStorage.under(tmp_path, "outputs", "inputs")
        cfg = JobServiceConfig(served_models=("tiny-t2v", "tiny-i2v"), **config)
        service = JobService(JobStore.for_engine(engine), storage, cfg, notify_waiting=dispatcher.notify_job_waiting)
        service.dispatcher = dispatcher
        return service

    yield build
    for engine in engines:
        engine.dispose()


# Real servers (uvicorn subprocesses) for the integration tests ------------------------------------------------------

SRC_DIR = Path(__file__).resolve().parents[1] / "src"


class ServerProcess:
    """`wanserve serve` (or another `wanserve` command) in a subprocess on a free port. Waits for its log to say it
    is ready: `workers ready` unless `ready` says otherwise (`listening on` for `serve --no-workers`)."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        name: str = "server",
        cwd: Path | None = None,
        args: tuple[str, ...] = ("serve",),
        ready: str = "workers ready",
    ):
        self.data_dir, self.env, self.name, self.cwd = data_dir, env, name, cwd
        self.args, self.ready = args, ready
        self.proc = None
        self.url = ""
        self.log_lines: list[str] = []

    def start(self, timeout_s: float = 120.0) -> ServerProcess:
        import re
        import subprocess
        import sys

        env = {**os.environ, **self.env, "WANSERVE_DATA_DIR": str(self.data_dir)}
        if "SERVER_PORT" not in self.env:  # the seed services' name for it is tested too; ours would win
            env["WANSERVE_PORT"] = "0"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wanserve", *self.args],
            env=env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        listening, ready = threading.Event(), threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.log_lines.append(line)
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    self.url = match.group(1).replace("0.0.0.0", "127.0.0.1")
                    listening.set()
                if self.ready in line or re.search(r"worker \S+ stopped", line):
                    ready.set()
            listening.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        started = ready.wait(timeout_s) and any(self.ready in line for line in self.log_lines)
        if not started or self.proc.poll() is not None or (self.args[0] == "serve" and not self.url):
            self.kill()
            raise RuntimeError(f"{self.name} did not start:\n{''.join(self.log_lines[-40:])}")
        return self

    def kill(self) -> None:
        """SIGKILL, then reap (a zombie would still look alive to the next server)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except Exception:
                self.proc.kill()
                self.proc.wait(30)


def read_events(base_url: str, job_id: str, until=None, headers: dict | None = None) -> list[dict]:
    """Reads the job's SSE stream until it ends (or `until(event)` is true). Events: {event, id, data}."""
    import json

    import httpx

    events: list[dict] = []
    current: dict = {}
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", timeout=120, headers=headers or {}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                    events.append(current)
                    if until is not None and until(current):
                        return events
                current = {}
                continue
            key, _, value = line.partition(":")
            current[key] = value[1:] if value.startswith(" ") else value
    return events


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Starts a server: `start_server(env={...}, data_dir=None)`; every server is stopped at the end of the run."""
    servers: list[ServerProcess] = []

    def start(
        env: dict[str, str] | None = None, data_dir: Path | None = None, name: str = "server", cwd: Path | None = None
    ) -> ServerProcess:
        hold_dir = tmp_path_factory.mktemp(f"{name}-hold")
        base = {
            "WANSERVE_MODELS": "tiny-t2v",
            "WANSERVE_CONCURRENCY": "1",
            "WANSERVE_POLL_INTERVAL_S": "0.5",
            "WANSERVE_TEST_HOLD_DIR": str(hold_dir),
        }
        server = ServerProcess(data_dir or tmp_path_factory.mktemp(name), {**base, **(env or {})}, name, cwd)
        server.hold_dir = hold_dir
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_server(start_server) -> ServerProcess:
    """One shared server over SQLite for the integration tests that need no special settings (it also serves
    tiny-i2v, and may fetch inputs from local URLs)."""
    env = {"WANSERVE_MODELS": "tiny-t2v,tiny-i2v", "WANSERVE_ALLOW_PRIVATE_URLS": "true"}
    return start_server(env, name="shared-sqlite")


@pytest.fixture(scope="session")
def postgres_server(start_server, postgres_url) -> ServerProcess:
    """One shared server over PostgreSQL."""
    return start_server({"WANSERVE_DATABASE_URL": new_postgres_database(postgres_url)}, name="shared-postgres")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request) -> ServerProcess:
    """The shared server of each database backend."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def sse():
    """`sse(base_url, job_id, until=None, headers=None)`: the job's events as a list (see `read_events`)."""
    return read_events


class Hold:
    """The test hold hook of one server: while on, jobs stop after step 1 until released."""

    def __init__(self, hold_dir: Path):
        self.dir = hold_dir
        self.held: list[str] = []

    def on(self) -> None:
        (self.dir / "hold").touch()

    def off(self) -> None:
        (self.dir / "hold").unlink(missing_ok=True)

    def release(self, job_id: str) -> None:
        (self.dir / job_id).touch()


@pytest.fixture
def hold_for():
    """`hold_for(server)` turns the server's hold on for this test; it is turned off at the end."""
    holds: list[Hold] = []

    def make(server: ServerProcess) -> Hold:
        hold = Hold(server.hold_dir)
        hold.on()
        holds.append(hold)
        return hold

    yield make
    for hold in holds:
        hold.off()


# A real Redis server (Debian's `redis-server`) on a free loopback port, for the broker and event-push tests ---------


class RedisServer:
    """`redis-server` on a free loopback port, without persistence (a restart loses every queue, as a crash
    would). `stop()` and `start()` simulate an outage; the port stays the same."""

    def __init__(self, workdir: Path) -> None:
        import socket

        self.workdir = workdir
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self, timeout_s: float = 30.0) -> RedisServer:
        import shutil
        import subprocess
        import time

        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                threading.Event().wait(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A fresh `redis-server` for this test (see `RedisServer`)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


# S3-compatible object storage (moto's server mode, in a thread of the test process) -------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on a free loopback port, for this test run."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_server) -> dict[str, str]:
    """A fresh bucket on the test S3 server, as the `WANSERVE_*` variables that select it."""
    import boto3

    bucket = f"wanserve-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ).create_bucket(Bucket=bucket)
    return {
        "WANSERVE_STORAGE_URL": f"s3://{bucket}/jobs",
        "WANSERVE_S3_ENDPOINT_URL": s3_server,
        "WANSERVE_S3_REGION": "us-east-1",
        "WANSERVE_S3_ACCESS_KEY_ID": "test",
        "WANSERVE_S3_SECRET_ACCESS_KEY": "test",
    }
