"""Bad inputs get a 4xx that names the field, and create no job (API in-process, no workers)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from wanserve.api.app import create_app
from wanserve.config import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = tmp_path_factory.mktemp("api")
    settings = Settings(data_dir=data, models=["tiny-t2v", "tiny-i2v"], max_upload_mb=0.05, max_request_mb=1)
    with TestClient(create_app(settings, start_workers=False)) as client:
        yield client


def png_bytes(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def job_count(client) -> int:
    return client.get("/v1/jobs").json()["count"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"prompt": "a cat", "num_frames": -5}, "num_frames", "-5"),
        ({"prompt": "a cat", "num_frames": 8}, "num_frames", "4k+1"),
        ({"prompt": "a cat", "width": 70}, "width", "multiple of 16"),
        ({"prompt": "a cat", "frobnicate": 1}, "frobnicate", "unknown field"),
        ({"prompt": "a cat", "num_inference_steps": "many"}, "num_inference_steps", "integer"),
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "a cat", "model": "sd-xl"}, "model", "not a known model"),
        ({"prompt": "a cat", "model": "tiny-vace"}, "model", "not served here"),
        ({"prompt": "a cat", "seed": 2**40}, "seed", "between"),
        ({"prompt": "a cat", "webhook_url": "ftp://x"}, "webhook_url", "http(s)"),
        ({"prompt": "a cat", "image": "/etc/passwd"}, "image", "is not used by task"),
        ({"prompt": "a cat", "strength": 0.5}, "strength", "not used by task 't2v' (it applies to: v2v)"),
        ({"prompt": "a cat", "animate_mode": "replace"}, "animate_mode", "not used by task 't2v'"),
        ({"prompt": "a cat", "boundary_ratio": 0.5}, "boundary_ratio", "two-expert"),
        ({"model": "tiny-i2v", "prompt": "a cat", "image": "/etc/passwd"}, "image", "data: URL or an http(s) URL"),
        (
            {"model": "tiny-i2v", "prompt": "a cat", "image": "data:image/png;base64,aGVsbG8="},
            "image",
            "must be an image",
        ),
    ],
)
def test_create_bad_field_422_names_field_and_creates_nothing(client, body, field, fragment):
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert f"`{field}`" in error["message"] and fragment in error["message"]
    assert job_count(client) == 0


def test_create_oversized_upload_413_names_field(client):
    big = png_bytes(256) + b"\0" * 60_000
    response = client.post("/v1/jobs", data={"model": "tiny-i2v", "prompt": "a cat"}, files={"image": ("a.png", big)})
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "image"
    assert job_count(client) == 0


def test_create_oversized_data_url_413(client):
    url = "data:image/png;base64," + base64.b64encode(b"\0" * 70_000).decode()
    response = client.post("/v1/jobs", json={"model": "tiny-i2v", "prompt": "a cat", "image": url})
    assert response.status_code == 413 and response.json()["error"]["param"] == "image"


def test_create_body_over_request_cap_413(client):
    response = client.post(
        "/v1/jobs", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert job_count(client) == 0


def test_create_not_json_or_form_415(client):
    response = client.post("/v1/jobs", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_create_file_in_non_media_field_422(client):
    response = client.post("/v1/jobs", data={"prompt": "a cat"}, files={"prompt_file": ("a.txt", b"hi")})
    assert response.status_code == 422 and response.json()["error"]["param"] == "prompt_file"


def test_create_upload_accepted_and_described(client):
    response = client.post(
        "/v1/jobs", data={"model": "tiny-i2v", "prompt": "a cat", "seed": "7"}, files={"image": ("a.png", png_bytes())}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["params"]["image"].startswith("upload (image/png") and job["params"]["seed"] == 7
    assert job["kind"] == "i2v" and job["random_weights"] is True and job["queue_position"] == 1
    assert client.delete(f"/v1/jobs/{job['id']}").json() == {"id": job["id"], "object": "job", "deleted": True}


def test_get_unknown_job_404(client):
    response = client.get("/v1/jobs/00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_list_bad_status_422(client):
    response = client.get("/v1/jobs", params={"status": "done"})
    assert response.status_code == 422 and response.json()["error"]["param"] == "status"


def test_docs_describe_random_weights(client):
    spec = client.get("/openapi.json").json()
    assert "RANDOM weights" in spec["info"]["description"]
    assert "JobCreate" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def mp4_bytes(tmp_path, frames: int) -> bytes:
    from wanserve.media.video import encode_mp4

    path = tmp_path / f"{frames}.mp4"
    encode_mp4(np.zeros((frames, 64, 64, 3), dtype=np.uint8), str(path), fps=8)
    return path.read_bytes()


def test_create_too_short_video_422_at_submission(client, tmp_path):
    files = {"video": ("short.mp4", mp4_bytes(tmp_path, 5))}
    response = client.post("/v1/jobs", data={"prompt": "a cat", "num_frames": "9"}, files=files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "video" and "has 5 frames; at least 9" in error["message"]
    assert job_count(client) == 0


def test_create_long_enough_video_shows_v2v_params(client, tmp_path):
    files = {"video": ("ok.mp4", mp4_bytes(tmp_path, 9))}
    response = client.post("/v1/jobs", data={"prompt": "a cat", "num_frames": "9", "strength": "0.5"}, files=files)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "v2v" and job["params"]["strength"] == 0.5 and "animate_mode" not in job["params"]
    client.delete(f"/v1/jobs/{job['id']}")
