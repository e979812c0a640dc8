"""Real media files for the media tests, made with Pillow and PyAV."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def gradient_frames(num_frames: int = 9, height: int = 64, width: int = 64) -> np.ndarray:
    """Smooth, moving gradients: they survive lossy coding well enough to compare pixel values."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i, ..., 0] = (x * 255 // max(width - 1, 1) + i * 8) % 256
        frames[i, ..., 1] = y * 255 // max(height - 1, 1)
        frames[i, ..., 2] = 128
    return frames


def image_bytes(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB", **save) -> bytes:
    image = Image.new(mode, size, color=(200, 30, 60) if mode == "RGB" else None)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def write_video(path: Path, codec: str, container_format: str, frames: np.ndarray, fps: int = 8) -> Path:
    """A video in any container/codec PyAV can write (for inputs other than our own MP4s)."""
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path
