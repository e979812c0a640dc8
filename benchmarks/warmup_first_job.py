"""What `WANSERVE_WARMUP` saves the first job: the real-size model (random weights, nothing downloaded) on the engine
with its default exact mode (regional compile, FA3 or cuDNN attention), then

1. a first job with nothing warmed up (it pays compile, cuDNN's first calls, the allocator),
2. `torch._dynamo.reset()` (the compiled blocks are dropped; Inductor's on-disk cache stays, so step 3 is faster than
   a truly cold start: its time is a lower bound of what the worker pays at start-up),
3. the warm-up a worker runs for the size (engine/warmup.py: one step with CFG, the decode, no output),
4. a first job after the warm-up.

Each job reports its whole time, stage times and step times: with the warm-up, the first job's first step should
take what its later steps take.

    PYTHONPATH=/tmp/site:src python3 benchmarks/warmup_first_job.py --out $OUT/warmup_first_job.json
    PYTHONPATH=src python3 benchmarks/warmup_first_job.py --tiny          # CPU smoke check (tiny-t2v, no compile)
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-t2v-14b")
    parser.add_argument("--size", default="832x480x81", help="WxHxF: the warm-up size and the jobs' size")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps of each job")
    parser.add_argument("--tiny", action="store_true", help="tiny-t2v at 64x64x9 on the CPU: checks the script runs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine
    from wanserve.engine.validation import resolve_request
    from wanserve.engine.warmup import parse_warmup, warmup_requests

    model, size = ("tiny-t2v", "64x64x9") if args.tiny else (args.model, args.size)
    engine = Engine(EngineConfig(device="cpu" if args.tiny else "cuda"))
    if not args.tiny:
        from wanserve.engine.realsize import build_random_components

        engine.adopt(model, build_random_components(model, "cuda"), random_weights=True)
    width, height, frames = (int(v) for v in size.split("x"))
    job = resolve_request(model, {"prompt": "a cat walking in the snow", "width": width, "height": height,
                                  "num_frames": frames, "num_inference_steps": args.steps, "seed": 1})  # fmt: skip

    def run(request) -> dict:
        start = time.perf_counter()
        result = engine.generate(request)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return {
            "total_s": round(time.perf_counter() - start, 3),
            "stage_times_s": {k: round(v, 3) for k, v in result.stage_times_s.items()},
            "step_times_s": [round(t, 3) for t in result.step_times_s],
            "speed": result.speed,
        }

    report: dict = {
        "model": model, "weights": "random", "size": size, "job_steps": args.steps,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
    }  # fmt: skip
    report["first_job_cold"] = run(job)
    print("first job, nothing warmed up:", json.dumps(report["first_job_cold"]), flush=True)
    torch._dynamo.reset()
    warm = []
    for _, request in warmup_requests([model], parse_warmup([size])):
        warm.append(run(request))
    report["warm_up"] = warm
    print("warm-up:", json.dumps(warm), flush=True)
    report["first_job_after_warm_up"] = run(job)
    print("first job after the warm-up:", json.dumps(report["first_job_after_warm_up"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
