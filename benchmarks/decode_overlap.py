"""The VAE decode overlapped with the MP4 encode (engine/decode_stream.py) against the two one after the other, on the
real-size Wan2.1 VAE with random weights (nothing downloaded): seconds for each, the saving, peak memory, and whether
the streamed frames equal the whole decode's bit for bit.

- sequential: `vae.decode` of the whole latent video, frames to uint8 as the engine does, then `write_video_files`
  (the MP4 and its thumbnail), as a job ran before the decode was streamed.
- streamed: the same decode with `StreamedDecode` handing each chunk (1, then 4 frames per latent frame) to
  `write_mp4_stream` on a writer thread while the next chunk decodes, as a job runs now.

The first run of each is a warm-up (cuDNN's algorithm search with `cudnn.benchmark`, as `vae_decode.py` measures);
then `--repeats` timed runs each, alternating, and the best is reported.

    PYTHONPATH=src python3 benchmarks/decode_overlap.py --out $OUT/decode_overlap.json     # 832x480x81 on CUDA
    PYTHONPATH=src python3 benchmarks/decode_overlap.py --tiny                              # CPU smoke check
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (after one warm-up each)")
    parser.add_argument("--no-cudnn-benchmark", action="store_true", help="leave cudnn.benchmark off (the default)")
    parser.add_argument("--tiny", action="store_true", help="tiny-t2v's VAE, 64x64x17 on the CPU: checks the script")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from diffusers.video_processor import VideoProcessor

    from wanserve.engine.decode_stream import StreamedDecode, to_uint8
    from wanserve.media.outputs import write_mp4_stream, write_video_files

    if args.tiny:
        from wanserve.engine.registry import get_spec
        from wanserve.engine.tiny import build_tiny_components

        device, (width, height), frames = "cpu", (64, 64), 17
        vae = build_tiny_components(get_spec("tiny-t2v"))["vae"]
    else:
        from wanserve.engine.realsize import build_random_component

        device, frames = "cuda", args.frames
        width, height = (int(v) for v in args.size.split("x"))
        vae = build_random_component(args.model, "vae", device, torch.float32)
    torch.backends.cudnn.benchmark = device == "cuda" and not args.no_cudnn_benchmark
    pipe = SimpleNamespace(vae=vae, video_processor=VideoProcessor(vae_scale_factor=8))
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(1, vae.config.z_dim, (frames - 1) // 4 + 1, height // 8, width // 8, generator=generator)
    latents = latents.to(device)
    scratch = Path(tempfile.mkdtemp(prefix="decode-overlap-"))

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def sequential() -> tuple[dict, np.ndarray]:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            decoded = vae.decode(latents, return_dict=False)[0]
            video = to_uint8(pipe.video_processor.postprocess_video(decoded, output_type="np")[0])
        del decoded
        decoded_at = time.perf_counter()
        write_video_files(video, scratch / "sequential.mp4", args.fps, args.crf)
        end = time.perf_counter()
        return {"decode_s": decoded_at - start, "write_s": end - decoded_at, "total_s": end - start}, video

    def streamed() -> tuple[dict, np.ndarray]:
        kept: list[np.ndarray] = []

        def tee(video):
            for frame in video:
                kept.append(np.array(frame, copy=True))
                yield frame

        def write_video(video, count: int) -> None:
            write_mp4_stream(tee(video), scratch / "streamed.mp4", args.fps, args.crf, count)

        sync()
        start = time.perf_counter()
        with torch.inference_mode(), StreamedDecode(pipe, write_video, frames):
            vae.decode(latents, return_dict=False)
        sync()
        end = time.perf_counter()
        return {"total_s": end - start}, np.stack(kept)

    report: dict = {
        "model": "tiny-t2v" if args.tiny else args.model, "weights": "random", "size": f"{width}x{height}x{frames}",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
        "python": platform.python_version(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "fps": args.fps, "crf": args.crf,
    }  # fmt: skip
    runs: dict[str, list[dict]] = {"sequential": [], "streamed": []}
    reference = None
    for i in range(1 + args.repeats):
        for name, run in (("sequential", sequential), ("streamed", streamed)):
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            timing, video = run()
            if device == "cuda":
                timing["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            timing = {k: round(v, 3) for k, v in timing.items()}
            if name == "sequential":
                reference = video
            else:
                report.setdefault("frames_bit_identical", True)
                report["frames_bit_identical"] &= bool(np.array_equal(video, reference))
            if i == 0:
                report[f"{name}_warm_up"] = timing
            else:
                runs[name].append(timing)
            print(name, "warm-up" if i == 0 else f"run {i}", json.dumps(timing), flush=True)
    best = {name: min(entries, key=lambda t: t["total_s"]) for name, entries in runs.items() if entries}
    report.update(runs=runs, best=best)
    if len(best) == 2:
        saving = best["sequential"]["total_s"] - best["streamed"]["total_s"]
        report["saving_s"] = round(saving, 3)
        report["saving_fraction_of_sequential"] = round(saving / best["sequential"]["total_s"], 3)
    print(json.dumps({k: report[k] for k in ("best", "saving_s", "frames_bit_identical") if k in report}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
