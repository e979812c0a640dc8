"""The DFloat11 exponent decoder as one Triton kernel (CUDA only): each lane walks its `LANE` codes in a loop, so
one launch decodes a whole group of tensors. `decode` returns None where Triton is not importable; the torch
decoder in `engine.dfloat11` is the reference it is checked against (benchmarks/df11_bench.py)."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch ship without Triton
    triton = None


if triton is not None:

    @triton.jit
    def _decode_kernel(bits_ptr, offsets_ptr, table_ptr, lane_table_ptr, out_ptr, lanes, LANE: tl.constexpr,
                       BLOCK: tl.constexpr):  # fmt: skip
        lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = lane < lanes
        pos = tl.load(offsets_ptr + lane, mask=live, other=0)
        base = tl.load(lane_table_ptr + lane, mask=live, other=0)
        for k in range(LANE):
            byte = pos >> 3
            b0 = tl.load(bits_ptr + byte, mask=live, other=0).to(tl.int32)
            b1 = tl.load(bits_ptr + byte + 1, mask=live, other=0).to(tl.int32)
            b2 = tl.load(bits_ptr + byte + 2, mask=live, other=0).to(tl.int32)
            word = (b0 << 16) | (b1 << 8) | b2
            code = (word >> (8 - (pos & 7)).to(tl.int32)) & 0xFFFF
            entry = tl.load(table_ptr + code + base, mask=live, other=0)
            tl.store(out_ptr + k * lanes + lane, (entry & 0xFF).to(tl.uint8), mask=live)
            pos += (entry >> 8).to(tl.int64)


def decode(bits, offsets, table, lane_table, lane: int, block: int = 128) -> torch.Tensor | None:
    """uint8 [lane, lanes] exponents (as `engine.dfloat11._decode_exponents_torch`), or None without Triton."""
    if triton is None or bits.device.type != "cuda":
        return None
    lanes = offsets.numel()
    out = torch.empty((lane, lanes), dtype=torch.uint8, device=bits.device)
    grid = (triton.cdiv(lanes, block),)
    _decode_kernel[grid](bits, offsets, table, lane_table, out, lanes, LANE=lane, BLOCK=block)
    return out
