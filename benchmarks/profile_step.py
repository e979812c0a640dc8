"""Where one denoising step's time goes, beyond its two transformer forwards (CFG): a generation through the `Engine`
(real-size model, random weights) in the chosen speed preset, after a warm-up generation that compiles it.

Each step is split with CUDA events recorded around every transformer forward and every scheduler step, and with
the CPU time spent inside each forward call (a forward whose CPU time reaches its GPU time is waiting on the GPU:
something in it synchronises). Then one more generation runs under the PyTorch profiler: the GPU's idle time between
kernels, the largest gaps with the kernels either side, and the CPU operations that waited on the device
(synchronisations, copies to the host).

    PYTHONPATH=src python3 benchmarks/profile_step.py --speed fast --steps 5 --out step.json    # 14B, 832x480x81
    PYTHONPATH=src python3 benchmarks/profile_step.py --tiny                                   # CPU smoke check
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy", "aten::item",
            "aten::_local_scalar_dense", "aten::nonzero", "aten::to", "aten::copy_")  # fmt: skip


class Timeline:
    """CUDA events (or wall times on the CPU) around each call of the wrapped functions, per step."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.records: list[dict] = []

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _elapsed(self, start, end) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start

    def step_done(self, event) -> None:
        """An `on_progress` callback: closes the step's list of calls at each denoising step."""
        if event.stage.value == "denoising" and event.step:
            self.records.append({"what": "step_end"})

    def wrap(self, owner, name: str, label: str):
        """Times every call of `owner.name`; returns what undoes it."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            cpu_start, start = time.perf_counter(), self._mark()
            out = original(*args, **kwargs)
            end = self._mark()
            self.records.append({"what": label, "start": start, "end": end, "cpu_s": time.perf_counter() - cpu_start})
            return out

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)

    def take(self) -> list[list[dict]]:
        """The calls of each step, in order."""
        if self.cuda:
            torch.cuda.synchronize()
        steps: list[list[dict]] = [[]]
        for r in self.records:
            if r["what"] == "step_end":
                steps.append([])
            else:
                steps[-1].append({"what": r["what"], "gpu_s": self._elapsed(r["start"], r["end"]), "cpu_s": r["cpu_s"]})
        self.records.clear()
        return steps[:-1]


def gpu_gaps(prof, top: int) -> dict:
    """Idle time of the GPU between the first and last kernel of the profile, and the largest gaps."""
    kernels = sorted(
        (e.time_range.start, e.time_range.end, e.name)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
    )
    if not kernels:
        return {}
    gaps, busy, end_so_far, last_name = [], 0.0, kernels[0][0], kernels[0][2]
    for start, end, name in kernels:
        if start > end_so_far:
            gaps.append((start - end_so_far, last_name, name))
            busy += end - start
        else:
            busy += max(0.0, end - end_so_far)
        if end > end_so_far:
            end_so_far, last_name = end, name
    span = end_so_far - kernels[0][0]
    gaps.sort(key=lambda g: -g[0])
    return {
        "span_ms": round(span / 1000, 1),
        "busy_ms": round(busy / 1000, 1),
        "idle_ms": round((span - busy) / 1000, 1),
        "gaps_over_1ms": sum(1 for g in gaps if g[0] > 1000),
        "largest_gaps": [{"ms": round(g / 1000, 2), "after": a[:100], "before": b[:100]} for g, a, b in gaps[:top]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--size", default="832x480x81")
    parser.add_argument("--speed", default="fast", help="the request's speed preset")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps of the timed generation")
    parser.add_argument("--profile-steps", type=int, default=3, help="steps of the profiled generation (0: none)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--tiny", action="store_true", help="tiny-t2v on the CPU: checks the script runs end to end")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from wanserve.engine.realsize import engine_for, model_and_device
    from wanserve.engine.validation import resolve_request

    model, device = model_and_device(parser, args)
    cuda = device == "cuda"
    width, height, frames = (int(v) for v in args.size.split("x")) if cuda else (64, 64, 9)
    engine = engine_for(model, device)
    loaded = engine.load(model)

    def request(steps: int):
        return resolve_request(model, dict(prompt="a cat surfing a wave at sunset", width=width, height=height,
                                           num_frames=frames, num_inference_steps=steps, guidance_scale=5.0,
                                           speed=args.speed, seed=0))  # fmt: skip

    report: dict = {"model": model, "size": f"{width}x{height}x{frames}", "speed_preset": args.speed,
                    "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}  # fmt: skip
    start = time.perf_counter()
    engine.generate(request(2))  # compiles this preset's variant at this size
    report["warm_up_s"] = round(time.perf_counter() - start, 1)

    # 1. Steps split by CUDA events
    timeline = Timeline(cuda)
    transformer = loaded.components["transformer"]
    undo = [
        timeline.wrap(transformer, "forward", "forward"),
        timeline.wrap(type(loaded.components["scheduler"]), "step", "scheduler"),  # the class: jobs copy the instance
    ]
    result = engine.generate(request(args.steps), on_progress=timeline.step_done)
    calls = timeline.take()
    for restore in undo:
        restore()
    timeline_steps = []
    for index, (wall, parts) in enumerate(zip(result.step_times_s, calls, strict=True)):
        forwards = [p for p in parts if p["what"] == "forward"]
        scheduler = [p for p in parts if p["what"] == "scheduler"]
        accounted = sum(p["gpu_s"] for p in parts)
        timeline_steps.append({
            "step": index + 1, "wall_s": round(wall, 4),
            "forward_gpu_s": [round(p["gpu_s"], 4) for p in forwards],
            "forward_cpu_s": [round(p["cpu_s"], 4) for p in forwards],
            "scheduler_gpu_s": round(sum(p["gpu_s"] for p in scheduler), 4),
            "scheduler_cpu_s": round(sum(p["cpu_s"] for p in scheduler), 4),
            "outside_s": round(wall - accounted, 4),
        })  # fmt: skip
    report["steps"] = timeline_steps
    later = timeline_steps[1:] or timeline_steps
    report["summary"] = {
        "step_s_median": round(statistics.median(s["wall_s"] for s in later), 4),
        "forward_gpu_s_median": round(statistics.median(f for s in later for f in s["forward_gpu_s"]), 4),
        "outside_s_median": round(statistics.median(s["outside_s"] for s in later), 4),
    }
    print(json.dumps(report["summary"]), flush=True)

    # 2. One generation under the profiler
    if args.profile_steps:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            engine.generate(request(args.profile_steps))
        averages = prof.key_averages()
        waits = [
            {"op": e.key, "calls": e.count, "cpu_ms": round(e.cpu_time_total / 1000, 2)}
            for e in averages
            if any(e.key.startswith(name) for name in SYNC_OPS)
        ]
        waits.sort(key=lambda w: -w["cpu_ms"])
        cpu_top = sorted(averages, key=lambda e: -e.self_cpu_time_total)[: args.top]
        report["profile"] = {
            "steps": args.profile_steps,
            "gpu": gpu_gaps(prof, args.top) if cuda else None,
            "host_waits": waits[: args.top],
            "cpu_self_top": [
                {"op": e.key[:100], "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2)}
                for e in cpu_top
            ],
        }
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
