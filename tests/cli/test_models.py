"""`wanserve models`: every catalog model with its defaults and local weights status."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.models.wan_original import write_tiny_checkpoints
from wanserve.cli.main import app
from wanserve.engine.registry import CATALOG, get_spec

runner = CliRunner()


@pytest.fixture(autouse=True)
def models_dir(monkeypatch, tmp_path):
    for var in ("WAN_CHECKPOINT_DIR", "WAN_MODELS_ROOT", "MODEL_CKPT_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANSERVE_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def _models_json() -> dict[str, dict]:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["models"]
    return {row["name"]: row for row in rows}


def test_models_json_lists_every_catalog_model_with_defaults():
    rows = _models_json()
    assert list(rows) == list(CATALOG)
    a14b = rows["wan2.2-t2v-a14b"]
    assert a14b["defaults"] == {
        "num_inference_steps": 40, "guidance_scale": 4.0, "guidance_scale_2": 3.0, "boundary_ratio": 0.875,
        "flow_shift": 12.0, "solver": "unipc", "fps": 16, "num_frames": 81, "size": "1280x720",
    }  # fmt: skip
    assert a14b["sizes"] == ["1280x720", "720x1280", "832x480", "480x832"]
    assert (a14b["experts"], a14b["random_weights"]) == (2, False)
    assert a14b["memory"]["params"]["transformer"] == a14b["memory"]["params"]["transformer_2"] == 14_288_491_584
    assert (a14b["memory"]["weights_gib"], a14b["memory"]["peak_gib"]) == (64.39, 89.43)
    assert a14b["memory"]["peak_model_offload_gib"] == 34.67
    assert rows["tiny-t2v"]["memory"] is None
    assert a14b["hub"]["hf_original"] == "Wan-AI/Wan2.2-T2V-A14B"
    assert rows["wan2.2-ti2v-5b"]["tasks"] == [t.value for t in get_spec("wan2.2-ti2v-5b").tasks]


def test_models_json_reports_weights_status(models_dir):
    _, _, original_dir = write_tiny_checkpoints(get_spec("tiny-t2v"), models_dir.parent / "written")
    original_dir.rename(models_dir.parent / "moved")
    models_dir.mkdir()
    (models_dir.parent / "moved").rename(models_dir / "wan2.1-t2v-1.3b")
    (models_dir / "wan2.1-t2v-1.3b" / "Wan2.1_VAE.pth").unlink()
    rows = _models_json()

    tiny = rows["tiny-t2v"]
    assert tiny["random_weights"] is True
    assert tiny["weights"] == {"path": None, "layout": None, "present": True, "complete": True, "missing": []}

    partial = rows["wan2.1-t2v-1.3b"]["weights"]
    assert (partial["layout"], partial["present"], partial["complete"]) == ("original", True, False)
    assert partial["missing"] == ["Wan2.1_VAE.pth"]
    assert partial["path"] == str(models_dir / "wan2.1-t2v-1.3b")

    absent = rows["wan2.1-t2v-14b"]["weights"]
    assert (absent["present"], absent["complete"], absent["path"]) == (False, False, None)
    assert "model_index.json" in absent["missing"]


def test_models_table_says_random_weights_for_tiny_models():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.split()}
    assert "random weights" in lines["tiny-i2v"]
    assert "not downloaded" in lines["wan2.1-i2v-14b-480p"]
    assert "4/3 @0.875" in lines["wan2.2-t2v-a14b"]


def test_models_table_fits_80_columns_wrapping_columns_not_rows():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    groups = int(result.stdout.split("wanserve models (1/")[1][0])
    assert groups >= 2 and f"wanserve models ({groups}/{groups})" in result.stdout
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in CATALOG}
    # Every model is one line in each table (its name repeated as the key), never folded.
    assert sum(1 for line in lines if line.split()[:1] == ["wan2.1-flf2v-14b-720p"]) == groups
    assert set(rows) == set(CATALOG)
    headers = {word for line in lines for word in line.split()}
    assert {"guidance", "frames", "weights", "weights/peak/offload"} <= headers


def test_models_wide_terminal_one_table():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert "(1/" not in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["wan2.2-t2v-a14b"])
    assert line.split()[1:4] == ["t2v", "40", "4/3"] and "not downloaded" in line
