"""Submission latency and throughput of a real `wanserve serve` (not a test).

Starts a server (tiny model, SQLite in a temporary data directory, or PostgreSQL with `--database-url`) unless
`--url` points at a running one, submits `--jobs` jobs from `--clients` concurrent clients, waits until every job is
final, and reports submit latency p50/p99 (ms) and completed jobs per minute.

    python benchmarks/bench_submit.py --jobs 200 --clients 16 --out benchmarks/results/<date>-bench-submit.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx

JOB = {
    "model": "tiny-t2v",
    "prompt": "a cat",
    "width": 64,
    "height": 64,
    "num_frames": 1,
    "num_inference_steps": 1,
    "guidance_scale": 1.0,
}


def start_server(data_dir: str, database_url: str | None, concurrency: int) -> tuple[subprocess.Popen, str]:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {
        **os.environ,
        "WANSERVE_DATA_DIR": data_dir,
        "WANSERVE_PORT": "0",
        "WANSERVE_MODELS": "tiny-t2v",
        "WANSERVE_CONCURRENCY": str(concurrency),
        "WANSERVE_MAX_QUEUE": "100000",
        "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p),
    }
    if database_url:
        env["WANSERVE_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "wanserve", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = ""
    for line in proc.stdout:
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
        if "workers ready" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    if not url:
        raise SystemExit("the server did not start")
    return proc, url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(url: str, jobs: int, clients: int) -> dict:
    latencies_ms: list[float] = []
    ids: list[str] = []
    with httpx.Client(base_url=url, timeout=120) as client:

        def submit(i: int) -> None:
            started = time.perf_counter()
            response = client.post("/v1/jobs", json={**JOB, "seed": i})
            latencies_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            ids.append(response.json()["id"])

        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(submit, range(jobs)))
        submitted_s = time.perf_counter() - began
        while True:  # a benchmark may poll; one request per half second
            counts = {
                s: client.get("/v1/jobs", params={"status": s, "limit": 1}).json()["count"]
                for s in ("queued", "running")
            }
            if counts["queued"] + counts["running"] == 0:
                break
            time.sleep(0.5)
        elapsed_s = time.perf_counter() - began
        succeeded = sum(client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded" for job_id in ids)
    return {
        "jobs": jobs,
        "clients": clients,
        "succeeded": succeeded,
        "submit_latency_ms_p50": round(statistics.median(latencies_ms), 1),
        "submit_latency_ms_p99": round(percentile(latencies_ms, 0.99), 1),
        "submissions_per_s": round(jobs / submitted_s, 1),
        "jobs_per_minute": round(succeeded / elapsed_s * 60, 1),
        "elapsed_s": round(elapsed_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server; default: start one")
    parser.add_argument("--database-url", help="database of the started server (default SQLite)")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=1, help="workers of the started server")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    load_before = os.getloadavg()
    proc = None
    with tempfile.TemporaryDirectory() as data_dir:
        url = args.url
        if url is None:
            proc, url = start_server(data_dir, args.database_url, args.concurrency)
        try:
            result = run(url, args.jobs, args.clients)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(60)
    result.update(
        {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "database": "postgresql" if args.database_url else "sqlite",
            "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "note": "the machine is shared: other work running on it at the same time slows the generations",
            "job": JOB,
            "command": " ".join(["python", *sys.argv]),
        }
    )
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
