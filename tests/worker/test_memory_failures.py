"""Memory failures: a request that cannot fit the workers' device is refused at submission with what would fit
(the device size is a fake worker row: no GPU here), and an out-of-memory error during a job (injected into the real
engine's transformer by a test-side hook) fails only that job, with `out_of_memory` and a hint, and the next job
runs."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from wanserve.engine import engine as engine_module
from wanserve.engine.config import EngineConfig
from wanserve.engine.engine import Engine
from wanserve.errors import InsufficientMemoryError
from wanserve.jobs.db import create_db_engine
from wanserve.jobs.service import JobSubmission
from wanserve.jobs.workers import WorkerRegistry
from wanserve.worker.loop import Worker, WorkerConfig

BIG = {"prompt": "a cat", "width": 832, "height": 480, "num_frames": 81}


@pytest.fixture
def admission(db_url, make_service):
    service = make_service(db_url)
    service.config = type(service.config)(served_models=("wan2.1-t2v-14b", "wan2.1-t2v-1.3b"))
    registry = WorkerRegistry(create_db_engine(db_url))
    registry.prune(older_than_s=-60)  # PostgreSQL is shared between tests: no workers of earlier ones
    service.memory_budget = registry.memory_budget_gib
    return service, registry


def test_a_request_that_cannot_fit_is_refused_naming_what_would(admission):
    service, registry = admission
    registry.register("w1", "host", 1, ["cuda:0"], ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b"], memory_gib=24.0)
    registry.register("w2", "host", 1, ["cuda:1"], ["wan2.1-t2v-14b"], memory_gib=56.0)

    refused = {}
    for name, model, params in (
        ("1.3b", "wan2.1-t2v-1.3b", BIG),
        ("14b-720p", "wan2.1-t2v-14b", {**BIG, "width": 1280, "height": 720}),
    ):
        with pytest.raises(InsufficientMemoryError) as info:
            service.create_job(JobSubmission(params=params, model=model))
        refused[name] = info.value

    # By the estimate: 1.3B at 480p needs ~24.6 GiB (the text encoder on the CPU frees 10.6); 14B at 720p ~62.8,
    # where 480p fits in 56 GiB. Fewer frames would not help either: the VAE decode's peak is per frame.
    small, large = refused["1.3b"], refused["14b-720p"]
    assert small.http_status == 422 and small.field == "model"
    assert "needs about 24.6 GiB" in str(small) and "has 24.0 GiB" in str(small)
    assert "would fit: the memory option WANSERVE_T5_CPU=1" in str(small)
    assert large.field == "width" and "a smaller size such as 832x480" in str(large) and "has 56.0 GiB" in str(large)
    assert service.list_jobs().count == 0
    job, _ = service.create_job(JobSubmission(params=BIG, model="wan2.1-t2v-14b"))  # 480p fits the 56 GiB worker
    assert job.status == "queued"


def test_admission_takes_the_largest_live_worker_and_skips_without_one(admission):
    service, registry = admission
    service.create_job(JobSubmission(params=BIG, model="wan2.1-t2v-1.3b"))  # no worker: nothing to plan against
    registry.register("w1", "host", 1, ["cuda:0"], ["wan2.1-t2v-1.3b"], memory_gib=16.0)
    registry.register("w2", "host", 1, ["cuda:1"], ["wan2.1-t2v-1.3b"], memory_gib=80.0)
    service.create_job(JobSubmission(params=BIG, model="wan2.1-t2v-1.3b"))
    registry.heartbeat("w2", "stopped", None, 0)
    with pytest.raises(InsufficientMemoryError):
        service.create_job(JobSubmission(params=BIG, model="wan2.1-t2v-1.3b"))
    registry.register("w3", "host", 1, ["cpu"], ["wan2.1-t2v-1.3b"], memory_gib=None)  # no limit known
    service.create_job(JobSubmission(params=BIG, model="wan2.1-t2v-1.3b"))


def test_the_api_answers_422_with_the_advice(tmp_path):
    from wanserve.api.app import create_app
    from wanserve.config import Settings

    settings = Settings(data_dir=tmp_path, models=["wan2.1-t2v-14b"])
    with TestClient(create_app(settings, start_workers=False)) as client:
        client.app.state.runtime.registry.register("w", "h", 1, ["cuda:0"], ["wan2.1-t2v-14b"], memory_gib=40.0)
        response = client.post("/v1/jobs", json={"model": "wan2.1-t2v-14b", **BIG})
        workers = client.get("/v1/workers").json()["data"]
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "insufficient_memory" and error["param"] == "model"
    assert (
        "needs about 48.6 GiB" in error["message"]
        and "has 40.0 GiB; would fit: the memory option WANSERVE_T5_CPU=1" in error["message"]
    )
    assert workers[0]["memory_gib"] == 40.0


def test_an_out_of_memory_error_fails_only_its_job_and_the_next_job_runs(db_url, make_service, monkeypatch):
    service = make_service(db_url)
    engine = Engine(EngineConfig(device="cpu"))
    transformer = engine.load("tiny-t2v").components["transformer"]
    calls = []

    def out_of_memory_once(module, args):  # the test's injection: the first forward of the first job fails
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    transformer.register_forward_pre_hook(out_of_memory_once)
    released = []
    real_release = engine_module.release_memory
    monkeypatch.setattr(engine_module, "release_memory", lambda device: released.append(device) or real_release(device))
    worker = Worker(
        service, engine, service.dispatcher, WorkerConfig(worker_id="h:1:t:0", heartbeat_s=60), ["tiny-t2v"]
    )
    params = {"prompt": "a cat", "num_inference_steps": 2}
    first = service.create_job(JobSubmission(params=params))[0]
    second = service.create_job(JobSubmission(params=params))[0]

    assert worker.run_once() and worker.run_once()
    failed, done = service.get_job(first.id), service.get_job(second.id)
    assert (failed.status, failed.error_type) == ("failed", "out_of_memory")
    assert "try fewer `num_frames`, a smaller size, or a memory option" in failed.error_message
    assert "Tried to allocate 20.00 GiB" in failed.error_message
    assert released == [torch.device("cpu")]
    assert done.status == "succeeded"
