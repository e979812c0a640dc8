"""Acceptance: the Wan2.1 I2V service's documented request with `ulysses_size: 2, cfg_size: 2` runs on a 4-rank CPU
group (gloo, Ulysses 2 x CFG 2, tiny I2V model) and is refused with a 422 naming `ulysses_size` by a 1-rank server.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import torch.multiprocessing as mp

pytestmark = pytest.mark.integration

PRELOAD = [
    "wanserve.engine.engine",
    "wanserve.engine.parallel",
    "wanserve.engine.tiny",
    "wanserve.worker.group",
    "wanserve.bootstrap",
    "diffusers.hooks.context_parallel",
    "diffusers.models.transformers.transformer_wan",
    "diffusers.models.autoencoders.autoencoder_kl_wan",
    "diffusers.pipelines.wan.pipeline_wan_i2v",
    "transformers.models.umt5.modeling_umt5",
    "transformers.models.clip.modeling_clip",
]


def documented_body(image_url: str) -> dict:
    # The fields as that service's README shows them (tiny sizes).
    return {
        "prompt": "a cat turns its head",
        "image_url": image_url,
        "image_size": "64*64",
        "num_frames": 9,
        "infer_steps": 2,
        "ulysses_size": 2,
        "cfg_size": 2,
        "vae_parallel": False,
    }


@pytest.fixture
def forkserver_ranks(monkeypatch):
    """Rank processes start from a fork server that imported torch and diffusers once (a fresh interpreter per
    rank would import them again, which is most of the time on a small machine)."""
    real = mp.get_context

    def get_context(method=None):
        if method == "spawn":
            context = real("forkserver")
            context.set_forkserver_preload(PRELOAD)
            return context
        return real(method)

    monkeypatch.setattr(mp, "get_context", get_context)


def test_documented_parallel_request_runs_on_4_rank_cpu_group(start_own_server, png_data_url, forkserver_ranks):
    server = start_own_server(models=["tiny-i2v"], world_size=4, device="cpu", cfg_size=2, collective_timeout_s=120)
    health = httpx.get(f"{server.url}/health").json()
    assert (health["rank"], health["world_size"], health["pipeline_world_size"]) == (0, 4, 4)
    assert (health["plan"]["ulysses_size"], health["plan"]["cfg_size"]) == (2, 2)
    response = httpx.post(f"{server.url}/video/submit", json=documented_body(png_data_url))
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    server.wait_final(str(uuid.UUID(request_id)))
    status = httpx.post(f"{server.url}/video/status", json={"requestId": request_id}).json()
    assert status["status"] == "Succeed", status
    assert status["parallel_plan"]["ulysses_size"] == 2 and status["parallel_plan"]["cfg_size"] == 2
    assert status["parallel_plan"]["not_honoured"] == []


def test_documented_parallel_request_refused_by_one_rank_server(compat_server, png_data_url):
    response = httpx.post(f"{compat_server.url}/video/submit", json=documented_body(png_data_url))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "ulysses_size" and "1 rank(s)" in response.json()["detail"]
