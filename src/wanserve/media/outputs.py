"""A finished generation's files: the H.264 MP4 (or, for one text-to-image frame, the PNG) and its JPEG thumbnail,
written together or not at all."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from wanserve.errors import InvalidRequestError
from wanserve.media.images import write_png, write_thumbnail
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


OUTPUT_MEDIA_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg"}
"""Suffix of an output file -> its media type."""


@dataclass(frozen=True)
class OutputFiles:
    """Where `write_output_files` put the output (MP4 or PNG) and its thumbnail."""

    path: str
    thumbnail_path: str
    media_type: str


def write_image_files(frame: np.ndarray, image_path: str | os.PathLike) -> OutputFiles:
    """Writes one frame (uint8 [H, W, 3]) as a PNG at `image_path` and a JPEG thumbnail of it beside it."""
    image_path = os.fspath(image_path)
    thumb_path = thumbnail_path_for(image_path)
    os.makedirs(os.path.dirname(os.path.abspath(image_path)), exist_ok=True)
    write_thumbnail(frame, thumb_path)
    try:
        write_png(frame, image_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(thumb_path)
        raise
    return OutputFiles(image_path, thumb_path, OUTPUT_MEDIA_TYPES[".png"])


def write_output_files(frames: np.ndarray, path: str | os.PathLike, fps: int, crf: int) -> OutputFiles:
    """The output the path's suffix names: `.png` (exactly one frame) or `.mp4`, with its thumbnail."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".png":
        if len(frames) != 1:
            raise InvalidRequestError("out", f"a PNG holds one frame, got {len(frames)}; write an .mp4 instead")
        return write_image_files(frames[0], path)
    if suffix != ".mp4":
        raise InvalidRequestError("out", f"the output must be an .mp4 or a .png, got {os.fspath(path)!r}")
    files = write_video_files(frames, path, fps=fps, crf=crf)
    return OutputFiles(files.video_path, files.thumbnail_path, OUTPUT_MEDIA_TYPES[".mp4"])
