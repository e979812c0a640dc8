"""Upscale jobs (FlashVSR, the tiny random-weight model) through `/v1/jobs` on a real server: an upscale job end to
end with its audio, a chained generate-then-upscale job that reports both stages, a cancelled upscale that leaves
a downloadable partial MP4, and the checks of the upscale fields."""

from __future__ import annotations

import io
import uuid
from fractions import Fraction

import av
import httpx
import numpy as np
import pytest

MODELS = ["tiny-t2v", "tiny-flashvsr"]


def make_video(frames: int, width: int = 64, height: int = 32, fmt: str = "mp4", audio: bool = True) -> bytes:
    """A random-noise H.264 clip at 25 fps, with a 440 Hz AAC tone as long as the video."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(frames)
    with av.open(buffer, "w", format=fmt) as container:
        video = container.add_stream("libx264", rate=Fraction(25))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        tone = container.add_stream("aac", rate=16000) if audio else None
        for _ in range(frames):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        if tone is not None:
            samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * frames // 25) / 16000)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
                frame.sample_rate = 16000
                container.mux(tone.encode(frame))
            container.mux(tone.encode(None))
    return buffer.getvalue()


def read_video(data: bytes) -> tuple[int, int, int, list[str]]:
    """(width, height, decoded frames, stream types) of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        kinds = [s.type for s in container.streams]
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        frames = sum(1 for _ in container.decode(video=0))
    return width, height, frames, kinds


@pytest.fixture(scope="module")
def server(start_compat_server):
    return start_compat_server(models=MODELS)


def _submit_upscale(server, video: bytes, **fields) -> httpx.Response:
    data = {"model": "tiny-flashvsr", "task": "upscale", **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{server.url}/v1/jobs", data=data, files={"video": ("in.mp4", video, "video/mp4")}, timeout=60)


def test_upscale_job_end_to_end(server):
    created = _submit_upscale(server, make_video(29), scale=4, quality=8, seed=1)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["kind"] == "upscale" and job["steps"] == 2  # 29 frames: two chunks
    assert job["params"]["scale"] == 4 and job["params"]["quality"] == 8 and "prompt" not in job["params"]
    final = server.wait_final(job["id"])
    assert final["status"] == "succeeded", final["error"]
    assert final["step"] == final["steps"] == 2 and final["random_weights"] is True
    content = httpx.get(f"{server.url}{final['content_url']}")
    assert content.headers["content-type"] == "video/mp4"
    # 64x32 x4 = 256x128 (multiples of 128); 29 frames in, 29 out; the input's audio carried over.
    assert read_video(content.content) == (256, 128, 29, ["video", "audio"])


def test_upscale_fields_are_checked(server):
    video = make_video(29)
    for fields, field in (({"scale": 3}, "scale"), ({"quality": 11}, "quality"), ({"input_width": 33}, "input_width")):
        response = _submit_upscale(server, video, **fields)
        assert response.status_code == 422 and f"`{field}`" in response.text, response.text
    response = _submit_upscale(server, video, prompt="a cat")
    assert response.status_code == 422 and "`prompt` is not used by task 'upscale'" in response.text
    short = _submit_upscale(server, make_video(20))
    assert short.status_code == 422 and "at least 21" in short.text
    small = _submit_upscale(server, video, scale=2, input_width=32)  # 32x16 x2 = 64x32: under 128
    assert small.status_code == 422 and "128" in small.text


def test_chained_job_reports_both_stages_and_delivers_the_upscaled_video(server):
    body = {"model": "tiny-t2v", "prompt": "a cat", "num_frames": 21, "seed": 3, "upscale": {"scale": 2}}
    job = httpx.post(f"{server.url}/v1/jobs", json=body).json()
    assert job["params"]["upscale"] == {"model": "tiny-flashvsr", "scale": 2, "quality": 6, "input_width": None}
    stages: list[str] = []
    server.wait_event(job["id"], lambda kind, data: kind == "stage" and stages.append(data["stage"]) and False)
    assert "denoising" in stages and "upscaling" in stages
    assert stages.index("denoising") < stages.index("upscaling")
    final = httpx.get(f"{server.url}/v1/jobs/{job['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    content = httpx.get(f"{server.url}{final['content_url']}").content
    assert read_video(content) == (128, 128, 21, ["video"])  # 64x64 x2, all 21 generated frames


def test_chained_upscale_needs_21_frames(server):
    body = {"model": "tiny-t2v", "prompt": "a cat", "num_frames": 9, "upscale": {"scale": 2}}
    response = httpx.post(f"{server.url}/v1/jobs", json=body)
    assert response.status_code == 422 and "`upscale` needs at least 21 frames" in response.text


def test_cancelled_upscale_leaves_a_downloadable_partial_mp4(start_compat_server, tmp_path):
    held = start_compat_server(models=MODELS, hold_dir=tmp_path, hold_step=1)
    # A chained job cancelled in its first part (held after denoising step 1) stops there: no upscale, no partial.
    body = {"model": "tiny-t2v", "prompt": "a cat", "num_frames": 21, "upscale": {"scale": 2}}
    chained = httpx.post(f"{held.url}/v1/jobs", json=body).json()
    held.wait_event(chained["id"], lambda kind, data: kind == "step" and data["step"] == 1)
    httpx.post(f"{held.url}/v1/jobs/{chained['id']}/cancel")
    (tmp_path / chained["id"]).touch()
    stages: list[str] = []
    held.wait_event(chained["id"], lambda kind, data: kind == "stage" and stages.append(data["stage"]) and False)
    final = httpx.get(f"{held.url}/v1/jobs/{chained['id']}").json()
    assert (final["status"], final["partial_url"]) == ("cancelled", None)
    assert "denoising" in stages and "upscaling" not in stages
    # An upscale cancelled after its first chunk keeps that chunk's frames as a partial MP4.
    job = _submit_upscale(held, make_video(37), scale=4).json()
    assert job["steps"] == 3
    held.wait_event(job["id"], lambda kind, data: kind == "step" and data["step"] == 1)  # held after chunk 1
    assert httpx.post(f"{held.url}/v1/jobs/{job['id']}/cancel").status_code == 200
    (tmp_path / str(uuid.UUID(job["id"]))).touch()  # release: the next chunk sees the cancel
    final = held.wait_final(job["id"])
    assert final["status"] == "cancelled" and final["content_url"] is None
    assert final["partial_url"] == f"/v1/jobs/{job['id']}/content?variant=partial"
    partial = httpx.get(f"{held.url}{final['partial_url']}")
    assert partial.status_code == 200 and f"{job['id']}_partial.mp4" in partial.headers["content-disposition"]
    assert read_video(partial.content) == (256, 128, 21, ["video", "audio"])  # chunk 1: 21 frames


def test_models_route_lists_the_upscale_task_without_generation_fields(server):
    models = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
    (task,) = models["tiny-flashvsr"]["tasks"]
    assert task["task"] == "upscale" and task["required_inputs"] == ["video"]
    assert [p["name"] for p in task["parameters"]] == ["seed", "scale", "quality"]
