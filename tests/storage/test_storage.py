"""The `Storage` backends against the same contract: local directories and S3 (a real moto server)."""

from __future__ import annotations

import io
import stat

import pytest

from wanserve.config import Settings
from wanserve.storage.base import StorageKeyNotFound, check_key
from wanserve.storage.local import LocalStorage


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage.under(tmp_path, "outputs", "inputs")
    from wanserve.bootstrap import build_storage

    env = request.getfixturevalue("s3_settings")
    fields = {"storage_url": "STORAGE_URL", "s3_endpoint_url": "S3_ENDPOINT_URL", "s3_region": "S3_REGION",
              "s3_access_key_id": "S3_ACCESS_KEY_ID", "s3_secret_access_key": "S3_SECRET_ACCESS_KEY"}  # fmt: skip
    return build_storage(Settings(_env_file=None, **{f: env[f"WANSERVE_{v}"] for f, v in fields.items()}))


DATA = bytes(range(256)) * 5000  # 1.28 MB: more than one S3 read buffer


def test_put_open_size_range_reads(storage, tmp_path):
    source = tmp_path / "clip.mp4"
    source.write_bytes(DATA)
    storage.put("outputs/a.mp4", source)
    assert storage.size("outputs/a.mp4") == len(DATA)
    with storage.open("outputs/a.mp4") as f:
        assert f.read() == DATA
        f.seek(1_000_000)
        assert f.read(10) == DATA[1_000_000:1_000_010]
        f.seek(-5, io.SEEK_END)
        assert f.read() == DATA[-5:]


def test_put_file_object_replaces_whole_object(storage):
    storage.put("inputs/job/image", io.BytesIO(b"first version"))
    storage.put("inputs/job/image", io.BytesIO(b"second"))
    with storage.open("inputs/job/image") as f:
        assert f.read() == b"second"


def test_missing_key_raises_not_found(storage):
    with pytest.raises(StorageKeyNotFound):
        storage.size("outputs/none.mp4")
    with pytest.raises(StorageKeyNotFound):
        storage.open("outputs/none.mp4").read()
    storage.delete("outputs/none.mp4")  # deleting nothing is fine


def test_delete_and_delete_prefix(storage):
    for key in ("inputs/j1/image", "inputs/j1/video", "inputs/j2/image", "outputs/j1.mp4"):
        storage.put(key, io.BytesIO(key.encode()))
    storage.delete_prefix("inputs/j1/")
    storage.delete("outputs/j1.mp4")
    for key in ("inputs/j1/image", "inputs/j1/video", "outputs/j1.mp4"):
        with pytest.raises(StorageKeyNotFound):
            storage.size(key)
    assert storage.size("inputs/j2/image") == len(b"inputs/j2/image")


def test_url_is_presigned_for_s3_none_for_local(storage):
    import httpx

    storage.put("outputs/u.jpg", io.BytesIO(b"jpeg bytes"))
    url = storage.url("outputs/u.jpg")
    if isinstance(storage, LocalStorage):
        assert url is None
    else:
        assert "X-Amz-Signature" in url
        assert httpx.get(url).content == b"jpeg bytes"


def test_local_files_readable_by_others_and_confined(tmp_path):
    storage = LocalStorage.under(tmp_path, "outputs")
    storage.put("outputs/x.mp4", io.BytesIO(b"x"))
    assert stat.S_IMODE((tmp_path / "outputs" / "x.mp4").stat().st_mode) & 0o044 == 0o044
    with pytest.raises(ValueError, match="not under outputs"):
        storage.put("inputs/x", io.BytesIO(b"x"))


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/../b", "", "a b", "outputs/.hidden"])
def test_check_key_refuses_unsafe_keys(key):
    with pytest.raises(ValueError, match="not a plain relative name"):
        check_key(key)


def test_settings_refuse_unknown_storage_url():
    with pytest.raises(ValueError, match="WANSERVE_STORAGE_URL"):
        Settings(_env_file=None, storage_url="ftp://host/x")
    with pytest.raises(ValueError, match="WANSERVE_STORAGE_URL"):
        Settings(_env_file=None, storage_url="s3:///nobucket")
