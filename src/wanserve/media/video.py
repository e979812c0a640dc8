"""Videos out (H.264 MP4) and in (any container FFmpeg reads), through PyAV."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from wanserve.engine.requests import MediaInput
from wanserve.errors import InvalidRequestError
from wanserve.media.atomic import atomic_output
from wanserve.media.frames import frame_to_uint8
from wanserve.media.inputs import VIDEO_MIME_TYPES, describe_bytes, open_source, sniff_media_type

logger = logging.getLogger(__name__)

MAX_VIDEO_BYTES = 1024 * 1024 * 1024
"""Largest input video accepted, in bytes."""

MAX_VIDEO_FRAME_PIXELS = 3840 * 2160
"""Largest input video frame accepted (width x height)."""

H264_ENCODER = "libx264"
_BT709 = 1  # FFmpeg's AVCOL_SPC / AVCOL_PRI / AVCOL_TRC value for ITU-R BT.709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG: Y in 16..235, what players expect from H.264


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, read from its container (and its packets where the container has no count)."""

    width: int
    height: int
    num_frames: int
    fps: float
    codec: str
    """FFmpeg codec name, for example `h264`."""
    pix_fmt: str
    """FFmpeg pixel format, for example `yuv420p`."""


def _frame_rate(fps: int | float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)):
        raise InvalidRequestError("fps", f"`fps` must be a number, got {fps!r}")
    if not fps > 0 or fps > 240:
        raise InvalidRequestError("fps", f"`fps` must be in (0, 240], got {fps}")
    return Fraction(fps).limit_denominator(1001)


def encode_mp4(
    frames: np.ndarray | Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: int | float | Fraction,
    crf: int = 18,
) -> int:
    """Encodes RGB frames as H.264 (libx264, yuv420p) into an MP4 at `path`; returns the frames written.

    `frames` is a [F, H, W, 3] array (uint8, or float in 0..1) or an iterable of [H, W, 3] frames, which
    lets a long video stream through without holding every frame. Width and height must be even (yuv420p
    halves the chroma planes); odd sizes are refused, never cropped. The file is written beside `path` under
    a temporary name and renamed into place when complete, so an encoder error or an exception raised by the
    frame iterable (for example a cancellation) leaves no file at `path`.
    """
    # 1. Check arguments and the first frame before touching the filesystem
    rate = _frame_rate(fps)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise InvalidRequestError("crf", f"`crf` must be an integer in 0..51, got {crf!r}")
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise InvalidRequestError("frames", f"`frames` must be [frames, height, width, 3], got shape {frames.shape}")
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise InvalidRequestError("frames", "`frames` is empty: a video needs at least one frame")
    first = frame_to_uint8(first)
    height, width = first.shape[:2]
    if width % 2 or height % 2:
        raise InvalidRequestError(
            "width" if width % 2 else "height",
            f"H.264 yuv420p output needs an even width and height, got `width`={width}, `height`={height}",
        )

    # 2. Encode into a temporary file beside the target, then rename it into place
    count = 0
    with (
        atomic_output(path, suffix=".mp4") as tmp,
        av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"}) as container,
    ):
        stream = container.add_stream(H264_ENCODER, rate=rate, options={"crf": str(crf)})
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        # Convert with the BT.709 matrix and say so in the stream: an untagged video leaves players to guess
        # between BT.601 and BT.709, and a wrong guess shifts the colours (reds most).
        ctx = stream.codec_context
        # Frame and slice threads: PyAV defaults to slices only, which leaves most cores idle in x264.
        ctx.thread_type = "AUTO"
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = _BT709, _BT709, _BT709, _LIMITED_RANGE
        for frame in itertools.chain([first], iterator):
            rgb = frame if frame is first else frame_to_uint8(frame)
            if rgb.shape != first.shape:
                raise InvalidRequestError(
                    "frames",
                    f"`frames` change size mid-video: frame {count} is {rgb.shape}, not {first.shape}",
                )
            yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p",
                dst_colorspace="itu709",
                dst_color_range="MPEG",
                dst_color_trc=_BT709,
                dst_color_primaries=_BT709,
            )
            container.mux(stream.encode(yuv))
            count += 1
        container.mux(stream.encode(None))
    logger.debug("wrote %s: %d frames %dx%d at %s fps, crf %d", path, count, width, height, rate, crf)
    return count


def _video_stream(container: av.container.InputContainer, field: str):
    stream = next((s for s in container.streams if s.type == "video"), None)
    if stream is None:
        raise InvalidRequestError(field, f"`{field}` has no video stream")
    return stream


def probe_video(source: str | os.PathLike | bytes, field: str = "video") -> VideoInfo:
    """Reads width, height, frame count, frame rate, codec and pixel format of a video file.

    The frame count comes from the container; where it has none (WebM, MKV, GIF) the video packets are
    counted, which reads the file but decodes nothing.
    """
    opened, _ = open_source(source, field, MAX_VIDEO_BYTES)
    try:
        with av.open(opened, mode="r") as container:
            stream = _video_stream(container, field)
            ctx = stream.codec_context
            num_frames = stream.frames
            if not num_frames:
                num_frames = sum(1 for p in container.demux(stream) if p.size)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            return VideoInfo(
                width=ctx.width,
                height=ctx.height,
                num_frames=int(num_frames),
                fps=float(rate) if rate else 0.0,
                codec=ctx.name,
                pix_fmt=ctx.pix_fmt or "",
            )
    except av.FFmpegError as exc:
        raise InvalidRequestError(field, f"`{field}` is not a readable video: {exc}") from None


def load_video(
    source: MediaInput,
    field: str,
    max_frames: int,
    max_bytes: int = MAX_VIDEO_BYTES,
    max_frame_pixels: int = MAX_VIDEO_FRAME_PIXELS,
) -> list[Image.Image]:
    """Decodes up to `max_frames` frames of an input video (bytes, local path or `data:` URL) as RGB images.

    The container type comes from the bytes (MP4/MOV, WebM/MKV, AVI, GIF, ...). Decoding stops at
    `max_frames`, so a long upload costs no more than the frames used. Text, corrupt or truncated files, files
    without a video stream and frames over `max_frame_pixels` raise `InvalidRequestError` naming `field`.
    """
    # 1. Check the cap and sniff the container
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise InvalidRequestError("max_frames", f"`max_frames` must be a positive integer, got {max_frames!r}")
    opened, head = open_source(source, field, max_bytes)
    mime = sniff_media_type(head)
    if mime not in VIDEO_MIME_TYPES:
        found = mime or describe_bytes(head)
        raise InvalidRequestError(field, f"`{field}` must be an MP4, MOV, WebM, MKV, AVI or GIF video, got {found}")

    # 2. Decode frame by frame up to the cap
    images: list[Image.Image] = []
    try:
        with av.open(opened, mode="r") as container:
            stream = _video_stream(container, field)
            stream.thread_type = "AUTO"
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_frame_pixels:
                raise InvalidRequestError(
                    field,
                    f"`{field}` frames are {width}x{height} = {width * height} pixels, "
                    f"more than the limit of {max_frame_pixels}",
                )
            for frame in container.decode(stream):
                if frame.width * frame.height > max_frame_pixels:
                    raise InvalidRequestError(
                        field,
                        f"`{field}` frame {len(images)} is {frame.width}x{frame.height}, over the limit "
                        f"of {max_frame_pixels} pixels",
                    )
                images.append(frame.to_image())
                if len(images) >= max_frames:
                    break
    except av.FFmpegError as exc:
        raise InvalidRequestError(field, f"`{field}` is a corrupt or truncated {mime} video: {exc}") from None
    if not images:
        raise InvalidRequestError(field, f"`{field}` ({mime}) has no decodable video frames")
    logger.debug("loaded %s: %d frames %dx%d", field, len(images), images[0].width, images[0].height)
    return images
