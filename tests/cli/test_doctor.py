"""`wanserve doctor`: the real command in a subprocess, plus in-process runs for exit codes and tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.models.wan_original import write_diffusers_layout
from wanserve.cli.main import app
from wanserve.engine.registry import CATALOG, get_spec
from wanserve.engine.tiny import build_tiny_components

SRC = Path(__file__).resolve().parents[2] / "src"
READY_MODEL = "wan2.1-t2v-1.3b"
SEED_VARS = ("WAN_CHECKPOINT_DIR", "WAN_MODELS_ROOT", "MODEL_CKPT_DIR")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory where one real model's files are complete (tiny weights in its diffusers layout)."""
    root = tmp_path_factory.mktemp("models")
    write_diffusers_layout(get_spec(READY_MODEL), build_tiny_components(get_spec("tiny-t2v")), root / READY_MODEL)
    return root


def test_doctor_json_subprocess_reports_checks_and_models(tmp_path, models_dir):
    env = {k: v for k, v in os.environ.items() if k not in SEED_VARS}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        WANSERVE_DATA_DIR=str(tmp_path / "data"),
        WANSERVE_MODELS_DIR=str(models_dir),
    )

    proc = subprocess.run(
        [sys.executable, "-m", "wanserve", "doctor", "--json"], capture_output=True, text=True, env=env, timeout=120
    )

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"python", "torch", "devices", "libraries", "video", "disk", "models"}
    assert all(c["status"] in ("ok", "warn") for c in checks.values())
    assert report["ok"] is True
    assert checks["video"]["details"]["test_encode"]["codec"] == "h264"
    assert checks["disk"]["details"]["models"]["path"] == str(models_dir)
    assert checks["models"] == {**checks["models"], "status": "ok", "message": f"ready: {READY_MODEL}"}
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == set(CATALOG)
    for name, spec in CATALOG.items():
        assert models[name]["random_weights"] is spec.tiny
        assert models[name]["ready"] is (spec.tiny or name == READY_MODEL), name
    assert (models[READY_MODEL]["layout"], models[READY_MODEL]["path"]) == ("diffusers", str(models_dir / READY_MODEL))
    assert models["wan2.1-t2v-14b"]["missing"]  # not there: the files it needs are listed


def test_doctor_missing_device_fails_with_nonzero_exit(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--quick", "--json", "--device", "cuda:7", "--data-dir", str(tmp_path)])

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    devices = next(c for c in report["checks"] if c["name"] == "devices")
    assert devices["status"] == "fail"
    assert "`device` 'cuda:7' is not available" in devices["message"]
    assert report["ok"] is False


def test_doctor_human_output_is_tables_within_80_columns(tmp_path):
    result = CliRunner().invoke(
        app, ["doctor", "--quick", "--data-dir", str(tmp_path), "--models-dir", str(tmp_path)], env={"COLUMNS": "80"}
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "wanserve doctor" in result.stdout
    assert "libx264 present" in result.stdout
    # One line per model: name, readiness and weights on the same line, never broken into slivers.
    assert any(line.split()[:2] == ["tiny-t2v", "random"] and "random weights" in line for line in lines)
    assert any(line.split()[:2] == ["wan2.1-flf2v-14b-720p", "no"] for line in lines)
    assert "no check failed" in result.stdout
