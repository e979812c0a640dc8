"""Real-size Wan models with random weights: the same architectures and compute as the trained ones, built
offline. Benchmarks and memory checks use them; anything serving them reports random weights."""

from __future__ import annotations

from typing import Any

import torch

TEXT_TO_VIDEO_MODELS = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b")
"""Real models whose text-to-video pipeline (`WanPipeline`) `build_random_components` builds."""

TEXT_TOKENS = 512
"""UMT5 sequence length the Wan pipelines pad prompts to (`max_sequence_length`)."""


def real_size_models() -> list[str]:
    """Models `build_random_components` can build."""
    return list(TEXT_TO_VIDEO_MODELS)


def build_random_components(model: str, device: str | torch.device, memory=None) -> dict:
    """`model`'s real-size components with random weights, created on `device` in the dtypes `memory` (a
    `MemoryConfig`, default bf16 DiT and UMT5, float32 VAE) asks. Nothing is downloaded."""
    from diffusers import UniPCMultistepScheduler

    from wanserve.engine.architectures import ARCHITECTURES
    from wanserve.engine.config import MemoryConfig
    from wanserve.engine.memory import component_dtypes
    from wanserve.engine.tiny import build_tiny_tokenizer

    if model not in TEXT_TO_VIDEO_MODELS:
        raise ValueError(f"`model` must be one of {', '.join(TEXT_TO_VIDEO_MODELS)}, got {model!r}")
    dtypes = component_dtypes(memory or MemoryConfig())
    generator = torch.Generator(device).manual_seed(0)
    components = {
        name: build_random_component(model, name, device, dtypes[name], generator)
        for name in ARCHITECTURES[model].components()
    }
    components["tokenizer"] = build_tiny_tokenizer()
    components["scheduler"] = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    )
    return components


def build_random_component(
    model: str, name: str, device: str | torch.device, dtype: torch.dtype, generator: torch.Generator | None = None
) -> torch.nn.Module:
    """One real-size component of `model` (`transformer`, `vae`, `text_encoder`, ...) with random weights, created
    on `device` in `dtype` (benchmarks of one component need not build the others)."""
    from wanserve.engine.architectures import ARCHITECTURES, build_on_meta

    if generator is None:
        generator = torch.Generator(device).manual_seed(0)
    key = ARCHITECTURES[model].components()[name]
    # Meta first, then storage on the device in the load dtype: no float32 copy of 14B parameters.
    module = build_on_meta(key).to_empty(device=device).to(dtype)
    keep = getattr(module, "_keep_in_fp32_modules", None) or ()
    if name.startswith("transformer"):  # as diffusers' loader does: norms and modulation tables in float32
        for param_name, param in module.named_parameters():
            if any(k in param_name.split(".") for k in keep):
                param.data = param.data.float()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.02, generator=generator)
    if name.startswith("transformer"):
        # The RoPE tables (the only buffers) are computed, not learned: build them again on the device.
        rope = module.rope
        module.rope = type(rope)(rope.attention_head_dim, rope.patch_size, rope.max_seq_len).to(device)
    return module.eval()


def _dit(model: str):
    from wanserve.engine.architectures import ARCHITECTURES

    return ARCHITECTURES[model].transformer_config


def latent_tokens(width: int, height: int, frames: int) -> int:
    """Sequence length of the Wan2.1 DiT for a video: (frames-1)/4+1 latent frames of (h/16) x (w/16) patches."""
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def forward_flops(model: str, width: int, height: int, frames: int) -> dict[str, float]:
    """Analytic FLOPs of one transformer forward (batch 1): `matmul` (projections, FFN) and `attention`
    (QK^T and PV, self and cross). Multiply-adds count as 2; norms, RoPE and modulation are left out (<1%)."""
    cfg = _dit(model)
    d, ffn, layers = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["ffn_dim"], cfg["num_layers"]
    n, t = latent_tokens(width, height, frames), TEXT_TOKENS
    per_layer_matmul = (
        2 * n * d * d * 4  # self-attention q, k, v, o
        + 2 * n * d * d * 2  # cross-attention q, o
        + 2 * t * d * d * 2  # cross-attention k, v (text tokens)
        + 2 * n * d * ffn * 2  # feed-forward up and down
    )
    per_layer_attention = 4 * n * n * d + 4 * n * t * d
    return {"matmul": float(layers * per_layer_matmul), "attention": float(layers * per_layer_attention)}


def forward_inputs(model: str, width: int, height: int, frames: int, device: Any, dtype=torch.bfloat16) -> dict:
    """Random inputs of one transformer forward at this video size (latents, a timestep, text embeddings)."""
    generator = torch.Generator("cpu").manual_seed(0)
    latent_frames = (frames - 1) // 4 + 1
    latents = torch.randn(1, _dit(model)["in_channels"], latent_frames, height // 8, width // 8, generator=generator)
    text = torch.randn(1, TEXT_TOKENS, 4096, generator=generator)
    return dict(
        hidden_states=latents.to(device, dtype),
        timestep=torch.tensor([500], device=device),
        encoder_hidden_states=text.to(device, dtype),
        return_dict=False,
    )


def engine_for(model: str, device: str, memory=None):
    """An `Engine` on `device` (with `memory`, a `MemoryConfig`) serving `model`: real-size models with random
    weights built on the device (`build_random_components`), tiny models as the engine builds them. For
    benchmarks and checks that run either a real-size model on a GPU or a tiny one on the CPU."""
    from wanserve.engine.config import EngineConfig, MemoryConfig
    from wanserve.engine.engine import Engine

    memory = memory or MemoryConfig()
    engine = Engine(EngineConfig(device=device, memory=memory))
    if model in TEXT_TO_VIDEO_MODELS:
        engine.adopt(model, build_random_components(model, device, memory), random_weights=True)
    return engine


def model_and_device(parser, args) -> tuple[str, str]:
    """A GPU benchmark's model and device from its arguments: `args.model` on CUDA, or with `args.tiny` the tiny
    text-to-video model on the CPU (a smoke check of the script). Without CUDA and `--tiny`, `parser` exits."""
    if args.tiny:
        return "tiny-t2v", "cpu"
    if not torch.cuda.is_available():
        parser.error("needs CUDA; use --tiny for a CPU smoke check")
    return args.model, "cuda"
