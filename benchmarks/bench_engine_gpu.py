"""wanserve's Engine against stock diffusers on real-size models with random weights, in one run on one GPU.

Both run the same components (random bf16 transformer at the real size, the real-size UMT5-XXL text encoder and
Wan2.1 VAE) with the same seed. Reports seconds per denoising step and per generation for each, their ratio, and
the largest pixel difference between the two videos (both encoded by the same MP4 writer).

    python benchmarks/bench_engine_gpu.py --model wan2.1-t2v-1.3b --steps 4 --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

REAL_SIZE = {
    "wan2.1-t2v-1.3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "wan2.1-t2v-14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40),
}


def build_components(model: str, device: str) -> dict:
    """Real-size Wan2.1 T2V components with random weights (nothing is downloaded)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from wanserve.engine.tiny import build_tiny_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
            freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, **REAL_SIZE[model],
        ).to(torch.bfloat16).eval()  # fmt: skip
        text_encoder = UMT5EncoderModel(
            UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                       relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", dropout_rate=0.0)
        ).to(torch.bfloat16).eval()  # fmt: skip
        vae = AutoencoderKLWan().to(torch.float32).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return dict(tokenizer=build_tiny_tokenizer(), text_encoder=text_encoder, vae=vae, transformer=transformer,
                scheduler=scheduler)  # fmt: skip


def run_stock(components, args, steps):
    from diffusers import WanPipeline

    pipe = WanPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    marks = []

    def on_step(p, i, t, kw):
        torch.cuda.synchronize()
        marks.append(time.perf_counter())
        return {}

    torch.cuda.synchronize()
    start = time.perf_counter()
    frames = pipe(
        prompt=args.prompt, negative_prompt="", height=args.height, width=args.width, num_frames=args.frames,
        num_inference_steps=steps, guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="np", callback_on_step_end=on_step,
    ).frames[0]  # fmt: skip
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    step_times = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return frames, total, step_times


def run_engine(engine, model, args, steps):
    from wanserve.engine.validation import resolve_request

    request = resolve_request(
        model, dict(prompt=args.prompt, negative_prompt="", width=args.width, height=args.height,
                    num_frames=args.frames, num_inference_steps=steps, guidance_scale=5.0, flow_shift=5.0,
                    seed=args.seed),
    )  # fmt: skip
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = engine.generate(request)
    torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="wan2.1-t2v-1.3b", choices=sorted(REAL_SIZE))
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompt", default="a cat surfing a wave at sunset")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="bench_engine_gpu.json")
    args = parser.parse_args()

    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine

    components = build_components(args.model, "cuda")
    engine = Engine(EngineConfig(device="cuda"))
    engine.adopt(args.model, components, random_weights=True)
    # Warm-up: kernels, allocator, cuDNN plans, for both paths.
    run_stock(components, args, 2)
    run_engine(engine, args.model, args, 2)

    stock_frames, stock_total, stock_steps = run_stock(components, args, args.steps)
    result, engine_total = run_engine(engine, args.model, args, args.steps)
    stock_uint8 = (np.clip(stock_frames, 0, 1) * 255 + 0.5).astype(np.int16)
    diff = np.abs(stock_uint8 - result.frames.astype(np.int16))
    engine_steps = list(result.step_times_s[1:])  # the first step also runs the pipeline's set-up
    report = {
        "model": args.model, "weights": "random (real-size)", "size": f"{args.width}x{args.height}",
        "frames": args.frames, "steps": args.steps, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
        "python": platform.python_version(),
        "stock_total_s": round(stock_total, 3), "engine_total_s": round(engine_total, 3),
        "stock_step_s_median": round(statistics.median(stock_steps), 4),
        "engine_step_s_median": round(statistics.median(engine_steps), 4),
        "engine_over_stock_total": round(engine_total / stock_total, 4),
        "engine_stage_times_s": {k: round(v, 3) for k, v in result.stage_times_s.items()},
        "max_pixel_diff_vs_stock": int(diff.max()), "mean_pixel_diff_vs_stock": float(diff.mean()),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }  # fmt: skip
    print(json.dumps(report))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
