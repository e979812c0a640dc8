"""Writing a generation's files: the MP4 and its thumbnail together, or neither."""

from __future__ import annotations

import os

import numpy as np
import pytest

from wanserve.errors import InvalidRequestError
from wanserve.media import probe_video
from wanserve.media.outputs import thumbnail_path_for, write_video_files


def test_write_video_files_writes_mp4_and_jpeg_thumbnail(tmp_path, frames):
    files = write_video_files(frames, tmp_path / "sub" / "clip.mp4", fps=8, crf=18)

    assert files.video_path == str(tmp_path / "sub" / "clip.mp4")
    assert files.thumbnail_path == str(tmp_path / "sub" / "clip.jpg") == thumbnail_path_for(files.video_path)
    info = probe_video(files.video_path)
    assert (info.codec, info.width, info.height, info.num_frames, info.fps) == ("h264", 64, 64, 9, 8.0)
    with open(files.thumbnail_path, "rb") as f:
        assert f.read(3) == b"\xff\xd8\xff"  # JPEG


def test_write_video_files_failed_encode_leaves_neither_file(tmp_path):
    odd = np.zeros((3, 63, 64, 3), np.uint8)  # yuv420p needs an even height

    with pytest.raises(InvalidRequestError, match="even width and height"):
        write_video_files(odd, tmp_path / "clip.mp4", fps=8, crf=18)

    assert os.listdir(tmp_path) == []


def test_write_output_files_png_is_the_exact_frame_with_a_jpeg_thumbnail(tmp_path):
    from PIL import Image

    from wanserve.media.outputs import write_output_files

    frame = np.random.default_rng(0).integers(0, 256, (1, 48, 80, 3), dtype=np.uint8)

    files = write_output_files(frame, tmp_path / "image.png", fps=16, crf=18)

    assert (files.path, files.media_type) == (str(tmp_path / "image.png"), "image/png")
    with Image.open(files.path) as image:
        assert (image.format, image.size) == ("PNG", (80, 48))
        assert np.array_equal(np.asarray(image.convert("RGB")), frame[0])  # lossless
    with Image.open(files.thumbnail_path) as thumbnail:
        assert thumbnail.format == "JPEG"


def test_write_output_files_mp4_and_refusals(tmp_path, frames):
    from wanserve.media.outputs import write_output_files

    files = write_output_files(frames, tmp_path / "clip.mp4", fps=8, crf=18)
    assert files.media_type == "video/mp4" and probe_video(files.path).num_frames == 9

    with pytest.raises(InvalidRequestError, match="a PNG holds one frame, got 9"):
        write_output_files(frames, tmp_path / "many.png", fps=8, crf=18)
    with pytest.raises(InvalidRequestError, match="must be an .mp4 or a .png"):
        write_output_files(frames, tmp_path / "clip.gif", fps=8, crf=18)
    assert not (tmp_path / "many.png").exists() and not (tmp_path / "many.jpg").exists()
