"""A server killed with SIGKILL while a job runs, then started again: the job runs again and succeeds; no job is
lost or finished twice. On SQLite and on PostgreSQL.

Deterministic without sleeps: the first server has the test hold hook on (a job blocks after step 1 until a release
file exists); the test reads the job's event stream until step 1 is recorded, then kills the server.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 3}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_mid_job_restart_reruns_and_succeeds_once(backend, request, start_server, sse, tmp_path):
    env = {}
    if backend == "postgres":
        env["WANSERVE_DATABASE_URL"] = request.getfixturevalue("fresh_postgres_url")()
    data = tmp_path / "data"
    first = start_server(env, data_dir=data, name=f"doomed-{backend}")
    (first.hold_dir / "hold").touch()

    running = httpx.post(f"{first.url}/v1/jobs", json={**JOB, "seed": 1}).json()["id"]
    waiting = [httpx.post(f"{first.url}/v1/jobs", json={**JOB, "seed": s}).json()["id"] for s in (2, 3)]
    events = sse(first.url, running, until=lambda e: e["event"] == "step" and e["data"]["step"] == 1)
    assert events[-1]["data"]["status"] == "running"
    first.kill()

    second = start_server(env, data_dir=data, name=f"restarted-{backend}")
    for job_id in [running, *waiting]:
        sse(second.url, job_id)
    jobs = {job_id: httpx.get(f"{second.url}/v1/jobs/{job_id}").json() for job_id in [running, *waiting]}
    assert {job["status"] for job in jobs.values()} == {"succeeded"}
    assert jobs[running]["attempts"] == 2 and all(jobs[j]["attempts"] == 1 for j in waiting)
    assert httpx.get(f"{second.url}/v1/jobs").json()["count"] == 3

    statuses = [e["data"]["status"] for e in sse(second.url, running) if e["event"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    assert httpx.get(f"{second.url}/v1/jobs/{running}/content").status_code == 200
