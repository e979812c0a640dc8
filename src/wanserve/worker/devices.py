"""The devices this process can run models on."""

from __future__ import annotations


def detect_devices() -> list[str]:
    """`cuda:0`, `cuda:1`, ... when CUDA GPUs are present, else `mps` on Apple silicon, else `cpu`."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return ["mps"]
    return ["cpu"]
