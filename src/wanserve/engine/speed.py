"""Exact speed: the attention kernel and regional compilation, applied to a loaded model's transformers.

Nothing here changes what is computed beyond bf16 rounding: FlashAttention-3 (when importable) or cuDNN attention,
and `torch.compile` of the repeated transformer blocks (`compile_repeated_blocks`, diffusers' regional compile),
whose compiled code is cached on disk so a restart does not pay the compile again.

FlashAttention-3 comes as the `flash_attn_interface` module (the `wanserve[fa3]` extra installs a prebuilt wheel of
it). diffusers 0.42 only detects FA3 when a distribution named `flash_attn_3` is installed, so for other builds the
engine registers its own implementation of diffusers' `_flash_3` backend: a torch custom op around
`flash_attn_interface.flash_attn_func`, so `torch.compile(fullgraph=True)` traces through it.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch

from wanserve.engine.config import SpeedConfig

logger = logging.getLogger(__name__)

TRANSFORMERS = ("transformer", "transformer_2")
"""The components that run every denoising step (the A14B models have two experts)."""

FA3_HEAD_DIMS = frozenset({64, 96, 128, 192, 256})
"""Attention head sizes FlashAttention-3's forward kernels are built for (every real Wan model uses 128)."""


@functools.cache
def fa3_available() -> bool:
    """True when a FlashAttention-3 build is importable and a CUDA device of compute capability 9.x is present."""
    try:
        import flash_attn_interface  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


@functools.cache
def register_fa3_backend() -> None:
    """Makes diffusers' `_flash_3` attention backend call `flash_attn_interface.flash_attn_func` (idempotent)."""
    from diffusers.models import attention_dispatch as dispatch
    from flash_attn_interface import flash_attn_func

    if dispatch._CAN_USE_FLASH_ATTN_3:
        return  # diffusers found a `flash_attn_3` distribution itself and registered its own backend

    @torch.library.custom_op("wanserve::flash_attn_3_forward", mutates_args=())
    def fa3_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        result = flash_attn_func(query, key, value, softmax_scale=scale, causal=False)
        return (result[0] if isinstance(result, tuple | list) else result).contiguous()

    @fa3_forward.register_fake
    def _(query, key, value, scale):
        return torch.empty_like(query)

    def flash_attention_3(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        scale: float | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("the FlashAttention-3 backend takes neither `attn_mask` nor `is_causal`")
        return fa3_forward(query, key, value, query.shape[-1] ** -0.5 if scale is None else scale)

    dispatch._AttentionBackendRegistry.register(
        dispatch.AttentionBackendName._FLASH_3,
        constraints=[dispatch._check_device, dispatch._check_qkv_dtype_bf16_or_fp16, dispatch._check_shape],
    )(flash_attention_3)
    logger.info("FlashAttention-3 registered as diffusers' `_flash_3` attention backend")


HALF_DTYPES = (torch.bfloat16, torch.float16)
"""The fused attention kernels (FA3, cuDNN, flash) take only these; a float32 model keeps PyTorch's own."""


def resolve_attention(
    speed: SpeedConfig, device: torch.device, head_dim: int = 128, dtype: torch.dtype = torch.bfloat16
) -> str:
    """The attention backend `speed.attention` means on `device` for heads of `head_dim` in `dtype` (`auto`: FA3
    where it is available and built for that head size, else cuDNN on CUDA; PyTorch's own on other devices and
    for float32 models)."""
    from wanserve.engine.config import ConfigError

    choice = speed.attention
    if choice == "auto":
        if device.type != "cuda" or dtype not in HALF_DTYPES:
            return "native"
        return "_flash_3" if fa3_available() and head_dim in FA3_HEAD_DIMS else "_native_cudnn"
    if choice != "native" and dtype not in HALF_DTYPES:
        raise ConfigError(
            "speed.attention", f"`speed.attention`={choice!r} needs a bfloat16 or float16 model, got {dtype}"
        )
    if choice == "fa3":
        if not fa3_available():
            raise ConfigError(
                "speed.attention",
                "`speed.attention`='fa3' needs the `flash_attn_interface` module (pip install 'wanserve[fa3]') and a "
                f"Hopper GPU (compute capability 9.x); found device {device}",
            )
        if head_dim not in FA3_HEAD_DIMS:
            raise ConfigError(
                "speed.attention",
                f"`speed.attention`='fa3' supports head sizes {sorted(FA3_HEAD_DIMS)}; this model's is {head_dim}",
            )
        return "_flash_3"
    return {"cudnn": "_native_cudnn", "flash": "_native_flash", "native": "native"}[choice]


def set_attention_backend(module: torch.nn.Module, backend: str) -> None:
    """Points every attention processor of `module` at `backend` (a diffusers `AttentionBackendName` value)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    if backend == "_flash_3":
        register_fa3_backend()
        # `ModelMixin.set_attention_backend` refuses `_flash_3` unless diffusers detected the `flash_attn_3`
        # distribution; the processors only need the name, and the registry now has our implementation.
        name = AttentionBackendName(backend)
        for sub in module.modules():
            processor = getattr(sub, "processor", None)
            if processor is not None and hasattr(processor, "_attention_backend"):
                processor._attention_backend = name
        return
    module.set_attention_backend(backend)


def enable_compile_cache(cache_dir: str) -> None:
    """Keeps Inductor's compiled kernels and FX graphs under `cache_dir`, so a restart reuses them."""
    os.makedirs(cache_dir, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def apply_speed_options(components: dict[str, Any], speed: SpeedConfig, device: torch.device) -> dict[str, str]:
    """Sets the attention kernel and compiles the transformers' repeated blocks. Returns what was applied."""
    applied: dict[str, str] = {"attention": "native"}
    compile_mode = speed.compile_mode(device.type)
    for name in TRANSFORMERS:
        module = components.get(name)
        if not isinstance(module, torch.nn.Module):
            continue
        attention = resolve_attention(speed, device, module.config.attention_head_dim, module.dtype)
        applied["attention"] = attention
        if attention != "native":
            set_attention_backend(module, attention)
        if compile_mode == "blocks":
            if speed.compile_cache_dir:
                enable_compile_cache(speed.compile_cache_dir)
            module.compile_repeated_blocks(fullgraph=True, dynamic=False, backend=speed.compile_backend)
    applied["compile"] = compile_mode
    logger.info("speed options: attention %s, compile %s", applied["attention"], compile_mode)
    return applied
