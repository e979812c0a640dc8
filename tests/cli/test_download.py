"""`wanserve download`: offline it fails at once naming the directory and files; tiny models need nothing."""

from __future__ import annotations

import io
import shutil

import huggingface_hub
import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from tests.models.wan_original import write_tiny_checkpoints
from wanserve.cli.download import rich_tqdm_class
from wanserve.cli.main import app
from wanserve.engine import download
from wanserve.engine.registry import get_spec

runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANSERVE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def fail(*args, **kwargs):
        raise AssertionError("snapshot_download must not be called")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)


def test_download_offline_names_directory_and_files(tmp_path):
    result = runner.invoke(
        app, ["download", "wan2.1-i2v-14b-480p", "--layout", "original", "--dir", str(tmp_path / "i2v")]
    )
    assert result.exit_code == 1
    output = result.output
    assert str(tmp_path / "i2v") in output
    assert "HF_HUB_OFFLINE is set" in output
    for name in ("config.json", "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth",
                 "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", "google/umt5-xxl/tokenizer_config.json"):  # fmt: skip
        assert name in output


def test_download_default_directory_is_in_models_dir(tmp_path):
    result = runner.invoke(app, ["download", "wan2.1-t2v-1.3b"])
    assert result.exit_code == 1
    assert str(tmp_path / "models" / "wan2.1-t2v-1.3b") in result.output


def test_download_tiny_model_needs_no_download():
    result = runner.invoke(app, ["download", "tiny-t2v"])
    assert result.exit_code == 0
    assert "needs no download" in result.output


def test_download_rejects_unknown_model_and_bad_layout():
    unknown = runner.invoke(app, ["download", "wan9-t2v"])
    assert unknown.exit_code == 1 and "`model` 'wan9-t2v' is not a known model" in unknown.output
    bad = runner.invoke(app, ["download", "wan2.1-t2v-1.3b", "--layout", "gguf"])
    assert bad.exit_code == 1 and "`layout` must be one of diffusers, original, got 'gguf'" in bad.output


def test_rich_tqdm_class_draws_bars_as_progress_tasks():
    progress = Progress(console=Console(file=io.StringIO()))
    bar_class = rich_tqdm_class(progress)
    with progress:
        bar = bar_class(total=10, desc="Downloading", unit="B", name="huggingface_hub.snapshot_download")
        bar.update(4)
        bar.total = 20
        bar.update(6)
        bar.close()
    (task,) = progress.tasks
    assert (task.description, task.completed, task.total) == ("Downloading", 10, 20)


def test_download_success_reports_complete_directory(monkeypatch, tmp_path):
    _, diffusers_dir, _ = write_tiny_checkpoints(get_spec("tiny-t2v"), tmp_path / "source")

    def fake_snapshot_download(repo_id, revision=None, local_dir=None, tqdm_class=None, endpoint=None):
        bar = tqdm_class(total=3, desc="Fetching files")
        shutil.copytree(diffusers_dir, local_dir, dirs_exist_ok=True)
        bar.update(3)
        bar.close()
        return str(local_dir)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(download, "_probe", lambda url, timeout_s: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    result = runner.invoke(app, ["download", "wan2.1-t2v-1.3b", "--dir", str(tmp_path / "dest")])
    assert result.exit_code == 0, result.output
    assert f"wan2.1-t2v-1.3b is complete in {tmp_path / 'dest'}" in result.output
