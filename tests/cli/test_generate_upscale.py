"""`wanserve generate --task upscale` (tiny FlashVSR): a transport-stream input is re-encoded, upscaled 4x and written
with its audio and a thumbnail."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.api.test_upscale import make_video, read_video
from wanserve.cli.main import app


def test_generate_upscale_of_a_transport_stream(tmp_path):
    source = tmp_path / "in.ts"
    source.write_bytes(make_video(29, fmt="mpegts"))
    out = tmp_path / "out.mp4"
    args = ["generate", "-m", "tiny-flashvsr", "--task", "upscale", "--video", str(source), "--scale", "4"]
    result = CliRunner().invoke(app, [*args, "--quality", "8", "--seed", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_video(out.read_bytes()) == (256, 128, 29, ["video", "audio"])
    assert (tmp_path / "out.jpg").is_file()


def test_generate_upscale_refuses_a_generation_field(tmp_path):
    source = tmp_path / "in.mp4"
    source.write_bytes(make_video(21, audio=False))
    args = ["generate", "-m", "tiny-flashvsr", "--task", "upscale", "--video", str(source), "--steps", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "`num_inference_steps` is not used by task 'upscale'" in result.output
