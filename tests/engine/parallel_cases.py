"""What each rank runs in the parallel-plan tests (imported by the rank processes; not a test module).

Every case builds its tiny model from a seed, so rank processes and the test process hold the same weights; rank 0
returns its outputs as numpy arrays, and the test compares them with the single-process outputs.
"""

from __future__ import annotations

import os

import torch

HEADS = 4


def t2v_transformer(cls_name: str = "WanTransformer3DModel", **extra):
    import diffusers

    torch.manual_seed(0)
    config = dict(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=32, ffn_dim=16, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )  # fmt: skip
    config.update(extra)
    return getattr(diffusers, cls_name)(**config).eval()


def vace_transformer():
    return t2v_transformer("WanVACETransformer3DModel", vace_layers=[0, 1], vace_in_channels=6)


def animate_transformer():
    return t2v_transformer(
        "WanAnimateTransformer3DModel", in_channels=12, latent_channels=4, out_channels=4, image_dim=16,
        added_kv_proj_dim=HEADS * 8, motion_encoder_channel_sizes={str(2**i): 8 for i in range(2, 10)},
        motion_encoder_size=16, motion_style_dim=8, motion_dim=4, motion_encoder_dim=8, face_encoder_hidden_dim=8,
        face_encoder_num_heads=2, inject_face_latents_blocks=1, motion_encoder_batch_size=4,
    )  # fmt: skip


def inputs(kind: str, frames: int, size: tuple[int, int], negative: bool = False) -> dict:
    """Keyword arguments of one forward; `negative` gives the uncond call's text (and face) inputs."""
    g = torch.Generator().manual_seed(1)
    h, w = size
    channels = 12 if kind == "animate" else 4
    args = dict(
        hidden_states=torch.randn(1, channels, frames, h, w, generator=g),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 7, 16, generator=g),
        return_dict=False,
    )
    if negative:
        args["encoder_hidden_states"] = torch.randn(1, 7, 16, generator=torch.Generator().manual_seed(2))
    if kind == "vace":
        args["control_hidden_states"] = torch.randn(1, 6, frames, h, w, generator=g)
        args["control_hidden_states_scale"] = torch.ones(2)
    if kind == "animate":
        args["encoder_hidden_states_image"] = torch.randn(1, 3, 16, generator=g)
        args["pose_hidden_states"] = torch.randn(1, 4, frames - 1, h, w, generator=g)
        # Animate latents are the reference frame plus T frames; the face video has 4 (T - 1) + 1 frames.
        args["face_pixel_values"] = torch.randn(1, 3, 4 * (frames - 2) + 1, 16, 16, generator=g)
        if negative:
            args["face_pixel_values"] = args["face_pixel_values"] * 0 - 1
    return args


def build(kind: str):
    return {"t2v": t2v_transformer, "vace": vace_transformer, "animate": animate_transformer}[kind]()


# (name, kind, frames, latent (h, w), ParallelConfig kwargs). 9x? latents at patch 2 give odd token counts.
CASES_2 = [
    ("ulysses", "t2v", 2, (4, 4), dict(ulysses_degree=2)),
    ("ulysses_uneven", "t2v", 1, (6, 6), dict(ulysses_degree=2)),
    ("ring", "t2v", 2, (4, 4), dict(ring_degree=2)),
    ("ring_uneven", "t2v", 1, (6, 6), dict(ring_degree=2)),
    ("vace_ulysses_uneven", "vace", 1, (6, 6), dict(ulysses_degree=2)),
    ("vace_ring", "vace", 2, (4, 4), dict(ring_degree=2)),
    ("animate_ulysses_uneven", "animate", 3, (6, 6), dict(ulysses_degree=2)),
    ("animate_ring", "animate", 3, (4, 4), dict(ring_degree=2)),
    ("cfg", "t2v", 1, (6, 6), dict(cfg_degree=2)),
    ("cfg_animate", "animate", 3, (4, 4), dict(cfg_degree=2)),
    ("fsdp_ulysses", "t2v", 2, (4, 4), dict(ulysses_degree=2, dit_fsdp=True)),
]
CASES_4 = [
    ("hybrid", "t2v", 2, (4, 4), dict(ulysses_degree=2, ring_degree=2)),
    ("cfg_ulysses_uneven", "t2v", 1, (6, 6), dict(ulysses_degree=2, cfg_degree=2)),
]


def reference(kind: str, frames: int, size) -> list:
    """Single-process outputs: the cond forward, and the uncond forward."""
    model = build(kind)
    with torch.inference_mode():
        cond = model(**inputs(kind, frames, size))[0]
        uncond = model(**inputs(kind, frames, size, negative=True))[0]
    return [cond.numpy(), uncond.numpy()]


def run_case(kind: str, frames: int, size, plan: dict, world_size: int):
    from wanserve.engine.parallel import (
        ParallelConfig,
        apply_parallel_plans,
        build_rank_mesh,
        local_parameter_bytes,
        set_cfg_branches,
    )  # fmt: skip

    config = ParallelConfig(world_size=world_size, **{"ulysses_degree": 1, **plan})
    model = build(kind)
    full_bytes = local_parameter_bytes(model)
    components = {"transformer": model}
    apply_parallel_plans(components, config, build_rank_mesh(config, torch.device("cpu")))
    negative = inputs(kind, frames, size, negative=True)
    if config.cfg_degree > 1:
        uncond_keys = ["encoder_hidden_states"] + (["face_pixel_values"] if kind == "animate" else [])
        set_cfg_branches(components, {k: negative[k] for k in uncond_keys})
    with torch.inference_mode():
        cond = model(**inputs(kind, frames, size))[0]
        uncond = model(**negative)[0]
    return [cond.numpy(), uncond.numpy(), local_parameter_bytes(model) / full_bytes]


def rank_main(rank: int, world_size: int, port: int, cases, queue) -> None:
    """One rank: every case in turn on one process group; rank 0 reports (name, outputs or error text)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        for name, kind, frames, size, plan in cases:
            try:
                result = run_case(kind, frames, size, plan, world_size)
            except Exception as exc:  # reported, so the test shows it
                result = f"{type(exc).__name__}: {exc}"
            if rank == 0:
                queue.put((name, result))
        decoded = vae_case(rank, world_size)
        if rank == 0:
            queue.put(("vae", decoded))
        if world_size == 2:
            frames = engine_frames(world_size)
            if rank == 0:
                queue.put(("engine", frames))
            outputs = first_block_cache_outputs(world_size)
            if rank == 0:
                queue.put(("first_block_cache", outputs))
            encoded = text_encoder_outputs(world_size)
            if rank == 0:
                queue.put(("t5_fsdp", encoded))
    finally:
        dist.destroy_process_group()


def tiny_vae():
    from wanserve.engine.registry import get_spec
    from wanserve.engine.tiny import build_tiny_vae

    torch.manual_seed(1)
    vae = build_tiny_vae(get_spec("tiny-t2v").vae)
    vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                      tile_sample_stride_width=16)  # fmt: skip
    return vae


def vae_latents():
    return torch.randn(1, 16, 2, 8, 6, generator=torch.Generator().manual_seed(3))


def vae_case(rank: int, world_size: int):
    from wanserve.engine.parallel import ParallelConfig, attach_split_decode, build_rank_mesh

    config = ParallelConfig(world_size=world_size, ulysses_degree=world_size, vae_parallel=True)
    vae = tiny_vae()
    attach_split_decode(vae, build_rank_mesh(config, torch.device("cpu")))
    with torch.inference_mode():
        return vae.decode(vae_latents(), return_dict=False)[0].numpy()


ENGINE_REQUEST = dict(prompt="a cat", negative_prompt="blurry", num_inference_steps=2, seed=3)


def engine_frames(world_size: int = 1):
    """A whole tiny text-to-video generation through `Engine` (CFG parallel over 2 ranks when `world_size` is 2)."""
    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine
    from wanserve.engine.parallel import ParallelConfig
    from wanserve.engine.validation import resolve_request

    parallel = None
    if world_size > 1:
        parallel = ParallelConfig(world_size=world_size, ulysses_degree=1, cfg_degree=2, vae_parallel=True)
    engine = Engine(EngineConfig(device="cpu", parallel=parallel))
    frames = engine.generate(resolve_request("tiny-t2v", ENGINE_REQUEST)).frames
    if parallel is not None:
        from wanserve.engine.parallel import CfgParallelHook

        hook = CfgParallelHook.of(engine.load("tiny-t2v").components["transformer"])
        assert hook is not None and hook.uncond_inputs is not None, "CFG parallel was not engaged"
    return frames


FBC_TIMESTEPS = (500, 499, 300)
"""With threshold 0.05 the tiny model skips at 499 (change 0.017) and computes at 300 (change 0.094)."""


def first_block_cache_outputs(world_size: int = 1) -> list:
    """Three forwards with FirstBlockCache, under Ulysses over `world_size` ranks with the group's vote."""
    from diffusers.hooks import FirstBlockCacheConfig

    from wanserve.engine.parallel import (
        ParallelConfig,
        apply_parallel_plans,
        build_rank_mesh,
        coordinate_step_cache,
    )  # fmt: skip

    model = t2v_transformer()
    model.enable_cache(FirstBlockCacheConfig(threshold=0.05))
    if world_size > 1:
        config = ParallelConfig(world_size=world_size, ulysses_degree=world_size)
        apply_parallel_plans({"transformer": model}, config, build_rank_mesh(config, torch.device("cpu")))
        assert coordinate_step_cache(model)
    args = inputs("t2v", 2, (4, 4))
    outputs = []
    with torch.inference_mode(), model.cache_context("cond"):
        for t in FBC_TIMESTEPS:
            outputs.append(model(**{**args, "timestep": torch.tensor([t])})[0].numpy())
    return outputs


def text_encoder_outputs(world_size: int = 1):
    """The tiny UMT5 encoder's output for a prompt, with `t5_fsdp` over `world_size` ranks; and the share of its
    weights this rank holds."""
    from wanserve.engine.parallel import ParallelConfig, apply_parallel_plans, build_rank_mesh, local_parameter_bytes
    from wanserve.engine.tiny import build_tiny_text_encoder, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    encoder = build_tiny_text_encoder(len(tokenizer))
    full = local_parameter_bytes(encoder)
    if world_size > 1:
        config = ParallelConfig(world_size=world_size, ulysses_degree=world_size, t5_fsdp=True)
        apply_parallel_plans({"text_encoder": encoder}, config, build_rank_mesh(config, torch.device("cpu")))
    ids = tokenizer("a cat in the video", return_tensors="pt").input_ids
    with torch.inference_mode():
        return encoder(ids).last_hidden_state.numpy(), local_parameter_bytes(encoder) / full
