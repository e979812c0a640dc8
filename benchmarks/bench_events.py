"""Event-stream delay across processes (not a test): how long a step event written by a worker in one process takes
to reach a client streaming the job from an API process without workers.

Runs a `redis-server` (Debian's package) on a free loopback port unless `--broker-url` is given, a worker process
(`wanserve serve`, consuming the Celery queue) and an API process without workers, both over the PostgreSQL database
`--database-url` (its event push is LISTEN/NOTIFY). Submits `--jobs` jobs one after another through the API, follows
each job's SSE stream, and compares every event's arrival at the client with the moment the worker wrote it
(`job_events.created_at`, read from the database afterwards; one machine, one clock).

    python benchmarks/bench_events.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/bench \
        --jobs 10 --steps 20 --out benchmarks/results/<date>-bench-events-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict[str, str], ready: str) -> tuple[subprocess.Popen, str]:
    """Starts a process, waits for its log line `ready`; returns it and the URL it listens on."""
    full_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p),
    }
    proc = subprocess.Popen(args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = ""
    for line in proc.stdout:
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
        if ready in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    if proc.poll() is not None:
        raise SystemExit(f"{args} did not start")
    return proc, url


def serve_api() -> None:
    """`--serve-api`: the API without workers, on a free port (settings from the environment)."""
    import logging

    import uvicorn

    from wanserve.api.app import create_app
    from wanserve.config import Settings

    logging.basicConfig(level=logging.WARNING)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(Settings(), start_workers=False)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]} (api ready)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def follow(url: str, job_id: str) -> tuple[float, list[tuple[int, str, float]]]:
    """When the stream was opened, and (seq, event kind, arrival unix time) of every event of the job's stream."""
    opened_at, arrived = time.time(), []
    fields: dict[str, str] = {}
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=300) as response:
        for line in response.iter_lines():
            if line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
            elif "data" in fields:  # a blank line ends an event
                arrived.append((int(fields["id"]), fields.get("event", "message"), time.time()))
                fields = {}
    return opened_at, arrived


def written_at(database_url: str, job_id: str) -> dict[int, float]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, created_at FROM job_events WHERE job_id = :id"), {"id": job_id}).all()
    engine.dispose()
    return {seq: created.replace(tzinfo=timezone.utc).timestamp() for seq, created in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--broker-url", help="a running Redis; default: start redis-server on a free port")
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve-api", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_api:
        return serve_api()

    processes: list[subprocess.Popen] = []
    data = Path(tempfile.mkdtemp(prefix="bench-events-"))
    try:
        broker = args.broker_url
        if broker is None:
            port = free_port()
            redis_bin = shutil.which("redis-server") or "redis-server"
            redis = subprocess.Popen(
                [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL
            )
            processes.append(redis)
            broker = f"redis://127.0.0.1:{port}/0"
        env = {"WANSERVE_DATABASE_URL": args.database_url, "WANSERVE_BROKER_URL": broker, "WANSERVE_MODELS": "tiny-t2v"}
        worker, _ = start(
            [sys.executable, "-m", "wanserve", "serve"],
            {**env, "WANSERVE_DATA_DIR": str(data / "worker"), "WANSERVE_PORT": "0", "WANSERVE_CONCURRENCY": "1"},
            "workers ready",
        )
        processes.append(worker)
        api, url = start(
            [sys.executable, __file__, "--database-url", args.database_url, "--serve-api"],
            {**env, "WANSERVE_DATA_DIR": str(data / "api")},
            "api ready",
        )
        processes.append(api)

        job = {
            "model": "tiny-t2v",
            "prompt": "a cat",
            "width": 64,
            "height": 64,
            "num_frames": 5,
            "num_inference_steps": args.steps,
        }
        load_before = os.getloadavg()[0]
        step_delays_ms: list[float] = []
        all_delays_ms: list[float] = []
        missing_steps = 0
        for n in range(args.jobs):
            job_id = httpx.post(f"{url}/v1/jobs", json={**job, "seed": n}, timeout=60).json()["id"]
            opened_at, arrivals = follow(url, job_id)
            written = written_at(args.database_url, job_id)
            missing_steps += args.steps - len({seq for seq, kind, _ in arrivals if kind == "step"})
            for seq, kind, at in arrivals:
                if written[seq] >= opened_at:  # events written before the stream opened are read, not pushed
                    delay = (at - written[seq]) * 1000
                    all_delays_ms.append(delay)
                    if kind == "step":
                        step_delays_ms.append(delay)
        result = {
            "what": "delay from a step event written by the worker (job_events.created_at) to its arrival at an SSE client of another process",
            "jobs": args.jobs,
            "steps_per_job": args.steps,
            "step_events": len(step_delays_ms),
            "steps_missing_from_streams": missing_steps,
            "step_delay_ms_median": round(statistics.median(step_delays_ms), 1),
            "step_delay_ms_p90": round(statistics.quantiles(step_delays_ms, n=10)[-1], 1),
            "step_delay_ms_max": round(max(step_delays_ms), 1),
            "all_events_delay_ms_median": round(statistics.median(all_delays_ms), 1),
            "push": "PostgreSQL LISTEN/NOTIFY; worker dispatch by Celery over Redis",
            "note": "the worker batches step events at most every 0.2 s (WorkerConfig.progress_flush_s), so a step may "
            "reach the event log up to 0.2 s after it ran; this measures event log -> client",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "command": "python " + " ".join(sys.argv),
        }
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for proc in reversed(processes):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
