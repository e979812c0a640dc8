"""`wanserve bench serve` and `wanserve doctor --health/--memory/--pipeline` against a real tiny-model server (a
`wanserve serve` subprocess), and the benchmark's statistics."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wanserve.cli.bench_serve import RequestResult, summarize
from wanserve.cli.main import app

runner = CliRunner()


def test_summarize_percentiles_throughput_and_failures():
    results = [RequestResult(i, 0, f"j{i}", "succeeded", float(i + 1), 0.5 * i, 1.0, None) for i in range(4)]
    results.append(RequestResult(4, 0, None, "refused", 0.1, None, None, "job refused (422): `num_frames`"))
    summary = summarize(results, wall_s=10.0)
    assert (summary["requests"], summary["succeeded"], summary["failed"], summary["success_rate"]) == (5, 4, 1, 0.8)
    assert summary["latency_s"] == {"mean": 2.5, "p50": 2.5, "p95": 3.85, "p99": 3.97}
    assert summary["queue_wait_s"]["p50"] == 0.75 and summary["run_s"]["mean"] == 1.0
    assert summary["throughput_jobs_per_min"] == 24.0


@pytest.mark.integration
def test_bench_serve_concurrent_users_report_and_json(sqlite_server, tmp_path):
    out = tmp_path / "results.json"
    args = ["bench", "serve", "--url", sqlite_server.url, "--concurrent", "--users", "4", "--save", str(out)]
    result = runner.invoke(app, [*args, "--model", "tiny-t2v", "--frames", "5"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "success rate" in result.stdout and "100.0% (4/4)" in result.stdout
    assert "latency p50 / p95 / p99" in result.stdout and "queue wait mean / p95" in result.stdout
    report_lines = [line for line in result.stdout.splitlines() if not line.startswith(("saved ", "request "))]
    assert max(len(line) for line in report_lines) <= 80  # the report's table; the saved path is as long as it is
    report = json.loads(out.read_text())
    assert report["config"]["users"] == 4 and report["summary"]["requests"] == 4
    assert sorted(r["index"] for r in report["results"]) == [0, 1, 2, 3]
    assert all(r["status"] == "succeeded" and r["run_s"] > 0 and r["queue_wait_s"] >= 0 for r in report["results"])
    # One worker, four jobs at once: the later ones waited in the queue.
    assert max(r["queue_wait_s"] for r in report["results"]) > 0


@pytest.mark.integration
def test_bench_serve_quick_one_request_json(sqlite_server):
    result = runner.invoke(app, ["bench", "serve", "--url", sqlite_server.url, "--quick", "--json", "--frames", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["requests"] == 1


@pytest.mark.integration
def test_bench_serve_refused_jobs_fail_the_run(sqlite_server):
    result = runner.invoke(app, ["bench", "serve", "--url", sqlite_server.url, "--quick", "--frames", "8"])
    assert result.exit_code == 1
    assert "refused (422)" in result.stdout and "`num_frames`" in result.stdout


@pytest.mark.integration
def test_doctor_service_health_memory_pipeline(sqlite_server):
    args = ["doctor", "--url", sqlite_server.url, "--health", "--memory", "--pipeline", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and list(checks) == ["health", "memory", "pipeline"]
    assert checks["health"]["details"]["http_status"] == 200 and "tiny-t2v" in checks["health"]["message"]
    assert checks["memory"]["details"]["process_rss_bytes"] > 0
    assert checks["pipeline"]["status"] == "ok" and checks["pipeline"]["details"]["status"] == "succeeded"


def test_doctor_service_unreachable_fails():
    result = runner.invoke(app, ["doctor", "--health", "--url", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and "cannot reach http://127.0.0.1:9/health" in report["checks"][0]["message"]


def test_bench_serve_bad_size_refused_before_any_request():
    result = runner.invoke(app, ["bench", "serve", "--url", "http://127.0.0.1:9", "--size", "big"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output
