"""CUDA paths of the engine: every memory option on a real GPU. Skipped without CUDA (run on the lent GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wanserve.engine.config import EngineConfig, MemoryConfig, SpeedConfig
from wanserve.engine.engine import Engine
from wanserve.engine.validation import resolve_request

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _frames(engine: Engine, tmp_path, name: str, model: str = "tiny-t2v", **params) -> np.ndarray:
    params = {"prompt": "a cat", "seed": 11, **params}
    return engine.generate(resolve_request(model, params)).frames.astype(np.int16)


PLAIN = SpeedConfig(attention="native", compile="none")
"""The memory tests compare placements, so they run without the speed options (tested on their own below)."""


@pytest.fixture(scope="module")
def cuda_engine() -> Engine:
    return Engine(EngineConfig(device="cuda", speed=PLAIN))


@pytest.mark.parametrize("model", ["tiny-t2v", "tiny-t2v-moe", "tiny-ti2v"])
def test_generate_cuda_same_seed_identical(cuda_engine, tmp_path, model):
    a = _frames(cuda_engine, tmp_path, "a.mp4", model)
    b = _frames(cuda_engine, tmp_path, "b.mp4", model)
    assert a.shape == (9, 64, 64, 3)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "memory",
    [
        MemoryConfig(offload="model"),
        MemoryConfig(offload="group", group_offload_type="block_level", group_offload_blocks=1),
        MemoryConfig(offload="group", group_offload_type="leaf_level", group_offload_use_stream=True),
        MemoryConfig(text_encoder_on_cpu=True),
        MemoryConfig(text_encoder_on_cpu=True, offload="model", vae_tiling=True),
    ],
    ids=["model-offload", "group-block", "group-leaf-stream", "t5-cpu", "t5-cpu-offload-tiling"],
)
def test_memory_options_cuda_match_plain(cuda_engine, tmp_path, memory):
    """Offload moves weights, never changes the arithmetic: frames equal the plain run (T5 on the CPU within 2/255)."""
    plain = _frames(cuda_engine, tmp_path, "plain.mp4")
    other = _frames(Engine(EngineConfig(device="cuda", memory=memory, speed=PLAIN)), tmp_path, "other.mp4")
    diff = np.abs(plain - other)
    if memory.text_encoder_on_cpu:
        assert diff.mean() <= 2.0
    else:
        assert diff.max() == 0


def test_exact_speed_options_cuda_match_plain(cuda_engine, tmp_path):
    """The default exact options on CUDA (regional compile with Inductor; PyTorch's attention, since the tiny models
    are float32) give the plain frames within rounding, deterministically, and say what they ran."""
    plain = _frames(cuda_engine, tmp_path, "plain.mp4")
    exact = Engine(EngineConfig(device="cuda"))
    request = resolve_request("tiny-t2v", {"prompt": "a cat", "seed": 11})
    first, second = exact.generate(request), exact.generate(request)
    assert first.speed == {"attention": "native", "compile": "blocks", "mode": "exact"}
    assert np.array_equal(first.frames, second.frames)
    assert np.abs(first.frames.astype(np.int16) - plain).max() <= 2
