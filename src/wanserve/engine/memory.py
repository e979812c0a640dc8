"""Applies a `MemoryConfig` to a loaded diffusers pipeline: placement, offload, VAE tiling, dtypes at load time.

Everything goes through diffusers' own switches (`enable_model_cpu_offload`, `enable_group_offload` /
`apply_group_offloading`, `vae.enable_tiling`), so their hooks stay the ones diffusers tests.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from wanserve.engine.config import MemoryConfig, torch_dtype

logger = logging.getLogger(__name__)

CPU_PINNABLE = ("text_encoder",)
"""Components `text_encoder_on_cpu` keeps on the CPU."""


def component_dtypes(memory: MemoryConfig) -> dict[str, torch.dtype]:
    """The `dtype=` mapping for `DiffusionPipeline.from_pretrained` (component name -> dtype, plus `default`)."""
    transformer = torch_dtype(memory.transformer_dtype, "transformer_dtype")
    return {
        "transformer": transformer,
        "transformer_2": transformer,
        "text_encoder": torch_dtype(memory.text_encoder_dtype, "text_encoder_dtype"),
        "image_encoder": torch_dtype(memory.image_encoder_dtype, "image_encoder_dtype"),
        "vae": torch_dtype(memory.vae_dtype, "vae_dtype"),
        "default": transformer,
    }


def _modules(pipe: Any) -> dict[str, torch.nn.Module]:
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def _unhook_and_keep_on_cpu(pipe: Any, names: tuple[str, ...]) -> None:
    """Removes accelerate's offload hook from `names` and leaves them on the CPU."""
    from accelerate.hooks import remove_hook_from_module

    modules = _modules(pipe)
    for name in names:
        module = modules.get(name)
        if module is None:
            continue
        remove_hook_from_module(module, recurse=True)
        module.to("cpu")
    # The chain's hooks for these modules would move them back on the next call; drop them from the chain.
    pinned = [modules[n] for n in names if n in modules]
    pipe._all_hooks = [h for h in getattr(pipe, "_all_hooks", []) if h.model not in pinned]


def _enable_model_offload_keeping_cpu(pipe: Any, device: str, keep_on_cpu: tuple[str, ...]) -> None:
    # An unpinned, hooked VAE comes first in every Wan pipeline's components, so `_execution_device` still
    # reports the accelerator (a test checks it).
    pipe.enable_model_cpu_offload(device=device)
    if not keep_on_cpu:
        return
    _unhook_and_keep_on_cpu(pipe, keep_on_cpu)
    # `maybe_free_model_hooks()` (end of every pipeline call) re-runs `enable_model_cpu_offload`, which would hook
    # the text encoder again and move it to the device on the next prompt; re-pin it after every re-run.
    original = type(pipe).enable_model_cpu_offload.__get__(pipe)

    @functools.wraps(original)
    def enable_and_repin(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        _unhook_and_keep_on_cpu(pipe, keep_on_cpu)

    pipe.enable_model_cpu_offload = enable_and_repin


NESTED_BLOCKS = {"text_encoder": "encoder"}
"""Components whose repeated blocks are not a direct child, and the submodule that holds them. diffusers' block-level
group offload streams only the `ModuleList`s directly under the module it is given, so offloading UMT5 itself moves
its `encoder.block` as one 10.6 GiB group (measured on the H200: a 12.85 GiB peak at 480p, benchmarks/memory_check.py);
offloading `encoder` streams its blocks (the embedding, tied to `shared`, moves with the encoder's other layers).
diffusers' own nested form (`block_modules=["encoder"]`) fails with streams: both levels register a prefetch hook
(`ValueError: Hook with name layer_execution_tracker already exists`, seen on the H200)."""


def _enable_group_offload(pipe: Any, memory: MemoryConfig, device: str, keep_on_cpu: tuple[str, ...]) -> None:
    """`pipe.enable_group_offload`'s loop (a model's own `enable_group_offload`, else diffusers'
    `apply_group_offloading`), except that the components in `keep_on_cpu` stay where they are (its
    `exclude_modules` would move them onto the device) and the text encoder's blocks are streamed."""
    from diffusers.hooks import apply_group_offloading

    kwargs = dict(
        onload_device=torch.device(device),
        offload_device=torch.device("cpu"),
        offload_type=memory.group_offload_type,
        num_blocks_per_group=memory.blocks_per_group,
        use_stream=memory.group_offload_use_stream,
    )
    for name, module in _modules(pipe).items():
        if name in keep_on_cpu:
            module.to("cpu")
        elif hasattr(module, "enable_group_offload"):
            module.enable_group_offload(**kwargs)
        else:
            nested = getattr(module, NESTED_BLOCKS.get(name, ""), None)
            if isinstance(nested, torch.nn.Module) and memory.group_offload_type == "block_level":
                module.to("cpu")  # nothing outside `nested` holds parameters (UMT5's `shared` is its embedding)
                apply_group_offloading(module=nested, **kwargs)
            else:
                apply_group_offloading(module=module, **kwargs)


def apply_memory_options(pipe: Any, memory: MemoryConfig, device: str | torch.device) -> None:
    """Places `pipe`'s components for `device` as `memory` asks. Call once, after loading, before generating.

    - `offload="none"`: every component moves to `device` (the text encoder stays on the CPU with
      `text_encoder_on_cpu`; diffusers' Wan pipelines move its inputs and outputs across).
    - `offload="model"`: `pipe.enable_model_cpu_offload(device=...)`; the text encoder is unhooked and kept on
      the CPU with `text_encoder_on_cpu`, also after each call re-applies the offload.
    - `offload="group"`: `pipe.enable_group_offload(...)` with the configured granularity and stream use; with
      `text_encoder_on_cpu` each other component is group-offloaded and the text encoder stays on the CPU.
    - `vae_tiling`: `pipe.vae.enable_tiling()`.
    Dtypes are chosen at load time: pass `component_dtypes(memory)` as `dtype=` to `from_pretrained`.
    """
    device = str(device)
    keep_on_cpu = CPU_PINNABLE if memory.text_encoder_on_cpu else ()

    # 1. VAE tiling (before offload hooks wrap the VAE)
    if memory.vae_tiling:
        vae = getattr(pipe, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            raise ValueError(f"`vae_tiling`=True but {type(pipe).__name__} has no VAE with tiling")
        vae.enable_tiling()

    # 2. Placement or offload
    if memory.offload != "none" and device.split(":")[0] == "cpu":
        logger.warning("offload=%s on the cpu saves no memory; applying it anyway", memory.offload)
    if memory.offload == "none":
        for name, module in _modules(pipe).items():
            module.to("cpu" if name in keep_on_cpu else device)
    elif memory.offload == "model":
        _enable_model_offload_keeping_cpu(pipe, device, keep_on_cpu)
    else:
        _enable_group_offload(pipe, memory, device, keep_on_cpu)
    logger.info(
        "memory options on %s: offload=%s, text encoder on %s, vae tiling %s",
        device,
        memory.offload,
        "cpu" if keep_on_cpu else device,
        "on" if memory.vae_tiling else "off",
    )
