"""`wanserve doctor --health / --memory / --pipeline`: checks of a running service (the multi-device service's
diagnostic tool did the same): is it ready and what does it serve, how much memory does it hold, and does a tiny
generation go through it end to end."""

from __future__ import annotations

import base64
import io
import time
from dataclasses import asdict
from typing import Any

from wanserve.cli.service_client import ServiceClient, ServiceError
from wanserve.engine.diagnostics import CheckResult

GIB = 1024**3


def check_health(client: ServiceClient) -> CheckResult:
    """`/health`: ready or not, and why; what it serves."""
    code, health = client.health()
    models = health.get("models", [])
    unavailable = [f"{m['name']} ({m['unavailable_reason']})" for m in models if m.get("unavailable_reason")]
    served = ", ".join(m["name"] for m in models)
    message = f"{code} {health.get('phase')}: {health.get('detail')}; serves {served}"
    if unavailable:
        message += f"; cannot serve {', '.join(unavailable)}"
    if health.get("random_weights"):
        message += "; RANDOM weights (noise outputs)"
    message += f"; queue {health.get('queue_depth')}, running {health.get('running_jobs')}"
    status = "ok" if code == 200 and not unavailable else "warn" if code == 200 else "fail"
    return CheckResult("health", status, message, {"http_status": code, "health": health})


def check_memory(client: ServiceClient) -> CheckResult:
    """The service's memory: its process, the host, each accelerator its workers use."""
    _code, health = client.health()
    memory = health.get("memory") or {}
    if not memory:
        return CheckResult("memory", "warn", "the service reports no memory figures (an older wanserve?)")
    parts = [
        f"process {memory['process_rss_bytes'] / GIB:.2f} GiB",
        f"host {memory['system_available_bytes'] / GIB:.1f}/{memory['system_total_bytes'] / GIB:.1f} GiB free",
    ]
    status = "ok" if memory["system_available_bytes"] > 0.05 * memory["system_total_bytes"] else "warn"
    for device in memory.get("devices", []):
        free = device["total_bytes"] - device["reserved_bytes"]
        parts.append(
            f"{device['device']} {device['allocated_bytes'] / GIB:.1f} GiB allocated, "
            f"{device['reserved_bytes'] / GIB:.1f} reserved of {device['total_bytes'] / GIB:.1f}"
        )
        if free < 0.05 * device["total_bytes"]:
            status = "warn"
    if not memory.get("devices"):
        parts.append("no accelerator memory reported (CPU workers)")
    return CheckResult("memory", status, "; ".join(parts), memory)


def _gray_png_data_url() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def check_pipeline(client: ServiceClient, model: str | None = None, timeout_s: float = 600.0) -> CheckResult:
    """A tiny generation through the service (2 steps, 5 frames, the model's smallest default otherwise): submit,
    follow to the end, check the MP4 is there. Models that need a first frame get a gray one."""
    body: dict[str, Any] = {"prompt": "wanserve doctor pipeline check", "num_inference_steps": 2, "num_frames": 5}
    if model:
        body["model"] = model
    started = time.perf_counter()
    try:
        job = client.submit(body)
    except ServiceError as exc:
        if "`image`" not in str(exc):
            return CheckResult("pipeline", "fail", str(exc))
        job = client.submit({**body, "image": _gray_png_data_url()})
    job = client.wait(job["id"], timeout_s)
    elapsed = time.perf_counter() - started
    data = {"job_id": job["id"], "status": job["status"], "model": job["model"], "elapsed_s": round(elapsed, 3)}
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        return CheckResult("pipeline", "fail", f"job {job['id']} {job['status']}: {error.get('message')}", data)
    return CheckResult(
        "pipeline",
        "ok",
        f"{job['model']}: 2 steps, {job['params'].get('num_frames')} frames "
        f"{job['params'].get('width')}x{job['params'].get('height')} in {elapsed:.1f} s; MP4 at {job['content_url']}",
        data,
    )


def run_service_checks(
    url: str, health: bool, memory: bool, pipeline: bool, model: str | None = None, api_key: str | None = None
) -> list[CheckResult]:
    """The checks asked for, in order; an unreachable service is one failed check."""
    try:
        client = ServiceClient(url, api_key=api_key)
    except ServiceError as exc:
        return [CheckResult("service", "fail", str(exc))]
    checks = []
    try:
        if health:
            checks.append(check_health(client))
        if memory:
            checks.append(check_memory(client))
        if pipeline:
            checks.append(check_pipeline(client, model))
    except ServiceError as exc:
        checks.append(CheckResult("service", "fail", str(exc)))
    finally:
        client.close()
    return checks


def checks_to_dict(url: str, checks: list[CheckResult]) -> dict[str, Any]:
    """The JSON form of the service checks."""
    return {"url": url, "ok": all(c.status != "fail" for c in checks), "checks": [asdict(c) for c in checks]}
