"""The devices this process runs workers on."""

from __future__ import annotations


def detect_devices() -> list[str]:
    """The accelerators (`cuda:0`, `cuda:1`, `npu:0`, `mps`, ...), or `["cpu"]` when there are none."""
    from wanserve.engine.devices import detect_devices as all_devices

    accelerators = [d.device for d in all_devices() if d.type != "cpu"]
    return accelerators or ["cpu"]
