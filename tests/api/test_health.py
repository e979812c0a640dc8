"""`/health`, `/health/live`, `/health/ready` and refusing jobs for models no worker can load (in-process app with
workers on a fake engine whose loading the test controls)."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from tests.conftest import FakeEngine

from wanserve.api.app import create_app
from wanserve.config import Settings
from wanserve.errors import WeightsNotFoundError
from wanserve.jobs.serving import ServingState
from wanserve.worker.pool import WorkerStatus
from wanserve.worker.status import serving_state


class GatedEngine(FakeEngine):
    """Loading waits for `gate`; models in `broken` fail to load."""

    def __init__(self, broken: tuple[str, ...] = ()):
        super().__init__()
        self.gate = threading.Event()
        self.broken = broken

    def load(self, model: str) -> None:
        assert self.gate.wait(30)
        if model in self.broken:
            raise WeightsNotFoundError(f"{model}: no weights in /models/{model}")
        super().load(model)


def _app(tmp_path, engine: GatedEngine):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v", "tiny-i2v"], concurrency=1, poll_interval_s=0.05)
    return create_app(settings, engine_factory=lambda device, s: engine)


def test_health_503_while_starting_then_200_degraded_and_job_refused(tmp_path):
    engine = GatedEngine(broken=("tiny-i2v",))
    app = _app(tmp_path, engine)
    with TestClient(app) as client:
        starting = client.get("/health")
        assert starting.status_code == 503
        assert (starting.json()["status"], starting.json()["phase"], starting.json()["ready"]) == (
            "starting",
            "starting",
            False,
        )
        assert client.get("/health/ready").status_code == 503
        assert client.get("/health/live").json() == {"status": "alive"}
        assert client.post("/v1/jobs", json={"prompt": "queued while starting"}).status_code == 201

        engine.gate.set()
        worker = app.state.runtime.pool.workers[0][0]
        assert worker.ready.wait(30)
        health = client.get("/health")
        body = health.json()
        assert health.status_code == 200 and body["status"] == "healthy" and body["phase"] == "degraded"
        models = {m["name"]: m for m in body["models"]}
        assert models["tiny-t2v"]["loaded"] and models["tiny-t2v"]["unavailable_reason"] is None
        assert "no weights in /models/tiny-i2v" in models["tiny-i2v"]["unavailable_reason"]
        # The Wan2.1 I2V service's fields, alongside ours.
        assert (body["rank"], body["pipeline_rank"], body["pipeline_world_size"]) == (0, 0, 1)
        assert body["total_tasks"] == 1 and body["config"]["max_concurrent"] == 1
        assert client.get("/health/ready").json() == {"ready": True, "phase": "degraded", "detail": body["detail"]}

        refused = client.post("/v1/jobs", json={"model": "tiny-i2v", "prompt": "waves"})
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["param"] == "model" and error["type"] == "model_unavailable"
        assert "'tiny-i2v' cannot be served" in error["message"] and "no weights" in error["message"]
        assert client.get("/v1/jobs").json()["count"] == 1  # nothing queued for it
        legacy = client.post("/video/submit", json={"prompt": "p", "image_url": "data:,x"})
        assert legacy.status_code == 503 and legacy.json()["field"] == "model"


def test_health_503_when_no_worker_can_serve(tmp_path):
    engine = GatedEngine(broken=("tiny-t2v", "tiny-i2v"))
    engine.gate.set()
    app = _app(tmp_path, engine)
    with TestClient(app) as client:
        workers = [t for t in app.state.runtime.pool._threads if t.name != "worker-registry"]
        for thread in workers:  # the worker thread ends when it can load nothing (the heartbeat thread never does)
            thread.join(30)
            assert not thread.is_alive()
        health = client.get("/health")
        assert health.status_code == 503
        assert (health.json()["status"], health.json()["phase"]) == ("unhealthy", "unavailable")
        assert client.get("/health/ready").status_code == 503
        response = client.post("/v1/jobs", json={"prompt": "a cat"})
        assert response.status_code == 503 and "'tiny-t2v' cannot be served" in response.json()["detail"]


def _worker(ready=True, load_error=None, models=("a", "b"), model_errors=None) -> WorkerStatus:
    return WorkerStatus("w", "cpu", ready, None, load_error, models, model_errors or {})


def test_serving_state_phases():
    assert serving_state(["a"], [_worker(ready=False)]).phase == "starting"
    assert serving_state(["a", "b"], [_worker()]) == ServingState("ready", "every served model has a ready worker")
    # One worker lacks b, another serves it: still ready.
    both = [_worker(models=("a",), model_errors={"b": "boom"}), _worker()]
    assert serving_state(["a", "b"], both).phase == "ready"
    degraded = serving_state(["a", "b"], [_worker(models=("a",), model_errors={"b": "boom"})])
    assert degraded.phase == "degraded" and dict(degraded.unavailable_models) == {"b": "boom"}
    dead = serving_state(["a", "b"], [_worker(ready=False, load_error="RuntimeError: no model")])
    assert dead.phase == "unavailable" and dead.unavailable_models["a"] == "RuntimeError: no model"
