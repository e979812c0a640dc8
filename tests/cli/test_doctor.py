"""`wanserve doctor`: the real command in a subprocess, plus in-process runs for exit codes and tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from wanserve.cli.main import app
from wanserve.engine.registry import CATALOG

SRC = Path(__file__).resolve().parents[2] / "src"


def test_doctor_json_subprocess_reports_checks_and_models(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        "WANSERVE_DATA_DIR": str(tmp_path / "data"),
        "WANSERVE_MODELS_DIR": str(tmp_path / "models"),
    }

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
    assert checks["disk"]["details"]["models"]["path"] == str(tmp_path / "models")
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == set(CATALOG)
    for name, spec in CATALOG.items():
        assert models[name]["random_weights"] is spec.tiny
        assert models[name]["ready"] is spec.tiny  # an empty models directory: only the tiny models are ready


def test_doctor_missing_device_fails_with_nonzero_exit(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--quick", "--json", "--device", "cuda:7", "--data-dir", str(tmp_path)])

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    devices = next(c for c in report["checks"] if c["name"] == "devices")
    assert devices["status"] == "fail"
    assert "`device` 'cuda:7' is not available" in devices["message"]
    assert report["ok"] is False


def test_doctor_human_output_is_tables(tmp_path):
    result = CliRunner().invoke(
        app, ["doctor", "--quick", "--data-dir", str(tmp_path), "--models-dir", str(tmp_path)], env={"COLUMNS": "160"}
    )

    assert result.exit_code == 0, result.output
    assert "wanserve doctor" in result.stdout
    assert "libx264 present" in result.stdout
    assert "tiny-t2v" in result.stdout and "yes (random)" in result.stdout
    assert "no check failed" in result.stdout
