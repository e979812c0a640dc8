"""The official `openai` client, unchanged, against a real wanserve server (uvicorn, tiny models)."""

from __future__ import annotations

import io

import av
import httpx
import openai
import pytest
from PIL import Image

# The openai package marks its videos methods deprecated (OpenAI's own service shuts down); they still work here.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def server(compat_server):
    return compat_server


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="any-key", max_retries=0)


def job_count(server) -> int:
    return httpx.get(f"{server.url}/v1/jobs").json()["count"]


def test_openai_create_retrieve_download(server, client):
    video = client.videos.create(model="tiny-t2v", prompt="a red cube", seconds="1", size="64x64")
    assert video.object == "video" and video.status in ("queued", "in_progress")
    assert video.model == "tiny-t2v" and video.seconds == "1" and video.size == "64x64"
    assert isinstance(video.created_at, int) and video.remixed_from_video_id is None

    server.wait_final(video.id)
    done = client.videos.retrieve(video.id)
    assert done.status == "completed" and done.progress == 100 and done.error is None
    assert done.completed_at >= done.created_at and done.expires_at > done.completed_at

    content = client.videos.download_content(video.id)
    with av.open(io.BytesIO(content.read())) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 9 and (frames[0].width, frames[0].height) == (64, 64)
    thumbnail = client.videos.download_content(video.id, variant="thumbnail")
    assert Image.open(io.BytesIO(thumbnail.read())).format == "JPEG"
    with pytest.raises(openai.APIStatusError) as info:
        client.videos.download_content(video.id, variant="spritesheet")
    assert info.value.status_code == 422 and info.value.response.json()["error"]["param"] == "variant"


def test_openai_create_with_uploaded_reference(server, client, make_png):
    video = client.videos.create(
        model="tiny-i2v",
        prompt="the cube turns",
        seconds="1",
        size="64x64",
        input_reference=("ref.png", make_png(), "image/png"),
    )
    assert server.wait_final(video.id)["status"] == "succeeded"
    assert client.videos.retrieve(video.id).status == "completed"


def test_openai_list_pages_with_cursor(server, client):
    ids = [client.videos.create(prompt=f"clip {i}", seconds="1", size="64x64").id for i in range(2)]
    sora = client.videos.create(model="sora-2", prompt="clip 2", seconds="1", size="64x64")
    assert sora.model == "tiny-t2v"  # OpenAI's model names mean the server's default model
    ids.append(sora.id)
    first = client.videos.list(limit=2)
    assert len(first.data) == 2 and first.has_more is True
    assert [v.id for v in first.data] == ids[::-1][:2]  # newest first
    every = [v.id for v in client.videos.list(limit=2)]  # the client follows `after` by itself
    assert every[:3] == ids[::-1] and len(every) == len(set(every)) == job_count(server)
    oldest = client.videos.list(limit=100, order="asc")
    assert [v.id for v in oldest.data][-3:] == ids
    for video_id in ids:
        server.wait_final(video_id)


def test_openai_delete_then_retrieve_404(server, client):
    video = client.videos.create(prompt="to delete", seconds="1", size="64x64")
    server.wait_final(video.id)
    deleted = client.videos.delete(video.id)
    assert deleted.id == video.id and deleted.deleted is True and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError) as info:
        client.videos.retrieve(video.id)
    assert info.value.body["type"] == "invalid_request_error" and video.id in info.value.body["message"]


@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"seconds": "100"}, "seconds", "at most 33 frames"),
        ({"seconds": "-1"}, "seconds", "positive number"),
        ({"size": "65x64"}, "size", "multiple of 16"),
        ({"size": "big"}, "size", "1280x720"),
        ({"model": "tiny-vace"}, "model", "not served here"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate", "unknown field"),
        ({"extra_body": {"seed": -3}}, "seed", "between"),
        ({"input_reference": ("notes.txt", b"just some text", "text/plain")}, "input_reference", "text"),
    ],
)
def test_openai_bad_input_4xx_names_param_and_creates_nothing(server, client, kwargs, param, fragment):
    kwargs = {"model": "tiny-i2v" if "input_reference" in kwargs else "tiny-t2v", "prompt": "x", **kwargs}
    before = job_count(server)
    with pytest.raises(openai.APIStatusError) as info:
        client.videos.create(**kwargs)
    assert info.value.status_code == 422, info.value.body
    error = info.value.response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error
    assert error["type"] == "invalid_request_error"
    assert job_count(server) == before


def test_openai_retrieve_unknown_404_error_shape(server):
    response = httpx.get(f"{server.url}/v1/videos/00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("image_url", "fragment"),
    [
        ("http://127.0.0.1:9/cat.png", "non-public address (loopback"),
        ("http://localhost:9/cat.png", "non-public address (loopback"),
        ("http://10.1.2.3/cat.png", "non-public address (private"),
        ("http://169.254.169.254/latest/meta-data", "non-public address (link-local"),
        ("http://[::1]/cat.png", "non-public address (loopback"),
        ("file:///etc/passwd", "data: URL or an http(s) URL"),
    ],
)
def test_openai_reference_url_refused_json_and_form(server, image_url, fragment):
    """`input_reference: {image_url}` as JSON (what other OpenAI clients send) and as a form field."""
    before = job_count(server)
    body = {"model": "tiny-i2v", "prompt": "x", "seconds": "1", "size": "64x64"}
    as_json = httpx.post(f"{server.url}/v1/videos", json={**body, "input_reference": {"image_url": image_url}})
    as_form = httpx.post(f"{server.url}/v1/videos", data={**body, "input_reference[image_url]": image_url})
    for response in (as_json, as_form):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["param"] == "input_reference" and fragment in error["message"], error
    assert job_count(server) == before


def test_openai_reference_data_url_json(server, png_data_url):
    body = {"model": "tiny-i2v", "prompt": "x", "seconds": "1", "size": "64x64"}
    response = httpx.post(f"{server.url}/v1/videos", json={**body, "input_reference": {"image_url": png_data_url}})
    assert response.status_code == 200, response.text
    assert server.wait_final(response.json()["id"])["status"] == "succeeded"
