"""Every command's `--help`: defaults shown, no description cut short by markup, and `serve` validating its
settings before anything is loaded."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from wanserve.cli.main import app

runner = CliRunner()


def _commands() -> list[str]:
    """Every command and sub-command registered on the app (so a new one is checked too)."""
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    for group in app.registered_groups:
        names.append(group.name)
        names += [f"{group.name} {c.name or c.callback.__name__}" for c in group.typer_instance.registered_commands]
    return names


COMMANDS = _commands()


def test_commands_found():
    assert {"serve", "worker", "generate", "models", "download", "doctor", "bench", "bench serve"} <= set(COMMANDS)


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


def test_worker_refuses_bad_gpus_and_multi_gpu_jobs_naming_them(tmp_path):
    env = {"WANSERVE_DATA_DIR": str(tmp_path)}
    bad = runner.invoke(app, ["worker", "--gpus", "0,x"], env=env)
    assert bad.exit_code == 2 and "`--gpus` must be GPU numbers like 0,1,2,3, got '0,x'" in bad.output
    two_groups = runner.invoke(app, ["worker", "--gpus", "0,1,2,3", "--gpus-per-job", "2"], env=env)
    assert two_groups.exit_code == 2 and "`--gpus-per-job` 2 with 4 GPUs" in two_groups.output
    assert "one `wanserve worker` per group" in two_groups.output
    world = runner.invoke(app, ["worker", "--world-size", "2"], env=env)
    assert world.exit_code == 2 and "`--world-size` 2 is for a CPU group (`--device cpu`)" in world.output
    odd = runner.invoke(app, ["worker", "--gpus", "0,1,2", "--gpus-per-job", "2"], env=env)
    assert odd.exit_code == 2 and "`--gpus-per-job` 2 must divide the 3 devices" in odd.output
    assert not (tmp_path / "wanserve.db").exists()  # refused before anything was built
