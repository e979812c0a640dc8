"""Assembling a server process: tiny-model fallback, health, start-up recovery, dead-owner detection, the sweeper."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest

from wanserve.bootstrap import build_runtime, served_models
from wanserve.config import Settings
from wanserve.engine.registry import tiny_models
from wanserve.jobs.files import output_key
from wanserve.jobs.service import JobSubmission
from wanserve.worker import identity


def test_served_models_no_weights_tiny_fallback_logged(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path)
    assert served_models(settings) == ([s.name for s in tiny_models()], True)
    with caplog.at_level(logging.WARNING):
        runtime = build_runtime(settings, start_workers=False)
    assert "RANDOM weights" in caplog.text
    assert runtime.random_weights and runtime.tiny_fallback
    runtime.stop()


def test_served_models_refuses_unknown_and_multi_rank(tmp_path):
    with pytest.raises(ValueError, match="not a known model"):
        served_models(Settings(data_dir=tmp_path, models=["wan9"]))
    with pytest.raises(ValueError, match="ULYSSES_SIZE"):
        served_models(Settings(data_dir=tmp_path, ulysses_size=2))


def test_health_starting_then_ok_with_workers(tmp_path, fake_engine):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], concurrency=2, poll_interval_s=0.05)
    runtime = build_runtime(settings, engine_factory=lambda device, s: fake_engine, devices=["cpu"])
    assert runtime.health()["status"] == "starting"
    runtime.start()
    try:
        for worker, _ in runtime.pool.workers:
            assert worker.ready.wait(30)
        health = runtime.health()
        assert health["status"] == "healthy" and health["phase"] == "ready" and len(health["workers"]) == 2
        assert health["models"] == [
            {"name": "tiny-t2v", "loaded": True, "random_weights": True, "unavailable_reason": None}
        ]
        assert (health["rank"], health["world_size"], health["devices"]) == (0, 1, ["cpu"])
    finally:
        runtime.stop()


def test_start_recovers_jobs_of_a_dead_process(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"])
    first = build_runtime(settings, start_workers=False)
    job = first.service.create_job(JobSubmission(params={"prompt": "a cat"}))[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()}:{int(dead.stdout)}:deadbeef:0"
    assert first.service.claim_next_job(owner, ["tiny-t2v"]).id == job.id
    first.stop()

    second = build_runtime(settings, start_workers=False)
    second.start()
    view = second.service.get_job(job.id)
    assert view.status == "queued" and view.attempts == 1
    second.stop()


def test_owner_is_dead_only_for_this_host_gone_processes():
    me = identity.owner_id(0)
    assert not identity.owner_is_dead(me)
    host = socket.gethostname()
    assert identity.owner_is_dead(f"{host}:{os.getpid()}:oldtoken:0")  # this pid in an earlier life
    assert not identity.owner_is_dead("other-host:1:tok:0")  # left to lease expiry
    assert not identity.owner_is_dead("garbage")
    assert not identity.owner_is_dead(f"{host}:1:tok:0")  # pid 1 is alive


def test_sweep_expires_results_past_retention(tmp_path, fake_engine):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], retention_s=0.001, lease_s=0.001)
    runtime = build_runtime(settings, engine_factory=lambda device, s: fake_engine, devices=["cpu"])
    service = runtime.service
    done = service.create_job(JobSubmission(params={"prompt": "a cat"}))[0]
    runtime.pool.workers[0][0].run_once()
    assert service.get_job(done.id).outputs["video_key"] == output_key(done.id) == f"outputs/{done.id}.mp4"
    assert (tmp_path / "outputs" / f"{done.id}.mp4").is_file()
    lost = service.create_job(JobSubmission(params={"prompt": "a dog"}))[0]
    service.claim_next_job("gone", ["tiny-t2v"])  # its lease (1 ms) expires at once
    runtime.sweeper.sweep()
    assert service.get_job(done.id).status == "expired" and not (tmp_path / "outputs" / f"{done.id}.mp4").exists()
    assert service.get_job(lost.id).status == "queued"
    runtime.stop()
