"""Real-size checks on a GPU with random weights (no checkpoints needed), for issue 11's Animate and Fun-Control:

1. The Wan2.2-Animate relighting LoRA at its real size: a random `relighting_lora.ckpt` in the official layout
   (rank 128 over every Linear of the 40 DiT blocks but the face adapter and modulation) loads into the real-size
   `WanAnimateTransformer3DModel` through engine/relighting.py; every key finds its layer, and with the adapter on
   a projection's output moves by exactly x·Aᵀ·Bᵀ (off: the base output).
2. Wan2.2-Fun-5B-Control at its real size (DiT in_dim 148, the Wan2.2 VAE, UMT5-XXL): one generation through the
   engine's `WanFunControlPipeline` with a random control video; step times, peak memory.

    python benchmarks/animate_control_gpu_check.py --out $OUT/animate_control.json [--frames 121 --steps 4]

Writes the JSON to `--out` and prints it. Random weights: the video is noise; what is measured is that the code
runs at the real shapes, and how fast.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OFFICIAL_TO_DIFFUSERS = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}


def _random_module(key: str, device: str, dtype=torch.bfloat16, **config_changes):
    from wanserve.engine.architectures import TRANSFORMER_CONFIGS, build_on_meta

    if config_changes:
        import diffusers

        cls_name, config = TRANSFORMER_CONFIGS[key]
        with torch.device("meta"):
            module = getattr(diffusers, cls_name)(**{**config, **config_changes})
    else:
        module = build_on_meta(key)
    module = module.to_empty(device=device).to(dtype)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.02, generator=generator)
    if hasattr(module, "rope"):
        rope = module.rope
        module.rope = type(rope)(rope.attention_head_dim, rope.patch_size, rope.max_seq_len).to(device)
    return module.eval()


def check_relighting(device: str) -> dict:
    from wanserve.engine.relighting import load_relighting_lora

    transformer = _random_module("dit-animate-14b", device)
    rank = 128
    generator = torch.Generator().manual_seed(1)
    state = {}
    for i, block in enumerate(transformer.blocks):
        for official, ours in OFFICIAL_TO_DIFFUSERS.items():
            linear = block.get_submodule(ours)
            state[f"blocks.{i}.{official}.lora_A.weight"] = (
                torch.randn(rank, linear.in_features, generator=generator) * 0.01
            )
            state[f"blocks.{i}.{official}.lora_B.weight"] = (
                torch.randn(linear.out_features, rank, generator=generator) * 0.01
            )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "relighting_lora.ckpt"
        torch.save({"state_dict": state}, path)
        size_gb = path.stat().st_size / 1e9
        start = time.perf_counter()
        load_relighting_lora(transformer, path)
        load_s = time.perf_counter() - start
    layers = [n for n, m in transformer.named_modules() if hasattr(m, "lora_A") and "relighting" in m.lora_A]
    last = len(transformer.blocks) - 1
    probe = transformer.blocks[last].attn1.to_q
    x = torch.randn(4, probe.in_features, device=device, dtype=probe.weight.dtype)
    with torch.no_grad():
        off = probe(x).float()
        transformer.enable_lora()
        transformer.set_adapters(["relighting"], [1.0])
        on = probe(x).float()
        a = state[f"blocks.{last}.self_attn.q.lora_A.weight"].to(device).float()
        b = state[f"blocks.{last}.self_attn.q.lora_B.weight"].to(device).float()
        expected = x.float() @ a.T @ b.T
        transformer.disable_lora()
        back = probe(x).float()
    delta_error = ((on - off) - expected).abs().max().item() / expected.abs().max().item()
    del transformer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "lora_file_gb": round(size_gb, 2),
        "lora_keys": len(state),
        "lora_layers_loaded": len(layers),
        "expected_layers": len(state) // 2,  # one per Linear the file covers (40 blocks x 12 at the real size)
        "load_s": round(load_s, 1),
        "delta_relative_error": delta_error,
        "off_equals_base": bool(torch.equal(off, back)),
    }


def check_fun_control(device: str, frames: int, steps: int, width: int, height: int) -> dict:
    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine
    from wanserve.engine.realsize import build_random_components
    from wanserve.engine.validation import resolve_request
    from wanserve.media.video import encode_mp4

    components = build_random_components("wan2.2-ti2v-5b", device)
    components["transformer"] = _random_module("dit-5b", device, in_channels=148)  # VideoX-Fun's in_dim
    engine = Engine(EngineConfig(device=device))
    engine.adopt("wan2.2-fun-5b-control", components, random_weights=True)
    with tempfile.TemporaryDirectory() as directory:
        control = f"{directory}/control.mp4"
        rng = np.random.default_rng(0)
        encode_mp4(rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8), control, fps=24)
        request = resolve_request(
            "wan2.2-fun-5b-control",
            {"prompt": "a dancer on a beach", "video": control, "num_frames": frames, "num_inference_steps": steps,
             "width": width, "height": height, "seed": 1},
        )  # fmt: skip
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = engine.generate(request)
        total = time.perf_counter() - start
    return {
        "size": f"{width}x{height}",
        "frames": int(result.num_frames),
        "steps": steps,
        "step_times_s": [round(s, 3) for s in result.step_times_s],
        "stage_times_s": {k: round(v, 2) for k, v in result.stage_times_s.items()},
        "total_s": round(total, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
        "output_shape": list(result.frames.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", default="704x1280", help="WIDTHxHEIGHT")
    parser.add_argument("--skip", choices=("relighting", "fun-control"), action="append", default=[])
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    report = {"device": torch.cuda.get_device_name(0), "random_weights": True}
    if "relighting" not in args.skip:
        report["relighting_lora"] = check_relighting("cuda")
    if "fun-control" not in args.skip:
        report["fun_control_5b"] = check_fun_control("cuda", args.frames, args.steps, width, height)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
