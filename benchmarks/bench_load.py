"""Status polls under load, with nothing lost: the recommended deployment, a real `wanserve serve --no-workers` (the
API alone) and a `wanserve worker --device cpu` process (tiny model) sharing the database and the storage, held for
`--duration-s` under `--pollers` concurrent clients polling `GET /v1/jobs/{id}` of the jobs made so far (closed loop:
each poller sends its next request when the last one answered) and `--rate` submissions a second (open loop).

The load generator is a minimal asyncio HTTP/1.1 keep-alive client (one connection per poller), cheap enough that
it leaves the CPU to the server on a 2-core machine (an httpx client took as much CPU as the server it measured).
The worker runs at `--worker-nice` (default 10): on a real deployment it sits on a GPU host, and here its CPU-bound
tiny-model jobs would otherwise take the API's core. `--in-process` runs the old single `wanserve serve` (API and
worker in one process) for comparison.

Reports the answers by status code (submits and polls), p50/p99 of each, poll throughput, every 429 with or without
`Retry-After`, and jobs lost: after the run every queued job is cancelled and every accepted job must reach one final
status with a reason (0 lost, or the benchmark fails).

    python benchmarks/bench_load.py --api-processes 2 --out benchmarks/results/<date>-bench-load-cpu-sqlite.json
    python benchmarks/bench_load.py --api-processes 2 --database-url postgresql+psycopg://... --out ...-postgres.json

`--api-processes N` starts N API processes (each on its own port; poller and submission `i` go to process
`i % N`, as a balancer would spread connections); the access log is off unless `--access-log`. The JSON has a
5-second timeline of the polls (rate and p99 per window) to show stalls.

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
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path

import httpx

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 1, "num_inference_steps": 1}
FINAL = {"succeeded", "failed", "cancelled", "expired"}


def start_process(args: list[str], env: dict[str, str], ready: str, nice: int = 0) -> tuple[subprocess.Popen, str]:
    """`python -m wanserve <args>`; waits for `ready` in its log. Returns the process and its URL (if it listens)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wanserve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    url, log = "", []
    for line in proc.stdout:
        log.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
        if ready in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    if proc.poll() is not None or not any(ready in line for line in log):
        proc.kill()
        raise SystemExit(f"`wanserve {' '.join(args)}` did not start:\n" + "".join(log[-30:]))
    return proc, url


def start_deployment(
    data_dir: str,
    database_url: str | None,
    src: Path,
    torch_threads: int,
    in_process: bool,
    worker_nice: int,
    access_log: bool,
    api_processes: int,
) -> tuple[list[subprocess.Popen], subprocess.Popen | None, list[str]]:
    """The API processes and the worker process (or one `wanserve serve` with both): (API processes, worker, the
    API processes' URLs)."""
    env = {
        "OMP_NUM_THREADS": str(torch_threads),
        **os.environ,
        "WANSERVE_DATA_DIR": data_dir,
        "WANSERVE_PORT": "0",
        "WANSERVE_MODELS": "tiny-t2v",
        "WANSERVE_CONCURRENCY": "1",
        "WANSERVE_ACCESS_LOG": "true" if access_log else "false",
        "PYTHONPATH": str(src),
    }
    env.pop("WANSERVE_API_KEY", None)
    if database_url:
        env["WANSERVE_DATABASE_URL"] = database_url
    if in_process:
        proc, url = start_process(["serve"], env, "workers ready")
        return [proc], None, [url]
    apis = [start_process(["serve", "--no-workers"], env, "listening on") for _ in range(api_processes)]
    worker, _ = start_process(["worker", "--device", "cpu"], env, "workers ready", nice=worker_nice)
    return [proc for proc, _ in apis], worker, [url for _, url in apis]


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One HTTP/1.1 keep-alive connection: a request at a time, responses read by their Content-Length."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.idle_since = time.perf_counter()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            self.writer.write(head.encode() + b"\r\n" + body)
            lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            content = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        except BaseException:
            self.close()
            raise
        if headers.get(b"connection") == b"close":
            self.close()
        self.idle_since = time.perf_counter()
        return int(lines[0].split(b" ", 2)[1]), headers, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(urls: list[str], duration_s: float, pollers: int, rate: float, pids: dict[str, list[int]]) -> dict:
    """The load on the API processes at `urls`: poller `i` and submission `i` go to `urls[i % len(urls)]`, as a
    balancer spreading connections would send them."""
    accepted: list[str] = []
    submits: list[tuple[int, float, bool]] = []  # status, seconds, Retry-After present
    polls: list[tuple[int, float]] = []
    poll_ends: list[float] = []  # when each poll was answered (for the timeline)
    stop_at = time.perf_counter() + duration_s
    addresses = [(httpx.URL(url).host, httpx.URL(url).port) for url in urls]
    idle_submitters: list[deque[Connection]] = [deque() for _ in urls]  # the most recently used on the right
    timeout_s = 60.0

    async def submit(i: int) -> None:
        # A connection idle for a while may have been closed by the server (uvicorn's keep-alive is 5 s): a request
        # written into it would fail without reaching the server, so such connections are dropped, never reused.
        idle = idle_submitters[i % len(urls)]
        while idle and time.perf_counter() - idle[0].idle_since > 2.0:
            idle.popleft().close()
        connection = idle.pop() if idle else Connection(*addresses[i % len(urls)])
        started = time.perf_counter()
        try:
            body = json.dumps({**JOB, "seed": i}).encode()
            status, headers, content = await asyncio.wait_for(connection.request("POST", "/v1/jobs", body), timeout_s)
            retry_after = b"retry-after" in headers
            if status == 201:
                accepted.append(json.loads(content)["id"])
            idle.append(connection)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            connection.close()
            status, retry_after = 0, False
        submits.append((status, time.perf_counter() - started, retry_after))

    async def submitter() -> None:
        tasks, i, began = [], 0, time.perf_counter()
        while time.perf_counter() < stop_at:
            tasks.append(asyncio.create_task(submit(i)))
            i += 1
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)

    async def poller(i: int) -> None:
        connection = Connection(*addresses[i % len(urls)])
        while not accepted and time.perf_counter() < stop_at:
            await asyncio.sleep(0.01)
        while time.perf_counter() < stop_at:
            job_id = random.choice(accepted)
            started = time.perf_counter()
            try:
                status = (await asyncio.wait_for(connection.request("GET", f"/v1/jobs/{job_id}"), timeout_s))[0]
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                connection.close()
                status = 0
            polls.append((status, time.perf_counter() - started))
            poll_ends.append(time.perf_counter())
        connection.close()

    every_pid = [pid for group in pids.values() for pid in group]
    began, cpu_before, client_cpu_before = time.perf_counter(), {p: cpu_s(p) for p in every_pid}, time.process_time()
    await asyncio.gather(submitter(), *(poller(i) for i in range(pollers)))
    wall_s = time.perf_counter() - began
    cpu = {role: sum(cpu_s(p) - cpu_before[p] for p in group) for role, group in pids.items()}
    client_cpu = time.process_time() - client_cpu_before
    for idle in idle_submitters:
        for connection in idle:
            connection.close()

    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=urls[0], timeout=60, limits=limits) as client:
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
    window_s, windows = 5.0, {}
    for (code, seconds), ended in zip(polls, poll_ends, strict=True):
        if code == 200:
            windows.setdefault(int((ended - began) // window_s), []).append(seconds)
    without_reason = [j for j, job in finals.items() if job["status"] != "succeeded" and not job.get("error")]
    ok_polls = [s for code, s in polls if code == 200]
    return {
        "wall_s": round(wall_s, 1),
        "cpu_s": {
            **{role: round(seconds, 1) for role, seconds in cpu.items()},
            "load_generator": round(client_cpu, 1),
            "api_ms_per_request": round(1000 * cpu["api"] / max(1, len(polls) + len(submits)), 2),
        },
        "polls": {
            "by_status": dict(Counter(str(code) for code, _ in polls)),
            "per_s": round(len(ok_polls) / wall_s, 1),
            "p50_ms": percentile_ms(ok_polls, 0.50),
            "p99_ms": percentile_ms(ok_polls, 0.99),
            "error_rate": round(1 - len(ok_polls) / len(polls), 4) if polls else None,
            "timeline": [
                {"from_s": i * window_s, "per_s": round(len(v) / window_s, 1), "p99_ms": percentile_ms(v, 0.99)}
                for i, v in sorted(windows.items())
            ],
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
    parser.add_argument(
        "--worker-nice", type=int, default=10, help="niceness of the worker process (its jobs yield the CPU to the API)"
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="`wanserve serve --no-workers` processes, each on its own port; the load is spread over them",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="one `wanserve serve` (API and worker in one process), as before"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="keep the API's access log (default: WANSERVE_ACCESS_LOG=false)"
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
            apis, worker, urls = start_deployment(
                data_dir,
                database_url,
                args.src,
                args.torch_threads,
                args.in_process,
                args.worker_nice,
                args.access_log,
                args.api_processes,
            )
            pids = {"api": [p.pid for p in apis], **({"worker": [worker.pid]} if worker else {})}
            try:
                with contextlib.suppress(ImportError):
                    import uvloop  # the load generator's own cost: uvloop's streams are cheaper than asyncio's

                    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
                result = asyncio.run(load(urls, args.duration_s, args.pollers, args.rate, pids))
            finally:
                for proc in [*apis, *([worker] if worker else [])]:
                    proc.terminate()
                for proc in [*apis, *([worker] if worker else [])]:
                    proc.wait(60)
    finally:
        if drop is not None:
            drop()
    deployment = (
        "wanserve serve (API and worker in one process)"
        if args.in_process
        else f"{args.api_processes} x wanserve serve --no-workers, wanserve worker --device cpu, nice {args.worker_nice}"
    )
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "database": "postgresql" if args.database_url else "sqlite",
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": "the machine is shared with other sessions; the load generator runs on the same 2 cores as the server",
        "deployment": deployment,
        "config": {
            "duration_s": args.duration_s,
            "pollers": args.pollers,
            "submissions_per_s": args.rate,
            "server_torch_threads": args.torch_threads,
            "access_log": args.access_log,
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
