"""The FlashVSR DiT, streamed: diffusers' `WanTransformer3DModel` blocks run chunk by chunk with block-sparse
self-attention over a bounded per-block KV cache, and cross-attention over a fixed, precomputed text context.

The model stays a stock diffusers transformer; streaming attaches from outside as attention processors
(`FlashVSRStream.attach`) and can be removed (`detach`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wanserve.models.flashvsr.sparse_attention import (
    BLOCK_TOKENS,
    WINDOW,
    BlockSparseKernel,
    SparsityConfig,
    draft_block_mask,
    local_block_mask,
    partition_windows,
    reverse_windows,
)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on [B, L, H, d] with interleaved (real, imaginary) pairs; cos/sin [1, L, 1, d] (repeated pairs)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
    return out.type_as(x)


@dataclass
class StreamState:
    """What the processors of one streamed video share: the current chunk's token grid and frame offset, and each
    block's KV cache."""

    grid: tuple[int, int, int] = (0, 0, 0)
    """(latent frames, token rows, token columns) of the current chunk."""
    pixels: tuple[int, int] = (0, 0)
    """(height, width) of the output in pixels (the top-k depends on it)."""
    cache_k: dict[int, torch.Tensor] = field(default_factory=dict)
    cache_v: dict[int, torch.Tensor] = field(default_factory=dict)
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    local: torch.Tensor | None = None

    def cache_bytes(self) -> int:
        """Bytes held by the KV caches of all blocks."""
        return sum(t.numel() * t.element_size() for t in (*self.cache_k.values(), *self.cache_v.values()))


class SparseStreamingSelfAttention:
    """attn1 of block `index`: block-sparse attention of the chunk's queries over the cached and current keys; keeps
    the last `kv_windows` temporal windows of keys and values for the next chunk (on the CPU with `offload`)."""

    def __init__(
        self, index: int, state: StreamState, sparsity: SparsityConfig, kernel: BlockSparseKernel, offload: bool
    ):
        self.index, self.state, self.sparsity, self.kernel, self.offload = index, state, sparsity, kernel, offload

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **_):
        state = self.state
        b, length, dim = hidden_states.shape
        heads = attn.heads
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (heads, -1))
        v = attn.to_v(hidden_states)
        cos, sin = state.rotary
        q = apply_rotary(q, cos, sin).flatten(2)
        k = apply_rotary(k, cos, sin).flatten(2)

        # 1. Window the tokens into 128-token blocks and put the cached windows in front of the keys
        q_w = partition_windows(q, state.grid)
        k_w = partition_windows(k, state.grid)
        v_w = partition_windows(v, state.grid)
        if self.index in state.cache_k:
            device = hidden_states.device
            k_w = torch.cat([state.cache_k[self.index].to(device, non_blocking=True), k_w], dim=1)
            v_w = torch.cat([state.cache_v[self.index].to(device, non_blocking=True), v_w], dim=1)

        # 2. Which key blocks each query block reads (per head), then attention over those blocks
        f, h, w = state.grid
        per_window = (h // WINDOW[1]) * (w // WINDOW[2])
        topk = self.sparsity.topk(state.pixels[0], state.pixels[1], per_window)
        mask = draft_block_mask(q_w[0], k_w[0], heads, state.local, topk)
        n_q, n_k = q_w.shape[1], k_w.shape[1]
        to_heads = lambda t, n: t.reshape(b, n * BLOCK_TOKENS, heads, -1).transpose(1, 2)  # noqa: E731
        out = self.kernel(to_heads(q_w, n_q), to_heads(k_w, n_k), to_heads(v_w, n_k), mask)
        out = out.transpose(1, 2).reshape(b, n_q, BLOCK_TOKENS, dim)
        out = reverse_windows(out, state.grid)

        # 3. Keep the newest `kv_windows` temporal windows for the next chunk
        keep = self.sparsity.kv_windows * per_window
        target = "cpu" if self.offload else k_w.device
        state.cache_k[self.index] = k_w[:, -keep:].to(target, non_blocking=True)
        state.cache_v[self.index] = v_w[:, -keep:].to(target, non_blocking=True)
        return attn.to_out[1](attn.to_out[0](out.type_as(hidden_states)))


class CachedCrossAttention:
    """attn2: cross-attention over the fixed text context, its keys and values computed once."""

    def __init__(self):
        self._kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **_):
        if self._kv is None or self._kv[0] is not encoder_hidden_states:
            k = attn.norm_k(attn.to_k(encoder_hidden_states)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
            v = attn.to_v(encoder_hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2)
            self._kv = (encoder_hidden_states, k, v)
        _, k, v = self._kv
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return attn.to_out[1](attn.to_out[0](out.type_as(hidden_states)))


class FlashVSRStream:
    """One streamed video through a `WanTransformer3DModel`: call `forward_chunk` for each chunk in order."""

    def __init__(
        self,
        transformer,
        context: torch.Tensor,
        sparsity: SparsityConfig,
        kernel: BlockSparseKernel,
        offload: bool = False,
    ):
        self.transformer = transformer
        self.sparsity = sparsity
        self.state = StreamState()
        self._saved = None
        self.kernel, self.offload = kernel, offload
        self.attach()
        config = transformer.config
        param = next(transformer.parameters())
        timestep = torch.tensor([1000.0], device=param.device)
        with torch.no_grad():
            temb, proj, ctx, _ = transformer.condition_embedder(timestep, context.to(param.device, param.dtype), None)
        self.temb, self.timestep_proj, self.context = temb, proj.unflatten(1, (6, -1)), ctx
        self.patch = tuple(config.patch_size)

    def attach(self) -> None:
        """Installs the streaming processors on every block (the previous ones are kept for `detach`)."""
        self._saved = [(blk.attn1.processor, blk.attn2.processor) for blk in self.transformer.blocks]
        for i, blk in enumerate(self.transformer.blocks):
            blk.attn1.set_processor(
                SparseStreamingSelfAttention(i, self.state, self.sparsity, self.kernel, self.offload)
            )
            blk.attn2.set_processor(CachedCrossAttention())

    def detach(self) -> None:
        """Puts the transformer's own processors back."""
        if self._saved is not None:
            for blk, (p1, p2) in zip(self.transformer.blocks, self._saved, strict=True):
                blk.attn1.set_processor(p1)
                blk.attn2.set_processor(p2)
            self._saved = None

    def _rotary(self, frame_offset: int, grid: tuple[int, int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
        rope = self.transformer.rope
        f, h, w = grid
        sizes = [rope.t_dim, rope.h_dim, rope.w_dim]
        out = []
        for table in (rope.freqs_cos, rope.freqs_sin):
            t_part, h_part, w_part = table.split(sizes, dim=1)
            parts = (
                t_part[frame_offset : frame_offset + f].view(f, 1, 1, -1).expand(f, h, w, -1),
                h_part[:h].view(1, h, 1, -1).expand(f, h, w, -1),
                w_part[:w].view(1, 1, w, -1).expand(f, h, w, -1),
            )
            out.append(torch.cat(parts, dim=-1).reshape(1, f * h * w, 1, -1).to(device, torch.float32))
        return out[0], out[1]

    @torch.no_grad()
    def forward_chunk(
        self, latents: torch.Tensor, lq_tokens: list[torch.Tensor], frame_offset: int, pixels: tuple[int, int]
    ) -> torch.Tensor:
        """The velocity for one chunk of noisy latents [1, C, f, H, W] (f even) at latent frames
        `frame_offset`.., with the LQ tokens added before the first blocks."""
        t = self.transformer
        b, _, frames, height, width = latents.shape
        p_t, p_h, p_w = self.patch
        grid = (frames // p_t, height // p_h, width // p_w)
        if grid[0] % WINDOW[0] or grid[1] % WINDOW[1] or grid[2] % WINDOW[2]:
            raise ValueError(f"token grid {grid} must be a multiple of the attention window {WINDOW}")
        state = self.state
        state.grid, state.pixels = grid, pixels
        state.rotary = self._rotary(frame_offset, grid, latents.device)
        rows, cols = grid[1] // WINDOW[1], grid[2] // WINDOW[2]
        if state.local is None or state.local.shape[0] != rows * cols:
            state.local = local_block_mask(rows, cols, self.sparsity.local_range, device=latents.device)

        x = t.patch_embedding(latents.to(self.context.dtype)).flatten(2).transpose(1, 2).contiguous()
        for i, block in enumerate(t.blocks):
            if i < len(lq_tokens):
                x = x + lq_tokens[i].to(x.dtype)
            x = block(x, self.context, self.timestep_proj, state.rotary)
        shift, scale = (t.scale_shift_table.to(x.device) + self.temb.unsqueeze(1)).chunk(2, dim=1)
        x = (t.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = t.proj_out(x)
        x = x.reshape(b, *grid, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
