"""Status polls under load, with nothing lost: a real `wanserve serve` (tiny model, one worker) held for `--duration-s`
under `--pollers` concurrent clients polling `GET /v1/jobs/{id}` of the jobs made so far (closed loop: each poller
sends its next request when the last one answered) and `--rate` submissions a second (open loop).

Reports the answers by status code (submits and polls), p50/p99 of each, poll throughput, every 429 with or without
`Retry-After`, and jobs lost: after the run every queued job is cancelled and every accepted job must reach one final
status with a reason (0 lost, or the benchmark fails).

    python benchmarks/bench_load.py --out benchmarks/results/<date>-bench-load-cpu-sqlite.json
    python benchmarks/bench_load.py --database-url postgresql+psycopg://... --out ...-postgres.json

`--database-url` for PostgreSQL: a fresh database is created next to the one named and dropped afterwards.
`--src` imports wanserve from another checkout (to measure an older version with the same load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 1, "num_inference_steps": 1}
FINAL = {"succeeded", "failed", "cancelled", "expired"}


def start_server(
    data_dir: str, database_url: str | None, src: Path, torch_threads: int
) -> tuple[subprocess.Popen, str]:
    env = {
        "OMP_NUM_THREADS": str(torch_threads),
        **os.environ,
        "WANSERVE_DATA_DIR": data_dir,
        "WANSERVE_PORT": "0",
        "WANSERVE_MODELS": "tiny-t2v",
        "WANSERVE_CONCURRENCY": "1",
        "PYTHONPATH": str(src),
    }
    env.pop("WANSERVE_API_KEY", None)
    if database_url:
        env["WANSERVE_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "wanserve", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, log = "", []
    for line in proc.stdout:
        log.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
        if "workers ready" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    if not url:
        raise SystemExit("the server did not start:\n" + "".join(log[-30:]))
    return proc, url


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, duration_s: float, pollers: int, rate: float, server_pid: int) -> dict:
    accepted: list[str] = []
    submits: list[tuple[int, float, bool]] = []  # status, seconds, Retry-After present
    polls: list[tuple[int, float]] = []
    stop_at = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=pollers + 64, max_keepalive_connections=pollers + 64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def submit(i: int) -> None:
            started = time.perf_counter()
            try:
                response = await client.post("/v1/jobs", json={**JOB, "seed": i})
                status, retry_after = response.status_code, "retry-after" in response.headers
                if status == 201:
                    accepted.append(response.json()["id"])
            except httpx.HTTPError:
                status, retry_after = 0, False
            submits.append((status, time.perf_counter() - started, retry_after))

        async def submitter() -> None:
            tasks, i, began = [], 0, time.perf_counter()
            while time.perf_counter() < stop_at:
                tasks.append(asyncio.create_task(submit(i)))
                i += 1
                await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            await asyncio.gather(*tasks)

        async def poller() -> None:
            while not accepted and time.perf_counter() < stop_at:
                await asyncio.sleep(0.01)
            while time.perf_counter() < stop_at:
                job_id = random.choice(accepted)
                started = time.perf_counter()
                try:
                    status = (await client.get(f"/v1/jobs/{job_id}")).status_code
                except httpx.HTTPError:
                    status = 0
                polls.append((status, time.perf_counter() - started))

        began, server_cpu_before, client_cpu_before = time.perf_counter(), cpu_s(server_pid), time.process_time()
        await asyncio.gather(submitter(), *(poller() for _ in range(pollers)))
        wall_s = time.perf_counter() - began
        server_cpu = cpu_s(server_pid) - server_cpu_before
        client_cpu = time.process_time() - client_cpu_before

        # Drain: cancel what still waits, then every accepted job must be final, with a reason when not succeeded.
        queued = (await client.get("/v1/jobs", params={"status": "queued", "limit": 1000})).json()["data"]
        gate = asyncio.Semaphore(16)

        async def cancel(job_id: str) -> None:
            async with gate:
                with contextlib.suppress(httpx.HTTPError):  # the drain below sees whether it ended anyway
                    await client.post(f"/v1/jobs/{job_id}/cancel")

        await asyncio.gather(*(cancel(job["id"]) for job in queued))
        deadline = time.perf_counter() + 300
        finals: dict[str, dict] = {}
        while len(finals) < len(accepted) and time.perf_counter() < deadline:
            for job_id in accepted:
                if job_id not in finals:
                    try:
                        response = await client.get(f"/v1/jobs/{job_id}")
                    except httpx.HTTPError:
                        continue
                    job = response.json() if response.status_code == 200 else {"status": f"http {response.status_code}"}
                    if job.get("status") in FINAL:
                        finals[job_id] = job
            if len(finals) < len(accepted):
                await asyncio.sleep(0.5)
    lost = [j for j in accepted if j not in finals]
    without_reason = [j for j, job in finals.items() if job["status"] != "succeeded" and not job.get("error")]
    ok_polls = [s for code, s in polls if code == 200]
    return {
        "wall_s": round(wall_s, 1),
        "cpu_s": {
            "server": round(server_cpu, 1),
            "load_generator": round(client_cpu, 1),
            "server_ms_per_request": round(1000 * server_cpu / max(1, len(polls) + len(submits)), 2),
        },
        "polls": {
            "by_status": dict(Counter(str(code) for code, _ in polls)),
            "per_s": round(len(ok_polls) / wall_s, 1),
            "p50_ms": percentile_ms(ok_polls, 0.50),
            "p99_ms": percentile_ms(ok_polls, 0.99),
            "error_rate": round(1 - len(ok_polls) / len(polls), 4) if polls else None,
        },
        "submits": {
            "sent": len(submits),
            "by_status": dict(Counter(str(code) for code, _, _ in submits)),
            "p50_ms": percentile_ms([s for _, s, _ in submits], 0.50),
            "p99_ms": percentile_ms([s for _, s, _ in submits], 0.99),
            "429_without_retry_after": sum(1 for code, _, ra in submits if code == 429 and not ra),
        },
        "jobs": {
            "accepted": len(accepted),
            "final_by_status": dict(Counter(job["status"] for job in finals.values())),
            "lost": len(lost),
            "final_without_reason": len(without_reason),
        },
    }


def fresh_postgres(url: str) -> tuple[str, callable]:
    """A new database beside the one `url` names, and a function dropping it."""
    import sqlalchemy

    name = f"bench_load_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    fresh = sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()

    return fresh, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="PostgreSQL server to use (default SQLite in a temporary directory)")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="submissions per second")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of the server: with torch's default (one per core) the tiny model's jobs take every core",
    )
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    load_before = os.getloadavg()
    drop = None
    database_url = args.database_url
    if database_url:
        database_url, drop = fresh_postgres(database_url)
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            proc, url = start_server(data_dir, database_url, args.src, args.torch_threads)
            try:
                result = asyncio.run(load(url, args.duration_s, args.pollers, args.rate, proc.pid))
            finally:
                proc.terminate()
                proc.wait(60)
    finally:
        if drop is not None:
            drop()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "database": "postgresql" if args.database_url else "sqlite",
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": "the machine is shared with other sessions; the load generator runs on the same 2 cores as the server",
        "config": {
            "duration_s": args.duration_s,
            "pollers": args.pollers,
            "submissions_per_s": args.rate,
            "server_torch_threads": args.torch_threads,
            "wanserve_src": str(args.src),
            "job": JOB,
        },
        **result,
        "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if result["jobs"]["lost"] or result["jobs"]["final_without_reason"]:
        raise SystemExit("jobs were lost or ended without a reason")


if __name__ == "__main__":
    main()
