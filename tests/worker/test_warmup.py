"""Warm-up at start-up (`WANSERVE_WARMUP`): each worker runs the transformer at every configured shape after loading
its models and before it claims a job; bad entries refuse to start, naming the setting and the entry."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from wanserve.bootstrap import build_runtime
from wanserve.config import Settings
from wanserve.engine.config import ConfigError
from wanserve.engine.engine import Engine
from wanserve.jobs.service import JobSubmission
from wanserve.worker.status import serving_state


class _ObservedEngine(Engine):
    """The real engine; a test-side hook on each transformer records (model, module, latent shape) in `log`."""

    def __init__(self, config, log: list):
        super().__init__(config)
        self.log = log

    def load(self, model: str):
        first = model not in self._models
        loaded = super().load(model)
        for name in ("transformer", "transformer_2") if first else ():
            if name in loaded.components:

                def record(module, args, kwargs, model=model, name=name):
                    self.log.append((model, name, tuple(kwargs["hidden_states"].shape[2:])))

                loaded.components[name].register_forward_pre_hook(record, with_kwargs=True)
        return loaded


def _run_until_first_claim(runtime, log: list) -> None:
    """Runs the worker's own `run` (load, warm up, serve) and stops it once it has claimed (and run) one job; every
    claim is logged, so the order of warm-up forwards and claims shows in `log`."""
    worker = runtime.pool.workers[0][0]
    stop = threading.Event()
    claim = runtime.service.claim_next_job

    def claim_and_stop(*args, **kwargs):
        log.append("claim")
        stop.set()
        return claim(*args, **kwargs)

    runtime.service.claim_next_job = claim_and_stop
    phases = []
    worker_warm_up = worker._warm_up

    def observe_phase(model):
        worker_warm_up(model)
        phases.append(serving_state(runtime.models, runtime.pool.status()).detail)
        phases.append(runtime.health()["workers"][0]["phase"])

    worker._warm_up = observe_phase
    worker.run(stop)
    return phases


def test_warmup_runs_each_configured_shape_before_the_first_claim(tmp_path):
    log: list = []
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v", "tiny-t2v-moe"], warmup=["64x64x9", "tiny-t2v:96x64x5"])
    runtime = build_runtime(settings, engine_factory=lambda device, s: _ObservedEngine(s.engine_config(device), log),
                            devices=["cpu"])  # fmt: skip
    params = {"prompt": "a cat", "width": 64, "height": 96, "num_frames": 5, "num_inference_steps": 1}
    job = runtime.service.create_job(JobSubmission(params=params, model="tiny-t2v"))[0]
    try:
        phases = _run_until_first_claim(runtime, log)
    finally:
        runtime.stop()
    first_claim = log.index("claim")
    warm = log[:first_claim]
    # Latent shapes (frames, height, width): 64x64x9 -> (3, 8, 8); 96x64x5 -> (2, 8, 12). One step with CFG
    # (two forwards) for tiny-t2v; two steps for the two-expert model, one on each expert.
    assert warm == [
        ("tiny-t2v", "transformer", (3, 8, 8)), ("tiny-t2v", "transformer", (3, 8, 8)),
        ("tiny-t2v", "transformer", (2, 8, 12)), ("tiny-t2v", "transformer", (2, 8, 12)),
        ("tiny-t2v-moe", "transformer", (3, 8, 8)), ("tiny-t2v-moe", "transformer", (3, 8, 8)),
        ("tiny-t2v-moe", "transformer_2", (3, 8, 8)), ("tiny-t2v-moe", "transformer_2", (3, 8, 8)),
    ]  # fmt: skip
    assert ("tiny-t2v", "transformer", (2, 12, 8)) in log[first_claim:]  # the job itself ran after the claim
    assert runtime.service.get_job(job.id).status == "succeeded"
    # While a model warms up, /health's worker says so (observed right after each model's warm-up, not yet ready).
    assert phases[:2] == [
        "the workers are warming up their models at the configured sizes (WANSERVE_WARMUP)",
        "warming_up",
    ]
    assert runtime.pool.workers[0][0].phase == "ready"


def test_no_warmup_when_unset(tmp_path):
    log: list = []
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"])
    runtime = build_runtime(settings, engine_factory=lambda device, s: _ObservedEngine(s.engine_config(device), log),
                            devices=["cpu"])  # fmt: skip
    runtime.service.create_job(JobSubmission(params={"prompt": "a cat", "num_inference_steps": 1}, model="tiny-t2v"))
    try:
        _run_until_first_claim(runtime, log)
    finally:
        runtime.stop()
    assert log[0] == "claim" and len(log) > 1


@pytest.mark.parametrize(
    ("models", "entry", "message"),
    [
        (
            ["tiny-t2v"],
            "100x64x9",
            "`WANSERVE_WARMUP` entry '100x64x9': tiny-t2v cannot run it: `width` must be a multiple of 16",
        ),
        (["tiny-t2v"], "64x64x8", "entry '64x64x8': tiny-t2v cannot run it: `num_frames` must be 4k\\+1"),
        (["tiny-t2v"], "tiny-i2v:64x64x9", "entry 'tiny-i2v:64x64x9' names 'tiny-i2v', which is not served"),
        (
            ["tiny-t2v", "tiny-animate"],
            "64x64x9",
            "entry '64x64x9': tiny-animate serves task 'animate', which needs input videos",
        ),
    ],
)
def test_a_warmup_entry_a_model_cannot_run_refuses_to_start(tmp_path, models, entry, message):
    built = []
    settings = Settings(data_dir=tmp_path, models=models, warmup=[entry])
    with pytest.raises(ConfigError, match=message):
        build_runtime(settings, engine_factory=lambda device, s: built.append(device), devices=["cpu"])
    assert built == []  # refused before any engine was built or model loaded


def test_warmup_setting_form_is_checked_when_read(tmp_path, monkeypatch):
    monkeypatch.setenv("WANSERVE_WARMUP", "832x480x81, 832x480")
    with pytest.raises(ValidationError, match="`WANSERVE_WARMUP` entries are WIDTHxHEIGHTxFRAMES.*got '832x480'"):
        Settings(data_dir=tmp_path)
    monkeypatch.setenv("WANSERVE_WARMUP", "wan2.1-t2v-14b:832x480x81,1280x720x81")
    assert Settings(data_dir=tmp_path).warmup == ["wan2.1-t2v-14b:832x480x81", "1280x720x81"]
