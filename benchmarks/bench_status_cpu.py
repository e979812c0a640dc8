"""CPU cost of one status poll (`GET /v1/jobs/{id}`), measured in-process so a busy shared machine changes it little:
the app (no workers) with `--queued` queued jobs and measured step times (so every poll computes a queue position
and an ETA), `--requests` polls from `--concurrency` concurrent clients over ASGI, and the process's CPU time
(every thread) divided by the polls. The client runs in the same process, so the same count of `/health/live`
requests is measured too: the difference is the status route's own cost. 1000 / (ms per poll) is what one core
can answer per second, client included.

    python benchmarks/bench_status_cpu.py --out benchmarks/results/<date>-bench-status-cpu.json
    python benchmarks/bench_status_cpu.py --src /path/to/older/src   # the same load on another version
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

CHILD = r"""
import asyncio, json, sys, tempfile, time, uuid
from datetime import timedelta
import httpx
from wanserve.api.app import create_app
from wanserve.config import Settings
from wanserve.jobs.model import Job, utcnow
from wanserve.jobs.service import JobSubmission

queued, requests, concurrency = map(int, sys.argv[1:4])
app = create_app(Settings(data_dir=tempfile.mkdtemp(), models=["tiny-t2v"], max_queue=100000), start_workers=False)
service = app.state.runtime.service
job = dict(prompt="a cat", width=64, height=64, num_frames=1, num_inference_steps=1)
ids = [service.create_job(JobSubmission(params={**job, "seed": i}, model="tiny-t2v"))[0].id for i in range(queued)]
# One finished job with measured step times: polls of queued jobs then compute an ETA, as on a server that ran jobs.
with service.store._sessions.begin() as session:
    now = utcnow()
    session.add(Job(id=str(uuid.uuid4()), kind="t2v", model="tiny-t2v", params={}, inputs={}, status="succeeded",
                    steps=1, step=1, step_time_sum_s=0.2, steps_timed=1, run_time_s=0.5, created_at=now,
                    started_at=now - timedelta(seconds=1), finished_at=now, updated_at=now))
service._stats_cache = None  # read the timings now, not after the service's 2 s cache expires

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        async def poll(i):
            response = await client.get(f"/v1/jobs/{ids[i % len(ids)]}")
            assert response.status_code == 200 and response.json()["eta_s"] is not None, response.text
        for start in range(0, 200, concurrency):  # warm-up
            await asyncio.gather(*(poll(i) for i in range(start, start + concurrency)))
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, requests, concurrency):
            await asyncio.gather(*(poll(i) for i in range(start, start + concurrency)))
        cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
        # The floor: the same client and middleware on the cheapest route (what any request costs here).
        cpu = time.process_time()
        for start in range(0, requests, concurrency):
            await asyncio.gather(*(client.get("/health/live") for i in range(start, start + concurrency)))
        return cpu_s, wall_s, time.process_time() - cpu

cpu_s, wall_s, floor_s = asyncio.run(main())
print(json.dumps({"cpu_ms_per_poll": round(1000 * cpu_s / requests, 3), "wall_ms_per_poll": round(1000 * wall_s / requests, 3),
                  "cpu_ms_per_liveness_request": round(1000 * floor_s / requests, 3),
                  "status_route_own_cpu_ms": round(1000 * (cpu_s - floor_s) / requests, 3)}))
"""


def measure(src: Path, queued: int, requests: int, concurrency: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(queued), str(requests), str(concurrency)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise SystemExit(f"the measurement failed with {src}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=250, help="queued jobs (the default queue limit is 256)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--src", type=Path, action="append", help="wanserve source trees to compare (repeatable)")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    sources = args.src or [Path(__file__).resolve().parents[1] / "src"]
    load_before = os.getloadavg()
    results = {}
    for src in sources:
        started = time.perf_counter()
        results[str(src)] = {**measure(src, args.queued, args.requests, args.concurrency)}
        results[str(src)]["run_s"] = round(time.perf_counter() - started, 1)
        results[str(src)]["polls_per_cpu_s_client_included"] = round(1000 / results[str(src)]["cpu_ms_per_poll"], 1)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": "CPU time of the whole process (all threads) per poll; SQLite; the machine is shared",
        "config": {"queued": args.queued, "requests": args.requests, "concurrency": args.concurrency},
        "results": results,
        "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
