"""A real out-of-memory error on the GPU, recovered: the engine fails that generation with `out_of_memory` and a
hint, gives the memory back, and runs the next generation.

Builds the real-size random-weight Wan2.1-14B pipeline on the GPU and caps the engine's memory (`max_memory_gib`,
as WANSERVE_MAX_MEMORY does; CUDA's allocator is limited to it) so that a normal 832x480x81 request does not fit.
Admission would refuse that request at submission; here the engine is called directly (admission bypassed), so
the allocator really runs out. Then a request that fits runs on the same engine. JSON to --out.

    python benchmarks/oom_recovery.py --out oom.json                    # cap 46 GiB, 14B
    python benchmarks/oom_recovery.py --tiny                            # CPU smoke check (OOM simulated)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def live_tensors(components: dict, top: int = 12) -> list[dict]:
    """The largest CUDA tensors still alive that are no parameter or buffer of the model's components, with the
    types of what refers to them: what a failed run left behind, if anything. The compiler's fake tensors (shapes
    only, no memory) are left out; tensors sharing one storage are listed once."""
    import gc

    from torch._subclasses.fake_tensor import FakeTensor

    owned = {
        id(t)
        for module in components.values()
        if isinstance(module, torch.nn.Module)
        for t in (*module.parameters(), *module.buffers())
    }
    found = []
    for obj in gc.get_objects():
        try:
            if torch.is_tensor(obj) and obj.is_cuda and id(obj) not in owned and not isinstance(obj, FakeTensor):
                found.append(obj)
        except Exception:  # some objects raise on attribute access; they are not tensors
            continue
    unique = {}
    for tensor in found:
        unique.setdefault(tensor.untyped_storage().data_ptr(), tensor)
    found = sorted(unique.values(), key=lambda t: -t.untyped_storage().nbytes())
    rows = []
    for tensor in found[:top]:
        referrers = [type(r).__name__ for r in gc.get_referrers(tensor) if r is not found][:5]
        rows.append({"shape": list(tensor.shape), "dtype": str(tensor.dtype),
                     "storage_mib": round(tensor.untyped_storage().nbytes() / 2**20, 1), "referrers": referrers})  # fmt: skip
    return rows


def live_allocations(top: int = 10) -> list[dict]:
    """Where the memory still allocated was allocated (`--record-history`): the allocator's live blocks grouped by the
    Python stack that allocated them, largest first. The model's own weights (allocated by the build) are left out."""
    snapshot = torch.cuda.memory._snapshot()
    groups: dict[tuple, dict] = {}
    for segment in snapshot["segments"]:
        for block in segment["blocks"]:
            if block["state"] != "active_allocated":
                continue
            frames = [
                f"{f['filename'].rsplit('/', 3)[-1]}:{f['line']}:{f['name']}"
                for f in block.get("frames", [])
                if f["filename"].endswith(".py")  # Python frames; the allocator's own C++ frames say nothing
            ]
            if any("realsize.py" in f for f in frames):
                continue  # the build's weights
            ours = [f for f in frames if "/torch/" not in f and not f.startswith("torch/")][:6]
            key = (tuple(frames[:6]), tuple(ours))
            entry = groups.setdefault(key, {"mib": 0.0, "blocks": 0, "innermost": frames[:8], "ours": ours})
            entry["mib"] += block["size"] / 2**20
            entry["blocks"] += 1
    rows = sorted(groups.values(), key=lambda g: -g["mib"])[:top]
    for row in rows:
        row["mib"] = round(row["mib"], 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--cap-gib", type=float, default=46.0, help="the engine's memory cap (max_memory_gib)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny-t2v on the CPU, the OOM raised by a hook")
    parser.add_argument(
        "--record-history",
        action="store_true",
        help="record the allocator's history and report where the memory left allocated came from",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from wanserve.engine.config import MemoryConfig
    from wanserve.engine.memory_estimate import estimate_memory
    from wanserve.engine.realsize import engine_for, model_and_device
    from wanserve.engine.registry import get_spec
    from wanserve.engine.validation import resolve_request
    from wanserve.errors import OutOfMemoryError

    model, device = model_and_device(parser, args)
    cuda = device == "cuda"
    start = time.perf_counter()
    engine = engine_for(model, device, MemoryConfig(max_memory_gib=args.cap_gib))
    if cuda:
        big = dict(width=832, height=480, num_frames=81)
        small = dict(width=480, height=272, num_frames=17, allow_untrained_size=True)
    else:
        transformer = engine.load(model).components["transformer"]
        hits = []

        def out_of_memory_once(module, inputs):  # a smoke check only: the CPU has no allocator limit to hit
            hits.append(1)
            if len(hits) == 1:
                raise torch.OutOfMemoryError("simulated")

        transformer.register_forward_pre_hook(out_of_memory_once)
        big = small = dict(width=64, height=64, num_frames=9)
    build_s = time.perf_counter() - start
    common = dict(prompt="a cat surfing a wave", num_inference_steps=args.steps, guidance_scale=5.0, seed=0)
    report: dict = {
        "model": model, "random_weights": True, "cap_gib": args.cap_gib, "build_s": round(build_s, 1),
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }  # fmt: skip

    def allocated() -> float | None:
        return round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else None

    if cuda and args.record_history:
        torch.cuda.memory._record_memory_history(max_entries=100_000)

    # 1. The request that does not fit
    spec = get_spec(model)
    estimate = estimate_memory(spec, engine.config.memory, big["width"], big["height"], big["num_frames"])
    report["too_large"] = {"request": big, "estimate_gib": estimate.peak_gib if estimate else None,
                           "allocated_before_gib": allocated()}  # fmt: skip
    start = time.perf_counter()
    try:
        engine.generate(resolve_request(model, {**common, **big}))
        report["too_large"]["outcome"] = "succeeded (no OOM: lower --cap-gib)"
    except OutOfMemoryError as exc:
        report["too_large"].update(outcome="out_of_memory", error_type=exc.error_type, message=str(exc))
    report["too_large"]["seconds_to_fail"] = round(time.perf_counter() - start, 2)
    report["too_large"]["allocated_after_gib"] = allocated()
    if cuda:
        report["too_large"]["reserved_after_gib"] = round(torch.cuda.memory_reserved() / 2**30, 2)
        report["too_large"]["live_tensors_outside_the_model"] = live_tensors(engine.load(model).components)
        if args.record_history:
            report["too_large"]["live_allocations_by_stack"] = live_allocations()
            torch.cuda.memory._record_memory_history(enabled=None)
        report["allocator"] = {k: v for k, v in torch.cuda.memory_stats().items()
                               if k.startswith(("num_alloc_retries", "num_ooms", "num_device_alloc"))}  # fmt: skip
        report["alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")

    # 2. The next request, on the same engine
    start = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        result = engine.generate(resolve_request(model, {**common, **small}))
        report["next"] = {"request": small, "outcome": "succeeded", "frames": list(result.frames.shape)}
    except Exception as exc:  # the measurement is whether this happens
        report["next"] = {"request": small, "outcome": f"failed: {type(exc).__name__}: {exc}"[:500]}
    report["next"]["seconds"] = round(time.perf_counter() - start, 2)
    if cuda:
        report["next"]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report["recovered"] = (
        report["too_large"].get("outcome") == "out_of_memory" and report["next"]["outcome"] == "succeeded"
    )
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
