"""Every command's `--help`: defaults shown, no description cut short by markup, and `serve` validating its
settings before anything is loaded."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from wanserve.cli.main import app

runner = CliRunner()
COMMANDS = ["serve", "generate", "models", "download", "doctor", "bench", "bench serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_stray_dot(command):
    result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert not re.search(r"\s\.\s*│", result.stdout), result.stdout  # what rich left of a `[...]` it took for markup


def test_serve_help_shows_defaults_and_seed_port():
    text = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).stdout
    assert "[default: (127.0.0.1)]" in text and "[default: (8000)]" in text and "[default: (one per device)]" in text
    assert "SERVER_PORT" in text and "8088" in text


def test_serve_refuses_unknown_model_before_loading(tmp_path):
    result = runner.invoke(app, ["serve", "-m", "wan9"], env={"WANSERVE_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "`model` 'wan9' is not a known model" in result.output
    assert not (tmp_path / "wanserve.db").exists()  # nothing was built


def test_serve_refuses_bad_setting_naming_it(tmp_path):
    result = runner.invoke(app, ["serve"], env={"WANSERVE_DATA_DIR": str(tmp_path), "WANSERVE_PORT": "abc"})
    assert result.exit_code == 2
    assert "`WANSERVE_PORT`" in result.output and "'abc'" in result.output
