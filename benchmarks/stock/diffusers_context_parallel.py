# Stock diffusers context parallelism, the peer baseline of benchmarks/scaling.py: the project steering's
# shared/bench/diffusers_context_parallel.py, kept here so it travels with the repository to a GPU machine.
"""Peer baseline for multi-GPU: stock diffusers context parallelism (Ulysses) on a real-size Wan2.1-14B forward.

Run once plain (1 GPU) and once under torchrun (N GPUs). Random bf16 weights, batch 1, seconds per forward.
"""
import json, os, sys, time
import torch, torch.distributed as dist
from diffusers import WanTransformer3DModel

world = int(os.environ.get("WORLD_SIZE", "1")); rank = int(os.environ.get("RANK", "0"))
torch.cuda.set_device(rank % torch.cuda.device_count())
if world > 1:
    dist.init_process_group("nccl")
dev = "cuda"
cfg = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads", eps=1e-6, num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40)
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.device(dev):
    m = WanTransformer3DModel(**cfg).eval()
torch.set_default_dtype(torch.float32)
mode = os.environ.get("CP", "ulysses")
if world > 1:
    from diffusers import ContextParallelConfig
    c = ContextParallelConfig(ulysses_degree=world) if mode == "ulysses" else ContextParallelConfig(ring_degree=world)
    if mode == "ring":
        m.set_attention_backend("_native_cudnn")
    m.enable_parallelism(config=c)

def timed(fn, reps=3):
    fn(); torch.cuda.synchronize()
    if world > 1: dist.barrier()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); torch.cuda.synchronize()
        if world > 1: dist.barrier()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]

for h, w in ((480, 832), (720, 1280)):
    g = torch.Generator(device=dev).manual_seed(1)
    x = torch.randn(1, 16, 21, h // 8, w // 8, device=dev, dtype=torch.bfloat16, generator=g)
    ctx = torch.randn(1, 512, 4096, device=dev, dtype=torch.bfloat16, generator=g)
    t = torch.tensor([500], device=dev)
    with torch.inference_mode():
        sec = timed(lambda: m(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False), reps=2 if h == 720 else 3)
    if rank == 0:
        print(json.dumps(dict(gpus=world, mode=mode if world > 1 else "single", res=f"{w}x{h}x81", sec_per_forward=round(sec, 3),
                              peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1), gpu=torch.cuda.get_device_name())), flush=True)
if world > 1:
    dist.destroy_process_group()
