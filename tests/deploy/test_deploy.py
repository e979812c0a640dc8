"""The container files, checked with what runs here (no Docker engine on these machines): the compose file parsed
and validated against the Compose specification (the `compose-spec` package) after variable interpolation with
`.env.example`, with the cross-references Compose checks at `up` time; the Dockerfile's required parts; and the
image's entry point script run directly."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from wanserve.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: `${X}`, `${X:-default}`, `${X:?error}`, `$X`, `$$` for a literal `$`."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":?", "?") and not value:
            raise AssertionError(f"compose needs {name}: {argument}")
        if operator in (":-", "-") and not value:
            return argument
        assert value is not None, f"{name} is used by the compose file but not set in .env.example"
        return value

    return _VARIABLE.sub(substitute, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    from compose_spec import PyCompose

    text = interpolate((DEPLOY / "docker-compose.yml").read_text(), env_example())
    data = yaml.safe_load(text)  # resolves the `<<: *anchor` merge keys, as Compose's YAML loader does
    PyCompose.from_json(json.dumps(data)).validate()  # raises on anything the specification refuses
    return data


def test_compose_has_the_stack_and_cross_references_hold(compose):
    services = compose["services"]
    assert {"api", "postgres", "redis", "minio", "web"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], f"{name}: volume {source} undeclared"
    assert services["api"]["command"] == ["serve", "--no-workers"]
    assert services["web"]["profiles"] == ["web"]  # optional


def test_compose_runs_one_worker_per_gpu(compose):
    workers = {n: s for n, s in compose["services"].items() if s.get("command", [None])[0] == "worker"}
    assert len(workers) >= 2
    gpus = []
    for service in workers.values():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        gpus += device["device_ids"]
        assert service["healthcheck"]["test"] == ["CMD", "wanserve-entrypoint", "healthcheck"]
    assert len(set(gpus)) == len(gpus), f"two workers share a GPU: {gpus}"


def test_compose_and_env_example_name_real_settings(compose):
    """Every `WANSERVE_*` variable given to the containers or in `.env.example` is a setting (a typo would be
    ignored silently), and `.env.example`'s values are accepted."""
    known = {alias for field in Settings.model_fields.values() for alias in field.validation_alias.choices}
    given = set(compose["services"]["api"]["environment"]) | set(env_example())
    assert {name for name in given if name.startswith("WANSERVE_")} - known == set()
    settings = Settings(_env_file=ROOT / ".env.example")
    assert settings.environment == "production" and settings.api_key is not None


def test_dockerfile_has_cuda_runtime_non_root_user_healthcheck_and_model_volume():
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "-runtime-" in base
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*CMD \[\"wanserve-entrypoint\", \"healthcheck\"\]", text, re.M)
    assert '"/models"' in re.search(r"^VOLUME (.+)$", text, re.M).group(1)
    assert "WANSERVE_MODELS_DIR=/models" in text
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY {path}: not in the repository"


# The entry point, run directly ------------------------------------------------------------------------------------


@pytest.fixture
def run_entrypoint(tmp_path):
    """Runs deploy/entrypoint.sh with `wanserve` on the PATH (this checkout's, through a shim)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "wanserve"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m wanserve "$@"\n')
    shim.chmod(0o755)

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        base = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "WANSERVE_STATE_DIR": str(tmp_path / "state"), "WANSERVE_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
        return subprocess.run(["sh", str(ENTRYPOINT), *args], env={**base, **env}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=240)  # fmt: skip

    return run


def test_entrypoint_runs_wanserve_commands_with_the_model_volume(run_entrypoint, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    result = run_entrypoint("models", "--json", WANSERVE_MODELS_DIR=str(models))
    assert result.returncode == 0, result.stderr
    assert f'"path": "{models}/' not in result.stdout  # nothing downloaded there yet
    missing = run_entrypoint("worker", "--device", "cpu", WANSERVE_MODELS_DIR=str(tmp_path / "absent"))
    assert missing.returncode == 2 and "does not exist (mount it as a volume)" in missing.stderr
    assert run_entrypoint("echo", "passed through").stdout == "passed through\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_entrypoint_healthcheck_of_the_api_role(run_entrypoint, tmp_path):
    class Live(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health/live" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Live)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert run_entrypoint("healthcheck", WANSERVE_PORT=str(server.server_address[1])).returncode == 0
    finally:
        server.shutdown()
    dead = run_entrypoint("healthcheck", WANSERVE_PORT=str(_free_port()))
    assert dead.returncode == 1 and "not live" in dead.stdout


def test_entrypoint_healthcheck_of_the_worker_role(run_entrypoint, tmp_path):
    """A worker container is healthy while one of its host's workers heartbeats in the job database."""
    from wanserve.bootstrap import build_database, build_registry

    state = tmp_path / "state"
    state.mkdir()
    (state / "role").write_text("worker\n")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    registry = build_registry(settings, build_database(settings))
    assert run_entrypoint("healthcheck").returncode == 1  # no worker registered
    registry.register("w0", socket.gethostname(), os.getpid(), ["cuda:0"], ["tiny-t2v"])
    registry.heartbeat("w0", "idle", None, 0)
    result = run_entrypoint("healthcheck")
    assert result.returncode == 0 and "1 live worker(s)" in result.stdout
