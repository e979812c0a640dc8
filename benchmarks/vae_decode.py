"""The Wan VAE decode in each precision the engine can run it in: seconds, peak memory and the deviation of the frames
from the float32 decode, on the real-size Wan2.1 VAE with random weights (nothing downloaded).

Variants: float32 (the official code's and diffusers' default; cuDNN may use TF32 for its convolutions, PyTorch's
default), float32 with `cudnn.benchmark` (cuDNN times its convolution algorithms at the first call of each shape),
bfloat16 weights, and float32 weights under bf16 autocast, both with `cudnn.benchmark`.

    PYTHONPATH=src python3 benchmarks/vae_decode.py --out vae.json          # 832x480x81 on CUDA
    PYTHONPATH=src python3 benchmarks/vae_decode.py --tiny                  # CPU smoke check, 64x64x9
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import time

import torch


def frames_of(decoded: torch.Tensor) -> torch.Tensor:
    """The decoded video as the engine turns it into frames: [-1, 1] to [0, 255] (float, not yet rounded)."""
    return ((decoded.float().clamp(-1, 1) + 1) * 127.5).cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=2, help="timed decodes per variant (after one warm-up)")
    parser.add_argument("--tiny", action="store_true", help="64x64x9 on the CPU: checks the script runs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from wanserve.engine.realsize import build_random_component

    device = "cpu" if args.tiny else "cuda"
    width, height = (64, 64) if args.tiny else (int(v) for v in args.size.split("x"))
    frames = 9 if args.tiny else args.frames
    vae = build_random_component(args.model, "vae", device, torch.float32)
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(1, vae.config.z_dim, (frames - 1) // 4 + 1, height // 8, width // 8, generator=generator)
    latents = latents.to(device)
    bf16_vae = copy.deepcopy(vae).to(torch.bfloat16)  # the same weights, rounded

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    variants = {
        "float32": (vae, False, contextlib.nullcontext),
        "float32_cudnn_benchmark": (vae, True, contextlib.nullcontext),
        "bfloat16_weights_cudnn_benchmark": (bf16_vae, True, contextlib.nullcontext),
        "bfloat16_autocast_cudnn_benchmark": (
            vae, True, lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)
        ),
    }  # fmt: skip
    report: dict = {
        "model": args.model, "weights": "random (real-size VAE)", "size": f"{width}x{height}x{frames}",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
        "python": platform.python_version(), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "variants": {},
    }  # fmt: skip
    reference = None
    for name, (module, benchmark, context) in variants.items():
        torch.backends.cudnn.benchmark = benchmark
        inputs = latents.to(next(module.parameters()).dtype)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        with torch.inference_mode():
            for _ in range(1 + args.repeats):
                sync()
                start = time.perf_counter()
                with context():
                    decoded = module.decode(inputs, return_dict=False)[0]
                sync()
                times.append(time.perf_counter() - start)
        out = frames_of(decoded)
        entry = {"first_s": round(times[0], 3), "decode_s": round(min(times[1:]), 3)}
        if device == "cuda":
            entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if reference is None:
            reference = out
        else:
            diff = out - reference
            entry["rel_l2_vs_float32"] = float(diff.norm() / reference.norm().clamp(min=1e-12))
            entry["max_abs_vs_float32_of_255"] = float(diff.abs().max())
            entry["uint8_frames_equal_fraction"] = float((out.round() == reference.round()).float().mean())
        report["variants"][name] = entry
        print(name, json.dumps(entry), flush=True)
    torch.backends.cudnn.benchmark = False
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
