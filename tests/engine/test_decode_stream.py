"""The VAE decode streamed to the MP4 writer (engine/decode_stream.py): the same frames, bit for bit, as the whole
decode; the writer runs while the decoder still decodes; a failure or a stop in the middle leaves no file."""

from __future__ import annotations

import errno
import threading

import numpy as np
import pytest

from wanserve.engine.config import EngineConfig, MemoryConfig
from wanserve.engine.decode_stream import stream_unavailable
from wanserve.engine.engine import Engine
from wanserve.engine.validation import resolve_request
from wanserve.errors import GenerationCancelled
from wanserve.media.outputs import write_mp4_stream, write_video_files
from wanserve.media.video import load_video


def _request(model: str, frames: int = 17):
    # 17 frames: 5 latent frames, so the decoder runs 5 times (1 + 4 x 4 frames).
    params = {"prompt": "a cat", "width": 64, "height": 64, "num_frames": frames, "num_inference_steps": 2, "seed": 3}
    return resolve_request(model, params)


def _decoder(engine: Engine, model: str):
    return engine.load(model).components["vae"].decoder


class _Collect:
    """A `write_video` keeping copies of the frames, and whether the decoder was still running at the first."""

    def __init__(self):
        self.frames: list[np.ndarray] = []
        self.first = threading.Event()

    def __call__(self, frames, num_frames: int) -> None:
        self.num_frames = num_frames
        for frame in frames:
            self.first.set()
            self.frames.append(np.array(frame, copy=True))


@pytest.mark.parametrize("model", ["tiny-t2v", "tiny-ti2v"])  # the Wan2.1 VAE, and the Wan2.2 VAE (patchified)
def test_streamed_frames_equal_the_whole_decode_and_overlap_it(engine, model):
    request = _request(model)
    whole = engine.generate(request).frames
    collect = _Collect()
    calls = []

    def on_decoder_call(module, args, output):
        calls.append(output.shape[2])
        if len(calls) == 3:
            # The third latent frame is decoded only once the writer has the first frame: the writer runs while
            # the decoder decodes (a whole decode would call the writer after its last latent frame, and this waits
            # in vain).
            assert collect.first.wait(60), "the writer got no frame before the decode's third latent frame"

    handle = _decoder(engine, model).register_forward_hook(on_decoder_call)
    try:
        result = engine.generate(request, write_video=collect)
    finally:
        handle.remove()
    assert calls == [1, 4, 4, 4, 4]
    streamed = np.stack(collect.frames)
    assert streamed.dtype == np.uint8 and streamed.shape == whole.shape == (17, 64, 64, 3)
    assert np.array_equal(streamed, whole) and collect.num_frames == 17
    assert result.frames.shape == (0, 64, 64, 3)
    assert (result.num_frames, result.height, result.width) == (17, 64, 64)


def test_streamed_mp4_decodes_to_the_frames_of_the_mp4_written_after_the_decode(engine, tmp_path):
    """The same video, encoded as it decodes. Not compared byte for byte: x264 with frame threads does not always
    give the same bytes for the same frames (seen with the whole-video write too, about one run in five here), so the
    check is that both files hold every frame, equally close to the generated frames."""
    request = _request("tiny-t2v", frames=9)
    source = engine.generate(request).frames
    before = write_video_files(source, tmp_path / "whole.mp4", fps=16, crf=18)
    written = []
    engine.generate(request, write_video=lambda frames, count: written.append(
        write_mp4_stream(frames, tmp_path / "streamed.mp4", 16, 18, count)))  # fmt: skip
    streamed = written[0]
    a = np.stack([np.asarray(f) for f in load_video(before.video_path, "video", max_frames=100)]).astype(float)
    b = np.stack([np.asarray(f) for f in load_video(streamed.path, "video", max_frames=100)]).astype(float)
    assert a.shape == b.shape == (9, 64, 64, 3)
    error_whole, error_streamed = np.abs(a - source).mean(), np.abs(b - source).mean()
    assert error_streamed < 12 and abs(error_streamed - error_whole) < 0.5 and np.abs(a - b).mean() < 1.0
    # A frame out of place (or another frame) would be far off: the next frame of this video differs by more.
    assert np.abs(b[1:] - source[:-1]).mean() > 2 * error_streamed
    assert (tmp_path / "streamed.jpg").read_bytes() == (tmp_path / "whole.jpg").read_bytes()


@pytest.mark.parametrize("failure", ["decode_error", "stop"])
def test_a_failure_or_stop_in_the_middle_of_the_decode_leaves_no_file(engine, tmp_path, failure):
    request = _request("tiny-t2v")
    stop = threading.Event()
    calls = []

    def on_decoder_call(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            if failure == "decode_error":
                raise RuntimeError("injected decode failure")
            stop.set()

    handle = _decoder(engine, "tiny-t2v").register_forward_hook(on_decoder_call)
    out = tmp_path / "out"
    try:
        with pytest.raises(RuntimeError if failure == "decode_error" else GenerationCancelled):
            engine.generate(request, should_stop=stop.is_set, write_video=lambda frames, count: write_mp4_stream(
                frames, out / "output.mp4", 16, 18, count))  # fmt: skip
    finally:
        handle.remove()
    assert calls == [1, 1, 1] if failure == "decode_error" else len(calls) < 5
    assert list(out.iterdir()) == []  # no MP4, no thumbnail, no temporary file
    # The VAE's feature cache was cleared: the next run gives the whole decode's frames.
    collect = _Collect()
    engine.generate(request, write_video=collect)
    assert np.array_equal(np.stack(collect.frames), engine.generate(request).frames)


def test_a_writer_error_stops_the_decode_and_is_raised(engine):
    request = _request("tiny-t2v")
    calls = []
    handle = _decoder(engine, "tiny-t2v").register_forward_hook(lambda m, a, o: calls.append(1))
    full = OSError(errno.ENOSPC, "No space left on device")

    def write_video(frames, num_frames):
        next(iter(frames))
        raise full

    try:
        with pytest.raises(OSError) as raised:
            engine.generate(request, write_video=write_video)
    finally:
        handle.remove()
    assert raised.value is full  # the writer's own error (a full disk stays recognisable as one)


def test_vae_tiling_falls_back_to_the_whole_decode_then_the_writer(tmp_path):
    tiled = Engine(EngineConfig(device="cpu", memory=MemoryConfig(vae_tiling=True)))
    request = _request("tiny-t2v", frames=9)
    pipe = tiled._pipeline(tiled.load("tiny-t2v"), request)
    assert "VAE tiling" in stream_unavailable(pipe, request)
    collect = _Collect()
    calls = []

    def on_decoder_call(module, args, output):
        calls.append(collect.first.is_set())

    handle = tiled.load("tiny-t2v").components["vae"].decoder.register_forward_hook(on_decoder_call)
    try:
        result = tiled.generate(request, write_video=collect)
    finally:
        handle.remove()
    assert calls and not any(calls)  # every decoder call came before the writer's first frame
    assert np.array_equal(np.stack(collect.frames), tiled.generate(request).frames) and collect.num_frames == 9
    assert result.frames.shape == (0, 64, 64, 3) and result.num_frames == 9
