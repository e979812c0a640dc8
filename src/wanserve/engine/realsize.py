"""Real-size Wan models with random weights: the same architectures and compute as the trained ones, built
offline. Benchmarks and memory checks use them; anything serving them reports random weights."""

from __future__ import annotations

from typing import Any

import torch

WAN21_T2V_TRANSFORMERS: dict[str, dict[str, int]] = {
    "wan2.1-t2v-1.3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "wan2.1-t2v-14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40),
}
"""The transformer sizes (from the official diffusers-layout configs) that differ between the Wan2.1 T2V models."""

ATTENTION_HEAD_DIM = 128
TEXT_TOKENS = 512
"""UMT5 sequence length the Wan pipelines pad prompts to (`max_sequence_length`)."""


def real_size_models() -> list[str]:
    """Models `build_random_components` can build."""
    return sorted(WAN21_T2V_TRANSFORMERS)


def build_random_components(model: str, device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> dict:
    """The model's pipeline components at their real size with random weights (transformer and UMT5-XXL in
    `dtype`, the Wan2.1 VAE in float32 as the official code runs it), on `device`. Nothing is downloaded."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from wanserve.engine.tiny import build_tiny_tokenizer

    if model not in WAN21_T2V_TRANSFORMERS:
        raise ValueError(f"`model` must be one of {', '.join(real_size_models())}, got {model!r}")
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), attention_head_dim=ATTENTION_HEAD_DIM, in_channels=16, out_channels=16,
            text_dim=4096, freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
            **WAN21_T2V_TRANSFORMERS[model],
        ).to(dtype).eval()  # fmt: skip
        text_encoder = UMT5EncoderModel(
            UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                       relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", dropout_rate=0.0)
        ).to(dtype).eval()  # fmt: skip
        vae = AutoencoderKLWan().to(torch.float32).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return dict(tokenizer=build_tiny_tokenizer(), text_encoder=text_encoder, vae=vae, transformer=transformer,
                scheduler=scheduler)  # fmt: skip


def latent_tokens(width: int, height: int, frames: int) -> int:
    """Sequence length of the Wan2.1 DiT for a video: (frames-1)/4+1 latent frames of (h/16) x (w/16) patches."""
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def forward_flops(model: str, width: int, height: int, frames: int) -> dict[str, float]:
    """Analytic FLOPs of one transformer forward (batch 1): `matmul` (projections, FFN) and `attention`
    (QK^T and PV, self and cross). Multiply-adds count as 2; norms, RoPE and modulation are left out (<1%)."""
    cfg = WAN21_T2V_TRANSFORMERS[model]
    d, ffn, layers = cfg["num_attention_heads"] * ATTENTION_HEAD_DIM, cfg["ffn_dim"], cfg["num_layers"]
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
    latents = torch.randn(1, 16, latent_frames, height // 8, width // 8, generator=generator)
    text = torch.randn(1, TEXT_TOKENS, 4096, generator=generator)
    return dict(
        hidden_states=latents.to(device, dtype),
        timestep=torch.tensor([500], device=device),
        encoder_hidden_states=text.to(device, dtype),
        return_dict=False,
    )
