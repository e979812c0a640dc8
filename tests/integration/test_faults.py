"""Faults with nothing lost: the server (API and workers in one process) SIGKILLed three times in a row with jobs
queued and running; a separate `wanserve worker` process SIGKILLed three times in a row (and restarted) while the
API process (`wanserve serve --no-workers`) keeps serving; PostgreSQL restarted while a job runs. Every job ends in
one final status with a reason and the service keeps serving.

Deterministic without sleeps: the test hold hook (a job blocks after step 1 while `<hold dir>/hold` exists) holds
the running job at a known step; the test reads its event stream until that step, then strikes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import ServerProcess, read_events

pytestmark = pytest.mark.integration

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 3}


def _wait_running_attempt(sse, url: str, job_id: str, attempt: int) -> None:
    """Reads the job's events until its `attempt`-th run has recorded step 1."""
    runs = [0]

    def until(event) -> bool:
        if event["event"] == "status" and event["data"]["status"] == "running":
            runs[0] += 1
        return runs[0] == attempt and event["event"] == "step" and event["data"]["step"] == 1

    sse(url, job_id, until=until)
    assert runs[0] == attempt


def test_server_killed_three_times_loses_no_job(start_server, sse, tmp_path):
    data, held = tmp_path / "data", tmp_path / "held"
    held.mkdir()
    (held / "hold").touch()  # before the server starts: a recovered job must not slip past step 1
    env = {"WANSERVE_TEST_HOLD_DIR": str(held), "WANSERVE_MAX_ATTEMPTS": "3"}
    first_job, submitted = None, []
    for attempt in (1, 2, 3):
        server = start_server(env, data_dir=data, name=f"killed-{attempt}")
        response = httpx.post(f"{server.url}/v1/jobs", json={**JOB, "seed": attempt})
        assert response.status_code == 201
        submitted.append(response.json()["id"])
        first_job = first_job or submitted[0]
        _wait_running_attempt(sse, server.url, first_job, attempt)  # the oldest job runs; the others wait
        server.kill()

    free = tmp_path / "free"
    free.mkdir()
    last = start_server({**env, "WANSERVE_TEST_HOLD_DIR": str(free)}, data_dir=data, name="after-kills")
    jobs = {}
    for job_id in submitted:
        sse(last.url, job_id)
        jobs[job_id] = httpx.get(f"{last.url}/v1/jobs/{job_id}").json()
    # The job killed on each of its 3 runs fails with a reason; every other job runs once and succeeds.
    assert jobs[first_job]["status"] == "failed" and jobs[first_job]["error"]["type"] == "worker_lost"
    assert jobs[first_job]["error"]["message"] and jobs[first_job]["attempts"] == 3
    assert all(jobs[j]["status"] == "succeeded" and jobs[j]["attempts"] == 1 for j in submitted[1:])
    assert httpx.get(f"{last.url}/v1/jobs").json()["count"] == len(submitted)
    after = httpx.post(f"{last.url}/v1/jobs", json={**JOB, "seed": 9}).json()["id"]
    sse(last.url, after)
    assert httpx.get(f"{last.url}/v1/jobs/{after}").json()["status"] == "succeeded"


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL cluster of this test alone (the shared test server must not be restarted): (url, restart)."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL binaries not installed")
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"wanserve-pg-{os.getpid()}-{tmp_path.name}"
    root.mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_postgres = ["su", "postgres", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")

    def pg(command: str) -> None:
        subprocess.run([*as_postgres, command], check=True, capture_output=True, timeout=120)

    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg(f"{pg_bin}/initdb -D {root}/data -U postgres -A trust")
    pg(f"{pg_bin}/pg_ctl -D {root}/data -o '{options}' -l {root}/log -w start")

    def restart() -> None:
        pg(f"{pg_bin}/pg_ctl -D {root}/data -o '{options}' -l {root}/log -m fast -w restart")

    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", restart
    subprocess.run([*as_postgres, f"{pg_bin}/pg_ctl -D {root}/data -m immediate stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_postgres_restarted_mid_job_loses_no_job(start_server, sse, own_postgres, tmp_path):
    url, restart = own_postgres
    held = tmp_path / "held"
    held.mkdir()
    (held / "hold").touch()
    server = start_server({"WANSERVE_DATABASE_URL": url, "WANSERVE_TEST_HOLD_DIR": str(held)}, name="pg-restart")
    running = httpx.post(f"{server.url}/v1/jobs", json={**JOB, "seed": 1}).json()["id"]
    waiting = httpx.post(f"{server.url}/v1/jobs", json={**JOB, "seed": 2}).json()["id"]
    _wait_running_attempt(sse, server.url, running, 1)

    restart()  # every connection of the server's pools is cut
    (held / "hold").unlink()
    (held / running).touch()  # release the held job: it finishes its steps and writes its output
    for job_id in (running, waiting):
        sse(server.url, job_id)
    jobs = {j: httpx.get(f"{server.url}/v1/jobs/{j}").json() for j in (running, waiting)}
    assert {job["status"] for job in jobs.values()} == {"succeeded"}, jobs
    assert httpx.get(f"{server.url}/health").status_code == 200
    after = httpx.post(f"{server.url}/v1/jobs", json={**JOB, "seed": 3})
    assert after.status_code == 201


def _wait_status(url: str, job_id: str, done, what: str, timeout_s: float = 60.0) -> dict:
    """Polls the job until `done(job)`; fails after `timeout_s` (a deadline, not a synchronisation by sleeping)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        if done(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for job {job_id} to be {what}: {job}")


def test_worker_process_killed_three_times_loses_no_job(tmp_path):
    """`wanserve serve --no-workers` and a `wanserve worker` sharing one data directory (SQLite, local files): the
    worker is SIGKILLed three times in a row while it runs a job and others wait, and restarted each time. The API
    keeps answering throughout; the job killed on each of its 3 runs fails `worker_lost`, every other job succeeds
    once."""
    data, held, free = tmp_path / "data", tmp_path / "held", tmp_path / "free"
    held.mkdir()
    free.mkdir()
    (held / "hold").touch()  # a job this worker claims stops after step 1 until the test kills the worker
    env = {
        "WANSERVE_MODELS": "tiny-t2v",
        "WANSERVE_MAX_ATTEMPTS": "3",
        "WANSERVE_LEASE_S": "4",
        "WANSERVE_POLL_INTERVAL_S": "0.2",
        "WANSERVE_SWEEP_INTERVAL_S": "0.5",
        "OMP_NUM_THREADS": "1",
    }
    api = ServerProcess(data, env, "api", args=("serve", "--no-workers"), ready="listening on").start()
    workers: list[ServerProcess] = []
    try:
        first_job, submitted = None, []
        for attempt in (1, 2, 3):
            worker = ServerProcess(data, {**env, "WANSERVE_TEST_HOLD_DIR": str(held)}, f"worker-{attempt}",
                                   args=("worker", "--device", "cpu"))  # fmt: skip
            workers.append(worker.start())
            response = httpx.post(f"{api.url}/v1/jobs", json={**JOB, "seed": attempt})
            assert response.status_code == 201
            submitted.append(response.json()["id"])
            first_job = first_job or submitted[0]
            _wait_running_attempt(read_events, api.url, first_job, attempt)  # the oldest job runs; others wait
            worker.kill()

            # The API serves on: health, reads, and new jobs; the lost job leaves `running` once its lease expires
            # (back to the queue, or failed after its third attempt), before the next worker may claim anything.
            assert httpx.get(f"{api.url}/health").status_code == 200
            assert httpx.get(f"{api.url}/v1/jobs/{first_job}").status_code == 200
            job = _wait_status(api.url, first_job, lambda j: j["status"] != "running", "released by the sweeper")
            assert job["status"] == ("failed" if attempt == 3 else "queued"), job

        last = ServerProcess(data, {**env, "WANSERVE_TEST_HOLD_DIR": str(free)}, "worker-last",
                             args=("worker", "--device", "cpu"))  # fmt: skip
        workers.append(last.start())
        jobs = {}
        for job_id in submitted:
            read_events(api.url, job_id)
            jobs[job_id] = httpx.get(f"{api.url}/v1/jobs/{job_id}").json()
        assert jobs[first_job]["status"] == "failed" and jobs[first_job]["error"]["type"] == "worker_lost"
        assert "gave up after 3 attempts" in jobs[first_job]["error"]["message"] and jobs[first_job]["attempts"] == 3
        assert all(jobs[j]["status"] == "succeeded" and jobs[j]["attempts"] == 1 for j in submitted[1:]), jobs
        assert httpx.get(f"{api.url}/v1/jobs").json()["count"] == len(submitted)
        assert httpx.get(f"{api.url}/v1/jobs/{submitted[1]}/content").status_code == 200
    finally:
        for process in [*workers, api]:
            process.stop()
