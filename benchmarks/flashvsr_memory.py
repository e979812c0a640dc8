"""FlashVSR streaming keeps CPU memory bounded: an upscale job's whole path (decode the input file frame by frame,
tiny-long FlashVSR chunk by chunk, MP4 segments joined with the audio) on a short clip and on one 10x longer, each
in a fresh process, comparing peak resident memory (ru_maxrss). The tiny random-weight model on the CPU: what is
measured is what grows with the clip (frame buffers, KV cache, decoder memory, output), not the model.

    python benchmarks/flashvsr_memory.py --out benchmarks/results/<date>-flashvsr-memory-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path


def make_clip(path: Path, frames: int, width: int, height: int) -> None:
    """A noise clip with an AAC tone, written frame by frame."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=Fraction(25))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        tone = container.add_stream("aac", rate=16000)
        for _ in range(frames):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        samples = (0.3 * np.sin(np.arange(16000 * frames // 25) / 5)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(tone.encode(frame))
        container.mux(tone.encode(None))


def child(video: str, scale: int) -> None:
    """One upscale in this process; prints a JSON line."""
    import torch

    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine
    from wanserve.engine.validation import resolve_request
    from wanserve.worker.upscale import run_upscale_part

    torch.set_num_threads(1)
    engine = Engine(EngineConfig(device="cpu"))
    engine.load("tiny-flashvsr")
    loaded_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    request = resolve_request("tiny-flashvsr", {"task": "upscale", "video": video, "scale": scale, "seed": 0})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result, files = run_upscale_part(engine, request, scratch, lambda e: None, lambda: False, {})
        out_bytes = os.path.getsize(files.path)
    seconds = time.perf_counter() - start
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "frames_out": result.num_frames, "size": f"{result.width}x{result.height}", "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_rss_mib, 1), "rss_after_load_mib": round(loaded_rss_mib, 1),
        "growth_mib": round(peak_rss_mib - loaded_rss_mib, 1), "output_bytes": out_bytes,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=29, help="frames of the short clip; the long one has 10x")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.scale)
        return
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, frames in (("short", args.frames), ("long", args.frames * 10)):
            path = Path(tmp) / f"{label}.mp4"
            make_clip(path, frames, args.width, args.height)
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, __file__, "--child", str(path), "--scale", str(args.scale)]
            output = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            runs[label] = {"frames_in": frames, **json.loads(output.strip().splitlines()[-1])}
            print(label, runs[label], flush=True)
    ratio = runs["long"]["peak_rss_mib"] / runs["short"]["peak_rss_mib"]
    result = {
        "what": "peak RSS of an upscale (tiny-flashvsr, tiny-long, CPU) on a clip and on one 10x longer",
        "input": f"{args.width}x{args.height}, x{args.scale}",
        "runs": runs,
        "peak_rss_ratio_long_over_short": round(ratio, 3),
        "within_1_2x": ratio <= 1.2,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/flashvsr_memory.py" + (f" --out {args.out}" if args.out else ""),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
