"""DFloat11 on a real-size random-weight Wan2.1-14B transformer: size against bf16, bit-exactness, decode speed
(Triton kernel and torch), forward time and peak memory served compressed against bf16, and the time to decompress
the whole model at load.

Builds the transformer directly on the GPU (nothing downloaded), times bf16 forwards, compresses every bf16 tensor
on the GPU (engine/dfloat11.py), checks a decode of each block against the original bits, then serves the same
module compressed (engine/dfloat11_model.attach_df11: each block decoded by a pre-hook just before it runs) and
times the same forwards. With `--cpu-offload` the compressed blocks are also served from pinned CPU memory.

    python benchmarks/df11_bench.py --out df11.json                      # 14B, 832x480x81, 2 timed forwards
    python benchmarks/df11_bench.py --size 1280x720 --frames 81 --cpu-offload --out df11-720p.json
    python benchmarks/df11_bench.py --tiny                               # CPU smoke check (no measurement)
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (and kernels compiled)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats, out


def _peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _gib(device: str, what: str) -> float | None:
    if device != "cuda":
        return None
    value = torch.cuda.max_memory_allocated() if what == "peak" else torch.cuda.memory_allocated()
    return round(value / 2**30, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per variant (after one warm-up)")
    parser.add_argument("--cpu-offload", action="store_true", help="also serve the compressed blocks from the CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny transformer on the CPU: checks the script runs")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    from wanserve.engine import dfloat11, dfloat11_triton
    from wanserve.engine.dfloat11_model import attach_df11

    width, height = (int(v) for v in args.size.lower().split("x"))
    result: dict = {
        "command": "python benchmarks/df11_bench.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": platform.node(),
        "torch": torch.__version__,
        "random_weights": True,
    }

    # 1. The model and its inputs
    if args.tiny:
        from wanserve.engine.registry import get_spec
        from wanserve.engine.tiny import _transformer_class, tiny_transformer_config

        device, spec = "cpu", get_spec("tiny-t2v")
        torch.manual_seed(0)
        transformer = _transformer_class(spec)(**tiny_transformer_config(spec)).eval().to(torch.bfloat16)
        gen = torch.Generator().manual_seed(0)
        inputs = dict(
            hidden_states=torch.randn(1, 16, 3, 8, 8, generator=gen).to(torch.bfloat16),
            timestep=torch.tensor([500]),
            encoder_hidden_states=torch.randn(1, 7, 32, generator=gen).to(torch.bfloat16),
            return_dict=False,
        )
        result["model"] = "tiny-t2v (bf16)"
    else:
        if not torch.cuda.is_available():
            parser.error("a real-size run needs CUDA; use --tiny for a CPU smoke check")
        from wanserve.engine.realsize import build_random_components, forward_inputs

        device = "cuda"
        result["gpu"] = torch.cuda.get_device_name()
        components = build_random_components(args.model, device)
        transformer = components.pop("transformer")
        del components
        torch.cuda.empty_cache()
        inputs = forward_inputs(args.model, width, height, args.frames, device)
        result.update(model=args.model, size=f"{width}x{height}x{args.frames}")

    def forward():
        with torch.inference_mode():
            return transformer(**inputs)[0]

    # 2. bf16 forwards
    state = {k: v for k, v in transformer.state_dict().items()}
    bf16_bytes = sum(t.numel() * t.element_size() for t in state.values())
    _peak_reset(device)
    bf16_s, reference = _time(forward, device, args.repeats)
    reference = reference.clone()
    result["bf16"] = {"weights_gib": round(bf16_bytes / 2**30, 3), "forward_s": round(bf16_s, 4),
                      "peak_gib": _gib(device, "peak")}  # fmt: skip

    # 3. Compress on the device
    _sync(device)
    start = time.perf_counter()
    compressed = dfloat11.compress_state_dict(state)
    _sync(device)
    compress_s = time.perf_counter() - start
    df11_bytes = dfloat11.compressed_bytes(compressed)
    coded = [v for v in compressed.values() if isinstance(v, dfloat11.DF11Tensor)]
    coded_weights = sum(v.numel for v in coded)
    result["df11"] = {
        "weights_gib": round(df11_bytes / 2**30, 3),
        "size_vs_bf16": round(df11_bytes / bf16_bytes, 4),
        "bits_per_coded_weight": round(sum(v.nbytes for v in coded) * 8 / coded_weights, 3),
        "compress_s": round(compress_s, 2),
    }

    # 4. Decoders: the Triton kernel against the torch one and the original bits, on the largest block's weights
    names = sorted({k.split(".")[1] for k in compressed if k.startswith("blocks.")}, key=int)
    block = [
        k for k in compressed if k.startswith(f"blocks.{names[0]}.") and isinstance(compressed[k], dfloat11.DF11Tensor)
    ]
    group = [compressed[k] for k in block]
    group_bytes = sum(v.numel * 2 for v in group)
    decoders = {}
    for name, enabled in (("triton", True), ("torch", False)):
        if name == "triton" and (dfloat11_triton.triton is None or device != "cuda"):
            decoders[name] = {"available": False}
            continue
        saved = dfloat11_triton.decode
        if not enabled:
            dfloat11_triton.decode = lambda *a, **k: None  # the torch decoder
        try:
            seconds, decoded = _time(lambda: dfloat11.decompress(group, device), device, 3)
            exact = all(
                torch.equal(d.view(torch.int16), state[k].view(torch.int16))
                for d, k in zip(decoded, block, strict=True)
            )
            decoders[name] = {"available": True, "one_block_s": round(seconds, 5), "bit_exact": exact,
                              "gb_per_s": round(group_bytes / seconds / 1e9, 1)}  # fmt: skip
        except Exception as exc:  # a kernel that fails to build must not cost the rest of the run
            decoders[name] = {"available": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            dfloat11_triton.decode = saved
    result["decode_one_block"] = {"weights": len(block), "bf16_bytes": group_bytes, **decoders}
    if not decoders.get("triton", {}).get("bit_exact"):
        dfloat11_triton.decode = lambda *a, **k: None  # serve with the torch decoder

    # 5. Decompress everything at load (the plain bf16 model from a DF11 file)
    start = time.perf_counter()
    restored = dfloat11.decompress_state_dict(compressed, device)
    _sync(device)
    result["decompress_all_at_load_s"] = round(time.perf_counter() - start, 3)
    result["decompress_all_bit_exact"] = all(
        torch.equal(restored[k].view(torch.uint8), state[k].view(torch.uint8)) for k in state
    )
    del restored, state

    # 6. Served compressed (each block decoded just before it runs)
    for mode, offload in (("df11_on_device", False), ("df11_cpu_offload", True)):
        if offload and not args.cpu_offload:
            continue
        if offload:
            compressed = {k: (v.to("cpu") if isinstance(v, dfloat11.DF11Tensor) else v) for k, v in compressed.items()}
            from wanserve.engine.dfloat11_model import _CompressedBlock  # noqa: F401 (hooks are reinstalled below)

            transformer = _rebuild(args, device, transformer)
        attach_df11(transformer, compressed, device, cpu_offload=offload)
        _peak_reset(device)
        resident = _gib(device, "now")
        seconds, output = _time(forward, device, args.repeats)
        result[mode] = {
            "forward_s": round(seconds, 4),
            "vs_bf16": round(seconds / bf16_s, 3),
            "resident_gib_before_forward": resident,
            "peak_gib": _gib(device, "peak"),
            "output_bit_exact": bool(torch.equal(output.view(torch.int16), reference.view(torch.int16))),
        }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


def _rebuild(args, device, transformer):
    """A fresh module of the same architecture for the second serving mode (hooks of the first one removed)."""
    if args.tiny:
        from wanserve.engine.registry import get_spec
        from wanserve.engine.tiny import _transformer_class, tiny_transformer_config

        spec = get_spec("tiny-t2v")
        return _transformer_class(spec)(**tiny_transformer_config(spec)).eval().to(torch.bfloat16)
    from wanserve.engine.realsize import build_random_components

    del transformer
    torch.cuda.empty_cache()
    components = build_random_components(args.model, device)
    return components.pop("transformer")


if __name__ == "__main__":
    main()
