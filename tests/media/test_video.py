"""H.264 MP4 encoding, probing and video decoding with real PyAV round trips."""

from __future__ import annotations

import base64
import os

import av
import numpy as np
import pytest

from wanserve.errors import GenerationCancelled, InvalidRequestError
from wanserve.media import encode_mp4, load_video, probe_video, sniff_media_type, write_thumbnail

from .samples import gradient_frames, image_bytes, write_video


def _decode_all(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_encode_mp4_roundtrip_probe_reports_h264_yuv420p(tmp_path, frames):
    path = tmp_path / "out.mp4"

    written = encode_mp4(frames, path, fps=8)

    assert written == 9
    info = probe_video(path)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 64, 9, 8.0)
    decoded = _decode_all(path)
    assert decoded.shape == frames.shape
    # CRF 18 on a smooth gradient: the pictures must come back, not just the header.
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 4
    assert sniff_media_type(path.read_bytes()) == "video/mp4"


def test_encode_mp4_tags_bt709_and_keeps_saturated_colours(tmp_path):
    red = np.zeros((2, 32, 32, 3), np.uint8)
    red[..., 0], red[..., 1], red[..., 2] = 230, 20, 40
    path = tmp_path / "red.mp4"

    encode_mp4(red, path, fps=8)

    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range) == (1, 1, 1, 1)
    # Decoded with the tagged matrix the red comes back; a BT.601/709 mix-up would be off by ~20 in red.
    assert np.abs(_decode_all(path)[:, 16, 16].astype(int) - [230, 20, 40]).max() <= 3


def test_encode_mp4_float_frames_match_uint8_frames(tmp_path, frames):
    encode_mp4(frames, tmp_path / "u8.mp4", fps=16)
    encode_mp4(frames.astype(np.float32) / 255.0, tmp_path / "f32.mp4", fps=16)

    assert np.array_equal(_decode_all(tmp_path / "u8.mp4"), _decode_all(tmp_path / "f32.mp4"))
    assert probe_video(tmp_path / "f32.mp4").fps == 16.0


def test_encode_mp4_iterable_frames_streams(tmp_path, frames):
    written = encode_mp4((f for f in frames), tmp_path / "gen.mp4", fps=24, crf=30)

    assert written == 9
    assert probe_video(tmp_path / "gen.mp4").num_frames == 9


def test_encode_mp4_failing_frames_leave_no_file(tmp_path, frames):
    path = tmp_path / "cancelled.mp4"

    def cancelled_after_three():
        yield from frames[:3]
        raise GenerationCancelled("stopped while writing")

    with pytest.raises(GenerationCancelled):
        encode_mp4(cancelled_after_three(), path, fps=8)

    assert os.listdir(tmp_path) == []


def test_encode_mp4_failure_keeps_previous_file(tmp_path, frames):
    path = tmp_path / "out.mp4"
    encode_mp4(frames, path, fps=8)
    before = path.read_bytes()
    bad = list(frames[:2]) + [np.zeros((32, 32, 3), np.uint8)]

    with pytest.raises(InvalidRequestError, match="change size"):
        encode_mp4(bad, path, fps=8)

    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize(("shape", "field"), [((2, 64, 63, 3), "width"), ((2, 63, 64, 3), "height")])
def test_encode_mp4_odd_size_rejected_naming_dimension(tmp_path, shape, field):
    with pytest.raises(InvalidRequestError) as err:
        encode_mp4(np.zeros(shape, np.uint8), tmp_path / "odd.mp4", fps=8)

    assert err.value.field == field
    assert f"`width`={shape[2]}, `height`={shape[1]}" in str(err.value)
    assert not (tmp_path / "odd.mp4").exists()


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"fps": 0}, "fps", "`fps` must be in (0, 240], got 0"),
        ({"fps": 8, "crf": 52}, "crf", "`crf` must be an integer in 0..51, got 52"),
        ({"fps": 8, "frames": np.zeros((2, 64, 64), np.uint8)}, "frames", "got shape (2, 64, 64)"),
        ({"fps": 8, "frames": np.full((1, 8, 8, 3), np.nan, np.float32)}, "frames", "NaN"),
        ({"fps": 8, "frames": np.zeros((0, 8, 8, 3), np.uint8)}, "frames", "`frames` is empty"),
    ],
)
def test_encode_mp4_bad_arguments_rejected(tmp_path, frames, kwargs, field, text):
    kwargs.setdefault("frames", frames)

    with pytest.raises(InvalidRequestError) as err:
        encode_mp4(path=tmp_path / "x.mp4", **kwargs)

    assert err.value.field == field
    assert text in str(err.value)
    assert os.listdir(tmp_path) == []


def test_write_thumbnail_writes_scaled_jpeg(tmp_path):
    frame = gradient_frames(1, height=128, width=64)[0]
    path = tmp_path / "thumb.jpg"

    size = write_thumbnail(frame, path, max_side=32)

    data = path.read_bytes()
    assert data[:3] == b"\xff\xd8\xff"
    assert sniff_media_type(data) == "image/jpeg"
    assert size == (16, 32)
    assert os.listdir(tmp_path) == ["thumb.jpg"]


def test_write_thumbnail_small_frame_not_upscaled(tmp_path, frames):
    assert write_thumbnail(frames[0].astype(np.float32) / 255, tmp_path / "t.jpg") == (64, 64)


def test_load_video_stops_at_max_frames(tmp_path, frames):
    encode_mp4(frames, tmp_path / "in.mp4", fps=8)

    images = load_video(str(tmp_path / "in.mp4"), "video", max_frames=4)

    assert len(images) == 4
    assert all(im.mode == "RGB" and im.size == (64, 64) for im in images)
    first = np.asarray(images[0]).astype(int)
    assert np.abs(first - frames[0].astype(int)).mean() < 4


def test_load_video_from_bytes_and_data_url(tmp_path, frames):
    encode_mp4(frames, tmp_path / "in.mp4", fps=8)
    data = (tmp_path / "in.mp4").read_bytes()
    url = "data:video/mp4;base64," + base64.b64encode(data).decode()

    assert len(load_video(data, "video", max_frames=100)) == 9
    assert len(load_video(url, "video", max_frames=100)) == 9


@pytest.mark.parametrize(
    ("name", "codec", "fmt", "mime"),
    [
        ("in.webm", "libvpx-vp9", "webm", "video/webm"),
        ("in.mkv", "libx264", "matroska", "video/x-matroska"),
        ("in.avi", "mpeg4", "avi", "video/x-msvideo"),
        ("in.mov", "libx264", "mov", "video/quicktime"),
    ],
)
def test_load_video_reads_containers(tmp_path, name, codec, fmt, mime):
    clip = gradient_frames(5, 32, 48)
    path = write_video(tmp_path / name, codec, fmt, clip)

    images = load_video(path.read_bytes(), "video", max_frames=50)

    assert sniff_media_type(path.read_bytes()) == mime
    assert len(images) == 5
    assert images[0].size == (48, 32)
    assert probe_video(path).num_frames == 5


def test_load_video_reads_animated_gif():
    import io

    from PIL import Image

    frames = [Image.new("RGB", (24, 16), (i * 40, 0, 0)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)

    images = load_video(buf.getvalue(), "pose_video", max_frames=10)

    assert len(images) == 4
    assert images[0].size == (24, 16)


def test_load_video_text_file_names_field(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")

    with pytest.raises(InvalidRequestError) as err:
        load_video(str(path), "face_video", max_frames=4)

    assert err.value.field == "face_video"
    assert "`face_video` must be an MP4" in str(err.value)
    assert "text" in str(err.value)


def test_load_video_truncated_mp4_names_field(tmp_path, frames):
    encode_mp4(frames, tmp_path / "in.mp4", fps=8)
    data = (tmp_path / "in.mp4").read_bytes()

    with pytest.raises(InvalidRequestError) as err:
        load_video(data[: len(data) // 3], "video", max_frames=9)

    assert err.value.field == "video"
    assert "corrupt or truncated video/mp4" in str(err.value)


def test_load_video_image_rejected():
    with pytest.raises(InvalidRequestError, match="`video` must be an MP4.*got image/png"):
        load_video(image_bytes("PNG"), "video", max_frames=4)


def test_load_video_missing_path_names_field(tmp_path):
    with pytest.raises(InvalidRequestError) as err:
        load_video(str(tmp_path / "absent.mp4"), "mask", max_frames=4)

    assert err.value.field == "mask"
    assert "does not exist" in str(err.value)


def test_load_video_large_frames_rejected(tmp_path, frames):
    encode_mp4(frames, tmp_path / "in.mp4", fps=8)

    with pytest.raises(InvalidRequestError, match="64x64 = 4096 pixels, more than the limit of 1000"):
        load_video(str(tmp_path / "in.mp4"), "video", max_frames=4, max_frame_pixels=1000)


def test_load_video_zero_max_frames_rejected(tmp_path):
    with pytest.raises(InvalidRequestError, match="`max_frames` must be a positive integer, got 0"):
        load_video(b"x", "video", max_frames=0)


def test_encode_mp4_missing_directory_raises(tmp_path, frames):
    with pytest.raises(FileNotFoundError, match="output directory .* does not exist"):
        encode_mp4(frames, tmp_path / "absent" / "out.mp4", fps=8)


def test_probe_video_text_names_field():
    with pytest.raises(InvalidRequestError) as err:
        probe_video(b"just some text, not a video at all\n" * 10, field="control_video")

    assert err.value.field == "control_video"
    assert "`control_video` is not a readable video" in str(err.value)
