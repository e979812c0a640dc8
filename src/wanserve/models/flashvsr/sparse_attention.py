"""FlashVSR's locality-constrained block-sparse self-attention, with its streaming KV cache.

Tokens are grouped in 3-D windows of (2, 8, 8) latent tokens: 128 tokens a block, blocks ordered window by window.
Which key blocks a query block reads is decided per head from block-pooled queries and keys: a spatial window of
`local_range` x `local_range` blocks around the query block (in every cached temporal window), then the top-k of
the softmaxed pooled scores over each temporal window of queries (as the official `generate_draft_block_mask`).

Two kernels give the same output: a dense masked SDPA (any device; memory grows with Lq x Lk, so for small
inputs and tests) and PyTorch FlexAttention with a `BlockMask` of full 128x128 blocks (CUDA, compiled). A query
block that reads no key block outputs zeros in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WINDOW = (2, 8, 8)
"""Latent-token window (frames, rows, columns) of one attention block."""
BLOCK_TOKENS = WINDOW[0] * WINDOW[1] * WINDOW[2]
"""128 tokens a block: the block size of the sparse kernel."""
KERNELS = ("dense", "flex")


@dataclass(frozen=True)
class SparsityConfig:
    """How sparse the self-attention is (the official inference defaults)."""

    sparse_ratio: float = 2.0
    """Official `sparse_ratio`: 1.5 faster, 2.0 more stable; top-k = sparse_ratio x 768 x 1280 / (H x W) x S^2."""
    local_range: int = 11
    """Spatial window of key blocks around a query block, in blocks (official: 9 sharper, 11 more stable)."""
    kv_windows: int = 3
    """Temporal windows each block keeps in its KV cache (official `kv_ratio` 3.0)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.sparse_ratio <= 16.0:
            raise ValueError(f"`sparse_ratio` must be in (0, 16], got {self.sparse_ratio}")
        if self.local_range < 1:
            raise ValueError(f"`local_range` must be at least 1, got {self.local_range}")
        if self.kv_windows < 1:
            raise ValueError(f"`kv_windows` must be at least 1, got {self.kv_windows}")

    def topk(self, height_px: int, width_px: int, blocks_per_window: int) -> int:
        """Blocks kept per (head, query temporal window), as the official pipeline computes it."""
        ratio = self.sparse_ratio * 768 * 1280 / (height_px * width_px)
        return int(blocks_per_window * blocks_per_window * ratio) - 1


def partition_windows(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """[B, f*h*w, D] tokens (frame-major) -> [B, n_blocks, 128, D], blocks ordered (window frame, row, column)."""
    b, _, d = x.shape
    f, h, w = grid
    wf, wh, ww = WINDOW
    x = x.view(b, f // wf, wf, h // wh, wh, w // ww, ww, d).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, BLOCK_TOKENS, d)


def reverse_windows(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of `partition_windows`: [B, n_blocks, 128, D] -> [B, f*h*w, D]."""
    b, _, _, d = x.shape
    f, h, w = grid
    wf, wh, ww = WINDOW
    x = x.view(b, f // wf, h // wh, w // ww, wf, wh, ww, d).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, f * h * w, d)


def local_block_mask(rows: int, cols: int, local_range: int, device=None) -> torch.Tensor:
    """[S, S] bool over the spatial blocks of one temporal window: True where key block j lies in the
    `local_range` x `local_range` window around query block i (the window slides past the edges, unclamped)."""
    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    start_r, start_c = r - local_range // 2, c - local_range // 2
    in_row = (r[None, :] >= start_r[:, None]) & (r[None, :] <= start_r[:, None] + local_range - 1)
    in_col = (c[None, :] >= start_c[:, None]) & (c[None, :] <= start_c[:, None] + local_range - 1)
    return in_row & in_col


def draft_block_mask(
    q_blocks: torch.Tensor, k_blocks: torch.Tensor, heads: int, local: torch.Tensor, topk: int
) -> torch.Tensor:
    """Which key blocks each query block reads: [heads, n_q_blocks, n_k_blocks] bool.

    `q_blocks` [n_q, 128, D] and `k_blocks` [n_k, 128, D] (one batch item); `local` [S, S] from `local_block_mask`,
    S blocks per temporal window."""
    s = local.shape[0]
    n_q, n_k = q_blocks.shape[0], k_blocks.shape[0]
    q = q_blocks.float().mean(dim=1).view(n_q, heads, -1).transpose(0, 1)  # [H, n_q, d]
    k = k_blocks.float().mean(dim=1).view(n_k, heads, -1).transpose(0, 1)
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    allowed = local.repeat(n_q // s, n_k // s)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # Top-k over each query temporal window's whole [S, n_k] map, per head.
    flat = probs.view(heads, n_q // s, s * n_k)
    keep = min(flat.shape[-1] - 1, topk)
    threshold = torch.topk(flat, k=keep + 1, dim=-1).values[..., -1:]
    return (flat > threshold).view(heads, n_q, n_k)


def dense_block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor
) -> torch.Tensor:
    """Attention of [B, H, Lq, d] queries over [B, H, Lk, d] keys/values where `block_mask` [H, Lq/128, Lk/128]
    allows it; rows that may read nothing give zeros."""
    token_mask = block_mask.repeat_interleave(BLOCK_TOKENS, dim=1).repeat_interleave(BLOCK_TOKENS, dim=2)
    token_mask = token_mask.unsqueeze(0)
    empty = ~token_mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask | empty)
    return out.masked_fill(empty, 0.0)


def flex_block_mask(block_mask: torch.Tensor, q_len: int, k_len: int):
    """A FlexAttention `BlockMask` of full 128x128 blocks from a [H, n_q, n_k] bool block mask.

    The compiled kernel visits only the listed blocks and, as they are full, never calls the `mask_mod`; the
    unfused (eager) implementation ignores the block lists and applies the `mask_mod` to every score, so the
    `mask_mod` says the same thing token by token."""
    from torch.nn.attention.flex_attention import BlockMask

    def mask_mod(b, h, q_idx, kv_idx):
        return block_mask[h, q_idx // BLOCK_TOKENS, kv_idx // BLOCK_TOKENS]

    mask = block_mask.unsqueeze(0)  # [1, H, n_q, n_k]
    counts = mask.sum(dim=-1, dtype=torch.int32)
    # Allowed blocks first, in index order: a stable sort of the negated mask.
    indices = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    none = torch.zeros_like(counts)
    return BlockMask.from_kv_blocks(
        none, indices, counts, indices, BLOCK_SIZE=BLOCK_TOKENS, mask_mod=mask_mod, seq_lengths=(q_len, k_len)
    )


class BlockSparseKernel:
    """Runs block-sparse attention with `kernel` (`dense` or `flex`); the compiled FlexAttention is built on first
    use and kept."""

    def __init__(self, kernel: str = "dense", compile_flex: bool = True):
        if kernel not in KERNELS:
            raise ValueError(f"`kernel` must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.kernel = kernel
        self.compile_flex = compile_flex
        self._flex = None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor) -> torch.Tensor:
        if self.kernel == "dense":
            return dense_block_sparse_attention(q, k, v, block_mask)
        if self._flex is None:
            from torch.nn.attention.flex_attention import flex_attention

            self._flex = torch.compile(flex_attention, dynamic=False) if self.compile_flex else flex_attention
        mask = flex_block_mask(block_mask, q.shape[2], k.shape[2])
        out = self._flex(q, k, v, block_mask=mask)
        # FlexAttention leaves rows with no key block at zero already; the mask keeps it explicit for both kernels.
        rows = block_mask.any(dim=-1).repeat_interleave(BLOCK_TOKENS, dim=1)  # [H, Lq]
        return out * rows.unsqueeze(0).unsqueeze(-1).to(out.dtype)


def default_kernel(device: torch.device) -> str:
    """`flex` on CUDA (FlexAttention compiles there), `dense` elsewhere."""
    return "flex" if device.type == "cuda" else "dense"
