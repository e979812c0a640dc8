"""Device memory for `/metrics`: CUDA counters per device, nothing for other devices."""

from __future__ import annotations

import torch

from wanserve.worker.device_memory import device_memory


def test_device_memory_cpu_reports_nothing() -> None:
    assert device_memory(["cpu"]) == []


def test_device_memory_reads_cuda_counters(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (10 * (index + 1), 80 * (index + 1)))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 3 + index)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 5 + index)
    assert device_memory(["cpu", "cuda:0", "cuda:1"]) == [("cuda:0", 3, 5, 80), ("cuda:1", 4, 6, 160)]
