"""A finished generation's files: the H.264 MP4 (or, for one text-to-image frame, the PNG) and its JPEG thumbnail,
written together or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
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

    Both are written atomically; a failure of either leaves neither."""
    return write_video_stream(iter(frames), video_path, fps, crf, len(frames))


def write_video_stream(
    frames: Iterable[np.ndarray], video_path: str | os.PathLike, fps: int, crf: int, num_frames: int
) -> VideoFiles:
    """Encodes `frames` (uint8 [H, W, 3] each, `num_frames` of them) to an MP4 at `video_path` as they come, keeping
    only the middle one (index `num_frames // 2`) for the JPEG thumbnail beside it, written after the video.

    An exception from `frames` (a failed or cancelled decode) or from the encoder leaves no file at `video_path`
    (`encode_mp4` writes under a temporary name); a failed thumbnail removes the video again."""
    video_path = os.fspath(video_path)
    thumb_path = thumbnail_path_for(video_path)
    os.makedirs(os.path.dirname(os.path.abspath(video_path)), exist_ok=True)
    middle: list[np.ndarray] = []

    def keep_middle(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for index, frame in enumerate(frames):
            if index == num_frames // 2:
                middle.append(np.array(frame, copy=True))
            yield frame

    encode_mp4(keep_middle(frames), video_path, fps=fps, crf=crf)
    try:
        if not middle:
            raise RuntimeError(f"the video has fewer frames than the {num_frames} expected; no thumbnail")
        write_thumbnail(middle[0], thumb_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(video_path)
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


def write_mp4_stream(
    frames: Iterable[np.ndarray], path: str | os.PathLike, fps: int, crf: int, num_frames: int
) -> OutputFiles:
    """`write_video_stream` as an `OutputFiles` (the MP4 of a generation whose frames are still being decoded)."""
    files = write_video_stream(frames, path, fps, crf, num_frames)
    return OutputFiles(files.video_path, files.thumbnail_path, OUTPUT_MEDIA_TYPES[".mp4"])


class Mp4Writer:
    """A `write_video` for `Engine.generate`: encodes the frames it is handed to an MP4 at `path` as they come
    (`write_mp4_stream`, on the decode's writer thread); `files` once the MP4 and its thumbnail are written."""

    def __init__(self, path: str | os.PathLike, fps: int, crf: int):
        self.path, self.fps, self.crf = path, fps, crf
        self.files: OutputFiles | None = None

    def __call__(self, frames: Iterable[np.ndarray], num_frames: int) -> None:
        self.files = write_mp4_stream(frames, self.path, self.fps, self.crf, num_frames)
