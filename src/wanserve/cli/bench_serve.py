"""`wanserve bench serve`: the multi-device service's benchmark tool, against a running wanserve (registered on
`wanserve bench` by `cli.bench`).

`--quick` sends 1 request, the default 3, `--concurrent --users N` sends them from N clients at once (at least one
each). Each request is a job followed to its end; the report gives the success rate, latency (submit to final
status, as the client saw it) p50/p95/p99, throughput, and the server's queue wait against its run time.
`--save results.json` writes the report and every request.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import typer

from wanserve.cli.service_client import ServiceClient, ServiceError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestResult:
    """One benchmark request."""

    index: int
    user: int
    job_id: str | None
    status: str
    """The job's final status, or `refused` / `error` when there was no job to follow."""
    latency_s: float
    """Client-side: from sending the request to seeing the final status."""
    queue_wait_s: float | None
    """Server-side: created to started."""
    run_s: float | None
    """Server-side: started to finished."""
    error: str | None = None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def run_request(client: ServiceClient, body: dict[str, Any], index: int, user: int, timeout_s: float) -> RequestResult:
    """Submits one job and follows it to its end."""
    started = time.perf_counter()
    try:
        job = client.submit(body)
    except ServiceError as exc:
        return RequestResult(
            index, user, None, "refused", round(time.perf_counter() - started, 3), None, None, str(exc)
        )
    try:
        job = client.wait(job["id"], timeout_s)
    except ServiceError as exc:
        return RequestResult(
            index, user, job["id"], "error", round(time.perf_counter() - started, 3), None, None, str(exc)
        )
    error = job.get("error") or {}
    return RequestResult(
        index,
        user,
        job["id"],
        job["status"],
        round(time.perf_counter() - started, 3),
        _seconds_between(job.get("created_at"), job.get("started_at")),
        _seconds_between(job.get("started_at"), job.get("finished_at")),
        error.get("message"),
    )


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    array = np.asarray(values, dtype=float)
    return {
        "mean": round(float(array.mean()), 3),
        **{f"p{q}": round(float(np.percentile(array, q)), 3) for q in (50, 95, 99)},
    }


def summarize(results: list[RequestResult], wall_s: float) -> dict[str, Any]:
    """Success rate, latency percentiles, throughput, queue wait and run time of finished requests."""
    ok = [r for r in results if r.status == "succeeded"]
    return {
        "requests": len(results),
        "succeeded": len(ok),
        "failed": len(results) - len(ok),
        "success_rate": round(len(ok) / len(results), 4) if results else 0.0,
        "wall_s": round(wall_s, 3),
        "throughput_jobs_per_min": round(60 * len(ok) / wall_s, 3) if wall_s > 0 else None,
        "latency_s": _stats([r.latency_s for r in ok]),
        "queue_wait_s": _stats([r.queue_wait_s for r in ok if r.queue_wait_s is not None]),
        "run_s": _stats([r.run_s for r in ok if r.run_s is not None]),
    }


def run_bench(
    client: ServiceClient, body: dict[str, Any], requests: int, users: int, timeout_s: float, on_result=None
) -> tuple[list[RequestResult], float]:
    """`requests` jobs sent by `users` clients at once (user u sends requests u, u + users, ...)."""
    started = time.perf_counter()

    def user_loop(user: int) -> list[RequestResult]:
        done = []
        for index in range(user, requests, users):
            result = run_request(client, body, index, user, timeout_s)
            if on_result is not None:
                on_result(result)
            done.append(result)
        return done

    with ThreadPoolExecutor(max_workers=users, thread_name_prefix="bench-user") as pool:
        results = [r for batch in pool.map(user_loop, range(users)) for r in batch]
    return sorted(results, key=lambda r: r.index), time.perf_counter() - started


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f} {unit}".rstrip()


def _print_report(summary: dict[str, Any], config: dict[str, Any]) -> None:
    from rich.console import Console

    from wanserve.cli.tables import Column, print_table

    lat, wait, run = summary["latency_s"], summary["queue_wait_s"], summary["run_s"]
    rows = [
        ["server", config["url"]],
        ["mode", f"{config['users']} concurrent user(s), {config['requests']} request(s)"],
        ["success rate", f"{summary['success_rate'] * 100:.1f}% ({summary['succeeded']}/{summary['requests']})"],
        ["latency p50 / p95 / p99", f"{_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])}"],
        ["throughput", f"{_fmt(summary['throughput_jobs_per_min'], 'jobs/min')} over {_fmt(summary['wall_s'])}"],
        ["queue wait mean / p95", f"{_fmt(wait['mean'])} / {_fmt(wait['p95'])}"],
        ["run time mean / p95", f"{_fmt(run['mean'])} / {_fmt(run['p95'])}"],
    ]
    print_table(Console(), "wanserve bench serve", (Column("measure"), Column("value", foldable=True)), rows)


def _job_body(model, prompt, size, frames, steps, seed) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt, "seed": seed}
    if model:
        body["model"] = model
    if size:
        width, sep, height = size.lower().partition("x")
        if not (sep and width.isdigit() and height.isdigit()):
            raise typer.BadParameter(f"must look like 832x480 (WIDTHxHEIGHT), got {size!r}", param_hint="--size")
        body["width"], body["height"] = int(width), int(height)
    if frames is not None:
        body["num_frames"] = frames
    if steps is not None:
        body["num_inference_steps"] = steps
    return body


def add_serve_command(bench: typer.Typer) -> None:
    """Adds `serve` to the `wanserve bench` group."""

    @bench.command("serve")
    def bench_serve(
        url: str = typer.Option("http://127.0.0.1:8000", envvar="WANSERVE_URL", help="The running service."),
        quick: bool = typer.Option(False, "--quick", help="One request."),
        requests: int = typer.Option(3, "--requests", "-n", min=1, help="Requests in all."),
        concurrent: bool = typer.Option(False, "--concurrent", help="Send from several clients at once."),
        users: int = typer.Option(2, "--users", min=1, max=256, help="Concurrent clients (with --concurrent)."),
        save: Path | None = typer.Option(None, "--save", help="Write the report and every request as JSON here."),
        model: str | None = typer.Option(None, "--model", "-m", help="Model.", show_default="the server's first"),
        prompt: str = typer.Option("a red fox running through snow", "--prompt", "-p", help="Prompt of every job."),
        size: str | None = typer.Option(None, help="WIDTHxHEIGHT.", show_default="the model's"),
        frames: int | None = typer.Option(None, help="Frames, 4k+1.", show_default="the model's"),
        steps: int | None = typer.Option(None, help="Denoising steps.", show_default="the model's"),
        seed: int = typer.Option(0, help="Seed of every job."),
        timeout_s: float = typer.Option(3600.0, "--timeout-s", min=1, help="Longest wait for one job, seconds."),
        api_key: str | None = typer.Option(None, envvar="WANSERVE_API_KEY", help="Bearer key, if the server has one."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
    ) -> None:
        """Benchmark a running service: success rate, latency p50/p95/p99, throughput, queue wait and run time."""
        # 1. Check the options and the server before sending any job.
        body = _job_body(model, prompt, size, frames, steps, seed)
        users = users if concurrent else 1
        total = 1 if quick else max(requests, users)
        users = min(users, total)
        try:
            client = ServiceClient(url, api_key=api_key)
            status, health = client.health()
        except ServiceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        if status != 200:
            typer.echo(f"error: {url} is not ready ({health.get('phase')}: {health.get('detail')})", err=True)
            raise typer.Exit(code=1)

        # 2. Run, showing each request as it ends.
        def show(result: RequestResult) -> None:
            if not as_json:
                extra = f" ({result.error})" if result.error else ""
                typer.echo(f"request {result.index + 1}/{total}: {result.status} in {result.latency_s:.2f} s{extra}")

        results, wall_s = run_bench(client, body, total, users, timeout_s, on_result=show)
        client.close()

        # 3. Report.
        config = {"url": url, "requests": total, "users": users, "job": body}
        summary = summarize(results, wall_s)
        report = {"config": config, "summary": summary, "results": [asdict(r) for r in results]}
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_report(summary, config)
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(report, indent=2) + "\n")
            if not as_json:
                typer.echo(f"saved {save}")
        if summary["succeeded"] < summary["requests"]:
            raise typer.Exit(code=1)
