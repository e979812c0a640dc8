"""Built-in tiny models: the real Wan architectures at toy sizes, with seeded random weights, built offline.

They run every code path on a CPU in well under a second a generation. They draw noise, never pictures, and
everything that serves them says "random weights".
"""

from __future__ import annotations

import string

import torch

from wanserve.engine.registry import ModelSpec

TINY_SEED = 0
TEXT_DIM = 32
HEADS = 2
HEAD_DIM = 12
CLIP_IMAGE_SIZE = 32
CLIP_PATCH = 16
CLIP_HIDDEN = 32


def build_tiny_tokenizer():
    """A UMT5-style sentencepiece-free Unigram tokenizer over characters and a few words, made offline."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>"]
    pieces += ["▁" + w for w in ("a", "the", "cat", "dog", "video", "of", "in", "on", "and", "with")]
    pieces += ["▁"] + list(string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,!?'-")
    vocab = [(p, 0.0 if i < 3 else -float(i) / 10) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, unk_id=2, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def build_tiny_text_encoder(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    # Dropout would make outputs vary between calls.
    return UMT5EncoderModel(config).eval()


def build_tiny_vae(kind: str):
    from diffusers import AutoencoderKLWan

    if kind == "wan2.2":
        return AutoencoderKLWan(
            base_dim=4,
            decoder_base_dim=4,
            z_dim=48,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            is_residual=True,
            patch_size=2,
            in_channels=12,
            out_channels=12,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
        ).eval()
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def build_tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from wanserve.models.wan_clip import clip_image_processor_class

    config = CLIPVisionConfig(
        hidden_size=CLIP_HIDDEN,
        projection_dim=CLIP_HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_act="gelu",
        image_size=CLIP_IMAGE_SIZE,
        patch_size=CLIP_PATCH,
    )
    processor = clip_image_processor_class()(
        crop_size=CLIP_IMAGE_SIZE,
        size={"shortest_edge": CLIP_IMAGE_SIZE},
    )
    return CLIPVisionModel(config).eval(), processor


def clip_tokens() -> int:
    return (CLIP_IMAGE_SIZE // CLIP_PATCH) ** 2 + 1


def tiny_transformer_config(spec: ModelSpec) -> dict:
    """The diffusers config of a tiny spec's transformer (also written into tiny checkpoints by the tests)."""
    z = 48 if spec.vae == "wan2.2" else 16
    config = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=z,
        out_channels=z,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=32,
    )
    if spec.image_encoder and spec.pipeline == "WanImageToVideoPipeline":
        config.update(in_channels=2 * z + 4, image_dim=CLIP_HIDDEN, added_kv_proj_dim=HEADS * HEAD_DIM)
        if "flf2v" in spec.name:
            config["pos_embed_seq_len"] = 2 * clip_tokens()
    elif spec.pipeline == "WanImageToVideoPipeline":
        config.update(in_channels=2 * z + 4)
    if spec.pipeline == "WanVACEPipeline":
        config.update(vace_layers=[0], vace_in_channels=2 * z + 64)
    if spec.pipeline == "WanFunControlPipeline":
        # VideoX-Fun's input: latents, control latents, then mask (4) and masked-video latents (engine/fun_control.py)
        config.update(in_channels=3 * z + 4)
    if spec.pipeline == "WanAnimatePipeline":
        config.update(
            in_channels=2 * z + 4,
            latent_channels=z,
            image_dim=CLIP_HIDDEN,
            added_kv_proj_dim=HEADS * HEAD_DIM,
            motion_encoder_channel_sizes={
                "4": 16,
                "8": 16,
                "16": 16,
                "32": 16,
                "64": 16,
                "128": 16,
                "256": 16,
                "512": 16,
            },
            motion_encoder_size=16,
            motion_style_dim=16,
            motion_dim=4,
            motion_encoder_dim=16,
            face_encoder_hidden_dim=16,
            face_encoder_num_heads=2,
            inject_face_latents_blocks=1,
            motion_encoder_batch_size=4,
        )
    return config


def _transformer_class(spec: ModelSpec):
    import diffusers

    return {
        "WanVACEPipeline": diffusers.WanVACETransformer3DModel,
        "WanAnimatePipeline": diffusers.WanAnimateTransformer3DModel,
    }.get(spec.pipeline, diffusers.WanTransformer3DModel)


def build_tiny_components(spec: ModelSpec, seed: int = TINY_SEED) -> dict:
    """Every component of a tiny pipeline, deterministic for `seed`. Keys are diffusers component names."""
    if not spec.tiny:
        raise ValueError(f"`model` {spec.name!r} is not a tiny model")
    from diffusers import UniPCMultistepScheduler

    # A fresh CPU generator state for each component keeps one component's weights independent of the others.
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    text_encoder = build_tiny_text_encoder(len(tokenizer))
    torch.manual_seed(seed + 1)
    vae = build_tiny_vae(spec.vae)
    cls = _transformer_class(spec)
    config = tiny_transformer_config(spec)
    torch.manual_seed(seed + 2)
    transformer = cls(**config).eval()
    components = dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=spec.flow_shift,
        ),
    )
    if spec.experts == 2:
        torch.manual_seed(seed + 3)
        components["transformer_2"] = cls(**config).eval()
    if spec.image_encoder:
        torch.manual_seed(seed + 4)
        components["image_encoder"], components["image_processor"] = build_tiny_clip()
    return components
