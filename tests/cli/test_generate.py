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


def _animate_dir(directory: Path, frames: int = 17, replace: bool = False) -> Path:
    """An Animate job directory as the official preprocessing writes it (tiny sizes)."""
    import numpy as np
    from PIL import Image

    from wanserve.media.video import encode_mp4

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(directory / "src_ref.png")
    encode_mp4(rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8), str(directory / "src_pose.mp4"), fps=8)
    encode_mp4(rng.integers(0, 256, (frames, 16, 16, 3), dtype=np.uint8), str(directory / "src_face.mp4"), fps=8)
    if replace:
        encode_mp4(rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8), str(directory / "src_bg.mp4"), fps=8)
        encode_mp4(np.full((frames, 64, 64, 3), 255, dtype=np.uint8), str(directory / "src_mask.mp4"), fps=8)
    return directory


def test_generate_animate_src_root_prints_json_status(tmp_path, monkeypatch):
    """The Animate backend's CLI form: `--task animate --src-root DIR --sampling-steps 2 --clip-len 5`; the model is
    the Animate model of WANSERVE_MODELS; a JSON status is the last line of stdout."""
    import json
    from datetime import datetime

    src = _animate_dir(tmp_path / "job", replace=True)
    monkeypatch.setenv("WANSERVE_MODELS", "tiny-animate")
    proc = _run(
        "--task", "animate", "--src-root", str(src), "--animate-mode", "replace", "--sampling-steps", "2",
        "--clip-len", "5", "-o", "anim.mp4", tmp_path=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status["status"] == "succeeded" and len(status["job_id"]) == 32 and status["message"] is None
    assert status["video_path"] == str(tmp_path / "anim.mp4") and (status["frames"], status["fps"]) == (17, 8)
    times = [datetime.fromisoformat(status[k]) for k in ("created_at", "started_at", "finished_at")]
    assert times == sorted(times)
    info = probe_video(status["video_path"])
    assert (info.num_frames, info.width, info.height) == (17, 64, 64)  # as long as the pose video
    assert "Denoising 4/4" in proc.stderr or "Done" in proc.stderr  # 17 frames in segments of 5: 4 segments


def test_generate_animate_src_root_refusal_prints_failed_status(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from wanserve.cli.main import app

    src = _animate_dir(tmp_path / "job", frames=9)
    monkeypatch.setenv("WANSERVE_MODELS", "tiny-animate")
    result = CliRunner().invoke(app, ["generate", "--task", "animate", "--src-root", str(src), "--animate-mode",
                                      "replace", "-o", str(tmp_path / "x.mp4")])  # fmt: skip
    assert result.exit_code == 2
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["status"] == "failed" and "lacks src_bg.mp4, src_mask.mp4" in status["message"]
    assert status["video_path"] is None and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("tiny-vace-moe", ["--mask", "{mask}", "--reference-image", "{png}", "--conditioning-scale", "0.5",
                           "--guidance-2", "3", "--boundary-ratio", "0.5"]),
        ("tiny-fun-control", []),
    ],
)  # fmt: skip
def test_generate_vace_and_fun_control(tmp_path, model, extra):
    """`wanserve generate` with a control video: Wan2.2-VACE-Fun-A14B's tiny stand-in (mask, reference image,
    conditioning scale, both experts' settings) and Wan2.2-Fun-5B-Control's (the control video alone)."""
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from wanserve.cli.main import app
    from wanserve.media.video import encode_mp4

    rng = np.random.default_rng(1)
    control, mask, png = tmp_path / "control.mp4", tmp_path / "mask.mp4", tmp_path / "ref.png"
    encode_mp4(rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8), str(control), fps=8)
    encode_mp4(np.full((9, 64, 64, 3), 255, dtype=np.uint8), str(mask), fps=8)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png)
    args = [a.format(mask=mask, png=png) for a in extra]
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(
        app, ["generate", "-m", model, "-p", "a dancer", "--video", str(control), "--steps", "2", *args, "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (9, 64, 64)
