"""Where one transformer forward's GPU time goes, per mode: the kernels of one profiled forward of the real-size model
(random weights) grouped as matmul, attention, fused element-wise (Triton, from regional compile) and other, with the
top kernels. Modes: `exact` (the engine's attention kernel and regional compile) and `fast` (plus FP8 matmuls and FP8
attention, `engine.fast`), each after a warm-up that compiles it, on the same module.

    PYTHONPATH=src python3 benchmarks/profile_forward.py --out profile.json            # 14B, 832x480x81
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time

import torch

CATEGORIES = (
    ("attention", re.compile(r"flash|fmha|attention|FlashAttn", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|xmma|nvjet|cublas|sm90_|matmul|scaled_mm", re.I)),
    ("fused_elementwise", re.compile(r"^triton", re.I)),
)


def category(name: str) -> str:
    return next((label for label, pattern in CATEGORIES if pattern.search(name)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--size", default="832x480x81")
    parser.add_argument("--modes", default="exact,fast")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per mode (after two warm-ups)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from wanserve.bench.engine import timed_cuda
    from wanserve.engine.config import SpeedConfig
    from wanserve.engine.fast import FastOptions, fast_modes
    from wanserve.engine.realsize import build_random_component, forward_inputs
    from wanserve.engine.speed import apply_speed_options

    width, height, frames = (int(v) for v in args.size.split("x"))
    transformer = build_random_component(args.model, "transformer", "cuda", torch.bfloat16)
    components = {"transformer": transformer}
    speed = apply_speed_options(components, SpeedConfig(compile="blocks"), torch.device("cuda"))
    inputs = forward_inputs(args.model, width, height, frames, device="cuda")
    report: dict = {"model": args.model, "size": args.size, "gpu": torch.cuda.get_device_name(),
                    "torch": torch.__version__, "speed": speed, "modes": {}}  # fmt: skip
    options = {"exact": FastOptions(), "fast": FastOptions(fp8_gemm=True, fp8_attention=True)}

    def forward() -> None:
        with torch.inference_mode():
            transformer(**inputs)

    for mode in args.modes.split(","):
        context = fast_modes(components, options[mode], steps=1) if mode != "exact" else contextlib.nullcontext()
        with context:
            start = time.perf_counter()
            forward()
            forward()
            torch.cuda.synchronize()
            warm_up_s = time.perf_counter() - start
            forward_s = timed_cuda(forward, reps=args.repeats, warmup=0)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                forward()
                torch.cuda.synchronize()
        kernels = []
        for event in prof.key_averages():
            device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            if device_us:
                kernels.append((event.key, device_us / 1000, event.count))
        kernels.sort(key=lambda k: -k[1])
        by_category: dict[str, float] = {}
        for name, ms, _ in kernels:
            by_category[category(name)] = by_category.get(category(name), 0.0) + ms
        entry = {
            "forward_s_median": round(forward_s, 4), "warm_up_s": round(warm_up_s, 1),
            "profiled_kernel_ms_total": round(sum(k[1] for k in kernels), 1),
            "ms_by_category": {k: round(v, 1) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": n[:160], "ms": round(ms, 2), "calls": c} for n, ms, c in kernels[: args.top]],
        }  # fmt: skip
        report["modes"][mode] = entry
        print(mode, json.dumps({k: v for k, v in entry.items() if k != "top_kernels"}), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
