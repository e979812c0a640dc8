"""`Wan2.1_VAE.pth` / `Wan2.2_VAE.pth` keys and structure -> `AutoencoderKLWan`, at the released sizes."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from tests.models.wan_original import invert_keys, official_vae21_keys, official_vae22_keys
from wanserve.errors import CheckpointError
from wanserve.models.wan_vae import WAN22_LATENTS_MEAN, convert_vae_state_dict, vae_config_from_state_dict

# diffusers' AutoencoderKLWan() defaults are the Wan2.1 VAE; the Wan2.2 one is diffusers' conversion script's.
WAN21 = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
WAN22 = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
    temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4,
)  # fmt: skip


def _meta_vae(config: dict) -> AutoencoderKLWan:
    with torch.device("meta"):
        return AutoencoderKLWan(**config)


def _official_keys(config: dict) -> list[str]:
    c = {**_meta_vae(config).config}
    if c["is_residual"]:
        return official_vae22_keys(
            c["base_dim"], c["decoder_base_dim"], c["dim_mult"], c["num_res_blocks"], c["temperal_downsample"]
        )
    return official_vae21_keys(c["base_dim"], c["dim_mult"], c["num_res_blocks"], c["temperal_downsample"])


def _original_state_dict(config: dict) -> dict:
    """The released `.pth` state dict's keys and shapes (meta tensors), from the diffusers model."""
    model = _meta_vae(config)
    keys = _official_keys(config)
    full = {**model.config}
    mapping = invert_keys(lambda sd: convert_vae_state_dict(sd, full), keys, model.state_dict())
    return {mapping[k]: v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("config", [WAN21, WAN22], ids=["wan2.1", "wan2.2"])
def test_convert_vae_state_dict_maps_official_keys_onto_diffusers_keys(config):
    # invert_keys asserts the exact key-set equality.
    _original_state_dict(config)


def test_convert_vae_state_dict_agrees_with_diffusers_converter_on_wan21():
    model = _meta_vae(WAN21)
    original = _original_state_dict(WAN21)
    ours = convert_vae_state_dict(original, {**model.config})
    theirs = convert_wan_vae_to_diffusers(original)
    assert set(ours) == set(theirs)
    assert all(ours[k] is theirs[k] for k in ours)


def test_convert_vae_state_dict_handles_nested_wan22_keys():
    original = _original_state_dict(WAN22)
    assert "decoder.upsamples.0.upsamples.3.time_conv.weight" in original
    converted = convert_vae_state_dict(original, {**_meta_vae(WAN22).config})
    assert (
        converted["decoder.up_blocks.0.upsampler.time_conv.weight"]
        is (original["decoder.upsamples.0.upsamples.3.time_conv.weight"])
    )
    assert (
        converted["encoder.down_blocks.1.resnets.0.conv_shortcut.weight"]
        is (original["encoder.downsamples.1.downsamples.0.shortcut.weight"])
    )


@pytest.mark.parametrize("config", [WAN21, WAN22], ids=["wan2.1", "wan2.2"])
def test_vae_config_from_state_dict_reads_released_structure(config):
    inferred = vae_config_from_state_dict(_original_state_dict(config))
    expected = {**_meta_vae(config).config}
    for key in ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample", "is_residual",
                "in_channels", "out_channels", "patch_size", "scale_factor_spatial", "scale_factor_temporal",
                "latents_mean", "latents_std"):  # fmt: skip
        if key in ("latents_mean", "latents_std") and config is WAN22:
            continue
        assert inferred[key] == expected[key], key
    if config is WAN22:
        assert inferred["decoder_base_dim"] == 256
        assert inferred["latents_mean"] == WAN22_LATENTS_MEAN


def test_vae_config_from_state_dict_rejects_other_checkpoints():
    with pytest.raises(CheckpointError, match=r"vae.pth: no tensor 'encoder.conv1.weight'"):
        vae_config_from_state_dict({"model.weight": torch.zeros(1)}, source="vae.pth")


def test_convert_vae_state_dict_names_unexpected_key():
    original = _original_state_dict(WAN21)
    original["decoder.upsamples.99.residual.0.gamma"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected key 'decoder.upsamples.99.residual.0.gamma'"):
        convert_vae_state_dict(original, {**_meta_vae(WAN21).config})
