"""API keys: who may call, whose jobs they see on every route family, admin routes, rate limit and quota, and when
the service may run open (in-process app, no workers: jobs stay queued)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wanserve.api.app import create_app
from wanserve.config import Settings
from wanserve.jobs.keys import KeyStore

JOB = {"prompt": "a cat"}
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@pytest.fixture
def keyed(tmp_path):
    """An app with two user keys (`alice`, `bob`) and an admin key; returns (client, headers by name, key ids)."""
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v", "tiny-i2v", "tiny-animate"])
    app = create_app(settings, start_workers=False)
    store = KeyStore(app.state.runtime.db)
    made = {
        "alice": store.create("alice"),
        "bob": store.create("bob"),
        "admin": store.create("ops", admin=True),
    }
    app.state.keys.forget()
    headers = {name: {"Authorization": f"Bearer {k.token}"} for name, k in made.items()}
    with TestClient(app) as client:
        yield client, headers, {name: k.key.id for name, k in made.items()}


def test_requests_without_a_valid_key_refused(keyed):
    client, headers, _ = keyed
    token = headers["alice"]["Authorization"].split()[1]
    for value in (None, "Bearer", "Bearer ", "Bearer    ", "Basic " + token, "Bearer wsk_000000000000_" + "x" * 43):
        sent = {} if value is None else {"Authorization": value}
        response = client.get("/v1/jobs", headers=sent)
        assert response.status_code == 401, value
        assert response.json()["error"]["type"] == "unauthorized" and response.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/health", "/health/ready", "/openapi.json", "/docs", "/v1/models", "/v1/workers", "/metrics"):
        assert client.get(path).status_code == 401, path
    assert client.get("/health/live").status_code == 200
    assert client.get("/").status_code == 200  # the page itself holds no data; it asks for the key
    assert client.get("/v1/jobs", headers=headers["alice"]).status_code == 200


def test_revoked_key_refused(keyed):
    client, headers, ids = keyed
    assert client.get("/v1/jobs", headers=headers["bob"]).status_code == 200
    KeyStore(client.app.state.runtime.db).revoke(ids["bob"])
    client.app.state.keys.forget()
    assert client.get("/v1/jobs", headers=headers["bob"]).status_code == 401


def _native_job(client, headers) -> str:
    response = client.post("/v1/jobs", json=JOB, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_native_routes_show_each_key_only_its_own_jobs(keyed):
    client, headers, ids = keyed
    alice, bob = headers["alice"], headers["bob"]
    job = _native_job(client, alice)
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["data"]] == [job]
    assert client.get("/v1/jobs", headers=bob).json() == {"data": [], "count": 0}
    for method, path in (
        ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/content"),
        ("GET", f"/v1/jobs/{job}/events"),
        ("POST", f"/v1/jobs/{job}/cancel"),
        ("DELETE", f"/v1/jobs/{job}"),
    ):
        response = client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
    assert client.get(f"/v1/jobs/{job}", headers=alice).json()["status"] == "queued"  # untouched by bob
    assert client.get(f"/v1/jobs/{job}/content", headers=alice).status_code == 409  # hers: exists, not done
    # The admin sees every job.
    assert [j["id"] for j in client.get("/v1/jobs", headers=headers["admin"]).json()["data"]] == [job]
    assert client.app.state.runtime.service.store.get(job).owner_key == ids["alice"]
    assert client.post(f"/v1/jobs/{job}/cancel", headers=alice).json()["status"] == "cancelled"


def test_openai_routes_show_each_key_only_its_own_jobs(keyed):
    import openai

    client, headers, _ = keyed
    token = {name: h["Authorization"].split()[1] for name, h in headers.items()}

    def sdk(name):  # the official client, sending its own `Authorization: Bearer` header
        return openai.OpenAI(base_url="http://testserver/v1", api_key=token[name], http_client=client, max_retries=0)

    video = sdk("alice").videos.create(model="tiny-t2v", prompt="a cat", seconds="1", size="64x64")
    assert [v.id for v in sdk("alice").videos.list().data] == [video.id]
    assert sdk("bob").videos.list().data == []
    with pytest.raises(openai.NotFoundError):
        sdk("bob").videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        sdk("bob").videos.download_content(video.id)
    with pytest.raises(openai.NotFoundError):
        sdk("bob").videos.delete(video.id)
    assert sdk("alice").videos.retrieve(video.id).status == "queued"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key=" ", http_client=client, max_retries=0).videos.list()


def test_wan21_service_routes_show_each_key_only_its_own_jobs(keyed):
    client, headers, _ = keyed
    job = _native_job(client, headers["alice"])
    request_id = job.replace("-", "")
    bob = headers["bob"]
    assert client.post("/video/status", json={"requestId": request_id}, headers=bob).status_code == 404
    assert client.post("/video/cancel", json={"requestId": request_id}, headers=bob).status_code == 404
    assert client.get(f"/videos/{request_id}.mp4", headers=bob).status_code == 404
    assert client.get(f"/status/{request_id}", headers=bob).status_code == 404
    assert client.post(f"/cancel/{request_id}", headers=bob).status_code == 404
    assert client.post("/video/status", json={"requestId": request_id}, headers=headers["alice"]).status_code == 200
    assert client.get(f"/status/{request_id}", headers=headers["alice"]).status_code == 200


def test_animate_routes_show_each_key_only_its_own_jobs(keyed):
    client, headers, _ = keyed
    job = _native_job(client, headers["alice"])
    assert client.get(f"/animate/jobs/{job}", headers=headers["bob"]).status_code == 404
    assert client.get(f"/animate/jobs/{job}/media", headers=headers["bob"]).status_code == 404
    assert client.get(f"/animate/jobs/{job}", headers=headers["alice"]).status_code == 200
    # A job found by the client's own `job_id` (its idempotency key): the owner and an admin see it, others not.
    keyed_job = client.post("/v1/jobs", json=JOB, headers={**headers["alice"], "Idempotency-Key": "clip-7"}).json()
    assert client.get("/animate/jobs/clip-7", headers=headers["bob"]).status_code == 404
    assert client.get("/animate/jobs/clip-7", headers=headers["alice"]).status_code == 200
    assert client.get("/animate/jobs/clip-7", headers=headers["admin"]).status_code == 200
    assert keyed_job["id"]


def test_health_and_workers_hide_running_job_ids_from_keys_that_are_no_admin(keyed, monkeypatch):
    client, headers, _ = keyed
    runtime = client.app.state.runtime
    real_health = runtime.health
    monkeypatch.setattr(
        runtime, "health", lambda: {**real_health(), "workers": [{"worker_id": "w", "current_job": "j1"}]}
    )
    assert client.get("/health", headers=headers["alice"]).json()["workers"][0]["current_job"] is None
    assert client.get("/health", headers=headers["admin"]).json()["workers"][0]["current_job"] == "j1"


def test_admin_routes_and_metrics_need_an_admin_key(keyed):
    client, headers, _ = keyed
    assert client.post("/admin/cleanup", headers=headers["alice"]).status_code == 403
    assert client.post("/admin/cleanup", headers=headers["admin"]).json()["status"] == "ok"
    assert client.get("/metrics", headers=headers["alice"]).status_code == 403
    assert client.get("/metrics", headers=headers["admin"]).status_code == 200


def test_metrics_token_reads_metrics_only(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], metrics_token="scrape-token-1")
    app = create_app(settings, start_workers=False)
    KeyStore(app.state.runtime.db).create("someone")
    app.state.keys.forget()
    with TestClient(app) as client:
        scrape = {"Authorization": "Bearer scrape-token-1"}
        assert client.get("/metrics", headers=scrape).status_code == 200
        assert client.get("/v1/jobs", headers=scrape).status_code == 401


def test_rate_limit_and_quota_answer_429_with_retry_after(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"])
    app = create_app(settings, start_workers=False)
    store = KeyStore(app.state.runtime.db)
    limited = {"Authorization": f"Bearer {store.create('rate', rate_per_min=2).token}"}
    quota = {"Authorization": f"Bearer {store.create('quota', max_running=1).token}"}
    app.state.keys.forget()
    with TestClient(app) as client:
        assert [client.post("/v1/jobs", json=JOB, headers=limited).status_code for _ in range(2)] == [201, 201]
        refused = client.post("/v1/jobs", json=JOB, headers=limited)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60 and "`rate_per_min`" in refused.json()["detail"]
        first = _native_job(client, quota)
        refused = client.post("/v1/jobs", json=JOB, headers=quota)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "`max_running`" in refused.json()["detail"]
        # The OpenAI route is held to the same quota.
        assert client.post("/v1/videos", json={"prompt": "a cat"}, headers=quota).status_code == 429
        client.post(f"/v1/jobs/{first}/cancel", headers=quota)
        assert client.post("/v1/jobs", json=JOB, headers=quota).status_code == 201  # room again


def test_open_service_only_on_loopback_or_with_allow_open(tmp_path):
    with pytest.raises(ValueError, match="wanserve keys create"):
        create_app(Settings(data_dir=tmp_path, models=["tiny-t2v"], host="0.0.0.0"), start_workers=False)
    create_app(Settings(data_dir=tmp_path, models=["tiny-t2v"], host="0.0.0.0", allow_open=True), start_workers=False)
    app = create_app(Settings(data_dir=tmp_path, models=["tiny-t2v"]), start_workers=False)  # loopback: open
    with TestClient(app) as client:
        assert client.get("/v1/jobs").status_code == 200
    KeyStore(app.state.runtime.db).create("first")
    create_app(Settings(data_dir=tmp_path, models=["tiny-t2v"], host="0.0.0.0"), start_workers=False)


def test_environment_key_is_an_admin_key(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], api_key="environment-key")
    with TestClient(create_app(settings, start_workers=False)) as client:
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer "}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer environment-key"}).status_code == 200
