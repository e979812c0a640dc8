"""Long videos in and out in pieces (FlashVSR upscaling): frames decoded one at a time (optionally resized), transport
streams re-encoded first, output written as closed MP4 segments and joined at the end, the input's audio carried over;
after a failure the segments already written are joined into a partial MP4."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from wanserve.errors import InvalidRequestError
from wanserve.media.video import encode_mp4

logger = logging.getLogger(__name__)

TRANSPORT_STREAM_SUFFIXES = (".ts", ".m2ts", ".mts")
QUALITY_RANGE = (1, 10)


def quality_to_crf(quality: int) -> int:
    """Export quality 1..10 as an H.264 CRF, on imageio-ffmpeg's scale (the FlashVSR scripts' `quality`):
    CRF = int((1 - quality / 10) x 51); 10 is 0 (lossless), 6 is 20, 1 is 45."""
    low, high = QUALITY_RANGE
    if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= high:
        raise InvalidRequestError("quality", f"`quality` must be an integer in {low}..{high}, got {quality!r}")
    return int((1 - quality / 10) * 51)


def is_transport_stream(path: str | os.PathLike) -> bool:
    """Whether `path` is an MPEG transport stream (by its suffix or by what FFmpeg finds in it)."""
    if str(path).lower().endswith(TRANSPORT_STREAM_SUFFIXES):
        return True
    try:
        with av.open(str(path)) as container:
            return "mpegts" in container.format.name
    except av.FFmpegError:
        return False


def reencode_transport_stream(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A transport stream (.ts/.m2ts/.mts) re-encoded as an MP4 with monotonic timestamps (video near-lossless H.264
    CRF 12, audio AAC), as the FlashVSR service did before reading one."""
    out = Path(out)
    with av.open(str(path)) as src, av.open(str(out), "w", format="mp4") as dst:
        video = next((s for s in src.streams if s.type == "video"), None)
        if video is None:
            raise InvalidRequestError("video", "`video` has no video stream")
        audio = next((s for s in src.streams if s.type == "audio"), None)
        rate = video.average_rate or video.guessed_rate or Fraction(30)
        v_out = dst.add_stream("libx264", rate=rate, options={"crf": "12"})
        v_out.width, v_out.height, v_out.pix_fmt = video.codec_context.width, video.codec_context.height, "yuv420p"
        a_out = dst.add_stream("aac", rate=audio.codec_context.sample_rate) if audio is not None else None
        streams = [video] + ([audio] if audio is not None else [])
        for i, frame in enumerate(_decode(src, streams)):
            if isinstance(frame, av.VideoFrame):
                out_frame = frame.reformat(format="yuv420p")
                out_frame.pts, out_frame.time_base = i, 1 / rate
                dst.mux(v_out.encode(out_frame))
            elif a_out is not None:
                frame.pts = None
                dst.mux(a_out.encode(frame))
        dst.mux(v_out.encode(None))
        if a_out is not None:
            dst.mux(a_out.encode(None))
    return out


def _decode(container, streams):
    for packet in container.demux(*streams):
        try:
            yield from packet.decode()
        except av.FFmpegError as exc:  # a damaged packet in a broadcast capture: skip it, keep the rest
            logger.warning("skipping an undecodable %s packet: %s", packet.stream.type, exc)


def scaled_height(width: int, height: int, new_width: int) -> int:
    """ffmpeg `scale=W:-2`: the height that keeps the aspect ratio at width `new_width`, rounded to even."""
    return max(2, int(round(height * new_width / width / 2)) * 2)


def iter_frames(path: str | os.PathLike, input_width: int | None = None) -> Iterator[np.ndarray]:
    """The video's frames as uint8 RGB [H, W, 3], one at a time (resized to `input_width` wide first when given)."""
    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise InvalidRequestError("video", "`video` has no video stream")
        stream.thread_type = "AUTO"
        size = None
        for frame in _decode(container, [stream]):
            if input_width is not None and size is None:
                size = (input_width, scaled_height(frame.width, frame.height, input_width))
            if size is not None:
                yield frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="BICUBIC")
            else:
                yield frame.to_ndarray(format="rgb24")


def frame_rate(path: str | os.PathLike) -> Fraction:
    """The video's frame rate as a fraction (30000/1001 stays exact)."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == "video")
        return Fraction(stream.average_rate or stream.guessed_rate or 30)


class ChunkedVideoWriter:
    """Writes frames as a sequence of closed MP4 segments of `segment_frames` frames in `directory`, so memory holds
    one segment and a failure leaves every finished segment playable; `join` makes the one MP4."""

    def __init__(self, directory: str | os.PathLike, fps: Fraction, crf: int, segment_frames: int = 64):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fps, self.crf, self.segment_frames = fps, crf, segment_frames
        self.segments: list[Path] = []
        self._pending: list[np.ndarray] = []
        self.frames_written = 0
        self.first_frame: np.ndarray | None = None

    def write(self, frames: np.ndarray) -> None:
        """Adds uint8 [n, H, W, 3] frames; full segments are encoded and closed at once."""
        for frame in frames:
            if self.first_frame is None:
                self.first_frame = frame.copy()
            self._pending.append(frame)
            if len(self._pending) >= self.segment_frames:
                self.flush()

    def flush(self) -> None:
        """Encodes the frames not yet in a segment as one more segment."""
        if not self._pending:
            return
        path = self.directory / f"segment-{len(self.segments):05d}.mp4"
        self.frames_written += encode_mp4(np.stack(self._pending), path, fps=self.fps, crf=self.crf)
        self.segments.append(path)
        self._pending = []

    def join(self, out: str | os.PathLike, audio_from: str | os.PathLike | None = None) -> Path | None:
        """Flushes, then joins every segment into `out` (video copied, not re-encoded) with the audio of
        `audio_from` (AAC, cut to the video's length). None when no frame was written."""
        self.flush()
        if not self.segments:
            return None
        return join_segments(self.segments, out, self.fps, audio_from)


def join_segments(
    segments: list[Path], out: str | os.PathLike, fps: Fraction, audio_from: str | os.PathLike | None = None
) -> Path:
    """Concatenates H.264 MP4 segments (same size and settings) into one MP4, adding `audio_from`'s first audio
    stream re-encoded as AAC and cut at the video's end."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    duration_s = 0.0
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
        with av.open(str(segments[0])) as first:
            v_out = dst.add_stream_from_template(first.streams.video[0])
        audio_src = _open_audio(audio_from)
        a_out = None
        if audio_src is not None:
            a_out = dst.add_stream("aac", rate=audio_src[1].codec_context.sample_rate or 48000)
        offset = 0
        for segment in segments:
            with av.open(str(segment)) as src:
                stream = src.streams.video[0]
                last = 0
                for packet in src.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    last = max(last, packet.pts + (packet.duration or 0))
                    packet.stream = v_out
                    dst.mux(packet)
                offset = last
                time_base = stream.time_base
        duration_s = float(offset * time_base)
        if audio_src is not None:
            container, stream = audio_src
            try:
                for frame in _decode(container, [stream]):
                    if frame.time is not None and frame.time >= duration_s:
                        break
                    frame.pts = None
                    dst.mux(a_out.encode(frame))
                dst.mux(a_out.encode(None))
            finally:
                container.close()
    os.replace(tmp, out)
    logger.debug("joined %d segments into %s (%.2f s)", len(segments), out, duration_s)
    return out


def _open_audio(path):
    if path is None:
        return None
    container = av.open(str(path))
    stream = next((s for s in container.streams if s.type == "audio"), None)
    if stream is None:
        container.close()
        return None
    return container, stream
