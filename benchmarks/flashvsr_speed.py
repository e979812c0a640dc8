"""FlashVSR-Tiny speed on a CUDA GPU: a real-size random-weight FlashVSR v1.1 (Wan2.1-1.3B DiT, 30 layers; LQ
projection 2048/3072; TCDecoder 512/256/128/128) upscales a 384x704 clip 2x to 768x1408 in bf16 with
FlexAttention block-sparse attention. Reports output frames per second (the published figure: 17 fps on an A100
with the official Block-Sparse-Attention CUDA extension).

Random weights: the frames are noise; the work per frame is the real model's. Before timing, one short clip warms
up (FlexAttention compiles per shape) and `--check` compares FlexAttention with the dense masked kernel on one
chunk at a smaller size.

    python benchmarks/flashvsr_speed.py --out $OUT/flashvsr_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch


def _clip(frames: int, height: int, width: int, seed: int = 0):
    """Smooth random frames (low-frequency noise, upscaled), yielded one at a time."""
    rng = np.random.default_rng(seed)
    base = torch.from_numpy(rng.integers(0, 256, (frames, 3, height // 16, width // 16)).astype(np.float32))
    for i in range(frames):
        frame = torch.nn.functional.interpolate(base[i : i + 1], size=(height, width), mode="bilinear")
        yield frame[0].permute(1, 2, 0).clamp(0, 255).to(torch.uint8).numpy()


def _upscale(model, frames, scale, kernel, device, sink=None):
    from wanserve.models.flashvsr import FlashVSRRun, UpscaleOptions

    count = [0]

    def emit(chunk):
        count[0] += len(chunk)
        if sink is not None:
            sink.append(chunk)

    run = FlashVSRRun(model, UpscaleOptions(scale=scale, kernel=kernel), device, torch.bfloat16)
    torch.cuda.synchronize()
    start = time.perf_counter()
    run.run(frames, emit)
    torch.cuda.synchronize()
    return count[0], time.perf_counter() - start, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=101, help="input frames of the timed clip (101 -> 101 out)")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=704)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--variant", default="tiny", choices=("tiny", "tiny-long"))
    parser.add_argument("--kernel", default="flex", choices=("flex", "dense"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-check", action="store_true", help="skip the flex-vs-dense comparison")
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args()

    from wanserve.models.flashvsr import build_random_flashvsr

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    model = build_random_flashvsr(args.variant, real_size=True, dtype=torch.bfloat16)
    for module in model.modules().values():
        module.to(device)
    model.context = model.context.to(device)
    result: dict = {
        "what": "FlashVSR v1.1 real-size random weights, output frames per second",
        "variant": args.variant,
        "kernel": args.kernel,
        "input": f"{args.width}x{args.height}x{args.frames}",
        "scale": args.scale,
        "dtype": "bfloat16",
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "published_a100_fps": 17.0,
    }

    # 1. Checks: FlexAttention and the dense masked kernel on the same inputs and block mask (one attention call at
    #    the real shape of a later chunk: 12 heads x 128, 1 query window, 4 key windows of 66 blocks); then a whole
    #    21-frame clip at a smaller size with each kernel (bf16 differences in one layer can flip near-tied top-k
    #    blocks in the next, so the clip is compared by its mean difference)
    if not args.no_check:
        from wanserve.models.flashvsr.sparse_attention import BlockSparseKernel, draft_block_mask, local_block_mask

        gen = torch.Generator(device).manual_seed(0)
        heads, d, per_window = 12, 128, 66
        q = torch.randn(1, heads, per_window * 128, d, device=device, generator=gen, dtype=torch.bfloat16)
        k = torch.randn(1, heads, 4 * per_window * 128, d, device=device, generator=gen, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        blocks = lambda t: t.transpose(1, 2).reshape(-1, 128, heads * d)  # noqa: E731
        topk = int(per_window * per_window * 2.0 * 768 * 1280 / (768 * 1408)) - 1
        mask = draft_block_mask(blocks(q), blocks(k), heads, local_block_mask(6, 11, 11, device=device), topk)
        flex = BlockSparseKernel("flex")(q, k, v, mask).float()
        dense = BlockSparseKernel("dense")(q, k, v, mask).float()
        result["check_kernel_flex_vs_dense"] = {
            "shape": "q 8448 x k 33792 tokens, 12 heads x 128, bf16",
            "blocks_kept": round(mask.float().mean().item(), 3),
            "max_abs_diff": float((flex - dense).abs().max()),
            "max_abs_value": float(dense.abs().max()),
        }
        print("kernel flex vs dense:", result["check_kernel_flex_vs_dense"], flush=True)
        outs = []
        for kernel in ("flex", "dense"):
            sink: list = []
            _upscale(model, _clip(21, 192, 320, seed=1), 2.0, kernel, device, sink)
            outs.append(np.concatenate(sink).astype(np.int16))
        diff = np.abs(outs[0] - outs[1])
        result["check_clip_flex_vs_dense"] = {
            "size": "640x384x21", "max_abs_diff_uint8": int(diff.max()), "mean_abs_diff_uint8": float(diff.mean()),
        }  # fmt: skip
        print("clip flex vs dense:", result["check_clip_flex_vs_dense"], flush=True)

    # 2. Warm-up (compiles FlexAttention for the first-chunk and later-chunk shapes)
    frames, seconds, _ = _upscale(model, _clip(29, args.height, args.width), args.scale, args.kernel, device)
    result["warmup"] = {"frames": frames, "seconds": round(seconds, 3)}
    print("warm-up:", result["warmup"], flush=True)

    # 3. Timed runs
    torch.cuda.reset_peak_memory_stats(device)
    runs = []
    for _ in range(args.repeats):
        frames, seconds, run = _upscale(
            model, _clip(args.frames, args.height, args.width), args.scale, args.kernel, device
        )
        runs.append({"frames_out": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 2)})
        print("run:", runs[-1], flush=True)
    result["runs"] = runs
    result["output_size"] = f"{int(args.width * args.scale) // 128 * 128}x{int(args.height * args.scale) // 128 * 128}"
    result["fps"] = max(r["fps"] for r in runs)
    result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    result["kv_cache_peak_mib"] = round(run.peak_cache_bytes / 2**20, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
