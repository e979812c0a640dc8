"""The original Wan VAE checkpoints (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`) as a diffusers `AutoencoderKLWan`.

The `.pth` files hold a bare state dict of `WanVAE_` (wan/modules/vae2_1.py, vae2_2.py) and no config: the
structure is read back from the keys and shapes. diffusers' `convert_wan_vae_to_diffusers` knows only the
Wan2.1 VAE at its released size (two residual blocks per stage); this converter follows the official module
layout for any size, both the flat Wan2.1 stages (`decoder.upsamples.<n>`) and the nested Wan2.2 residual
stages (`decoder.upsamples.<i>.upsamples.<j>`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from wanserve.errors import CheckpointError

# Latent statistics are not in the `.pth` files: the official `Wan2_1_VAE` / `Wan2_2_VAE` classes hard-code
# them.
WAN21_LATENTS_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]  # fmt: skip
WAN21_LATENTS_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]  # fmt: skip
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip

# Inside a `ResidualBlock`: nn.Sequential(RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout,
# CausalConv3d).
_RESIDUAL_RENAMES = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.": "conv1.",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.": "conv2.",
    "shortcut.": "conv_shortcut.",
}
_TOP_RENAMES = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
_SIDE_RENAMES = {
    "conv1.": "conv_in.",
    "head.0.gamma": "norm_out.gamma",
    "head.2.": "conv_out.",
    "middle.0.": "mid_block.resnets.0.",
    "middle.1.": "mid_block.attentions.0.",
    "middle.2.": "mid_block.resnets.1.",
}


def _rename(rest: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


def _block_rest(rest: str) -> str:
    """The name inside a residual / attention / resample block, residual parts renamed."""
    return _rename(rest, _RESIDUAL_RENAMES) or rest


def vae_config_from_state_dict(state_dict: Mapping, source: str = "VAE checkpoint") -> dict:
    """The `AutoencoderKLWan` config that the official `WanVAE_` with these tensors had."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"{source}: no tensor {key!r}; this is not a Wan VAE state dict")
        return tuple(state_dict[key].shape)

    base_dim, in_channels = shape("encoder.conv1.weight")[:2]
    z_dim = shape("conv2.weight")[0]
    residual = any(k.startswith("encoder.downsamples.0.downsamples.") for k in state_dict)
    if residual:
        stages = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.downsamples\.(\d+)\.", k))})
        num_res_blocks = len(
            {
                int(m.group(1))
                for k in state_dict
                if (m := re.match(r"encoder\.downsamples\.0\.downsamples\.(\d+)\.residual", k))
            }
        )
        out_dims = [
            shape(f"encoder.downsamples.{i}.downsamples.{num_res_blocks - 1}.residual.6.weight")[0] for i in stages
        ]
        temporal = [
            f"encoder.downsamples.{i}.downsamples.{num_res_blocks}.time_conv.weight" in state_dict for i in stages[:-1]
        ]
    else:
        entries = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.downsamples\.(\d+)\.", k))})
        resamples = [j for j in entries if f"encoder.downsamples.{j}.resample.1.weight" in state_dict]
        blocks = [j for j in entries if f"encoder.downsamples.{j}.residual.2.weight" in state_dict]
        if len(blocks) + len(resamples) != len(entries):
            raise CheckpointError(f"{source}: attention blocks inside the VAE stages are not supported")
        stages = range(len(resamples) + 1)
        num_res_blocks = len(blocks) // len(stages)
        out_dims = [
            shape(f"encoder.downsamples.{blocks[(i + 1) * num_res_blocks - 1]}.residual.6.weight")[0] for i in stages
        ]
        temporal = [f"encoder.downsamples.{j}.time_conv.weight" in state_dict for j in resamples]
    if num_res_blocks < 1 or any(d % base_dim for d in out_dims):
        raise CheckpointError(f"{source}: cannot read the VAE stages from the keys (base dim {base_dim})")
    dim_mult = [d // base_dim for d in out_dims]
    decoder_dim = shape("decoder.conv1.weight")[0]
    patch_size = 2 if residual and in_channels == 12 else None
    config = dict(
        base_dim=base_dim,
        decoder_base_dim=decoder_dim // dim_mult[-1] if residual else None,
        z_dim=z_dim,
        dim_mult=dim_mult,
        num_res_blocks=num_res_blocks,
        attn_scales=[],
        temperal_downsample=temporal,
        dropout=0.0,
        is_residual=residual,
        in_channels=in_channels,
        out_channels=shape("decoder.head.2.weight")[0],
        patch_size=patch_size,
        scale_factor_temporal=2 ** sum(temporal),
        scale_factor_spatial=2 ** (len(dim_mult) - 1) * (patch_size or 1),
    )
    if z_dim == 48:
        config.update(latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD)
    elif z_dim == 16:
        config.update(latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)
    else:
        config.update(latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    return config


def convert_vae_state_dict(state_dict: Mapping, config: Mapping, source: str = "VAE checkpoint") -> dict:
    """Renames an official `WanVAE_` state dict to `AutoencoderKLWan` keys for `config`."""
    num_res_blocks = config["num_res_blocks"]
    stages = len(config["dim_mult"])
    # Wan2.1 decoder: a flat list of (num_res_blocks + 1) residual blocks per stage, then one upsampler.
    flat_up: dict[int, str] = {}
    n = 0
    for i in range(stages):
        for r in range(num_res_blocks + 1):
            flat_up[n] = f"up_blocks.{i}.resnets.{r}."
            n += 1
        if i != stages - 1:
            flat_up[n] = f"up_blocks.{i}.upsamplers.0."
            n += 1

    converted = {}
    for key, value in state_dict.items():
        side, _, rest = key.partition(".")
        new = None
        if side in ("encoder", "decoder"):
            new = _side_key(side, rest, num_res_blocks, flat_up, config["is_residual"])
        elif "." in key:
            new = _rename(key, _TOP_RENAMES)
        if new is None:
            raise CheckpointError(f"{source}: unexpected key {key!r} for a Wan VAE")
        converted[new] = value
    return converted


def _side_key(side: str, rest: str, num_res_blocks: int, flat_up: dict[int, str], residual: bool) -> str | None:
    renamed = _rename(rest, _SIDE_RENAMES)
    if renamed is not None:
        if renamed.startswith("mid_block.resnets."):
            head, _, tail = renamed.partition(".resnets.")
            index, _, inner = tail.partition(".")
            renamed = f"{head}.resnets.{index}.{_block_rest(inner)}"
        return f"{side}.{renamed}"
    if residual:
        pattern = r"(down|up)samples\.(\d+)\.(down|up)samples\.(\d+)\.(.*)"
        m = re.fullmatch(pattern, rest)
        if not m:
            return None
        kind, stage, index, inner = m.group(1), int(m.group(2)), int(m.group(4)), m.group(5)
        block = f"{kind}_blocks.{stage}"
        last = num_res_blocks if kind == "down" else num_res_blocks + 1
        if index == last:
            return f"{side}.{block}.{kind}sampler.{inner}"
        return f"{side}.{block}.resnets.{index}.{_block_rest(inner)}"
    m = re.fullmatch(r"(down|up)samples\.(\d+)\.(.*)", rest)
    if not m:
        return None
    kind, index, inner = m.group(1), int(m.group(2)), m.group(3)
    if kind == "down":
        return f"{side}.down_blocks.{index}.{_block_rest(inner)}"
    if index not in flat_up:
        return None
    return f"{side}.{flat_up[index]}{_block_rest(inner)}"
