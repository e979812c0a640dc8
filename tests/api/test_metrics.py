"""Metrics: own registry per instance, counters and histograms from events, live gauges from callbacks."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from wanserve.api.metrics import DeviceMemory, ServiceMetrics, metrics_router


def _samples(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_counters_move() -> None:
    metrics = ServiceMetrics()
    metrics.job_submitted("tiny-t2v", "t2v")
    metrics.job_submitted("tiny-t2v", "t2v")
    metrics.job_finished("tiny-t2v", "succeeded", total_s=3.0, run_s=2.0)
    metrics.step_observed("tiny-t2v", 0.2)
    samples = _samples(metrics)
    assert samples[("wanserve_jobs_submitted_total", (("kind", "t2v"), ("model", "tiny-t2v")))] == 2
    assert samples[("wanserve_jobs_finished_total", (("model", "tiny-t2v"), ("status", "succeeded")))] == 1
    assert samples[("wanserve_job_duration_seconds_count", (("model", "tiny-t2v"), ("status", "succeeded")))] == 1
    assert samples[("wanserve_job_duration_seconds_sum", (("model", "tiny-t2v"), ("status", "succeeded")))] == 3.0
    assert samples[("wanserve_job_run_seconds_sum", (("model", "tiny-t2v"), ("status", "succeeded")))] == 2.0
    assert samples[("wanserve_denoising_step_seconds_bucket", (("le", "0.25"), ("model", "tiny-t2v")))] == 1
    assert samples[("wanserve_denoising_step_seconds_bucket", (("le", "0.1"), ("model", "tiny-t2v")))] == 0


def test_metrics_instances_do_not_share_state() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()
    first.job_submitted("tiny-t2v", "t2v")
    assert ("wanserve_jobs_submitted_total", (("kind", "t2v"), ("model", "tiny-t2v"))) not in _samples(second)


def test_metrics_live_gauges_read_callbacks() -> None:
    counts = {"queued": 3, "running": 1}
    devices = [DeviceMemory("cuda:0", 10, 20, 80)]
    metrics = ServiceMetrics(job_counts=lambda: counts, queue_depth=lambda: 3, devices=lambda: devices)
    samples = _samples(metrics)
    assert samples[("wanserve_jobs", (("status", "queued"),))] == 3
    assert samples[("wanserve_jobs", (("status", "succeeded"),))] == 0
    assert samples[("wanserve_queue_depth", ())] == 3
    assert samples[("wanserve_device_memory_reserved_bytes", (("device", "cuda:0"),))] == 20
    assert samples[("wanserve_device_memory_total_bytes", (("device", "cuda:0"),))] == 80
    counts["queued"] = 0
    assert _samples(metrics)[("wanserve_jobs", (("status", "queued"),))] == 0


def test_metrics_scrape_survives_failing_source() -> None:
    def broken() -> int:
        raise RuntimeError("store down")

    metrics = ServiceMetrics(job_counts=lambda: {"queued": 1}, queue_depth=broken)
    samples = _samples(metrics)
    assert samples[("wanserve_jobs", (("status", "queued"),))] == 1
    assert ("wanserve_queue_depth", ()) not in samples


def test_metrics_endpoint_serves_text_format() -> None:
    metrics = ServiceMetrics(job_counts=lambda: {"succeeded": 2})
    app = FastAPI()
    app.include_router(metrics_router(metrics))
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"wanserve_jobs", "wanserve_jobs_submitted", "wanserve_denoising_step_seconds"} <= names
