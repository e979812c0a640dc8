"""Exact speed: the attention kernel and regional compilation, applied to a loaded model's transformers.

Nothing here changes what is computed beyond bf16 rounding: FlashAttention-3 (when importable) or cuDNN attention,
and `torch.compile` of each repeated transformer block's `forward` (regional compile), whose compiled code is
cached on disk so a restart does not pay the compile again.

FlashAttention-3 comes as the `flash_attn_interface` module (the `wanserve[fa3]` extra installs a prebuilt wheel of
it). diffusers 0.42 only detects FA3 when a distribution named `flash_attn_3` is installed, so for other builds the
engine registers its own attention under diffusers' `_flash_3` backend name: torch custom ops around
`flash_attn_interface.flash_attn_func` (bf16, and FP8 for jobs in a fast mode, `engine.fast`), so
`torch.compile(fullgraph=True)` traces through them.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch

from wanserve.engine.config import SpeedConfig
from wanserve.engine.fast import emulate_fp8, fp8_attention_applies, quantize_heads

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


def _make_fa3_ops():
    """Torch custom ops around `flash_attn_interface.flash_attn_func` (bf16 and FP8), so `torch.compile(fullgraph=True)`
    traces through them. The module is looked up at each call (a test may stand one in)."""

    def _first(result):
        return (result[0] if isinstance(result, tuple | list) else result).contiguous()

    @torch.library.custom_op("wanserve::flash_attn_3_forward", mutates_args=())
    def fa3_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        from flash_attn_interface import flash_attn_func

        return _first(flash_attn_func(query, key, value, softmax_scale=scale, causal=False))

    @fa3_forward.register_fake
    def _(query, key, value, scale):
        return torch.empty_like(query)

    @torch.library.custom_op("wanserve::flash_attn_3_fp8_forward", mutates_args=())
    def fa3_fp8_forward(
        q8: torch.Tensor,
        k8: torch.Tensor,
        v8: torch.Tensor,
        q_descale: torch.Tensor,
        k_descale: torch.Tensor,
        v_descale: torch.Tensor,
        scale: float,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        """FP8 inputs quantised by the caller (in the compiled block, where Inductor fuses the quantisation into the
        ops that made them), descales per (batch, head)."""
        from flash_attn_interface import flash_attn_func

        out = flash_attn_func(
            q8, k8, v8, softmax_scale=scale, causal=False, q_descale=q_descale, k_descale=k_descale,
            v_descale=v_descale,
        )  # fmt: skip
        return _first(out).to(out_dtype)

    @fa3_fp8_forward.register_fake
    def _(q8, k8, v8, q_descale, k_descale, v_descale, scale, out_dtype):
        return torch.empty_like(q8, dtype=out_dtype)

    return fa3_forward, fa3_fp8_forward


_FA3_OPS: list = [None]
"""The FlashAttention-3 custom ops (bf16, FP8), made once (`fa3_ops`)."""


def fa3_ops():
    """The FlashAttention-3 custom ops, made at the first call. `register_wanserve_backend` makes them up front:
    defining a custom op while Dynamo traces would be a graph break."""
    if _FA3_OPS[0] is None:
        _FA3_OPS[0] = _make_fa3_ops()
    return _FA3_OPS[0]


def wanserve_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """The engine's attention backend ([batch, seq, heads, dim] in and out): FlashAttention-3 where available, FP8
    while a job asks for FP8 attention (`engine.fast`, self-attention only), emulated FP8 rounding around PyTorch's
    attention elsewhere."""
    if attn_mask is not None or is_causal:
        raise ValueError("the wanserve attention backend takes neither `attn_mask` nor `is_causal`")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    fp8 = fp8_attention_applies(query, key)
    if fa3_available() and query.shape[-1] in FA3_HEAD_DIMS:
        fa3_forward, fa3_fp8_forward = fa3_ops()
        if fp8:
            (q8, q_descale), (k8, k_descale), (v8, v_descale) = (quantize_heads(x) for x in (query, key, value))
            return fa3_fp8_forward(q8, k8, v8, q_descale, k_descale, v_descale, scale, query.dtype)
        return fa3_forward(query, key, value, scale)
    if fp8:
        query, key, value = (emulate_fp8(x) for x in (query, key, value))
    out = torch.nn.functional.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scale
    )
    return out.transpose(1, 2)


WANSERVE_BACKEND = "_flash_3"
"""The diffusers backend name the engine's own attention is registered under (diffusers routes processors by the
names of its enum; `_flash_3` is the one FlashAttention-3 would have)."""


@functools.cache
def register_wanserve_backend() -> None:
    """Registers `wanserve_attention` as diffusers' `_flash_3` backend (idempotent). diffusers 0.42 only detects
    FlashAttention-3 when a distribution named `flash_attn_3` is installed, and has no FP8 attention."""
    from diffusers.models import attention_dispatch as dispatch

    if fa3_available():
        fa3_ops()  # made here, outside any compiled region
    dispatch._AttentionBackendRegistry.register(
        dispatch.AttentionBackendName(WANSERVE_BACKEND), constraints=[dispatch._check_shape]
    )(wanserve_attention)
    logger.info("the wanserve attention backend is registered as diffusers' `%s`", WANSERVE_BACKEND)


def route_attention_to_wanserve(module: torch.nn.Module) -> list[tuple[object, object]]:
    """Points every attention processor of `module` at the wanserve backend; returns (processor, previous backend)
    pairs so a job can put them back."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    register_wanserve_backend()
    # `ModelMixin.set_attention_backend` refuses `_flash_3` unless diffusers detected the `flash_attn_3`
    # distribution; the processors only need the name, and the registry now has our implementation.
    name = AttentionBackendName(WANSERVE_BACKEND)
    previous = []
    for sub in module.modules():
        processor = getattr(sub, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            previous.append((processor, processor._attention_backend))
            processor._attention_backend = name
    return previous


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
    if backend == WANSERVE_BACKEND:
        route_attention_to_wanserve(module)
        return
    module.set_attention_backend(backend)


def enable_compile_cache(cache_dir: str) -> None:
    """Keeps Inductor's compiled kernels and FX graphs under `cache_dir`, so a restart reuses them."""
    os.makedirs(cache_dir, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


RECOMPILE_LIMIT = 64
"""Compiled variants kept per block: sizes x the fast modes' variants (FP8 matmuls on or off)."""


def compile_blocks(module: torch.nn.Module, backend: str) -> None:
    """Regional compile: each repeated block's own `forward` is compiled (one graph shared by all blocks of a class,
    as diffusers' `compile_repeated_blocks`), so hooks a job adds around a block (step caches) run outside it."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    repeated = set(getattr(module, "_repeated_blocks", ()) or ())
    for sub in module.modules():
        if type(sub).__name__ in repeated:
            sub.forward = torch.compile(sub.forward, fullgraph=True, dynamic=False, backend=backend)


def apply_speed_options(components: dict[str, Any], speed: SpeedConfig, device: torch.device) -> dict[str, str]:
    """Sets the attention kernel and compiles the transformers' repeated blocks. Returns what was applied."""
    applied: dict[str, str] = {"attention": "native"}
    compile_mode = speed.compile_mode(device.type)
    if device.type == "cuda" and speed.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # process-wide, as the setting is: one engine per worker process
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
            compile_blocks(module, speed.compile_backend)
    applied["compile"] = compile_mode
    logger.info("speed options: attention %s, compile %s", applied["attention"], compile_mode)
    return applied
