"""`POST /v1/images/generations` with the official `openai` client against a real server (uvicorn, tiny models):
text-to-image (`t2i`) jobs, one frame, PNG."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(compat_server):
    return compat_server


@pytest.fixture(scope="module")
def client(openai_client) -> openai.OpenAI:
    return openai_client


def _png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image


def test_images_generate_b64_json_is_a_t2i_job_with_one_png_frame(server, client):
    raw = client.images.with_raw_response.generate(
        model="tiny-t2v", prompt="a red cube", size="96x64", response_format="b64_json", extra_body={"seed": 7}
    )
    result = raw.parse()
    job_id = raw.headers["x-wanserve-job-id"]

    assert len(result.data) == 1 and result.data[0].url is None and isinstance(result.created, int)
    image = _png(result.data[0].b64_json)
    assert image.size == (96, 64)
    job = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["model"] == "tiny-t2v"
    assert (job["params"]["task"], job["params"]["num_frames"], job["params"]["seed"]) == ("t2i", 1, 7)
    assert raw.headers["x-wanserve-random-weights"] == "true"
    # The native content route serves the same PNG, with its media type; the thumbnail is a JPEG.
    native = httpx.get(f"{server.url}/v1/jobs/{job_id}/content")
    assert native.headers["content-type"] == "image/png"
    assert native.content == base64.b64decode(result.data[0].b64_json)
    thumbnail = httpx.get(f"{server.url}/v1/jobs/{job_id}/content", params={"variant": "thumbnail"})
    assert Image.open(io.BytesIO(thumbnail.content)).format == "JPEG"


def test_images_generate_url_and_openai_model_names(server, client):
    result = client.images.generate(model="dall-e-3", prompt="a blue sphere", size="64x64", response_format="url")

    url = result.data[0].url
    assert result.data[0].b64_json is None and url.startswith(server.url) and url.endswith("/content")
    download = httpx.get(url)
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(download.content)).size == (64, 64)


def test_images_generate_seed_decides_the_image(client):
    def pixels(seed: int) -> np.ndarray:
        result = client.images.generate(prompt="a cat", size="64x64", extra_body={"seed": seed})  # default model
        return np.asarray(_png(result.data[0].b64_json).convert("RGB"))

    first, again, other = pixels(11), pixels(11), pixels(12)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("kwargs", "param", "text"),
    [
        ({"n": 2}, "n", "`n` must be 1"),
        ({"quality": "hd"}, "quality", "`quality` is not supported"),
        ({"response_format": "jpeg"}, "response_format", "b64_json or url"),
        ({"size": "65x64"}, "size", "multiple of 16"),
        ({"size": "big"}, "size", "`size` must look like 1280x720"),
        ({"model": "tiny-i2v"}, "task", "not served by tiny-i2v"),
        ({"extra_body": {"fps": 8}}, "fps", "unknown field `fps`"),
        ({"extra_body": {"num_frames": 5}}, "num_frames", "unknown field `num_frames`"),
    ],
)
def test_images_generate_refusals_in_openai_error_shape(server, client, kwargs, param, text):
    before = httpx.get(f"{server.url}/v1/jobs").json()["count"]
    with pytest.raises(openai.APIStatusError) as info:
        client.images.generate(prompt="a cat", **kwargs)

    error = info.value.response.json()["error"]
    assert info.value.status_code == 422
    assert error["param"] == param and text in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(f"{server.url}/v1/jobs").json()["count"] == before  # nothing was queued
