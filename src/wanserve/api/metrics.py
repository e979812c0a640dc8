"""Prometheus metrics at `/metrics`, one registry per app instance (no process-global state).

Counters and histograms are fed by job events (`job_submitted`, `job_finished`, `step_observed`); gauges that
describe the present (jobs by status, queue depth, device memory) are read from callbacks at scrape time, so they
are true even when other processes (workers on other hosts) changed the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# Generations take seconds to hours; steps take milliseconds (tiny models) to a minute (14B at 720p on one GPU).
JOB_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
STEP_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, float("inf"))


@dataclass(frozen=True)
class DeviceMemory:
    """One accelerator's memory as reported by the worker that owns it, in bytes."""

    device: str
    allocated_bytes: int
    reserved_bytes: int
    total_bytes: int


JobCounts = Callable[[], Mapping[str, int]]
"""Jobs per status, straight from the store."""
QueueDepth = Callable[[], int]
"""Jobs waiting to be claimed."""
DeviceStats = Callable[[], Sequence[DeviceMemory]]


class _LiveCollector(Collector):
    """Reads the store and the devices when Prometheus scrapes."""

    def __init__(self, job_counts: JobCounts | None, queue_depth: QueueDepth | None, devices: DeviceStats | None):
        self._job_counts = job_counts
        self._queue_depth = queue_depth
        self._devices = devices

    def collect(self) -> Iterator[Metric]:
        if self._job_counts is not None:
            jobs = GaugeMetricFamily("wanserve_jobs", "Jobs in the store by status.", labels=["status"])
            counts = self._safe(self._job_counts, {})
            for status in sorted(set(JOB_STATUSES) | set(counts)):
                jobs.add_metric([status], counts.get(status, 0))
            yield jobs
        if self._queue_depth is not None:
            depth = self._safe(self._queue_depth, None)
            if depth is not None:
                yield GaugeMetricFamily("wanserve_queue_depth", "Jobs waiting for a worker.", value=depth)
        if self._devices is not None:
            families = {
                "allocated_bytes": GaugeMetricFamily(
                    "wanserve_device_memory_allocated_bytes", "Accelerator memory held by tensors.", labels=["device"]
                ),
                "reserved_bytes": GaugeMetricFamily(
                    "wanserve_device_memory_reserved_bytes",
                    "Accelerator memory reserved by the allocator.",
                    labels=["device"],
                ),
                "total_bytes": GaugeMetricFamily(
                    "wanserve_device_memory_total_bytes", "Accelerator memory in total.", labels=["device"]
                ),
            }
            for stats in self._safe(self._devices, ()):
                for attr, family in families.items():
                    family.add_metric([stats.device], getattr(stats, attr))
            yield from families.values()

    @staticmethod
    def _safe(read, default):
        try:
            return read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because one source did
            logger.exception("metrics source failed during scrape")
            return default


@dataclass(frozen=True)
class WorkerGauges:
    """One registered worker, as the `workers` table reports it (any process, any host)."""

    worker: str
    host: str
    state: str
    heartbeat_age_s: float
    jobs_done: int


WorkerStats = Callable[[], Sequence[WorkerGauges]]


class _WorkerCollector(Collector):
    """Per-worker gauges, read from the `workers` table at scrape time."""

    def __init__(self, workers: WorkerStats):
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        labels = ["worker", "host"]
        up = GaugeMetricFamily("wanserve_worker_up", "1 while the worker heartbeats and can take jobs.", labels=labels)
        busy = GaugeMetricFamily("wanserve_worker_busy", "1 while the worker runs a job.", labels=labels)
        state = GaugeMetricFamily(
            "wanserve_worker_state", "1 for the worker's present state.", labels=[*labels, "state"]
        )
        age = GaugeMetricFamily(
            "wanserve_worker_heartbeat_age_seconds", "Seconds since the worker's last heartbeat.", labels=labels
        )
        done = GaugeMetricFamily(
            "wanserve_worker_jobs_done", "Jobs the worker ran to an end since it started.", labels=labels
        )
        for w in _LiveCollector._safe(self._workers, ()):
            key = [w.worker, w.host]
            up.add_metric(key, 1 if w.state in ("idle", "busy") else 0)
            busy.add_metric(key, 1 if w.state == "busy" else 0)
            state.add_metric([*key, w.state], 1)
            age.add_metric(key, w.heartbeat_age_s)
            done.add_metric(key, w.jobs_done)
        yield from (up, busy, state, age, done)


class ServiceMetrics:
    """The metrics of one wanserve app instance, in a registry of its own."""

    def __init__(
        self,
        job_counts: JobCounts | None = None,
        queue_depth: QueueDepth | None = None,
        devices: DeviceStats | None = None,
        workers: WorkerStats | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.jobs_submitted = Counter(
            "wanserve_jobs_submitted", "Jobs accepted.", ["model", "kind"], registry=self.registry
        )
        self.jobs_finished = Counter(
            "wanserve_jobs_finished", "Jobs that reached a final status.", ["model", "status"], registry=self.registry
        )
        self.job_duration = Histogram(
            "wanserve_job_duration_seconds",
            "Seconds from submission to a final status.",
            ["model", "status"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.job_run_duration = Histogram(
            "wanserve_job_run_seconds",
            "Seconds from a worker's claim to a final status.",
            ["model", "status"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "wanserve_denoising_step_seconds",
            "Seconds one denoising step took.",
            ["model"],
            buckets=STEP_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(job_counts, queue_depth, devices))
        if workers is not None:
            self.registry.register(_WorkerCollector(workers))

    def job_submitted(self, model: str, kind: str) -> None:
        """Count one accepted job."""
        self.jobs_submitted.labels(model=model, kind=kind).inc()

    def job_finished(self, model: str, status: str, total_s: float | None = None, run_s: float | None = None) -> None:
        """Count one job reaching `status`; `total_s` since submission, `run_s` since the claim, when known."""
        self.jobs_finished.labels(model=model, status=status).inc()
        if total_s is not None:
            self.job_duration.labels(model=model, status=status).observe(max(0.0, total_s))
        if run_s is not None:
            self.job_run_duration.labels(model=model, status=status).observe(max(0.0, run_s))

    def step_observed(self, model: str, step_time_s: float) -> None:
        """Record one denoising step's duration."""
        self.step_duration.labels(model=model).observe(max(0.0, step_time_s))

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def metrics_router(metrics: ServiceMetrics) -> APIRouter:
    """`GET /metrics` serving `metrics`."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def get_metrics() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
