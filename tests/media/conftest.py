"""Fixtures shared by the media tests."""

from __future__ import annotations

import numpy as np
import pytest

from .samples import gradient_frames


@pytest.fixture
def frames() -> np.ndarray:
    """Nine 64x64 RGB frames of a moving gradient."""
    return gradient_frames()
