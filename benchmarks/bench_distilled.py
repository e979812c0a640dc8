"""A step-distilled LoRA job on one GPU: real-size Wan2.1-T2V-14B with random weights, a random LoRA of the published
rank (64, as LightX2V's Wan2.1 distillation LoRA) on every block Linear, 4 steps, CFG off, fast mode; the whole job
(text encoding, 4 steps, VAE decode with the MP4 encoded as it decodes) timed, twice with two different LoRAs back to back, and whether the
base model was reloaded between them (it must not be: the adapters are swapped in place).

    PYTHONPATH=src python3 benchmarks/bench_distilled.py --out distilled.json
    PYTHONPATH=src python3 benchmarks/bench_distilled.py --vae-dtype bfloat16 --out distilled-bf16-vae.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")  # fmt: skip


def write_random_lora(path: Path, transformer, rank: int, seed: int) -> None:
    """A LoRA in diffusers' Wan key format (`transformer.blocks.N.<layer>.lora_A/B.weight`)."""
    from safetensors.torch import save_file

    generator = torch.Generator("cpu").manual_seed(seed)
    tensors = {}
    for index, block in enumerate(transformer.blocks):
        for target in TARGETS:
            layer = block.get_submodule(target)
            prefix = f"transformer.blocks.{index}.{target}"
            tensors[f"{prefix}.lora_A.weight"] = (torch.randn(rank, layer.in_features, generator=generator) * 0.01).to(
                torch.bfloat16
            )
            tensors[f"{prefix}.lora_B.weight"] = (torch.randn(layer.out_features, rank, generator=generator) * 0.01).to(
                torch.bfloat16
            )
    save_file(tensors, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--speed", default="fast", choices=("exact", "fast"))
    parser.add_argument("--slot-rank", type=int, default=None, help="the hot-swap LoRA slot's rank (default: --rank)")
    parser.add_argument(
        "--vae-dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="the VAE's dtype (MemoryConfig.vae_dtype)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from wanserve.engine.config import EngineConfig, LoraConfig, MemoryConfig, SpeedConfig
    from wanserve.engine.engine import Engine
    from wanserve.engine.realsize import build_random_components
    from wanserve.engine.validation import resolve_request
    from wanserve.media.outputs import Mp4Writer

    width, height = (int(v) for v in args.size.split("x"))
    report: dict = {"model": args.model, "weights": "random (real-size)", "size": f"{width}x{height}x{args.frames}",
                    "steps": args.steps, "guidance_scale": 1.0, "lora_rank": args.rank, "speed": args.speed,
                    "lora_slot_rank": args.slot_rank or args.rank, "vae_dtype": args.vae_dtype,
                    "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip

    def dump() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    tmp = Path(tempfile.mkdtemp())
    memory = MemoryConfig(vae_dtype=args.vae_dtype)
    components = build_random_components(args.model, "cuda", memory)
    transformer = components["transformer"]
    paths = [tmp / f"distill_{i}.safetensors" for i in range(2)]
    for i, path in enumerate(paths):
        write_random_lora(path, transformer, args.rank, seed=i)
    engine = Engine(
        EngineConfig(
            device="cuda",
            speed=SpeedConfig(compile="blocks"),
            memory=memory,
            lora=LoraConfig(lora_dir=str(tmp), hotswap_rank=args.slot_rank or args.rank),
        )  # fmt: skip
    )
    engine.adopt(args.model, components, random_weights=True)

    def job(lora: str, label: str) -> dict:
        request = resolve_request(args.model, {
            "prompt": "a cat surfing a wave at sunset", "width": width, "height": height, "num_frames": args.frames,
            "num_inference_steps": args.steps, "guidance_scale": 1.0, "flow_shift": 5.0, "seed": 42,
            "speed": args.speed, "loras": [{"name": lora, "strength": 1.0}],
        })  # fmt: skip
        torch.cuda.synchronize()
        with tempfile.TemporaryDirectory() as out:
            # As a job writes it: the MP4 encoded on a writer thread while the VAE decodes (engine/decode_stream.py).
            start = time.perf_counter()
            result = engine.generate(request, write_video=Mp4Writer(Path(out) / "job.mp4", 16, 18))
            total = time.perf_counter() - start
        entry = {"lora": lora, "job_s": round(total, 3),
                 "stage_times_s": {k: round(v, 3) for k, v in result.stage_times_s.items()},
                 "step_times_s": [round(t, 3) for t in result.step_times_s], "speed": dict(result.speed),
                 "transformer_is_the_same_object": engine.load(args.model).components["transformer"] is transformer}  # fmt: skip
        report.setdefault("jobs", {})[label] = entry
        dump()
        return entry

    job(paths[0].name, "warm_up_lora_a")  # compiles the blocks with this LoRA in place
    job(paths[1].name, "warm_up_lora_b")
    job(paths[0].name, "lora_a")
    job(paths[1].name, "lora_b")
    report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    dump()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
