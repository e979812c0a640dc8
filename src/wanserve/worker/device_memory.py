"""Accelerator memory of the devices this process's workers use, for `/metrics`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def device_memory(devices: Sequence[str]) -> list[tuple[str, int, int, int]]:
    """`(device, allocated_bytes, reserved_bytes, total_bytes)` for each CUDA device in `devices`.

    Other devices (CPU, NPU, MPS) report nothing: torch has no comparable counters for them here.
    """
    cuda = [d for d in devices if d.startswith("cuda")]
    if not cuda:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    stats = []
    for name in cuda:
        index = torch.device(name).index or 0
        _free, total = torch.cuda.mem_get_info(index)
        stats.append((name, torch.cuda.memory_allocated(index), torch.cuda.memory_reserved(index), total))
    return stats
