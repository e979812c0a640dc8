"""The replaced services' documented clients, replayed unchanged against `SERVER_PORT=... wanserve serve` (a real
subprocess, tiny models), with only the sizes and frame counts changed to ones the tiny models take.

- Wan2.1 I2V multi-GPU service (its README): the full `/video/submit` example, the curl examples, the Python polling
  loop (which always sends `ulysses_size: 8`, `vae_parallel`, `use_attentioncache`: run here with
  `WANSERVE_PARALLEL_FIELDS=hint` on a one-device server) and its `/health` example.
- Wan2.1 multi-device service (its README): `POST /submit`, `GET /status/{id}`, `GET /health`.
- Wan2.2-Animate backend: `POST /animate/jobs` with a `src_root_path` relative to the server's working directory,
  `GET /animate/jobs/{id}`, `GET /animate/jobs/{id}/media`.
"""

from __future__ import annotations

import http.server
import io
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import requests
from PIL import Image

from wanserve.media.video import encode_mp4

pytestmark = pytest.mark.integration

POLL_S = 0.2
"""The README loop polls every 5 s; a shorter period here (the loop is the client's, not the test's)."""


@pytest.fixture(scope="module")
def image_url() -> Iterator[str]:
    """An image served over HTTP, as the READMEs' `image_url`s are (a local server instead of example.com)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buffer, format="JPEG")
    body = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/cat.jpg"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def seed_server(start_server, tmp_path_factory):
    """`SERVER_PORT` (the seed services' variable; 0 picks a free port here, 8088 in their READMEs) with the
    parallel fields in hint mode; the working directory holds the Animate preprocessing output."""
    workdir = tmp_path_factory.mktemp("seed-workdir")
    env = {
        "SERVER_PORT": "0",
        "WANSERVE_MODELS": "tiny-i2v,tiny-animate",
        "WANSERVE_PARALLEL_FIELDS": "hint",
        "WANSERVE_ALLOW_PRIVATE_URLS": "true",
        "WANSERVE_ANIMATE_JOBS_ROOT": str(workdir / "examples"),
    }
    server = start_server(env, name="seed-clients", cwd=workdir)
    server.workdir = workdir
    return server


def readme_polling_client(base: str, image_url: str) -> tuple[str, dict, list[str]]:
    """The Wan2.1 I2V service's README Python client, with 9 frames instead of 81 (`print` collected)."""
    printed: list[str] = []
    response = requests.post(
        f"{base}/video/submit",
        json={
            "prompt": "A cat playing with a ball of yarn",
            "image_url": image_url,
            "num_frames": 9,
            "vae_parallel": True,
            "ulysses_size": 8,
            "use_attentioncache": True,
        },
    )
    task_id = response.json()["requestId"]
    printed.append(f"Task submitted: {task_id}")
    while True:
        status_response = requests.post(f"{base}/video/status", json={"requestId": task_id})
        status_data = status_response.json()
        printed.append(f"Status: {status_data['status']}")
        if status_data["status"] == "Succeed":
            printed.append(f"Video URL: {status_data['results']['video_url']}")
            break
        elif status_data["status"] == "Failed":
            printed.append(f"Failed: {status_data['reason']}")
            break
        time.sleep(POLL_S)
    return task_id, status_data, printed


def test_wan21_i2v_readme_python_loop_hint_mode(seed_server, image_url):
    base = seed_server.url
    task_id, status, printed = readme_polling_client(base, image_url)
    assert printed[-1] == f"Video URL: /videos/{task_id}.mp4", printed
    plan = status["parallel_plan"]
    assert (plan["world_size"], plan["ulysses_size"], plan["vae_parallel"], plan["use_attentioncache"]) == (
        1,
        1,
        False,
        True,  # the engine's `interval` step cache serves it
    )
    not_honoured = {u["field"]: u for u in plan["not_honoured"]}
    assert set(not_honoured) == {"ulysses_size", "vae_parallel"}
    assert not_honoured["ulysses_size"]["requested"] == 8 and not_honoured["ulysses_size"]["used"] == 1
    job = requests.get(f"{base}/v1/jobs/{uuid.UUID(task_id)}").json()
    assert job["parallel_plan"] == plan and job["stage"] is None  # on the job too; finished: no stage

    video = requests.get(f"{base}{status['results']['video_url']}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        assert len(list(container.decode(video=0))) == 9
    assert status["results"]["video_path"] == f"outputs/{uuid.UUID(task_id)}.mp4"  # the storage key, not a path
    mode = stat.S_IMODE(os.stat(seed_server.data_dir / status["results"]["video_path"]).st_mode)
    assert mode & 0o044 == 0o044, oct(mode)  # readable by the group and others (the test runs under umask 022)


def test_wan21_i2v_readme_requests_and_health(seed_server, image_url):
    base = seed_server.url
    # The README's full request (size and frames the tiny model takes), expert fields included.
    full = {
        "prompt": "A white cat wearing sunglasses sits on a surfboard at the beach",
        "image_url": image_url,
        "image_size": "64*64",
        "num_frames": 9,
        "guidance_scale": 3.0,
        "infer_steps": 30,
        "seed": 42,
        "negative_prompt": "blurry, low quality",
        "vae_parallel": True,
        "ulysses_size": 8,
        "dit_fsdp": True,
        "t5_fsdp": True,
        "use_attentioncache": True,
        "start_step": 12,
        "attentioncache_interval": 4,
        "end_step": 37,
        "sample_solver": "unipc",
    }
    response = requests.post(f"{base}/video/submit", headers={"Content-Type": "application/json"}, json=full)
    assert response.status_code == 202 and set(response.json()) == {"requestId"}
    request_id = response.json()["requestId"]
    status = requests.post(f"{base}/video/status", json={"requestId": request_id}).json()
    assert status["status"] in ("InQueue", "InProgress", "Succeed")
    not_honoured = [u["field"] for u in status["parallel_plan"]["not_honoured"]]
    assert not_honoured == ["ulysses_size", "dit_fsdp", "t5_fsdp", "vae_parallel"]
    job = requests.get(f"{base}/v1/jobs/{uuid.UUID(request_id)}").json()
    assert job["params"]["num_inference_steps"] == 30 and job["params"]["seed"] == 42
    # The attention cache runs as the engine's `interval` step cache over the README's window.
    cache = {k: job["params"][k] for k in ("step_cache", "step_cache_start", "step_cache_end", "step_cache_interval")}
    assert cache == {"step_cache": "interval", "step_cache_start": 12, "step_cache_end": 37, "step_cache_interval": 4}

    # The basic curl example.
    basic = {
        "prompt": "A serene lake with a swan gracefully swimming",
        "image_url": image_url,
        "num_frames": 9,
        "guidance_scale": 3.0,
        "infer_steps": 30,
    }
    basic_submit = requests.post(f"{base}/video/submit", json=basic)
    assert basic_submit.status_code == 202
    for submitted in (request_id, basic_submit.json()["requestId"]):  # 30 steps each: not needed further
        cancel = requests.post(f"{base}/video/cancel", json={"requestId": submitted}).json()
        assert cancel["status"] in ("Cancelled", "Already finished")

    health = requests.get(f"{base}/health")
    body = health.json()
    assert health.status_code == 200 and body["status"] == "healthy"
    assert (body["rank"], body["pipeline_rank"], body["pipeline_world_size"]) == (0, 0, 1)
    assert body["total_tasks"] >= 2
    assert body["config"]["t5_cpu"] is False and body["config"]["max_concurrent"] == 1  # the later README's loop


def test_wan21_multi_device_readme_requests(seed_server, image_url):
    base = seed_server.url
    submit = requests.post(
        f"{base}/submit",
        headers={"Content-Type": "application/json"},
        json={"prompt": "A cat walking in the garden", "image_url": image_url, "image_size": "64*64", "num_frames": 9},
    )
    assert submit.status_code == 200 and submit.json()["status"] == "pending"
    task_id = submit.json()["requestId"]
    while (status := requests.get(f"{base}/status/{task_id}").json())["status"] in ("pending", "running"):
        time.sleep(POLL_S)
    assert status["status"] == "succeed" and status["progress"] == 100
    assert status["results"]["frames"] == 9 and status["results"]["size"] == "64*64"
    assert requests.get(f"{base}/health").json()["status"] == "healthy"


def test_animate_backend_relative_src_root_path(seed_server, tmp_path):
    workdir: Path = seed_server.workdir
    directory = workdir / "examples" / "wan_animate" / "process_results"
    directory.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 40, 40)).save(directory / "src_ref.png")
    clip = np.random.default_rng(3).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    for name in ("src_pose.mp4", "src_face.mp4"):
        encode_mp4(clip, str(directory / name), fps=8)

    base = seed_server.url
    body = {"src_root_path": "examples/wan_animate/process_results", "input_prompt": "dance", "job_id": "readme-1"}
    created = requests.post(f"{base}/animate/jobs", json=body)
    assert created.status_code == 202, created.text
    while (status := requests.get(f"{base}/animate/jobs/readme-1").json())["status"] in ("pending", "running"):
        time.sleep(POLL_S)
    assert status["status"] == "succeeded", status
    media = requests.get(f"{base}/animate/jobs/readme-1/media")
    assert media.status_code == 200 and media.headers["content-type"] == "video/mp4"
