"""`wanserve keys create|list|revoke` against the job database of `WANSERVE_DATA_DIR`: the token is shown once,
only its hash is stored, limits are parsed and checked, revoked keys stop working."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from wanserve.bootstrap import build_database
from wanserve.cli.main import app
from wanserve.config import Settings
from wanserve.jobs.keys import KeyRing, KeyStore

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv("WANSERVE_DATA_DIR", str(tmp_path))
    created = runner.invoke(app, ["keys", "create", "--name", "ci", "--rate", "30/min", "--max-running", "2", "--json"])
    assert created.exit_code == 0, created.output
    key = json.loads(created.output.strip().splitlines()[-1])
    assert key["token"].startswith(f"wsk_{key['id']}_") and key["rate_per_min"] == 30 and key["max_running"] == 2
    ring = KeyRing(KeyStore(build_database(Settings(data_dir=tmp_path))), cache_s=0)
    assert ring.caller(key["token"]).key_id == key["id"]
    stored = KeyStore(build_database(Settings(data_dir=tmp_path))).list()[0]
    secret = key["token"][len(f"wsk_{key['id']}_") :]
    assert secret not in stored.secret_sha256 and len(stored.secret_sha256) == 64  # only the hash is kept

    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert [k["id"] for k in json.loads(listed.output.strip().splitlines()[-1])] == [key["id"]]
    assert "token" not in listed.output and key["token"] not in listed.output

    assert runner.invoke(app, ["keys", "revoke", key["id"]]).exit_code == 0
    assert ring.caller(key["token"]) is None
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"]).output.strip().splitlines()[-1]) == []
    assert runner.invoke(app, ["keys", "revoke", "000000000000"]).exit_code == 1


def test_keys_create_bad_rate_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WANSERVE_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["keys", "create", "--rate", "fast"])
    assert result.exit_code == 2 and "--rate" in result.output
