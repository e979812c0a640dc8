"""`wanserve generate` as a user runs it: a subprocess, a progress bar, an MP4 PyAV can decode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wanserve.media.video import probe_video

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "120"}
    env.pop("WANSERVE_MODELS_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "wanserve", "generate", *args],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip


def test_generate_tiny_t2v_writes_mp4_with_progress(tmp_path):
    out = tmp_path / "a.mp4"
    proc = _run("--model", "tiny-t2v", "--prompt", "a cat", "--out", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height, info.codec, info.pix_fmt) == (9, 64, 64, "h264", "yuv420p")
    assert (tmp_path / "a.jpg").exists()
    assert "random weights" in proc.stderr
    assert "Denoising" in proc.stderr or "Done" in proc.stderr  # the progress bar's stage column
    assert "wrote" in proc.stderr


def test_generate_tiny_t2i_writes_png(tmp_path):
    from PIL import Image

    proc = _run("-m", "tiny-t2v", "--task", "t2i", "--prompt", "a cat", "-o", "a.png", "--seed", "3", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "a.png") as image:
        assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGB")
    with Image.open(tmp_path / "a.jpg") as thumbnail:
        assert thumbnail.format == "JPEG"
    assert "one image" in proc.stderr and "seed 3" in proc.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--frames", "12"], "`num_frames` must be 4k+1"),
        (["--size", "833x480"], "`width`"),
        (["--steps", "0"], "`num_inference_steps`"),
        (["--task", "t2i", "--frames", "5"], "`num_frames` must be 1 for task 't2i'"),
        (["--task", "t2i"], "task t2i writes a PNG"),
    ],
)
def test_generate_bad_request_names_field_and_writes_nothing(tmp_path, args, text):
    out = tmp_path / "bad.mp4"
    proc = _run("--model", "tiny-t2v", "--prompt", "a cat", "--out", str(out), *args, tmp_path=tmp_path)
    assert proc.returncode == 2
    assert text in proc.stderr
    assert not out.exists()
