"""LoRA per job through the routes: the native JSON and multipart bodies, OpenAI's `extra_body`, and the refusal of
a LoRA the configuration does not allow, at submission, naming the field."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
from tests.engine.test_lora import lora_factors, write_lora


@pytest.fixture(scope="module")
def server(start_compat_server, tmp_path_factory):
    loras = tmp_path_factory.mktemp("loras")
    write_lora(loras / "style.safetensors", lora_factors(1), "kohya")
    return start_compat_server(lora_dir=loras)


BODY = {"model": "tiny-t2v", "prompt": "a cat", "num_inference_steps": 2, "seed": 1}


def test_native_job_with_a_lora_runs_and_records_it(server):
    response = httpx.post(f"{server.url}/v1/jobs", json={**BODY, "loras": [{"name": "style", "strength": 0.5}]})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert response.json()["params"]["loras"] == [{"name": "style", "strength": 0.5}]

    done = server.wait_final(job_id)
    assert done["status"] == "succeeded", done["error"]
    row = server.runtime.service.store.get(job_id)
    assert row.outputs["loras"] == [
        {"name": "style", "strength": 0.5, "file": str(server.settings.lora_dir / "style.safetensors")}
    ]


def test_multipart_job_takes_loras_as_json(server):
    form = {k: str(v) for k, v in BODY.items()} | {"loras": json.dumps([{"name": "style"}])}
    response = httpx.post(f"{server.url}/v1/jobs", files={k: (None, v) for k, v in form.items()})  # multipart
    assert response.status_code == 201, response.text
    assert response.json()["params"]["loras"] == [{"name": "style", "strength": 1.0}]


def test_openai_route_passes_loras_through(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0)
    video = client.videos.create(
        model="tiny-t2v", prompt="a cat", seconds="1", size="64x64", extra_body={"loras": [{"name": "style"}]}
    )
    job = httpx.get(f"{server.url}/v1/jobs/{video.id}").json()
    assert job["params"]["loras"] == [{"name": "style", "strength": 1.0}]


@pytest.mark.parametrize(
    ("loras", "param", "fragment"),
    [
        ([{"name": "missing"}], "loras[0].name", "not a LoRA in"),
        ([{"path": "/etc/passwd"}], "loras[0].path", "outside the allowed LoRA directories"),
        ([{"path": "../../etc/passwd.safetensors"}], "loras[0].path", "outside the allowed"),
        ([{"name": "style", "strength": 99}], "loras[0].strength", "between"),
    ],
)
def test_a_lora_the_configuration_does_not_allow_is_a_422_naming_it(server, loras, param, fragment):
    before = httpx.get(f"{server.url}/v1/jobs").json()["count"]
    response = httpx.post(f"{server.url}/v1/jobs", json={**BODY, "loras": loras})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"]
    assert httpx.get(f"{server.url}/v1/jobs").json()["count"] == before


@pytest.mark.parametrize("route", ["/video/submit", "/submit"])
def test_the_wan21_services_routes_take_loras(server, png_data_url, route):
    body = {"prompt": "a cat", "image_url": png_data_url, "image_size": "64*64", "num_frames": 9,
            "infer_steps": 2, "loras": [{"name": "style", "strength": 0.5}]}  # fmt: skip
    if route == "/video/submit":
        body["model"] = "tiny-i2v"
    response = httpx.post(f"{server.url}{route}", json=body)
    assert response.status_code in (200, 202), response.text
    job_id = str(uuid.UUID(response.json()["requestId"]))
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}").json()["params"]["loras"] == [{"name": "style", "strength": 0.5}]
    refused = httpx.post(f"{server.url}{route}", json={**body, "loras": [{"name": "nope"}]})
    assert refused.status_code == 422 and "loras[0].name" in refused.text
