"""Ring attention on the CPU: diffusers' `native` backend cannot return the log-sum-exp that ring attention merges
partial results with, so on a CPU group (gloo, tests) wanserve routes context-parallel `native` attention through
PyTorch's CPU flash kernel, which does (`aten._scaled_dot_product_flash_attention_for_cpu`).

On accelerators nothing here is used: the ring plan there takes an attention backend that returns the log-sum-exp
(`_native_cudnn`, `flash`, `_flash_3`, `sage`). Why this exists at all: docs/design-notes.md, "Parallel plans on CPU".
"""

from __future__ import annotations

import functools

import torch


def _cpu_flash_forward_op(
    ctx,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    _save_ctx: bool = True,
    _parallel_config=None,
):
    """diffusers' forward-op contract: (B, S, H, D) in, (B, S, H, D) out, and the (B, S, H) log-sum-exp."""
    if attn_mask is not None:
        raise ValueError("ring attention on the CPU does not take an attention mask (Wan's attention has none)")
    q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    out = out.permute(0, 2, 1, 3)
    lse = lse.permute(0, 2, 1).contiguous()
    return (out, lse) if return_lse else out


def _no_backward(*args, **kwargs):
    raise NotImplementedError("wanserve's CPU ring attention is for inference only")


def install_cpu_ring_attention() -> None:
    """Lets the `native` backend run ring (and Ulysses x ring) attention on CPU tensors. Idempotent; attention without
    a context-parallel config, or on other devices, goes to diffusers' own function unchanged."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _AttentionBackendRegistry,
        _templated_context_parallel_attention,
    )

    name = AttentionBackendName.NATIVE
    original = _AttentionBackendRegistry._backends[name]
    if getattr(original, "_wanserve_cpu_ring", False):
        return

    @functools.wraps(original)
    def native_attention(
        query,
        key,
        value,
        attn_mask=None,
        dropout_p=0.0,
        is_causal=False,
        scale=None,
        enable_gqa=False,
        return_lse=False,
        _parallel_config=None,
    ):
        cp = _parallel_config.context_parallel_config if _parallel_config is not None else None
        if cp is None or cp.ring_degree == 1 or query.device.type != "cpu":
            return original(
                query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse,
                _parallel_config=_parallel_config,
            )  # fmt: skip
        return _templated_context_parallel_attention(
            query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse,
            forward_op=_cpu_flash_forward_op, backward_op=_no_backward, _parallel_config=_parallel_config,
        )  # fmt: skip

    native_attention._wanserve_cpu_ring = True
    _AttentionBackendRegistry._backends[name] = native_attention


def _padded_all_gather_anything(tensor: torch.Tensor, dim: int, group) -> torch.Tensor:
    """diffusers' `_all_gather_anything` (uneven shards gathered along `dim`) for backends whose all-gather needs
    equal sizes (gloo): each shard is padded to the largest, gathered, and trimmed back."""
    import torch.distributed as dist
    from diffusers.models._modeling_parallel import gather_size_by_comm

    tensor = tensor.contiguous()
    sizes = gather_size_by_comm(tensor.shape[dim], group)
    largest = max(sizes)
    if tensor.shape[dim] < largest:
        pad_shape = list(tensor.shape)
        pad_shape[dim] = largest - tensor.shape[dim]
        tensor = torch.cat([tensor, tensor.new_zeros(pad_shape)], dim=dim)
    gathered = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(gathered, tensor, group=group)
    return torch.cat([part.narrow(dim, 0, size) for part, size in zip(gathered, sizes, strict=True)], dim=dim)


def install_padded_uneven_gather() -> None:
    """Lets diffusers' uneven ("anything") context-parallel gathers run on gloo, whose all-gather refuses shards of
    different sizes (NCCL's does not). Idempotent."""
    from diffusers.hooks import context_parallel

    if context_parallel._all_gather_anything is not _padded_all_gather_anything:
        context_parallel._all_gather_anything = _padded_all_gather_anything
