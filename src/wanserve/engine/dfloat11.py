"""DFloat11: lossless compression of bfloat16 weights, about 11 bits a weight instead of 16.

A bfloat16 number is 1 sign bit, 8 exponent bits and 7 mantissa bits. Trained (and random normal) weights use only
a few dozen exponent values, with a very skewed distribution, so the exponents are Huffman-coded (about 2.5-3 bits)
and the sign and mantissa are kept as one raw byte. Decoding gives back the same 16 bits: outputs are bit-exact.

Layout of one compressed tensor (`DF11Tensor`): `bits` (the exponent codes, one bit stream), `sign_mantissa` (one
byte a weight), `offsets` (the bit position of every `LANE` th weight, so lanes of `LANE` weights decode in
parallel), `lengths` (the code length of each of the 256 exponent values; the canonical codes follow from them).

Everything here is plain torch and runs on any device: compression and decompression on the CPU in the tests, on
the GPU in `benchmarks/df11_bench.py` (where a Triton kernel does the decoding when Triton is importable, checked
against the torch decoder). This is wanserve's own implementation of the format the `dfloat11` package describes;
that package needs CuPy for its CUDA kernel, and its files are not read here.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

LANE = 256
"""Weights one decoder lane decodes in sequence; one 64-bit offset is stored per lane (0.25 bits a weight)."""
MAX_CODE_BITS = 16
_PAD_BYTES = LANE * MAX_CODE_BITS // 8 + 3
"""Zero bytes put after the streams when decoding, so a last, partial lane may read past its end without bounds
checks (its extra values are thrown away)."""
MIN_NUMEL = 512
"""Smaller tensors (biases, norms) are stored as they are."""
SUFFIX = "::df11."
FILE_NAME = "diffusion_pytorch_model.df11.safetensors"
FORMAT = "wanserve-df11"


@dataclass
class DF11Tensor:
    """One bfloat16 tensor, compressed."""

    shape: tuple[int, ...]
    bits: torch.Tensor
    sign_mantissa: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor
    tables: dict = field(default_factory=dict, repr=False, compare=False)
    """Decode tables already built, by device (built once: a table is 256 KiB and takes a Python loop to make)."""

    def table_on(self, device: torch.device) -> torch.Tensor:
        """The decode table (`decode_table`) on `device`, built at the first call."""
        key = str(device)
        if key not in self.tables:
            self.tables[key] = decode_table(self.lengths).to(device)
        return self.tables[key]

    @property
    def numel(self) -> int:
        return self.sign_mantissa.numel()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.bits, self.sign_mantissa, self.offsets, self.lengths))

    def to(self, device, non_blocking: bool = False) -> DF11Tensor:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        moved = move(self.bits), move(self.sign_mantissa), move(self.offsets)
        return DF11Tensor(self.shape, *moved, self.lengths, self.tables)

    def pin_memory(self) -> DF11Tensor:
        pin = lambda t: t.pin_memory()  # noqa: E731
        return DF11Tensor(
            self.shape, pin(self.bits), pin(self.sign_mantissa), pin(self.offsets), self.lengths, self.tables
        )


# 1. Codes ---------------------------------------------------------------------------------------------------------
def _huffman_lengths(counts: list[int]) -> list[int]:
    symbols = [s for s, c in enumerate(counts) if c > 0]
    lengths = [0] * len(counts)
    if len(symbols) == 1:
        lengths[symbols[0]] = 1
        return lengths
    heap = [(counts[s], s, [s]) for s in symbols]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, t1, s1 = heapq.heappop(heap)
        c2, t2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
    return lengths


def code_lengths(counts: Iterable[int], limit: int = MAX_CODE_BITS) -> list[int]:
    """Huffman code lengths of the 256 exponent values, none longer than `limit` (counts are flattened until the
    longest code fits; a value that never occurs gets no code)."""
    counts = [int(c) for c in counts]
    if not any(counts):
        raise ValueError("`counts` are all zero: nothing to code")
    while True:
        lengths = _huffman_lengths(counts)
        if max(lengths) <= limit:
            return lengths
        counts = [(c + 1) // 2 if c else 0 for c in counts]


def canonical_codes(lengths: list[int]) -> list[int]:
    """The canonical Huffman code of each symbol (shorter codes first, then by symbol)."""
    codes = [0] * len(lengths)
    code, previous = 0, 0
    for length, symbol in sorted((length, s) for s, length in enumerate(lengths) if length):
        code <<= length - previous
        codes[symbol] = code
        code += 1
        previous = length
    return codes


def decode_table(lengths: torch.Tensor) -> torch.Tensor:
    """int32 [2**16]: for every 16-bit window, `symbol | code length << 8` of the code it starts with."""
    lengths_list = [int(x) for x in lengths.tolist()]
    table = torch.zeros(1 << MAX_CODE_BITS, dtype=torch.int32)
    for symbol, (code, length) in enumerate(zip(canonical_codes(lengths_list), lengths_list, strict=True)):
        if length:
            start = code << (MAX_CODE_BITS - length)
            table[start : start + (1 << (MAX_CODE_BITS - length))] = symbol | (length << 8)
    return table


# 2. One tensor ----------------------------------------------------------------------------------------------------
def compress_tensor(weight: torch.Tensor) -> DF11Tensor:
    """Compresses a bfloat16 tensor on its own device."""
    if weight.dtype != torch.bfloat16:
        raise ValueError(f"DFloat11 compresses bfloat16 tensors, got {weight.dtype}")
    device = weight.device
    raw = weight.contiguous().reshape(-1).view(torch.int16).to(torch.int32) & 0xFFFF
    exponent = (raw >> 7) & 0xFF
    sign_mantissa = (((raw >> 8) & 0x80) | (raw & 0x7F)).to(torch.uint8)
    lengths = code_lengths(torch.bincount(exponent, minlength=256).tolist())
    code_of = torch.tensor(canonical_codes(lengths), dtype=torch.int64, device=device)
    length_of = torch.tensor(lengths, dtype=torch.int64, device=device)
    code, length = code_of[exponent], length_of[exponent]
    del exponent, raw
    starts = torch.cumsum(length, 0) - length
    total_bits = int(starts[-1] + length[-1])
    # Each code lies inside the 24 bits from its first byte; codes never share a bit, so adding is OR.
    window = code << (24 - (starts & 7) - length)
    first = starts >> 3
    stream = torch.zeros((total_bits + 7) // 8 + 2, dtype=torch.int32, device=device)
    for byte_shift, index_shift in ((16, 0), (8, 1), (0, 2)):
        stream.index_add_(0, first + index_shift, ((window >> byte_shift) & 0xFF).to(torch.int32))
    return DF11Tensor(
        shape=tuple(weight.shape),
        bits=stream.to(torch.uint8),
        sign_mantissa=sign_mantissa,
        offsets=starts[::LANE].contiguous(),
        lengths=torch.tensor(lengths, dtype=torch.uint8),
    )


def _decode_exponents_torch(bits, offsets, table, lane_table, lanes_total: int) -> torch.Tensor:
    """uint8 [LANE, lanes]: lane l's k-th exponent at [k, l]. Every lane decodes in step with the others."""
    stream = bits.to(torch.int32)
    pos = offsets.clone()
    out = torch.empty((LANE, lanes_total), dtype=torch.uint8, device=bits.device)
    for k in range(LANE):
        byte = pos >> 3
        word = (stream[byte] << 16) | (stream[byte + 1] << 8) | stream[byte + 2]
        entry = table[((word >> (8 - (pos & 7))) & 0xFFFF) + lane_table]
        out[k] = entry & 0xFF
        pos += entry >> 8
    return out


def _combine(exponent: torch.Tensor, sign_mantissa: torch.Tensor, shape) -> torch.Tensor:
    sm = sign_mantissa.to(torch.int32)
    raw = ((sm & 0x80) << 8) | (exponent.to(torch.int32) << 7) | (sm & 0x7F)
    raw = torch.where(raw >= 0x8000, raw - 0x10000, raw)
    return raw.to(torch.int16).view(torch.bfloat16).reshape(shape)


def decompress(tensors: list[DF11Tensor], device=None) -> list[torch.Tensor]:
    """The bfloat16 tensors of `tensors`, decoded together (one pass over all their lanes) on `device` (default:
    where their bits are). Uses the Triton kernel when it is available on that device, else torch operations."""
    if not tensors:
        return []
    device = torch.device(device) if device is not None else tensors[0].bits.device
    bits, offsets, lane_table, tables, byte_base = [], [], [], [], 0
    for i, t in enumerate(tensors):
        bits.append(t.bits.to(device))
        offsets.append(t.offsets.to(device) + 8 * byte_base)
        lane_table.append(torch.full((t.offsets.numel(),), i << MAX_CODE_BITS, dtype=torch.int32, device=device))
        tables.append(t.table_on(device))
        byte_base += t.bits.numel()
    bits.append(torch.zeros(_PAD_BYTES, dtype=torch.uint8, device=device))
    all_bits, all_offsets = torch.cat(bits), torch.cat(offsets)
    all_lane_table, table = torch.cat(lane_table), torch.cat(tables)
    lanes = all_offsets.numel()
    exponents = None
    if device.type == "cuda":
        from wanserve.engine import dfloat11_triton

        exponents = dfloat11_triton.decode(all_bits, all_offsets, table, all_lane_table, LANE)
    if exponents is None:
        exponents = _decode_exponents_torch(all_bits, all_offsets, table, all_lane_table, lanes)
    out, lane = [], 0
    for t in tensors:
        n_lanes = t.offsets.numel()
        exponent = exponents[:, lane : lane + n_lanes].t().reshape(-1)[: t.numel]
        out.append(_combine(exponent, t.sign_mantissa.to(device), t.shape))
        lane += n_lanes
    return out


# 3. State dicts and files -----------------------------------------------------------------------------------------
def compress_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor | DF11Tensor]:
    """Every bfloat16 tensor of at least `MIN_NUMEL` weights compressed; the others as they are."""
    return {
        name: compress_tensor(t) if t.dtype == torch.bfloat16 and t.numel() >= MIN_NUMEL else t
        for name, t in state.items()
    }


def save_df11(state: Mapping[str, torch.Tensor | DF11Tensor], path: str | Path) -> None:
    """Writes a compressed state dict as one safetensors file (`<name>::df11.<part>` keys, shapes in metadata)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, value in state.items():
        if isinstance(value, DF11Tensor):
            shapes[name] = list(value.shape)
            parts = {"bits": value.bits, "sm": value.sign_mantissa, "offsets": value.offsets, "lengths": value.lengths}
            tensors.update({f"{name}{SUFFIX}{part}": t.contiguous().cpu() for part, t in parts.items()})
        else:
            tensors[name] = value.contiguous().cpu()
    metadata = {"format": FORMAT, "lane": str(LANE), "shapes": json.dumps(shapes)}
    save_file(tensors, str(path), metadata=metadata)


def load_df11(path: str | Path) -> dict[str, torch.Tensor | DF11Tensor]:
    """Reads a file `save_df11` wrote (compressed tensors stay compressed, on the CPU)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        metadata = reader.metadata() or {}
        if metadata.get("format") != FORMAT or int(metadata.get("lane", 0)) != LANE:
            raise ValueError(f"{path} is not a {FORMAT} file with lanes of {LANE}")
        shapes = json.loads(metadata["shapes"])
        raw = {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118 (safe_open has no iterator)
    state: dict[str, torch.Tensor | DF11Tensor] = {k: v for k, v in raw.items() if SUFFIX not in k}
    for name, shape in shapes.items():
        bits, sm, offsets, lengths = (raw[f"{name}{SUFFIX}{p}"] for p in ("bits", "sm", "offsets", "lengths"))
        state[name] = DF11Tensor(tuple(shape), bits, sm, offsets, lengths)
    return state


def decompress_state_dict(state: Mapping[str, torch.Tensor | DF11Tensor], device=None) -> dict[str, torch.Tensor]:
    """Every tensor as bfloat16 (or its own dtype) on `device`, decoded one at a time (bounded extra memory)."""
    out = {}
    for name, value in state.items():
        if isinstance(value, DF11Tensor):
            out[name] = decompress([value], device)[0]
        else:
            out[name] = value.to(device) if device is not None else value
    return out


def compressed_bytes(state: Mapping[str, torch.Tensor | DF11Tensor]) -> int:
    return sum(v.nbytes if isinstance(v, DF11Tensor) else v.numel() * v.element_size() for v in state.values())
