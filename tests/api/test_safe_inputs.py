"""Inputs that must be refused cleanly, and faults that must stay inside one request or one job: webhook targets,
`Last-Event-ID`, body size, Animate `job_id`, decompression bombs, a full disk, server paths in messages, CORS and
the page's security headers (in-process app; workers only where a job must run)."""

from __future__ import annotations

import errno
import io
import json
import sqlite3
import subprocess
from collections import namedtuple

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.exc import OperationalError

from wanserve.api.app import create_app
from wanserve.config import Settings
from wanserve.errors import redact_paths

JOB = {"prompt": "a cat"}


@pytest.fixture
def client(tmp_path):
    settings = Settings(
        data_dir=tmp_path, models=["tiny-t2v", "tiny-i2v", "tiny-animate"], max_request_mb=1, max_upload_mb=1
    )
    with TestClient(create_app(settings, start_workers=False)) as client:
        yield client


INTERNAL_WEBHOOKS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/",
    "http://metadata.google.internal.invalid/",
    "http://100.100.100.200/latest/meta-data/",
    "http://127.0.0.1:8000/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://017700000001/hook",
    "http://0.0.0.0/hook",
    "http://localhost/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "http://user:hunter2@93.184.215.14/hook",
    "ftp://93.184.215.14/hook",
]


@pytest.mark.parametrize("url", INTERNAL_WEBHOOKS)
def test_webhook_url_internal_or_credentialed_refused_at_submission(client, url):
    response = client.post("/v1/jobs", json={**JOB, "webhook_url": url})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "webhook_url"
    assert "hunter2" not in response.text
    assert client.get("/v1/jobs").json()["count"] == 0


def test_webhook_url_refused_on_the_openai_route_too(client):
    response = client.post("/v1/videos", json={**JOB, "webhook_url": "http://169.254.169.254/x"})
    assert response.status_code == 422 and response.json()["error"]["param"] == "webhook_url"


@pytest.mark.parametrize("value", ["²", "１", "-1", "1e3", "99999999999999999999999999999", "2147483648"])
def test_last_event_id_not_a_number_in_range_422(client, value):
    job = client.post("/v1/jobs", json=JOB).json()["id"]
    response = client.get(f"/v1/jobs/{job}/events", headers={"Last-Event-ID": value.encode()})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "Last-Event-ID"


def test_last_event_id_resumes_after_that_event(client):
    job = client.post("/v1/jobs", json=JOB).json()["id"]
    client.post(f"/v1/jobs/{job}/cancel")
    with client.stream("GET", f"/v1/jobs/{job}/events", headers={"Last-Event-ID": "1"}) as response:
        ids = [line.split(":", 1)[1].strip() for line in response.iter_lines() if line.startswith("id:")]
    assert response.status_code == 200 and ids and ids[0] == "2"


def test_body_over_limit_413_json(client):
    response = client.post("/v1/jobs", content=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large" and response.json()["error"]["param"] == "body"
    assert client.get("/v1/jobs").status_code == 200  # the client (and server) carry on


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "a/b", "..", "a\nb", "a b", ".hidden"])
def test_animate_job_id_not_a_plain_name_422_naming_job_id(client, job_id):
    response = client.post("/animate/jobs", json={"src_root_path": "demo", "job_id": job_id})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "job_id" and "Idempotency-Key" not in response.text


def test_image_bomb_refused_before_decoding(client):
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG")  # ~8 KB on disk, 192 MB decoded as RGB
    files = {"image": ("bomb.png", buffer.getvalue(), "image/png")}
    response = client.post("/v1/jobs", data={"model": "tiny-i2v", "prompt": "a cat"}, files=files)
    assert response.status_code == 422 and response.json()["error"]["param"] == "image"
    assert "8000x8000" in response.json()["detail"]


def test_database_full_is_507_json_and_the_next_request_works(client, monkeypatch):
    store = client.app.state.runtime.service.store

    def full(*args, **kwargs):
        raise OperationalError("INSERT INTO jobs", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(store, "create", full)
    response = client.post("/v1/jobs", json=JOB)
    assert response.status_code == 507 and response.json()["error"]["type"] == "storage_full"
    legacy = client.post("/submit", json={"prompt": "a cat", "image_url": "data:,x"})
    assert legacy.status_code in (422, 507)  # the legacy shape, whichever check fails first
    monkeypatch.undo()
    assert client.post("/v1/jobs", json=JOB).status_code == 201


def test_unexpected_error_json_500_and_storage_full_507_on_any_route(client, monkeypatch):
    service = client.app.state.runtime.service

    def broken(*args, **kwargs):
        raise RuntimeError("boom at /srv/secret/path.db")

    monkeypatch.setattr(service, "list_jobs", broken)
    response = TestClient(client.app, raise_server_exceptions=False).get("/v1/jobs")
    assert response.status_code == 500 and response.json()["error"]["type"] == "internal_error"
    assert "/srv/secret" not in response.text

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(service, "list_jobs", full)
    response = TestClient(client.app, raise_server_exceptions=False).get("/v1/jobs")
    assert response.status_code == 507 and response.json()["error"]["type"] == "storage_full"


def test_health_says_storage_full_when_the_disk_is_nearly_full(client, monkeypatch):
    import wanserve.worker.runtime as runtime_module

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runtime_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1024, 1024))
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["phase"] == "storage_full" and "storage full" in response.json()["detail"]


def test_full_output_storage_fails_only_that_job_as_storage_full(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], concurrency=1, poll_interval_s=0.2)
    app = create_app(settings)
    storage = app.state.runtime.storage
    real_put = storage.put

    def full_put(key, file):
        if key.startswith("outputs/"):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "outputs" / key))
        return real_put(key, file)

    small = {**JOB, "num_frames": 5, "num_inference_steps": 2, "width": 64, "height": 64}
    with TestClient(app) as client:
        monkeypatch.setattr(storage, "put", full_put)
        failed = _run(client, small)
        monkeypatch.undo()
        succeeded = _run(client, small)
    assert failed["status"] == "failed" and failed["error"]["type"] == "storage_full", failed
    assert str(tmp_path) not in failed["error"]["message"] and "No space left" in failed["error"]["message"]
    assert succeeded["status"] == "succeeded"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 512 KiB tmpfs mounted at `tmp_path/outputs` (unmounted afterwards). Skips where mounting is refused."""
    mount_point = tmp_path / "outputs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_job_writing_to_a_full_tmpfs_fails_as_storage_full_and_only_that_job(tmp_path, small_tmpfs):
    """The output directory is a real, small tmpfs filled to the last byte. The job that writes its video there fails
    as `storage_full` (no server path in its message); the job running after it, once space is freed, succeeds, and
    the service answers reads and new jobs meanwhile."""
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "hold").touch()  # each job stops after step 1 until the test releases it
    settings = Settings(data_dir=tmp_path / "data", output_dir=small_tmpfs, models=["tiny-t2v"], concurrency=1,
                        poll_interval_s=0.2, hold_dir=hold)  # fmt: skip
    filler = small_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as f, pytest.raises(OSError) as full:
        while True:  # up to ENOSPC: the tmpfs has no byte left
            f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    small = {**JOB, "num_frames": 5, "num_inference_steps": 2, "width": 64, "height": 64}
    with TestClient(create_app(settings)) as client:
        first, second = (client.post("/v1/jobs", json={**small, "seed": s}).json()["id"] for s in (1, 2))
        _events(client, first, until_step=1)
        (hold / first).touch()  # the first job finishes denoising and writes its video into the full tmpfs
        failed = _events(client, first)
        assert failed["status"] == "failed" and failed["error"]["type"] == "storage_full", failed
        assert str(tmp_path) not in failed["error"]["message"] and "No space left" in failed["error"]["message"]
        # The service keeps serving while the disk is full: the second job runs (held after step 1), reads are
        # answered, new jobs are queued.
        assert _events(client, second, until_step=1)["status"] == "running"
        assert client.post("/v1/jobs", json={**small, "seed": 3}).status_code == 201
        filler.unlink()
        (hold / "hold").unlink()
        (hold / second).touch()
        succeeded = _events(client, second)
        assert succeeded["status"] == "succeeded", succeeded
        assert client.get(f"/v1/jobs/{second}/content").status_code == 200
        assert client.get("/v1/jobs", params={"status": "failed"}).json()["count"] == 1


def _events(client, job_id: str, until_step: int | None = None) -> dict:
    """Reads the job's event stream to its end (or to its `step` event for `until_step`); returns the job then."""
    event = None
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif (
                line.startswith("data:")
                and event == "step"
                and until_step is not None
                and json.loads(line.partition(":")[2])["step"] == until_step
            ):
                break
    return client.get(f"/v1/jobs/{job_id}").json()


def _run(client, body) -> dict:
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        for _line in response.iter_lines():
            pass
    return client.get(f"/v1/jobs/{job_id}").json()


def test_redact_paths_keeps_urls_and_file_names():
    message = "OSError: [Errno 28] No space left: '/srv/data/outputs/j1/output.mp4' (see https://h.example/a/b.png)"
    assert (
        redact_paths(message) == "OSError: [Errno 28] No space left: '.../output.mp4' (see https://h.example/a/b.png)"
    )


def test_cors_closed_by_default_and_page_security_headers(client):
    response = client.get("/v1/jobs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/v1/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/v1/jobs").headers["X-Content-Type-Options"] == "nosniff"


def test_cors_configured_origin_allowed(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], cors_origins=["https://app.example"])
    with TestClient(create_app(settings, start_workers=False)) as client:
        allowed = client.get("/v1/jobs", headers={"Origin": "https://app.example"})
        other = client.get("/v1/jobs", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_openapi_declares_error_shapes_and_bodies(client):
    schema = client.get("/openapi.json").json()
    for path, method in (
        ("/v1/videos", "post"),
        ("/video/submit", "post"),
        ("/submit", "post"),
        ("/animate/jobs", "post"),
    ):
        assert "requestBody" in schema["paths"][path][method], path
    native = schema["paths"]["/v1/jobs"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert native == {"$ref": "#/components/schemas/ErrorPublic"}
    assert "HTTPValidationError" not in json.dumps(schema)
