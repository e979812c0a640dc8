"""Multi-GPU scaling of wanserve's parallel plans on real-size random-weight Wan models.

For each GPU count (1, 2, 4, 8 up to what the machine has) and each plan, it starts its own rank processes (NCCL),
builds the real-size transformer(s) with random bf16 weights on every rank, attaches wanserve's plan
(`wanserve.engine.parallel.apply_parallel_plans`) and measures:

- seconds per denoising step with CFG (the cond and the uncond forward; under CFG parallel, one forward per rank),
- speedup and efficiency against the 1-GPU step,
- peak memory per GPU (the largest over the ranks),
- VAE decode seconds of the real-size VAE at that size (split over the ranks with `vae_parallel` when N > 1).

Then, in the same run, stock diffusers' context parallelism (`diffusers_context_parallel.py` of the shared bench
folder, plain for 1 GPU and under torchrun for N) for the ratio, when that script is found.

    python benchmarks/scaling.py --out $OUT/scaling.json                 # every GPU count the machine has
    python benchmarks/scaling.py --gpus 1 --quick --out $OUT/scaling.json  # the 1-GPU baseline in a few minutes

`--quick`: 480p only, Wan2.1-14B only, 2 timed steps, the 1-GPU VAE decode on 17 frames. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"480p": (832, 480, 81), "720p": (1280, 720, 81)}
MODELS = ("wan2.1-t2v-14b", "wan2.2-t2v-a14b")
STOCK_SCRIPT_PLACES = (
    "benchmarks/stock/diffusers_context_parallel.py",
    "shared/bench/diffusers_context_parallel.py",
    "../shared/bench/diffusers_context_parallel.py",
    "/work/shared/bench/diffusers_context_parallel.py",
)


def plans_for(gpus: int) -> dict[str, dict]:
    """Plan name -> `ParallelConfig` arguments for `gpus` ranks."""
    if gpus == 1:
        return {"single": {}}
    plans = {
        "ulysses": dict(ulysses_degree=gpus),
        "ring": dict(ring_degree=gpus, ulysses_degree=1),
        "cfg_ulysses": dict(cfg_degree=2, ulysses_degree=gpus // 2),
        "fsdp_ulysses": dict(ulysses_degree=gpus, dit_fsdp=True),
    }
    if gpus >= 4:
        plans["ulysses_ring"] = dict(ulysses_degree=gpus // 2, ring_degree=2)
    return plans


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- one rank ---------------------------------------------------------------------------------------------------------
def _build_transformers(model: str, device):
    import torch

    from wanserve.engine.realsize import build_random_components

    components = build_random_components(model, device)
    keep = {k: v for k, v in components.items() if k.startswith("transformer") or k == "vae"}
    del components
    torch.cuda.empty_cache()
    return keep


def _step_seconds(components, model, size, reps, cfg_parallel) -> float:
    import torch
    import torch.distributed as dist

    from wanserve.engine.parallel import set_cfg_branches
    from wanserve.engine.realsize import forward_inputs

    width, height, frames = size
    device = torch.device("cuda", torch.cuda.current_device())
    inputs = forward_inputs(model, width, height, frames, device)
    negative = torch.randn_like(inputs["encoder_hidden_states"])
    transformer = components["transformer"]
    if cfg_parallel:
        set_cfg_branches(components, {"encoder_hidden_states": negative})

    def step():
        with torch.inference_mode():
            transformer(**inputs)
            transformer(**{**inputs, "encoder_hidden_states": negative})

    times = []
    for i in range(reps + 1):  # the first is a warm-up
        torch.cuda.synchronize()
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        if dist.is_initialized():
            dist.barrier()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _decode_seconds(vae, size, frames_limit) -> float:
    import torch
    import torch.distributed as dist

    width, height, frames = size
    frames = min(frames, frames_limit)
    latents = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device="cuda", dtype=vae.dtype)
    torch.cuda.synchronize()
    if dist.is_initialized():
        dist.barrier()
    start = time.perf_counter()
    with torch.inference_mode():
        vae.decode(latents, return_dict=False)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def rank_main(rank: int, world: int, port: int, job: dict, results_path: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.cuda.set_device(rank)
    device = torch.device("cuda", rank)
    if world > 1:
        dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    from wanserve.engine.parallel import ParallelConfig, apply_parallel_plans, build_rank_mesh

    rows = []
    for model in job["models"]:
        for plan_name, plan in plans_for(world).items():
            if plan_name not in job["plans"] and plan_name != "single":
                continue
            torch.cuda.reset_peak_memory_stats()
            components = _build_transformers(model, device)
            config = None
            if world > 1:
                config = ParallelConfig(world_size=world, **{"ulysses_degree": 1, **plan}, vae_parallel=True)
                if config.ring_degree > 1:
                    for key in ("transformer", "transformer_2"):
                        if key in components:
                            components[key].set_attention_backend("_native_cudnn")
                apply_parallel_plans(components, config, build_rank_mesh(config, device))
            for size_name in job["sizes"]:
                size = SIZES[size_name]
                error = None
                try:
                    step_s = _step_seconds(
                        components, model, size, job["reps"], config is not None and config.cfg_degree > 1
                    )
                    decode_s = (
                        _decode_seconds(components["vae"], size, job["decode_frames"])
                        if plan_name in ("single", "ulysses")
                        else None
                    )
                except Exception as exc:  # recorded, the run goes on
                    step_s = decode_s = None
                    error = f"{type(exc).__name__}: {exc}"[:300]
                peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device=device)
                if world > 1:
                    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
                rows.append(dict(model=model, gpus=world, plan=plan_name, size=size_name, step_with_cfg_s=step_s,
                                 vae_decode_s=decode_s, decode_frames=min(SIZES[size_name][2], job["decode_frames"]),
                                 peak_memory_per_gpu_gib=round(peak.item(), 2), error=error))  # fmt: skip
            del components
            torch.cuda.empty_cache()
    if rank == 0:
        Path(results_path).write_text(json.dumps(rows))
    if world > 1:
        dist.destroy_process_group()


# -- the run ----------------------------------------------------------------------------------------------------------
def run_group(world: int, job: dict, scratch: Path) -> list[dict]:
    import torch.multiprocessing as mp

    path = scratch / f"rows-{world}.json"
    ctx = mp.get_context("spawn")
    port = free_port()
    processes = [ctx.Process(target=rank_main, args=(r, world, port, job, str(path))) for r in range(world)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    if not path.exists():
        codes = [p.exitcode for p in processes]
        return [dict(gpus=world, error=f"rank processes exited with {codes} before writing results")]
    return json.loads(path.read_text())


def run_stock(counts: list[int], script: str | None, quick: bool) -> list[dict]:
    """Stock diffusers context parallelism (Ulysses), plain for 1 GPU and under torchrun for N."""
    if script is None:
        return [dict(error="diffusers_context_parallel.py not found in " + ", ".join(STOCK_SCRIPT_PLACES))]
    rows = []
    for n in counts:
        command = [sys.executable, script] if n == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port",
            str(free_port()), script,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                row["step_with_cfg_s"] = round(2 * row["sec_per_forward"], 3)  # CFG: two forwards per step
                rows.append(row)
        if done.returncode:
            rows.append(dict(gpus=n, error=done.stderr[-500:]))
        if quick:
            break
    return rows


def summarise(rows: list[dict]) -> None:
    """Adds speedup and efficiency against the 1-GPU step of the same model and size."""
    base = {
        (r["model"], r["size"]): r["step_with_cfg_s"] for r in rows if r.get("gpus") == 1 and r.get("step_with_cfg_s")
    }
    for r in rows:
        one = base.get((r.get("model"), r.get("size")))
        if one and r.get("step_with_cfg_s"):
            r["speedup"] = round(one / r["step_with_cfg_s"], 3)
            r["efficiency"] = round(r["speedup"] / r["gpus"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument(
        "--gpus", default=None, help="GPU counts, e.g. 1 or 1,2,4,8 (default: 1,2,4,8 up to the machine)"
    )
    parser.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--plans", default="ulysses,ring,cfg_ulysses,fsdp_ulysses,ulysses_ring")
    parser.add_argument("--sizes", default=None, help="480p,720p")
    parser.add_argument("--reps", type=int, default=None, help="timed steps (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="480p, Wan2.1-14B, 2 steps, VAE on 17 frames")
    parser.add_argument("--no-stock", action="store_true", help="skip stock diffusers' context parallelism")
    parser.add_argument(
        "--stock-script", default=None, help="path of diffusers_context_parallel.py (default: looked for)"
    )
    args = parser.parse_args()
    if args.stock_script and not Path(args.stock_script).is_file():
        parser.error(f"`--stock-script` {args.stock_script!r} is not a file")

    import torch

    if not torch.cuda.is_available():
        sys.exit("benchmarks/scaling.py needs CUDA GPUs")
    available = torch.cuda.device_count()
    counts = [int(c) for c in args.gpus.split(",")] if args.gpus else [c for c in (1, 2, 4, 8) if c <= available]
    counts = [c for c in counts if c <= available]
    job = dict(
        models=(args.models.split(",") if args.models else ["wan2.1-t2v-14b"] if args.quick else list(MODELS)),
        plans=args.plans.split(","),
        sizes=(args.sizes.split(",") if args.sizes else ["480p"] if args.quick else list(SIZES)),
        reps=args.reps or (2 if args.quick else 5),
        decode_frames=17 if args.quick else 81,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent
    started = time.time()
    rows = []
    for n in counts:
        rows += run_group(n, job, scratch)
        summarise(rows)
        report = dict(machine=torch.cuda.get_device_name(0), gpus_available=available, job=job, wanserve=rows)
        out.write_text(json.dumps(report, indent=2))  # after every group: a later failure keeps what ran
        print(json.dumps(rows[-1]), flush=True)
    stock = (
        []
        if args.no_stock
        else run_stock(
            counts,
            args.stock_script or next((p for p in STOCK_SCRIPT_PLACES if Path(p).exists()), None),
            args.quick,
        )
    )
    report = dict(
        machine=torch.cuda.get_device_name(0), gpus_available=available, job=job, wanserve=rows,
        stock_diffusers_context_parallel=stock, seconds=round(time.time() - started, 1),
        note="random bf16 weights; step_with_cfg_s = cond + uncond forward; stock rows are Wan2.1-14B only",
    )  # fmt: skip
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
