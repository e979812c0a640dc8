"""VACE (Wan2.1, and the two-expert Wan2.2-VACE-Fun-A14B) and Wan2.2-Fun-Control jobs through `/v1/jobs`: uploads
of the control video, mask and reference image, each parameter shown in the job's `params`, an MP4 delivered."""

from __future__ import annotations

import io

import av
import httpx
import numpy as np
import pytest

from wanserve.media.video import encode_mp4

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(start_compat_server):
    return start_compat_server(models=["tiny-vace", "tiny-vace-moe", "tiny-fun-control"])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("control")
    rng = np.random.default_rng(2)
    encode_mp4(rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8), str(d / "control.mp4"), fps=8)
    mask = np.zeros((9, 64, 64, 3), dtype=np.uint8)
    mask[:, :, 32:] = 255
    encode_mp4(mask, str(d / "mask.mp4"), fps=8)
    return {"control": (d / "control.mp4").read_bytes(), "mask": (d / "mask.mp4").read_bytes()}


def run(server, data: dict, files: dict) -> dict:
    response = httpx.post(f"{server.url}/v1/jobs", data={k: str(v) for k, v in data.items()}, files=files)
    assert response.status_code == 201, response.text
    job = server.wait_final(response.json()["id"])
    assert job["status"] == "succeeded", job
    content = httpx.get(f"{server.url}/v1/jobs/{job['id']}/content")
    with av.open(io.BytesIO(content.content)) as container:
        assert len(list(container.decode(video=0))) == 9
    return job


@pytest.mark.parametrize("model", ["tiny-vace", "tiny-vace-moe"])
def test_vace_job_with_control_mask_reference_and_scale(server, videos, make_png, model):
    data = {"model": model, "prompt": "a red car", "num_frames": 9, "num_inference_steps": 2,
            "conditioning_scale": 0.5}  # fmt: skip
    if model == "tiny-vace-moe":
        data.update(guidance_scale_2=3.0, boundary_ratio=0.5)
    files = {
        "video": ("control.mp4", videos["control"], "video/mp4"),
        "mask": ("mask.mp4", videos["mask"], "video/mp4"),
        "reference_images": ("ref.png", make_png(), "image/png"),
    }
    job = run(server, data, files)
    params = job["params"]
    assert job["kind"] == "vace" and params["conditioning_scale"] == 0.5 and len(params["reference_images"]) == 1
    if model == "tiny-vace-moe":  # Wan2.2-VACE-Fun-A14B's two experts: both settings shown as used
        assert (params["guidance_scale_2"], params["boundary_ratio"], params["solver"]) == (3.0, 0.5, "euler")


def test_fun_control_job_and_its_refusals(server, videos):
    data = {"model": "tiny-fun-control", "prompt": "a dancer", "num_frames": 9, "num_inference_steps": 2}
    job = run(server, data, {"video": ("pose.mp4", videos["control"], "video/mp4")})
    assert job["kind"] == "control" and job["params"]["task"] == "control"
    refused = httpx.post(
        f"{server.url}/v1/jobs",
        data={k: str(v) for k, v in {**data, "conditioning_scale": 0.5}.items()},
        files={"video": ("pose.mp4", videos["control"], "video/mp4")},
    )
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "conditioning_scale", refused.text
    missing = httpx.post(f"{server.url}/v1/jobs", json=data)
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "video", missing.text
