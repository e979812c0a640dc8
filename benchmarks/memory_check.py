"""Measured peak accelerator memory of one generation next to wanserve's estimate (engine/memory_estimate.py).

Builds a real-size text-to-video model with random weights directly on the device (nothing is downloaded),
runs one generation through the `Engine` with the chosen memory options, and prints JSON with
`torch.cuda.max_memory_allocated()` for the whole run, for the denoising stages (text encoding included) and for
the VAE decode, each next to the estimate.

    python benchmarks/memory_check.py                      # Wan2.1-T2V-14B, 832x480x81, 2 steps with CFG
    python benchmarks/memory_check.py --offload model --vae-tiling --out memory.json
    python benchmarks/memory_check.py --tiny               # CPU smoke check of this script (no measurement)
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from wanserve.engine.realsize import TEXT_TO_VIDEO_MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b", choices=TEXT_TO_VIDEO_MODELS)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=5.0, help="> 1 runs classifier-free guidance")
    parser.add_argument("--offload", default="none", choices=("none", "model", "group"))
    parser.add_argument("--text-encoder-on-cpu", action="store_true")
    parser.add_argument("--vae-tiling", action="store_true")
    parser.add_argument("--group-use-stream", action="store_true", help="group offload copies on a CUDA stream")
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="one generation, its peak counted from its text encoding on (after the memory options are applied)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny-t2v on the CPU: checks the script runs end to end")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    from wanserve.engine.config import MemoryConfig
    from wanserve.engine.memory_estimate import estimate_memory
    from wanserve.engine.realsize import engine_for
    from wanserve.engine.registry import get_spec
    from wanserve.engine.requests import Stage
    from wanserve.engine.validation import resolve_request

    memory = MemoryConfig(
        offload=args.offload,
        text_encoder_on_cpu=args.text_encoder_on_cpu,
        vae_tiling=args.vae_tiling,
        group_offload_use_stream=args.group_use_stream,
    )
    if args.tiny:
        model, device = "tiny-t2v", "cpu"
        width, height, frames = 64, 64, 9
        if memory.offload != "none":
            parser.error("--tiny runs on the CPU, where offload has no meaning; leave --offload at none")
    else:
        model, device = args.model, "cuda"
        width, height, frames = args.width, args.height, args.frames
        if not torch.cuda.is_available():
            parser.error("a real-size check needs CUDA; use --tiny for a CPU smoke check")
    measure = device == "cuda"

    # 1. Build the model (random weights) and the engine that serves it
    start = time.perf_counter()
    engine = engine_for(model, device, memory)
    build_s = time.perf_counter() - start
    request = resolve_request(
        model,
        dict(prompt="a cat surfing a wave at sunset", width=width, height=height, num_frames=frames,
             num_inference_steps=args.steps, guidance_scale=args.guidance, seed=0),
    )  # fmt: skip

    # 2. Generate, reading the peak at the end of denoising and resetting it for the decode
    stage_peaks: dict[str, int] = {}

    started = time.perf_counter()

    def on_progress(event) -> None:
        print(f"{time.perf_counter() - started:7.1f} s  {event.stage.value} {event.step}/{event.steps}", flush=True)
        if measure and event.stage == Stage.DENOISING and "text" not in stage_peaks:
            torch.cuda.synchronize()
            stage_peaks["text"] = torch.cuda.max_memory_allocated()  # text encoding (and image inputs)
            torch.cuda.reset_peak_memory_stats()
        if measure and event.stage == Stage.DECODING and "denoise" not in stage_peaks:
            torch.cuda.synchronize()
            stage_peaks["denoise"] = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    # A one-step warm-up first: the memory options (placement, offload hooks) and compilation happen at the first
    # generation, and the build put every component on the device; neither belongs to a job's peak. Without it the
    # peak is reset when the text encoding starts (the options are applied by then; compilation is not).
    if not args.no_warm_up:
        engine.generate(request.replace(num_inference_steps=1), on_progress=on_progress)
        stage_peaks.clear()
    reset_at_text = [args.no_warm_up]

    def on_progress_measured(event) -> None:
        if measure and reset_at_text[0] and event.stage == Stage.ENCODING_TEXT:
            reset_at_text[0] = False
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        on_progress(event)

    if measure:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = engine.generate(request, on_progress=on_progress_measured)
    if measure:
        torch.cuda.synchronize()
        stage_peaks["decode"] = torch.cuda.max_memory_allocated()
    generate_s = time.perf_counter() - start

    # 3. Report
    estimate = estimate_memory(get_spec(model), memory, width, height, frames)
    gib = 2**30

    def measured(key: str) -> float | None:
        return round(stage_peaks[key] / gib, 2) if key in stage_peaks else None

    peak = max(stage_peaks.values()) if stage_peaks else None
    report = {
        "model": model, "weights": "random (real-size)" if not args.tiny else "tiny (random)",
        "size": f"{width}x{height}", "frames": frames, "steps": args.steps, "cfg": args.guidance > 1.0,
        "memory_options": {"offload": memory.offload, "text_encoder_on_cpu": memory.text_encoder_on_cpu,
                           "vae_tiling": memory.vae_tiling},
        "device": torch.cuda.get_device_name() if measure else "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "measured_peak_gib": round(peak / gib, 2) if peak is not None else None,
        "measured_text_peak_gib": measured("text"), "measured_denoise_peak_gib": measured("denoise"), "measured_decode_peak_gib": measured("decode"),
        "estimate": estimate.as_dict() if estimate is not None else None,
        "estimate_over_measured": round(estimate.peak_gib * gib / peak, 3) if estimate and peak else None,
        "output_shape": list(result.frames.shape), "build_s": round(build_s, 1), "generate_s": round(generate_s, 1),
    }  # fmt: skip
    print(json.dumps(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
