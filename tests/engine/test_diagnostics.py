"""The checks behind `wanserve doctor`, one by one, including the ways each can warn or fail."""

from __future__ import annotations

import importlib.metadata

import av.codec
import pytest

from tests.models.wan_original import write_diffusers_layout
from wanserve.engine import diagnostics
from wanserve.engine.config import WeightsConfig
from wanserve.engine.devices import accelerator_type
from wanserve.engine.diagnostics import CheckResult, DoctorReport, ModelReadiness
from wanserve.engine.memory_estimate import estimate_memory
from wanserve.engine.registry import get_spec
from wanserve.engine.tiny import build_tiny_components


def test_check_python_current_is_ok():
    assert diagnostics.check_python().status == "ok"


def test_check_python_too_old_fails(monkeypatch):
    monkeypatch.setattr(diagnostics, "MIN_PYTHON", (99, 0))

    result = diagnostics.check_python()

    assert result.status == "fail"
    assert "wanserve needs 99.0 or newer" in result.message


def test_check_torch_reports_build():
    result = diagnostics.check_torch()

    assert result.status in ("ok", "warn")
    assert result.details["build"] in result.message or result.status == "warn"


@pytest.mark.skipif(accelerator_type() is not None, reason="this machine has an accelerator")
def test_check_devices_cpu_only_warns():
    result = diagnostics.check_devices()

    assert result.status == "warn"
    assert result.details["selected"] == "cpu"
    assert result.details["devices"][-1]["device"] == "cpu"


def test_check_devices_unknown_device_fails():
    result = diagnostics.check_devices("xpu:5")

    assert result.status == "fail"
    assert "`device` 'xpu:5' is not available" in result.message


def test_check_libraries_old_or_missing_fails(monkeypatch):
    real_version = importlib.metadata.version

    def fake_version(name):
        if name == "diffusers":
            return "0.35.0"
        if name == "av":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", fake_version)

    result = diagnostics.check_libraries()

    assert result.status == "fail"
    assert "diffusers 0.35.0 is older than 0.42.1" in result.message
    assert "av is not installed (need >= 14.0)" in result.message


def test_check_video_encoding_encodes_two_frames():
    result = diagnostics.check_video_encoding()

    assert result.status == "ok"
    assert result.details["test_encode"]["num_frames"] == 2
    assert result.details["test_encode"]["pix_fmt"] == "yuv420p"


def test_check_video_encoding_quick_skips_encode():
    result = diagnostics.check_video_encoding(quick=True)

    assert result.status == "ok"
    assert "test_encode" not in result.details


def test_check_video_encoding_without_libx264_fails(monkeypatch):
    def no_codec(name, mode="r"):
        raise av.codec.codec.UnknownCodecError(name)

    monkeypatch.setattr(av.codec, "Codec", no_codec)

    result = diagnostics.check_video_encoding(quick=True)

    assert result.status == "fail"
    assert "no libx264 encoder" in result.message


def test_check_disk_reports_missing_dirs_by_existing_parent(tmp_path):
    result = diagnostics.check_disk(tmp_path / "data" / "not-yet", tmp_path / "models")

    assert result.details["data"]["path"] == str(tmp_path / "data" / "not-yet")
    assert result.details["data"]["free_gib"] > 0
    assert result.status in ("ok", "warn")


def test_check_disk_low_space_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(diagnostics, "MIN_MODELS_FREE_GIB", 10**9)

    result = diagnostics.check_disk(tmp_path, tmp_path / "models")

    assert result.status == "warn"
    assert f"models directory {str(tmp_path / 'models')!r} has" in result.message


def test_model_readiness_tiny_is_ready_with_random_weights():
    readiness = diagnostics.model_readiness(get_spec("tiny-i2v"), WeightsConfig())

    assert (readiness.ready, readiness.random_weights) == (True, True)


def test_model_readiness_real_model_without_weights_not_ready(tmp_path):
    readiness = diagnostics.model_readiness(get_spec("wan2.1-t2v-14b"), WeightsConfig(str(tmp_path)))

    assert (readiness.ready, readiness.random_weights) == (False, False)
    assert readiness.message == "weights not found"
    assert "model_index.json" in readiness.missing
    assert readiness.memory_gb == estimate_memory(get_spec("wan2.1-t2v-14b")).peak_gib == 62.76


def test_model_readiness_incomplete_lists_missing_files(tmp_path):
    spec = get_spec("wan2.1-t2v-1.3b")
    model_dir = write_diffusers_layout(spec, build_tiny_components(get_spec("tiny-t2v")), tmp_path / spec.name)
    (model_dir / "vae" / "diffusion_pytorch_model.safetensors").unlink()

    readiness = diagnostics.model_readiness(spec, WeightsConfig(str(tmp_path)))

    assert readiness.ready is False
    assert readiness.path == str(model_dir)
    assert any(m.startswith("vae/") for m in readiness.missing)
    assert readiness.message.startswith(f"incomplete at {model_dir}")


@pytest.mark.parametrize(
    ("models", "status", "text"),
    [
        ([ModelReadiness("tiny-t2v", True, True)], "warn", "only the tiny models (random weights) can serve"),
        (
            [ModelReadiness("wan2.1-t2v-14b", False, False, path="/m/14b", missing=("vae/x",))],
            "warn",
            "incomplete weights for wan2.1-t2v-14b",
        ),
        ([ModelReadiness("wan2.1-t2v-14b", True, False, path="/m/14b")], "ok", "ready: wan2.1-t2v-14b"),
    ],
)
def test_check_models_summarises(models, status, text):
    result = diagnostics.check_models(models)

    assert result.status == status
    assert text in result.message


def test_doctor_report_fails_only_on_failed_checks():
    warn = DoctorReport((CheckResult("a", "ok", ""), CheckResult("b", "warn", "")), ())
    fail = DoctorReport((CheckResult("a", "ok", ""), CheckResult("b", "fail", "")), ())

    assert warn.ok is True and warn.to_dict()["ok"] is True
    assert fail.ok is False and fail.to_dict()["ok"] is False
