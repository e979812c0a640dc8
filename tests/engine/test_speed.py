"""Exact speed options on CPU: configuration checks, the FLOP count, the FA3 backend registration (with a stand-in
`flash_attn_interface` computing plain attention, since FA3 needs a Hopper GPU), and regional compile."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest
import torch

from wanserve.engine import speed
from wanserve.engine.config import ConfigError, EngineConfig, SpeedConfig
from wanserve.engine.engine import Engine
from wanserve.engine.realsize import forward_flops, latent_tokens
from wanserve.engine.speed import resolve_attention, set_attention_backend
from wanserve.engine.validation import resolve_request


def test_speed_config_refuses_unknown_choices():
    with pytest.raises(ConfigError, match="`attention` must be one of"):
        SpeedConfig(attention="sage")
    with pytest.raises(ConfigError, match="`compile` must be one of"):
        SpeedConfig(compile="max")


def test_speed_auto_resolves_to_native_and_no_compile_on_cpu():
    speed = SpeedConfig()
    assert resolve_attention(speed, torch.device("cpu")) == "native"
    assert speed.compile_mode("cpu") == "none" and speed.compile_mode("cuda") == "blocks"
    with pytest.raises(ConfigError, match="`speed.attention`='fa3' needs"):
        resolve_attention(SpeedConfig(attention="fa3"), torch.device("cpu"))


def test_auto_attention_keeps_fa3_to_the_head_sizes_it_is_built_for(monkeypatch):
    from wanserve.engine import speed

    monkeypatch.setattr(speed, "fa3_available", lambda: True)
    cuda = torch.device("cuda")
    assert resolve_attention(SpeedConfig(), cuda, head_dim=128) == "_flash_3"
    assert resolve_attention(SpeedConfig(), cuda, head_dim=12) == "_native_cudnn"
    # The tiny models are float32, which no fused kernel takes.
    assert resolve_attention(SpeedConfig(), cuda, head_dim=12, dtype=torch.float32) == "native"
    with pytest.raises(ConfigError, match="needs a bfloat16 or float16 model"):
        resolve_attention(SpeedConfig(attention="cudnn"), cuda, dtype=torch.float32)
    with pytest.raises(ConfigError, match="head sizes .* this model's is 12"):
        resolve_attention(SpeedConfig(attention="fa3"), cuda, head_dim=12)


def test_forward_flops_match_the_published_wan21_14b_count():
    """32,760 tokens at 832x480x81; attention 893 TFLOP per 14B forward (FACTS.md's analytic count)."""
    assert latent_tokens(832, 480, 81) == 32760 and latent_tokens(1280, 720, 81) == 75600
    flops = forward_flops("wan2.1-t2v-14b", 832, 480, 81)
    assert round(flops["attention"] / 1e12) == 893
    # 161 frames are 41 latent frames instead of 21: the matmuls grow with the tokens, self-attention with their square.
    longer = forward_flops("wan2.1-t2v-14b", 832, 480, 161)
    ratio = 41 / 21
    assert 0.98 * ratio < longer["matmul"] / flops["matmul"] <= ratio
    assert 0.98 * ratio**2 < longer["attention"] / flops["attention"] <= ratio**2


@pytest.fixture
def stand_in_fa3(monkeypatch):
    """A `flash_attn_interface` whose `flash_attn_func` is plain attention on [B, L, H, D] tensors, counting calls."""
    calls = []

    def flash_attn_func(q, k, v, softmax_scale=None, causal=False):
        calls.append(q.shape)
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale
        )
        return out.transpose(1, 2), None

    module = types.ModuleType("flash_attn_interface")
    module.__spec__ = importlib.machinery.ModuleSpec("flash_attn_interface", None)
    module.flash_attn_func = flash_attn_func
    monkeypatch.setitem(sys.modules, "flash_attn_interface", module)
    monkeypatch.setattr(speed, "fa3_available", lambda: True)  # the real check also wants a Hopper GPU
    monkeypatch.setattr(speed, "FA3_HEAD_DIMS", speed.FA3_HEAD_DIMS | {12})  # the tiny models' head size
    return calls


def _frames(engine: Engine, **params) -> np.ndarray:
    request = resolve_request("tiny-t2v", {"prompt": "a cat", "seed": 3, "num_inference_steps": 2, **params})
    return engine.generate(request).frames


def test_fa3_backend_runs_every_attention_and_matches_plain(stand_in_fa3):
    plain = _frames(Engine(EngineConfig(device="cpu")))
    engine = Engine(EngineConfig(device="cpu"))
    loaded = engine.load("tiny-t2v")
    set_attention_backend(loaded.components["transformer"], "_flash_3")

    frames = _frames(engine)

    # 2 blocks x (self + cross attention) x 2 forwards (CFG) x 2 steps
    assert len(stand_in_fa3) == 16
    assert np.abs(frames.astype(int) - plain.astype(int)).max() <= 1


def test_compiled_blocks_trace_whole_and_give_the_plain_frames():
    """Regional compile traces each block as one graph (`fullgraph=True` fails on any graph break); the `eager`
    backend skips Inductor's code generation, which costs minutes on a 2-core CPU. Every generation records it."""
    plain = _frames(Engine(EngineConfig(device="cpu")))
    compiled = Engine(EngineConfig(device="cpu", speed=SpeedConfig(compile="blocks", compile_backend="eager")))
    request = resolve_request("tiny-t2v", {"prompt": "a cat", "seed": 3, "num_inference_steps": 2})

    result = compiled.generate(request)

    assert result.speed == {"attention": "native", "compile": "blocks", "mode": "exact"}
    assert np.abs(result.frames.astype(int) - plain.astype(int)).max() <= 1
    other_seed = _frames(Engine(EngineConfig(device="cpu")), seed=4)
    assert np.abs(result.frames.astype(int) - other_seed.astype(int)).max() > 1


@pytest.mark.parametrize("enabled", [True, False])
def test_cudnn_benchmark_is_set_for_cuda_engines_only_when_configured(monkeypatch, enabled):
    from wanserve.engine.speed import apply_speed_options

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    apply_speed_options({}, SpeedConfig(cudnn_benchmark=enabled), torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    apply_speed_options({}, SpeedConfig(cudnn_benchmark=enabled), torch.device("cuda"))  # no transformer: no CUDA call
    assert torch.backends.cudnn.benchmark is enabled
