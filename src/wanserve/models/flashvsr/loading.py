"""Loading FlashVSR v1.1 from its official files, and building the tiny random-weight FlashVSR offline.

The official release (`JunhaoZhuang/FlashVSR-v1.1`) is one directory:
- `diffusion_pytorch_model_streaming_dmd.safetensors`: the one-step DiT, original `WanModel` keys, no config file
  (the config is read off the tensor shapes; heads are dim / 128 as in every Wan DiT);
- `LQ_proj_in.ckpt`: the LQ projection (`Buffer_LQ4x_Proj` keys);
- `TCDecoder.ckpt`: the TCDecoder (`TAEHV` decoder keys, channels 512/256/128/128, 16 + 768 latent channels);
- `Wan2.1_VAE.pth`: the Wan VAE (used by the Full variant);
- `posi_prompt.pth`: the fixed text context (the official repository's `examples/WanVSR/prompt_tensor`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from wanserve.models.flashvsr.lq_proj import LQProjection
from wanserve.models.flashvsr.pipeline import VARIANTS, FlashVSRModel
from wanserve.models.flashvsr.tcdecoder import TCDecoder

DIT_FILE = "diffusion_pytorch_model_streaming_dmd.safetensors"
LQ_PROJ_FILE = "LQ_proj_in.ckpt"
TCDECODER_FILE = "TCDecoder.ckpt"
VAE_FILE = "Wan2.1_VAE.pth"
PROMPT_FILE = "posi_prompt.pth"
HEAD_DIM = 128

logger = logging.getLogger(__name__)


class FlashVSRCheckpointError(ValueError):
    """A FlashVSR file is missing or does not hold what its name says."""


def required_files(variant: str) -> tuple[str, ...]:
    """The files `variant` needs."""
    decoder = VAE_FILE if variant == "full" else TCDECODER_FILE
    return (DIT_FILE, LQ_PROJ_FILE, decoder, PROMPT_FILE)


def missing_files(path: Path, variant: str) -> list[str]:
    return [name for name in required_files(variant) if not (Path(path) / name).is_file()]


def _torch_load(path: Path) -> dict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise FlashVSRCheckpointError(f"{path}: cannot be read as a torch checkpoint ({exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return obj


def dit_original_config(shapes: dict[str, tuple[int, ...]], source: str) -> dict:
    """An original `WanModel` config from the DiT file's tensor shapes (the release ships no config.json)."""
    try:
        dim, in_dim = shapes["patch_embedding.weight"][:2]
        ffn_dim = shapes["blocks.0.ffn.0.weight"][0]
        out_dim = shapes["head.head.weight"][0] // 4
    except KeyError as exc:
        raise FlashVSRCheckpointError(
            f"{source}: no tensor {exc.args[0]!r}: not a Wan DiT in the original layout"
        ) from None
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    return {
        "model_type": "t2v", "dim": dim, "in_dim": in_dim, "out_dim": out_dim, "ffn_dim": ffn_dim,
        "num_heads": max(1, dim // HEAD_DIM), "num_layers": len(layers), "freq_dim": 256, "eps": 1e-6,
    }  # fmt: skip


def load_dit(path: Path, dtype: torch.dtype):
    """The DiT file as a diffusers `WanTransformer3DModel`."""
    import diffusers
    from safetensors.torch import load_file

    from wanserve.models import wan_transformer

    state = load_file(str(path))
    state = {k.removeprefix("model.diffusion_model."): v for k, v in state.items()}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = wan_transformer.diffusers_transformer_config(dit_original_config(shapes, str(path)), shapes, str(path))
    model = diffusers.WanTransformer3DModel.from_config(config)
    converted = wan_transformer.convert_transformer_state_dict(state)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise FlashVSRCheckpointError(f"{path}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.to(dtype).eval()


def load_lq_proj(path: Path, out_dim: int, dtype: torch.dtype) -> LQProjection:
    """`LQ_proj_in.ckpt` (hidden widths and the number of conditioned blocks read off its tensors)."""
    state = _torch_load(path)
    try:
        hidden1, hidden2 = state["conv1.weight"].shape[0], state["conv2.weight"].shape[0]
        in_dim = state["conv1.weight"].shape[1] // 256
    except KeyError as exc:
        raise FlashVSRCheckpointError(f"{path}: no tensor {exc.args[0]!r}: not a FlashVSR LQ projection") from None
    layers = len({k.split(".")[1] for k in state if k.startswith("linear_layers.")})
    module = LQProjection(out_dim, in_dim=in_dim, hidden_dim1=hidden1, hidden_dim2=hidden2, layers=layers)
    _load_strict(module, state, path)
    return module.to(dtype).eval()


def load_tcdecoder(path: Path, dtype: torch.dtype) -> TCDecoder:
    """`TCDecoder.ckpt` (channels read off its tensors)."""
    state = _torch_load(path)
    try:
        first = state["decoder.1.weight"]
        channels = (
            first.shape[0],
            state["decoder.10.weight"].shape[0],
            state["decoder.16.weight"].shape[0],
            state["decoder.22.weight"].shape[0],
        )
    except KeyError as exc:
        raise FlashVSRCheckpointError(f"{path}: no tensor {exc.args[0]!r}: not a FlashVSR TCDecoder") from None
    module = TCDecoder(channels, latent_channels=first.shape[1] - 768, lq_channels=768)
    # The official code loads it with strict=False: tensors beyond the decoder are tolerated (and logged), a
    # missing one is not.
    extra = sorted(k for k in state if k not in module.state_dict())
    if extra:
        logger.warning("%s: ignoring %d tensors that are not the decoder's: %s", path, len(extra), extra[:5])
    _load_strict(module, {k: v for k, v in state.items() if k not in extra}, path)
    return module.to(dtype).eval()


def _load_strict(module: torch.nn.Module, state: dict, path: Path) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FlashVSRCheckpointError(f"{path}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


def load_context(path: Path) -> torch.Tensor:
    """`posi_prompt.pth`: the fixed text context [1, tokens, text_dim]."""
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj.get("context", next(iter(obj.values()), None))
    if not isinstance(obj, torch.Tensor):
        raise FlashVSRCheckpointError(f"{path}: expected a tensor, got {type(obj).__name__}")
    return obj if obj.ndim == 3 else obj.unsqueeze(0)


def load_flashvsr(path: Path, variant: str, dtype: torch.dtype = torch.bfloat16) -> FlashVSRModel:
    """FlashVSR `variant` from an official v1.1 directory. The VAE is loaded only for `full`, the TCDecoder only for
    the tiny variants."""
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {', '.join(VARIANTS)}, got {variant!r}")
    path = Path(path)
    missing = missing_files(path, variant)
    if missing:
        raise FlashVSRCheckpointError(f"{path}: missing {', '.join(missing)} (FlashVSR v1.1 {variant})")
    transformer = load_dit(path / DIT_FILE, dtype)
    lq_proj = load_lq_proj(
        path / LQ_PROJ_FILE, transformer.config.num_attention_heads * transformer.config.attention_head_dim, dtype
    )
    tcdecoder = vae = None
    if variant == "full":
        from wanserve.engine.original_loading import load_vae

        vae = load_vae(path / VAE_FILE, torch.float32)
    else:
        tcdecoder = load_tcdecoder(path / TCDECODER_FILE, dtype)
    context = load_context(path / PROMPT_FILE)
    return FlashVSRModel(transformer, lq_proj, tcdecoder, vae, context, variant)


# -- built offline ------------------------------------------------------------------------------------------------
REAL_DIT = dict(dim=1536, ffn_dim=8960, heads=12, layers=30, text_dim=4096, text_tokens=512)
"""Wan2.1-T2V-1.3B, the FlashVSR backbone."""
REAL_LQ = dict(hidden_dim1=2048, hidden_dim2=3072)
REAL_TCDECODER = (512, 256, 128, 128)
TINY_DIT = dict(dim=128, ffn_dim=256, heads=1, layers=2, text_dim=32, text_tokens=8)
TINY_LQ = dict(hidden_dim1=32, hidden_dim2=48)
TINY_TCDECODER = (16, 8, 8, 8)


def build_random_flashvsr(
    variant: str = "tiny", real_size: bool = False, seed: int = 0, dtype: torch.dtype = torch.float32
) -> FlashVSRModel:
    """A FlashVSR with seeded random weights: tiny (CPU tests) or real-size (benchmarks). Never a trained model."""
    import diffusers

    dit, lq, channels = (REAL_DIT, REAL_LQ, REAL_TCDECODER) if real_size else (TINY_DIT, TINY_LQ, TINY_TCDECODER)
    torch.manual_seed(seed)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=dit["heads"], attention_head_dim=dit["dim"] // dit["heads"],
        in_channels=16, out_channels=16, text_dim=dit["text_dim"], freq_dim=256, ffn_dim=dit["ffn_dim"],
        num_layers=dit["layers"], cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    )  # fmt: skip
    lq_proj = LQProjection(dit["dim"], **lq)
    tcdecoder = TCDecoder(channels) if variant != "full" else None
    vae = None
    if variant == "full":
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan(
            base_dim=96 if real_size else 8, z_dim=16, dim_mult=[1, 2, 4, 4] if real_size else [1, 1, 1, 1]
        )
    context = torch.randn(1, dit["text_tokens"], dit["text_dim"], generator=torch.Generator().manual_seed(seed))
    model = FlashVSRModel(transformer.eval(), lq_proj.eval(), tcdecoder, vae, context, variant)
    for module in model.modules().values():
        if dtype != torch.float32:
            module.to(dtype)
    if vae is not None:
        vae.to(torch.float32)
    return model
