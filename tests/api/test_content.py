"""Downloads of job files from storage: range requests (browsers seek), presigned redirects, keys not paths, inputs
travelling through storage. Local directories and S3 (a real moto server)."""

from __future__ import annotations

import io

import av
import httpx
import pytest
from starlette.requests import Request

from wanserve.api.app import create_app
from wanserve.api.content import content_response
from wanserve.config import Settings
from wanserve.storage.base import StorageKeyNotFound

TINY = {"model": "tiny-t2v", "prompt": "a red cube", "width": 64, "height": 64, "num_frames": 9,
        "num_inference_steps": 2}  # fmt: skip


@pytest.fixture(scope="module")
def s3_compat_server(s3_server, tmp_path_factory):
    """A server keeping job files in a bucket of the test S3 server (stopped with this module)."""
    import boto3
    from tests.api.conftest import CompatServer, _serve

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="content-tests")  # fmt: skip
    settings = Settings(
        _env_file=None, data_dir=tmp_path_factory.mktemp("s3-compat"), models=["tiny-t2v", "tiny-i2v"], concurrency=1,
        poll_interval_s=0.5, storage_url="s3://content-tests/deploy", s3_endpoint_url=s3_server,
        s3_region="us-east-1", s3_access_key_id="test", s3_secret_access_key="test",
    )  # fmt: skip
    app = create_app(settings)
    server, thread, url = _serve(app)
    yield CompatServer(url, settings, app)
    server.should_exit = True
    thread.join(60)


@pytest.fixture(params=["local", "s3"])
def server(request, compat_server):
    return compat_server if request.param == "local" else request.getfixturevalue("s3_compat_server")


def _run(server, body=None, files=None) -> dict:
    if files:
        response = httpx.post(f"{server.url}/v1/jobs", data={k: str(v) for k, v in body.items()}, files=files)
    else:
        response = httpx.post(f"{server.url}/v1/jobs", json=body or TINY)
    assert response.status_code == 201, response.text
    job = server.wait_final(response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def test_content_range_requests_give_206_and_seek(server):
    job = _run(server)
    url = f"{server.url}/v1/jobs/{job['id']}/content"
    full = httpx.get(url)
    assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
    assert int(full.headers["content-length"]) == len(full.content) > 100
    with av.open(io.BytesIO(full.content)) as container:
        assert len(list(container.decode(video=0))) == 9

    part = httpx.get(url, headers={"Range": "bytes=10-49"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-49/{len(full.content)}"
    assert part.content == full.content[10:50]
    tail = httpx.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == full.content[-16:]
    open_ended = httpx.get(url, headers={"Range": f"bytes={len(full.content) - 3}-"})
    assert open_ended.content == full.content[-3:]
    beyond = httpx.get(url, headers={"Range": f"bytes={len(full.content)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(full.content)}"

    thumb = httpx.get(url, params={"variant": "thumbnail"}, headers={"Range": "bytes=0-1"})
    assert thumb.status_code == 206 and thumb.content == b"\xff\xd8"  # a JPEG starts with SOI


def test_rows_and_responses_hold_keys_not_paths(server):
    job = _run(server)
    row = server.runtime.service.store.get(job["id"])
    assert row.outputs["video_key"] == f"outputs/{job['id']}.mp4"
    assert row.outputs["thumbnail_key"] == f"outputs/{job['id']}.jpg"
    assert row.outputs["video_bytes"] == server.runtime.storage.size(row.outputs["video_key"])
    data_dir = str(server.settings.data_dir)
    for text in (str(row.outputs), str(row.inputs), httpx.get(f"{server.url}/v1/jobs/{job['id']}").text):
        assert data_dir not in text and "/tmp" not in text


def test_inputs_go_through_storage_and_are_deleted_after(server, make_png):
    body = {**TINY, "model": "tiny-i2v"}
    job = _run(server, body, files={"image": ("first.png", make_png(), "image/png")})
    row = server.runtime.service.store.get(job["id"])
    assert row.inputs == {"image": f"inputs/{job['id']}/image"}
    with pytest.raises(StorageKeyNotFound):  # a finished job's inputs are removed
        server.runtime.storage.size(row.inputs["image"])


def test_redirect_to_presigned_url_when_asked(s3_compat_server, compat_server):
    """`WANSERVE_STORAGE_REDIRECT`: the download answers 307 to a presigned URL the client fetches (ranges too);
    local storage has no URL and streams."""
    server = s3_compat_server
    job = _run(server)
    content = server.runtime.service.content(job["id"])
    request = Request({"type": "http", "method": "GET", "headers": [], "query_string": b"", "path": "/"})
    response = content_response(request, server.runtime.service, content, redirect=True)
    assert response.status_code == 307
    location = response.headers["location"]
    assert location.startswith(server.settings.s3_endpoint_url) and "X-Amz-Signature" in location
    followed = httpx.get(location, headers={"Range": "bytes=0-7"})
    assert followed.status_code == 206 and followed.content[4:8] == b"ftyp"  # an MP4's first box

    local = _run(compat_server)
    local_content = compat_server.runtime.service.content(local["id"])
    streamed = content_response(request, compat_server.runtime.service, local_content, redirect=True)
    assert streamed.status_code == 200 and streamed.headers["content-length"] == str(local_content.size)
