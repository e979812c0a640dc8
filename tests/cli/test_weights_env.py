"""One weights rule for every command: with `WANSERVE_MODELS_DIR` set in `.env` (and nowhere else), `download`,
`models`, `doctor`, `serve` and `worker` all look in the same directory (the issue: `download` wrote to
`~/.cache/wanserve/models` and `serve` could not find it)."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import ServerProcess
from tests.models.wan_original import write_tiny_checkpoints
from wanserve.cli.main import app
from wanserve.engine.registry import get_spec

MODEL = "wan2.1-t2v-1.3b"
WEIGHT_VARS = ("WANSERVE_MODELS_DIR", "WAN_MODELS_ROOT", "WANSERVE_CHECKPOINT_DIR", "WAN_CHECKPOINT_DIR",
               "MODEL_CKPT_DIR", "WANSERVE_MODELS")  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A working directory whose `.env` names a weights directory holding `wan2.1-t2v-1.3b` (tiny weights in the
    diffusers layout: loadable on the CPU)."""
    root = tmp_path_factory.mktemp("deployment")
    _, diffusers_dir, _ = write_tiny_checkpoints(get_spec("tiny-t2v"), root / "written")
    weights = root / "weights"
    shutil.copytree(diffusers_dir, weights / MODEL)
    (root / ".env").write_text(f"WANSERVE_MODELS_DIR={weights}\nWANSERVE_MODELS={MODEL}\n")
    return root, weights / MODEL


@pytest.fixture
def in_deployment(deployment, monkeypatch):
    for var in WEIGHT_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(deployment[0])
    return deployment


def test_download_models_doctor_use_the_env_file_directory(in_deployment, monkeypatch):
    _, model_dir = in_deployment
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing is fetched: the plan names where it would go
    download = runner.invoke(app, ["download", MODEL])
    assert f"into {model_dir}" in " ".join(download.output.split())

    models = {row["name"]: row for row in json.loads(runner.invoke(app, ["models", "--json"]).stdout)["models"]}
    assert models[MODEL]["weights"]["path"] == str(model_dir) and models[MODEL]["weights"]["complete"]

    doctor = json.loads(runner.invoke(app, ["doctor", "--quick", "--json"]).stdout)
    (row,) = [m for m in doctor["models"] if m["name"] == MODEL]
    assert row["path"] == str(model_dir) and row["ready"]


@pytest.mark.integration
def test_serve_and_worker_load_the_env_file_weights(in_deployment, tmp_path):
    root, _ = in_deployment
    env = {"OMP_NUM_THREADS": "1", "WANSERVE_POLL_INTERVAL_S": "0.2"}
    data = tmp_path / "data"  # one SQLite database for both: the worker takes jobs the server queues
    server = ServerProcess(data, {**env, "WANSERVE_CONCURRENCY": "1"}, "env-serve", cwd=root)
    worker = ServerProcess(data, env, "env-worker", cwd=root, args=("worker", "--device", "cpu"))
    try:
        server.start()  # "workers ready": the in-process worker loaded the model from the .env directory
        worker.start()  # likewise for `wanserve worker`
        health = httpx.get(f"{server.url}/health").json()
        assert [(m["name"], m["loaded"], m["random_weights"]) for m in health["models"]] == [(MODEL, True, False)]
        workers = httpx.get(f"{server.url}/v1/workers").json()["data"]
        assert len(workers) == 2 and {tuple(w["models"]) for w in workers} == {(MODEL,)}
        assert {w["state"] for w in workers} <= {"starting", "idle"}  # registered; heartbeats every lease / 3
    finally:
        worker.stop()
        server.stop()
