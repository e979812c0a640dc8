"""Real uvicorn servers (in a thread of the test process, on a pre-bound socket) for the compatibility-route tests:
OpenAI `/v1/videos`, the replaced services' routes, `/metrics`, webhooks. Jobs run on the real engine with the
tiny models; one shared server with default settings, others started per settings combination."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image

from wanserve.api.app import create_app
from wanserve.config import Settings


@dataclass
class CompatServer:
    """A running app: its base URL, settings and runtime."""

    url: str
    settings: Settings
    app: Any

    @property
    def runtime(self):
        return self.app.state.runtime

    def wait_final(self, job_id: str) -> dict:
        """Follows the native event stream until the job's final status; returns the native job."""
        self.wait_event(job_id, lambda kind, data: False)
        return httpx.get(f"{self.url}/v1/jobs/{job_id}").json()

    def wait_event(self, job_id: str, until) -> None:
        """Follows the native event stream until `until(kind, data)` is true or the stream ends."""
        kind = ""
        with httpx.stream("GET", f"{self.url}/v1/jobs/{job_id}/events", timeout=120) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:") and until(kind, json.loads(line.partition(":")[2])):
                    return


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no start-up polling needed
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _server_starter(tmp_path_factory):
    """(`start(**settings)` -> a `CompatServer` with the tiny models, `stop_all()`)."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides) -> CompatServer:
        data = tmp_path_factory.mktemp("compat")
        values: dict[str, Any] = {
            "data_dir": data,
            "models": ["tiny-t2v", "tiny-i2v", "tiny-animate"],
            "concurrency": 1,
            "poll_interval_s": 0.5,
            "legacy_input_dir": data / "legacy-inputs",
            "animate_jobs_root": data / "animate-jobs",
            "max_upload_mb": 5,
            "max_request_mb": 20,
        }
        values.update(overrides)
        for key in ("legacy_input_dir", "animate_jobs_root"):
            if values.get(key):
                Path(values[key]).mkdir(parents=True, exist_ok=True)
        if values.get("hold_dir"):
            (Path(values["hold_dir"]) / "hold").touch()  # the test hold hook is on while this file exists
        settings = Settings(**values)
        app = create_app(settings)
        server, thread, url = _serve(app)
        running.append((server, thread))
        return CompatServer(url, settings, app)

    def stop_all() -> None:
        for server, thread in running:
            server.should_exit = True
            thread.join(60)

    return start, stop_all


@pytest.fixture(scope="session")
def start_compat_server(tmp_path_factory) -> Iterator:
    """`start_compat_server(**settings)` -> a `CompatServer` with the tiny models; all stopped at the end."""
    start, stop_all = _server_starter(tmp_path_factory)
    yield start
    stop_all()


@pytest.fixture
def start_own_server(tmp_path_factory) -> Iterator:
    """As `start_compat_server`, but stopped when the test ends: for servers that hold process-wide state (a rank
    group's default process group), which later tests must not inherit."""
    start, stop_all = _server_starter(tmp_path_factory)
    yield start
    stop_all()


@pytest.fixture(scope="session")
def compat_server(start_compat_server) -> CompatServer:
    """The shared server: default settings (private URLs refused), tiny t2v, i2v and animate models."""
    return start_compat_server()


@pytest.fixture(scope="module")
def openai_client(compat_server):
    """The official `openai` client, pointed at the shared server (no retries: a test sees every error)."""
    import openai

    return openai.OpenAI(base_url=f"{compat_server.url}/v1", api_key="any-key", max_retries=0)


def png_bytes(size: tuple[int, int] = (64, 64), color=(200, 40, 40)) -> bytes:
    """A real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_png():
    """`make_png(size=(64, 64))` -> PNG bytes."""
    return png_bytes


@pytest.fixture
def png_data_url() -> str:
    """A 64x64 PNG as a `data:` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
