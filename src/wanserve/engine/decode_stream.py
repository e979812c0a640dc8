"""The VAE decode streamed to the video writer: the MP4 encode of chunk k runs while the accelerator decodes chunk k+1.

The Wan VAE decodes causally, one latent frame at a time with a feature cache (diffusers' `AutoencoderKLWan._decode`
calls its `decoder` once per latent frame: 1 video frame for the first, 4 for each further one). A forward hook on
that `decoder` takes each call's output as it is made, does what `_decode` then does to the whole video
(`unpatchify` for the Wan2.2 VAE, clamp to [-1, 1]), and puts it on a bounded queue; a writer thread turns each chunk
into uint8 frames exactly as the whole video would be (the pipeline's own `video_processor.postprocess_video`, then
`to_uint8`) and hands them to the caller's `write_video`, which encodes them (PyAV) as they come. The frames are the
same, bit for bit, as the whole decode's; at most `max_pending` decoded chunks wait (memory does not grow with the
video's length); the decode itself is diffusers' own, untouched.

Where the decoder is not called once per latent frame, the decode is not streamed and the frames go to
`write_video` after the whole decode (`stream_unavailable` says why): VAE tiling (and the parallel split decode,
which tiles) runs the decoder per tile; Wan2.2-Animate decodes segment by segment inside its loop and drops the
frames segments share.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from wanserve.engine.requests import GenerationRequest, TaskKind
from wanserve.errors import GenerationCancelled

logger = logging.getLogger(__name__)

WriteVideo = Callable[[Iterator[np.ndarray], int], Any]
"""`write_video(frames, num_frames)` consumes the output video as uint8 [H, W, 3] frames in order, `num_frames` of
them (an MP4 encoder); what it returns is not used."""

MAX_PENDING_CHUNKS = 2
"""Decoded chunks (1 or 4 frames each) that may wait for the writer; the decode waits when they are not taken."""

_END = object()
_ABORT = object()


def to_uint8(frames) -> np.ndarray:
    """Pipeline frames (float in 0..1, as diffusers' `output_type="np"` gives them) as uint8."""
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array


def stream_unavailable(pipe, request: GenerationRequest) -> str | None:
    """Why this run's decode cannot be streamed frame chunk by frame chunk; None when it can."""
    vae = getattr(pipe, "vae", None)
    if request.task == TaskKind.ANIMATE:
        return "Wan-Animate decodes segment by segment inside its loop and drops the frames segments share"
    if vae is None or type(vae).__name__ != "AutoencoderKLWan" or not hasattr(vae, "decoder"):
        return f"the VAE is {type(vae).__name__}, not diffusers' AutoencoderKLWan"
    if getattr(vae, "use_tiling", False):
        return "VAE tiling (or the parallel split decode) runs the decoder per tile, not per latent frame"
    return None


class StreamedDecode:
    """For one pipeline call: the decoder's chunks go to `write_video` on a writer thread as they are decoded.

    Use as a context manager around the pipeline call (made with `output_type="pt"`, whose returned video is then
    not needed). On leaving, waits for the writer; an error in the writer is raised there (and stops the decode at
    its next chunk), an error in the decode (or `should_stop` saying yes between chunks) ends the writer's frames
    with an exception, so an encoder that writes atomically leaves no file.
    """

    def __init__(
        self,
        pipe,
        write_video: WriteVideo,
        num_frames: int,
        should_stop: Callable[[], bool] = lambda: False,
        max_pending: int = MAX_PENDING_CHUNKS,
    ):
        self.vae = pipe.vae
        self.video_processor = pipe.video_processor
        self.write_video = write_video
        self.num_frames = num_frames
        self.should_stop = should_stop
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._ended = False
        """The writer thread took the end (or abort) marker off the queue."""
        self._handle = None
        self._thread: threading.Thread | None = None
        self.frames_written = 0
        self.frame_shape: tuple[int, int] | None = None
        """(height, width) of the frames written."""

    # -- the decoding thread ----------------------------------------------------------------------------------
    def __enter__(self) -> StreamedDecode:
        self._handle = self.vae.decoder.register_forward_hook(self._on_chunk)
        self._thread = threading.Thread(target=self._write, name="decode-writer", daemon=True)
        self._thread.start()
        return self

    def _on_chunk(self, module, args, output) -> None:
        if self._error is not None:
            raise self._error  # the writer's own error (a full disk stays recognisable as one)
        if self.should_stop():
            raise GenerationCancelled("generation stopped by request")
        patch = self.vae.config.patch_size
        if patch is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            output = unpatchify(output, patch_size=patch)
        self._queue.put(torch.clamp(output, min=-1.0, max=1.0))

    def __exit__(self, exc_type, exc, tb) -> None:
        self._handle.remove()
        self._queue.put(_END if exc_type is None else _ABORT)
        self._thread.join()
        if exc_type is not None:
            return  # `_decode` stopped before clearing its feature cache: the engine clears it after any failure
        if self._error is not None:
            raise self._error

    # -- the writer thread -------------------------------------------------------------------------------------
    def _write(self) -> None:
        consumed = [False]
        try:
            with torch.inference_mode():
                self.write_video(self._frames(consumed), self.num_frames)
            if not consumed[0]:
                raise RuntimeError(f"the video writer returned after {self.frames_written} of {self.num_frames} frames")
        except BaseException as exc:  # kept for the decoding thread, which raises it
            self._error = exc
        finally:
            self._drain()

    def _frames(self, consumed: list[bool]) -> Iterator[np.ndarray]:
        while True:
            chunk = self._queue.get()
            self._ended = chunk is _END or chunk is _ABORT
            if chunk is _ABORT:
                raise GenerationCancelled("the decode stopped before its last frame")
            if chunk is _END:
                if self.frames_written != self.num_frames:
                    raise RuntimeError(f"the decode gave {self.frames_written} frames, {self.num_frames} expected")
                consumed[0] = True
                return
            frames = to_uint8(self.video_processor.postprocess_video(chunk, output_type="np")[0])
            del chunk
            self.frame_shape = frames.shape[1:3]
            for frame in frames:
                self.frames_written += 1
                yield frame

    def _drain(self) -> None:
        """After the writer is done (or failed): takes what the decode still puts, until it ends, so the decoding
        thread never waits on a full queue."""
        while not self._ended:
            item = self._queue.get()
            self._ended = item is _END or item is _ABORT
