"""A finished generation's files: the H.264 MP4 and its JPEG thumbnail, written together or not at all."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from wanserve.media.images import write_thumbnail
from wanserve.media.video import encode_mp4


@dataclass(frozen=True)
class VideoFiles:
    """Where `write_video_files` put a video and its thumbnail."""

    video_path: str
    thumbnail_path: str


def thumbnail_path_for(video_path: str | os.PathLike) -> str:
    """The thumbnail's path beside a video: same stem, `.jpg`."""
    return os.path.splitext(os.fspath(video_path))[0] + ".jpg"


def write_video_files(frames: np.ndarray, video_path: str | os.PathLike, fps: int, crf: int) -> VideoFiles:
    """Encodes `frames` (uint8 [F, H, W, 3]) to an MP4 at `video_path` and a JPEG of the middle frame beside it.

    Both are written atomically; if the encode fails, the thumbnail is removed again, so a failure leaves neither.
    """
    video_path = os.fspath(video_path)
    thumb_path = thumbnail_path_for(video_path)
    os.makedirs(os.path.dirname(os.path.abspath(video_path)), exist_ok=True)
    write_thumbnail(frames[len(frames) // 2], thumb_path)
    try:
        encode_mp4(frames, video_path, fps=fps, crf=crf)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(thumb_path)
        raise
    return VideoFiles(video_path=video_path, thumbnail_path=thumb_path)
