"""The real-size architecture of every catalog model: the diffusers / transformers configs of its components and
their parameter counts.

The configs are those of the published diffusers checkpoints (diffusers' `scripts/convert_wan_to_diffusers.py`
writes them; the original-layout loader infers the same ones from the checkpoints' tensors). The parameter counts
were computed by building each component from its config on the meta device (`build_on_meta`, no memory) and
are stored here so that listing models and estimating memory need no torch; a test rebuilds every component and
checks the stored counts, and `python -m wanserve.engine.architectures` prints them afresh.
Nothing here imports torch at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", dropout_rate=0.0,
)  # fmt: skip
"""`UMT5EncoderModel` of every Wan model (`models_t5_umt5-xxl-enc-bf16.pth`)."""
CLIP_VIT_H_14 = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5,
)  # fmt: skip
"""`CLIPVisionModel` of Wan2.1 I2V / FLF2V and Wan2.2-Animate (the visual tower of open-clip XLM-R ViT-H/14)."""
WAN21_VAE: dict[str, Any] = {}
"""`AutoencoderKLWan` defaults are the Wan2.1 VAE (z 16, 8x spatial, 4x temporal)."""
WAN22_VAE = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4,
)  # fmt: skip
"""The Wan2.2 VAE of TI2V-5B (z 48, 16x spatial)."""

_DIT = dict(patch_size=(1, 2, 2), attention_head_dim=128, text_dim=4096, freq_dim=256, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6)  # fmt: skip
DIT_1_3B = dict(_DIT, num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16)
DIT_14B = dict(_DIT, num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=16, out_channels=16)
DIT_14B_I2V = dict(DIT_14B, in_channels=36, image_dim=1280, added_kv_proj_dim=5120)
"""Wan2.1 I2V: 20 extra input channels (mask + image latents) and image key/value projections in every block."""
DIT_14B_FLF2V = dict(DIT_14B_I2V, pos_embed_seq_len=2 * 257)
DIT_A14B_I2V = dict(DIT_14B, in_channels=36)
"""Wan2.2 I2V-A14B experts: the image enters as latents only (no CLIP, no image key/value)."""
DIT_5B = dict(_DIT, num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48)
DIT_VACE_1_3B = dict(DIT_1_3B, vace_layers=list(range(0, 30, 2)), vace_in_channels=96)
DIT_VACE_14B = dict(DIT_14B, vace_layers=list(range(0, 40, 5)), vace_in_channels=96)
DIT_ANIMATE_14B = dict(
    DIT_14B_I2V, motion_encoder_size=512, motion_style_dim=512, motion_dim=20, motion_encoder_dim=512,
    face_encoder_hidden_dim=1024, face_encoder_num_heads=4, inject_face_latents_blocks=5,
)  # fmt: skip


@dataclass(frozen=True)
class ParamCount:
    """Parameters of one component: all of them, and those diffusers keeps in float32 whatever the load dtype
    (`_keep_in_fp32_modules`: the time embedder, the modulation tables and the norms of the Wan transformers)."""

    total: int
    float32: int = 0
    """Kept in float32 by the loader when the rest is 16-bit: always for diffusers models, only under float16 for
    transformers ones (their `_keep_in_fp32_modules` is an fp16 guard)."""
    in_blocks: int = 0
    """Parameters in its repeated blocks (what block-level group offload streams): the transformer's `blocks`
    (and `vace_blocks`, Animate's `face_adapter`), the text encoder's `encoder.block`. The rest stays on the device while it runs."""
    per_block: int = 0
    """Parameters of its largest block."""


# Computed by `count_parameters` from the configs above (a test checks them; `python -m` this module prints them).
# fmt: off
PARAM_COUNTS: dict[str, ParamCount] = {
    "umt5-xxl": ParamCount(5_680_910_336, 1_006_632_960, 4_630_757_376, 192_948_224),
    "clip-vit-h-14": ParamCount(630_766_080, 0, 0, 0),
    "wan2.1-vae": ParamCount(126_892_531, 0, 0, 0),
    "wan2.2-vae": ParamCount(704_688_668, 0, 0, 0),
    "dit-1.3b": ParamCount(1_418_996_800, 3_127_296, 1_393_221_120, 46_440_704),
    "dit-14b": ParamCount(14_288_491_584, 29_184_000, 14_055_772_160, 351_394_304),
    "dit-14b-i2v": ParamCount(16_394_878_784, 29_196_800, 16_153_538_560, 403_838_464),
    "dit-14b-flf2v": ParamCount(16_395_536_704, 29_196_800, 16_153_538_560, 403_838_464),
    "dit-a14b-i2v": ParamCount(14_288_901_184, 29_184_000, 14_055_772_160, 351_394_304),
    "dit-5b": ParamCount(4_999_787_712, 10_973_184, 4_909_701_120, 163_656_704),
    "dit-vace-1.3b": ParamCount(2_153_972_032, 3_311_616, 2_127_604_992, 51_162_368),
    "dit-vace-14b": ParamCount(17_337_592_896, 29_511_680, 17_102_902_272, 403_833_344),
    "dit-animate-14b": ParamCount(17_274_816_884, 29_207_040, 16_992_565_248, 403_838_464),
}
# fmt: on

TRANSFORMER_CONFIGS: dict[str, tuple[str, Mapping[str, Any]]] = {
    "dit-1.3b": ("WanTransformer3DModel", DIT_1_3B),
    "dit-14b": ("WanTransformer3DModel", DIT_14B),
    "dit-14b-i2v": ("WanTransformer3DModel", DIT_14B_I2V),
    "dit-14b-flf2v": ("WanTransformer3DModel", DIT_14B_FLF2V),
    "dit-a14b-i2v": ("WanTransformer3DModel", DIT_A14B_I2V),
    "dit-5b": ("WanTransformer3DModel", DIT_5B),
    "dit-vace-1.3b": ("WanVACETransformer3DModel", DIT_VACE_1_3B),
    "dit-vace-14b": ("WanVACETransformer3DModel", DIT_VACE_14B),
    "dit-animate-14b": ("WanAnimateTransformer3DModel", DIT_ANIMATE_14B),
}


@dataclass(frozen=True)
class Architecture:
    """The real-size components of one catalog model, by the keys of `PARAM_COUNTS`."""

    transformer: str
    experts: int = 1
    vae: str = "wan2.1-vae"
    image_encoder: str | None = None
    text_encoder: str = "umt5-xxl"

    @property
    def transformer_config(self) -> Mapping[str, Any]:
        return TRANSFORMER_CONFIGS[self.transformer][1]

    def components(self) -> dict[str, str]:
        """Pipeline component name -> `PARAM_COUNTS` key."""
        names = {"text_encoder": self.text_encoder, "vae": self.vae, "transformer": self.transformer}
        if self.experts == 2:
            names["transformer_2"] = self.transformer
        if self.image_encoder:
            names["image_encoder"] = self.image_encoder
        return names


_I2V_CLIP = dict(image_encoder="clip-vit-h-14")
ARCHITECTURES: dict[str, Architecture] = {
    "wan2.1-t2v-1.3b": Architecture("dit-1.3b"),
    "wan2.1-t2v-14b": Architecture("dit-14b"),
    "wan2.1-i2v-14b-480p": Architecture("dit-14b-i2v", **_I2V_CLIP),
    "wan2.1-i2v-14b-720p": Architecture("dit-14b-i2v", **_I2V_CLIP),
    "wan2.1-flf2v-14b-720p": Architecture("dit-14b-flf2v", **_I2V_CLIP),
    "wan2.2-t2v-a14b": Architecture("dit-14b", experts=2),
    "wan2.2-i2v-a14b": Architecture("dit-a14b-i2v", experts=2),
    "wan2.2-ti2v-5b": Architecture("dit-5b", vae="wan2.2-vae"),
    # The control input channels (patch embedding) add ~0.03% to the 5B DiT; the estimate ignores them.
    "wan2.2-fun-5b-control": Architecture("dit-5b", vae="wan2.2-vae"),
    "wan2.2-animate-14b": Architecture("dit-animate-14b", **_I2V_CLIP),
    "wan2.1-vace-1.3b": Architecture("dit-vace-1.3b"),
    "wan2.1-vace-14b": Architecture("dit-vace-14b"),
    "wan2.2-vace-fun-a14b": Architecture("dit-vace-14b", experts=2),
}
"""Catalog model name -> its real-size architecture (tiny models have none)."""


def build_on_meta(key: str):
    """The component `key` (a `PARAM_COUNTS` key) at its real size on the meta device: no memory, no weights."""
    import torch

    with torch.device("meta"):
        if key == "umt5-xxl":
            from transformers import UMT5Config, UMT5EncoderModel

            return UMT5EncoderModel(UMT5Config(**UMT5_XXL))
        if key == "clip-vit-h-14":
            from transformers import CLIPVisionConfig, CLIPVisionModel

            return CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_H_14))
        import diffusers

        if key in ("wan2.1-vae", "wan2.2-vae"):
            return diffusers.AutoencoderKLWan(**(WAN21_VAE if key == "wan2.1-vae" else WAN22_VAE))
        class_name, config = TRANSFORMER_CONFIGS[key]
        return getattr(diffusers, class_name)(**config)


def count_parameters(module) -> ParamCount:
    """The `ParamCount` of a built module (meta or not). Tied weights count once."""
    total = sum(p.numel() for p in module.parameters())
    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    fp32 = sum(p.numel() for name, p in module.named_parameters() if any(k in name.split(".") for k in keep))
    encoder = getattr(module, "encoder", None)
    names = ("blocks", "vace_blocks", "face_adapter")
    lists = [getattr(module, name, None) for name in names] + [getattr(encoder, "block", None)]
    blocks = [sum(p.numel() for p in block.parameters()) for blocks in lists if blocks is not None for block in blocks]
    return ParamCount(total, fp32, sum(blocks), max(blocks, default=0))


if __name__ == "__main__":
    for name in PARAM_COUNTS:
        count = count_parameters(build_on_meta(name))
        print(
            f'    "{name}": ParamCount({count.total:_}, {count.float32:_}, {count.in_blocks:_}, {count.per_block:_}),'
        )
