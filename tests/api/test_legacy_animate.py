"""The Wan2.2-Animate backend's routes (`/animate/jobs`) on a real server with the tiny Animate model."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from wanserve.media.video import encode_mp4

pytestmark = pytest.mark.integration


def job_count(server) -> int:
    return httpx.get(f"{server.url}/v1/jobs").json()["count"]


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    """An 11-frame 64x64 MP4 (pose and face stand-ins)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = np.random.default_rng(3).integers(0, 256, (11, 64, 64, 3), dtype=np.uint8)
    encode_mp4(frames, str(path), fps=8)
    return path.read_bytes()


@pytest.fixture(scope="module")
def short_clip_bytes(tmp_path_factory) -> bytes:
    """A 9-frame 64x64 MP4 (a face video shorter than the pose video)."""
    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    encode_mp4(np.zeros((9, 64, 64, 3), dtype=np.uint8), str(path), fps=8)
    return path.read_bytes()


def prepare(root: Path, name: str, png: bytes, clip: bytes, replace: bool = False) -> Path:
    """A preprocessed Animate job directory."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "src_ref.png").write_bytes(png)
    for file in ("src_pose.mp4", "src_face.mp4") + (("src_bg.mp4", "src_mask.mp4") if replace else ()):
        (directory / file).write_bytes(clip)
    return directory


def test_animate_create_poll_media(compat_server, make_png, clip_bytes, monkeypatch):
    root = compat_server.settings.animate_jobs_root
    prepare(root, "demo", make_png(), clip_bytes)
    monkeypatch.chdir(root.parent)  # a relative path is taken from the server's working directory, as before
    body = {
        "src_root_path": f"{root.name}/demo",
        "input_prompt": "dance",
        "sampling_steps": 2,
        "seed": 4,
        "job_id": "demo-1",
    }
    response = httpx.post(f"{compat_server.url}/animate/jobs", json=body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["job_id"] == "demo-1" and created["status"] == "pending"

    native = httpx.get(f"{compat_server.url}/v1/jobs", params={"model": "tiny-animate"}).json()["data"][0]
    job = compat_server.wait_final(native["id"])
    assert job["status"] == "succeeded" and job["params"]["num_frames"] == 11  # as long as the pose video
    # 11 frames in segments of 9 carrying 1 frame: 2 segments of 2 steps each
    assert job["params"]["clip_len"] == 9 and (job["step"], job["steps"]) == (4, 4)
    assert (job["segment"], job["segments"]) == (2, 2)
    assert job["params"]["animate_mode"] == "animate" and job["params"]["num_inference_steps"] == 2

    status = httpx.get(f"{compat_server.url}/animate/jobs/demo-1").json()
    assert status["status"] == "succeeded" and status["output_path"] == f"outputs/{native['id']}.mp4"
    assert status["started_at"] and status["finished_at"] and status["message"] is None
    media = httpx.get(f"{compat_server.url}/animate/jobs/demo-1/media")
    assert media.status_code == 200 and media.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(media.content)) as container:
        assert len(list(container.decode(video=0))) == 11
    by_uuid = httpx.get(f"{compat_server.url}/animate/jobs/{uuid.UUID(native['id']).hex}").json()
    assert by_uuid["status"] == "succeeded"

    again = httpx.post(f"{compat_server.url}/animate/jobs", json=body)
    assert again.status_code == 409 and "demo-1" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"src_root_path": "../outside"}, "src_root_path", "must not contain `..`"),
        ({"src_root_path": "/etc"}, "src_root_path", "inside the allowed directory"),
        ({"src_root_path": "escape"}, "src_root_path", "inside the allowed directory"),
        ({"src_root_path": "missing"}, "src_root_path", "not an existing directory"),
        ({"src_root_path": "noface"}, "src_root_path", "lacks src_face.mp4"),
        ({"src_root_path": "ok", "replace_flag": True}, "src_root_path", "lacks src_bg.mp4, src_mask.mp4"),
        ({"src_root_path": "textref"}, "src_root_path/src_ref.png", "must be an image, got text"),
        ({"src_root_path": "linked"}, "src_root_path/src_ref.png", "inside the allowed directory"),
        ({"src_root_path": "ok", "clip_len": 8}, "clip_len", "must be 4k+1"),
        ({"src_root_path": "ok", "refert_num": 5}, "refert_num", "`clip_len` is 9"),
        ({"src_root_path": "shortface"}, "src_root_path/src_face.mp4", "`src_root_path/src_pose.mp4` 11"),
        ({"src_root_path": "ok", "refert_num": 3}, "refert_num", "must be 1 or 5"),
        ({"src_root_path": "ok", "offload_model": True}, "offload_model", "deployment setting"),
        ({"src_root_path": "ok", "sampling_steps": -1}, "sampling_steps", "between"),
        ({"src_root_path": "ok", "sample_solver": "ddim"}, "sample_solver", "must be one of"),
        ({"src_root_path": "ok", "frames": 9}, "frames", "unknown field"),
        ({}, "src_root_path", "is required"),
    ],
)
def test_animate_refused_names_field_no_job(
    compat_server, make_png, clip_bytes, short_clip_bytes, body, field, fragment, monkeypatch
):
    root = compat_server.settings.animate_jobs_root
    monkeypatch.chdir(root)
    png = make_png()
    prepare(root, "ok", png, clip_bytes)
    prepare(root, "noface", png, clip_bytes).joinpath("src_face.mp4").unlink()
    prepare(root, "shortface", png, clip_bytes).joinpath("src_face.mp4").write_bytes(short_clip_bytes)
    prepare(root, "textref", png, clip_bytes).joinpath("src_ref.png").write_text("not an image")
    outside = prepare(root.parent, "outside", png, clip_bytes)
    if not (root / "escape").exists():
        (root / "escape").symlink_to(outside)
    linked = prepare(root, "linked", png, clip_bytes)
    linked.joinpath("src_ref.png").unlink()
    linked.joinpath("src_ref.png").symlink_to(outside / "src_ref.png")
    before = job_count(compat_server)
    response = httpx.post(f"{compat_server.url}/animate/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and fragment in response.json()["detail"], response.json()
    assert job_count(compat_server) == before


def test_animate_unknown_job_404(compat_server):
    assert httpx.get(f"{compat_server.url}/animate/jobs/{uuid.uuid4().hex}").status_code == 404
    assert httpx.get(f"{compat_server.url}/animate/jobs/no-such-job/media").status_code == 404


def test_animate_relative_path_taken_from_working_directory(compat_server, make_png, clip_bytes, monkeypatch):
    """As the backend did: `src_root_path` is relative to the server's working directory, not to the root."""
    root = compat_server.settings.animate_jobs_root
    prepare(root, "only-under-root", make_png(), clip_bytes)
    monkeypatch.chdir(root.parent)
    response = httpx.post(f"{compat_server.url}/animate/jobs", json={"src_root_path": "only-under-root"})
    assert response.status_code == 422 and "inside the allowed directory" in response.json()["detail"]


def test_animate_replace_mode_with_clip_len(compat_server, make_png, clip_bytes, monkeypatch):
    """Replace mode from a job directory (src_bg.mp4, src_mask.mp4), `clip_len` 5 as the backend took it: 11 frames
    in 3 segments of 5 (1 carried), an MP4 as long as the pose video."""
    root = compat_server.settings.animate_jobs_root
    prepare(root, "replace", make_png(), clip_bytes, replace=True)
    body = {"src_root_path": str(root / "replace"), "replace_flag": True, "clip_len": 5, "sampling_steps": 1}
    response = httpx.post(f"{compat_server.url}/animate/jobs", json=body)
    assert response.status_code == 202, response.text
    native = httpx.get(f"{compat_server.url}/v1/jobs", params={"model": "tiny-animate"}).json()["data"][0]
    created = native
    job = compat_server.wait_final(native["id"])
    assert job["status"] == "succeeded", job
    assert job["params"]["animate_mode"] == "replace" and job["params"]["clip_len"] == 5 and job["steps"] == 3
    assert (job["segment"], job["segments"]) == (3, 3)
    assert created["steps"] == 3  # known at submission, from the pose video
    media = httpx.get(f"{compat_server.url}/animate/jobs/{response.json()['job_id']}/media")
    with av.open(io.BytesIO(media.content)) as container:
        assert len(list(container.decode(video=0))) == 11
