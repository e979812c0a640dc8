"""Fixtures for engine tests: one shared Engine (tiny models stay loaded), small input images and videos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from wanserve.engine.config import EngineConfig
from wanserve.engine.engine import Engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(EngineConfig(device="cpu"))


def _png(seed: int, size=(64, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return _png(1)


@pytest.fixture(scope="session")
def png_bytes_2() -> bytes:
    return _png(2)


@pytest.fixture(scope="session")
def input_video(tmp_path_factory) -> str:
    """A 9-frame 64x64 MP4 made with PyAV."""
    from wanserve.media.video import encode_mp4

    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("inputs") / "input.mp4"
    encode_mp4(rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8), str(path), fps=8)
    return str(path)


@pytest.fixture(scope="session")
def mask_video(tmp_path_factory) -> str:
    """A 9-frame 64x64 MP4: left half black (keep), right half white (generate)."""
    from wanserve.media.video import encode_mp4

    frames = np.zeros((9, 64, 64, 3), dtype=np.uint8)
    frames[:, :, 32:] = 255
    path = tmp_path_factory.mktemp("inputs") / "mask.mp4"
    encode_mp4(frames, str(path), fps=8)
    return str(path)
