"""`engine/download.py`: picking the repository, failing at once offline, fetching into the model directory."""

from __future__ import annotations

import shutil
import socket
import sys
import threading

import huggingface_hub
import pytest

from tests.models.wan_original import write_tiny_checkpoints
from wanserve.engine import download
from wanserve.engine.config import WeightsConfig
from wanserve.engine.download import HubConfig, check_reachable, download_model, plan_download
from wanserve.engine.registry import get_spec
from wanserve.errors import DownloadError, InvalidRequestError


@pytest.fixture(autouse=True)
def models_dir(monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "models"


@pytest.fixture
def no_snapshot_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("snapshot_download must not be called")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plan_download_defaults_to_diffusers_layout_in_models_dir(models_dir):
    plan = plan_download(get_spec("wan2.1-t2v-14b"), weights=WeightsConfig(str(models_dir)))
    assert (plan.layout, plan.repo_id, plan.dest) == (
        "diffusers",
        "Wan-AI/Wan2.1-T2V-14B-Diffusers",
        models_dir / "wan2.1-t2v-14b",
    )


def test_plan_download_picks_original_layout_and_explicit_dir(tmp_path):
    plan = plan_download(get_spec("wan2.2-t2v-a14b"), layout="original", dest=tmp_path / "a14b", revision="v1")
    assert (plan.repo_id, plan.dest, plan.revision) == ("Wan-AI/Wan2.2-T2V-A14B", tmp_path / "a14b", "v1")


def test_plan_download_falls_back_to_original_where_no_diffusers_repo():
    plan = plan_download(get_spec("wan2.1-flf2v-14b-720p"), source="modelscope")
    assert (plan.layout, plan.repo_id) == ("original", "Wan-AI/Wan2.1-FLF2V-14B-720P")


@pytest.mark.parametrize(
    ("name", "kwargs", "field", "text"),
    [
        ("tiny-t2v", {}, "model", "needs no download"),
        ("wan2.1-t2v-14b", {"source": "civitai"}, "source", "`source` must be one of hf, modelscope, got 'civitai'"),
        ("wan2.1-t2v-14b", {"layout": "gguf"}, "layout", "`layout` must be one of diffusers, original, got 'gguf'"),
        ("wan2.2-animate-14b", {"layout": "original"}, "layout", "available: --source hf --layout diffusers"),
    ],
)
def test_plan_download_rejects_bad_options(name, kwargs, field, text):
    with pytest.raises(InvalidRequestError, match=text) as info:
        plan_download(get_spec(name), **kwargs)
    assert info.value.field == field


def test_download_fails_at_once_when_hub_offline(tmp_path, no_snapshot_download):
    offline = HubConfig(hf_offline=True)
    plan = plan_download(get_spec("wan2.2-t2v-a14b"), layout="original", dest=tmp_path / "a14b", hub=offline)
    with pytest.raises(DownloadError) as info:
        download_model(plan)
    message = str(info.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert str(tmp_path / "a14b") in message
    for expected in ("high_noise_model/config.json", "low_noise_model/config.json", "Wan2.1_VAE.pth",
                     "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer_config.json"):  # fmt: skip
        assert expected in message
    assert not (tmp_path / "a14b").exists()


def test_download_fails_at_once_when_hub_unreachable(tmp_path, no_snapshot_download):
    hub = HubConfig(hf_endpoint=f"http://127.0.0.1:{_closed_port()}")
    plan = plan_download(get_spec("wan2.1-i2v-14b-480p"), dest=tmp_path / "i2v", hub=hub)
    with pytest.raises(DownloadError, match="is unreachable") as info:
        download_model(plan, connect_timeout_s=1.0)
    assert f"into {tmp_path / 'i2v'}" in str(info.value)
    assert "image_encoder/config.json" in str(info.value)


def test_check_reachable_gives_up_after_connect_timeout(monkeypatch):
    released = threading.Event()

    def hang(*args, **kwargs):
        released.wait()
        raise OSError("released")

    monkeypatch.setattr(download.socket, "create_connection", hang)
    plan = plan_download(get_spec("wan2.1-t2v-1.3b"))
    try:
        with pytest.raises(DownloadError, match=r"huggingface.co:443 did not answer within 0.2 s"):
            check_reachable(plan, connect_timeout_s=0.2)
    finally:
        released.set()


def test_download_fetches_snapshot_into_dest(monkeypatch, tmp_path):
    spec = get_spec("wan2.1-t2v-1.3b")
    _, diffusers_dir, _ = write_tiny_checkpoints(get_spec("tiny-t2v"), tmp_path / "source")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, local_dir=None, tqdm_class=None, **kwargs):
        calls.append((repo_id, revision, tqdm_class))
        shutil.copytree(diffusers_dir, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(download, "_probe", lambda url, timeout_s: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    plan = plan_download(spec, revision="main", dest=tmp_path / "dest")
    assert download_model(plan, tqdm_class="bar-class") == tmp_path / "dest"
    assert calls == [("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "main", "bar-class")]
    assert (tmp_path / "dest" / "model_index.json").is_file()


def test_download_reports_files_still_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "_probe", lambda url, timeout_s: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: None)
    plan = plan_download(get_spec("wan2.1-t2v-1.3b"), dest=tmp_path / "dest")
    with pytest.raises(DownloadError, match=f"{tmp_path / 'dest'} is still missing model_index.json"):
        download_model(plan)


def test_download_wraps_hub_errors_with_resume_hint(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(download, "_probe", lambda url, timeout_s: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    plan = plan_download(get_spec("wan2.1-t2v-1.3b"), dest=tmp_path / "dest")
    with pytest.raises(DownloadError, match="OSError: disk full") as info:
        download_model(plan)
    assert "Run the command again to resume" in str(info.value)


def test_download_from_modelscope_needs_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "_probe", lambda url, timeout_s: None)
    monkeypatch.setitem(sys.modules, "modelscope", None)  # as if not installed
    plan = plan_download(get_spec("wan2.1-t2v-1.3b"), source="modelscope", dest=tmp_path / "dest")
    assert plan.repo_url == "https://www.modelscope.cn/models/Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    with pytest.raises(DownloadError, match=r"pip install 'wanserve\[modelscope\]'"):
        download_model(plan)
