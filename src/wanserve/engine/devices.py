"""Which devices this machine has, how much memory they hold, and which one the engine runs on.

Supported: NVIDIA CUDA (and ROCm, which PyTorch exposes as `cuda`), Ascend NPU (through `torch_npu`), Intel XPU,
Apple MPS and the CPU. The automatic choice asks `torch.accelerator` where PyTorch has it (2.6+), so a worker
that called `torch.accelerator.set_device_index(local_rank)` gets its own device.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from types import ModuleType

import psutil
import torch

from wanserve.engine.config import ConfigError, parse_device_string
from wanserve.errors import DeviceError

logger = logging.getLogger(__name__)

INDEXED_TYPES = ("cuda", "npu", "xpu")
"""Accelerator types with numbered devices and the `torch.cuda`-style API (`device_count`, `mem_get_info`...)."""

ACCELERATOR_TYPES = (*INDEXED_TYPES, "mps")
DEVICE_TYPES = (*ACCELERATOR_TYPES, "cpu")


@dataclass(frozen=True)
class MemoryInfo:
    """Free and total memory of one device, in bytes. For the CPU: available and total system memory."""

    free_bytes: int
    total_bytes: int

    @property
    def free_gib(self) -> float:
        return self.free_bytes / 2**30

    @property
    def total_gib(self) -> float:
        return self.total_bytes / 2**30


@dataclass(frozen=True)
class DeviceInfo:
    """One device this machine has."""

    device: str
    """Canonical device string: `cuda:0`, `npu:1`, `mps`, `cpu`."""
    type: str
    index: int | None
    name: str
    memory: MemoryInfo | None
    """`None` where the backend cannot report it."""


def _load_npu_backend() -> bool:
    """Imports `torch_npu` when it is installed (it registers `torch.npu`); True when `torch.npu` exists."""
    if getattr(torch, "npu", None) is not None:
        return True
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        importlib.import_module("torch_npu")
    except Exception as exc:  # a broken CANN install raises anything from ImportError to RuntimeError
        logger.warning("torch_npu is installed but failed to import: %s", exc)
        return False
    return getattr(torch, "npu", None) is not None


def _backend(device_type: str) -> ModuleType | None:
    """`torch.cuda`, `torch.npu` or `torch.xpu`, when that backend exists in this PyTorch build."""
    if device_type == "npu" and not _load_npu_backend():
        return None
    return getattr(torch, device_type, None)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def device_count(device_type: str) -> int:
    """How many devices of `device_type` are usable (0 when the backend is missing or reports none)."""
    if device_type == "cpu":
        return 1
    if device_type == "mps":
        return 1 if _mps_available() else 0
    backend = _backend(device_type)
    if backend is None or not backend.is_available():
        return 0
    return int(backend.device_count())


def accelerator_type() -> str | None:
    """The accelerator type PyTorch would use here (`cuda`, `npu`, `xpu`, `mps`), or `None` for CPU only."""
    _load_npu_backend()
    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "current_accelerator") and hasattr(accel, "is_available"):
        if not accel.is_available():
            return None
        found = accel.current_accelerator().type
        if found in ACCELERATOR_TYPES:
            return found
        logger.warning("accelerator %r is not supported by wanserve; using the cpu", found)
        return None
    # PyTorch before 2.6: ask each backend in order of preference.
    for device_type in ACCELERATOR_TYPES:
        if device_count(device_type) > 0:
            return device_type
    return None


def _current_index(device_type: str) -> int:
    # `torch.accelerator.set_device_index` and `torch.cuda.set_device` both move the backend's current device.
    backend = _backend(device_type)
    return int(backend.current_device()) if backend is not None else 0


def _available_list(device_type: str) -> str:
    count = device_count(device_type)
    if count == 0:
        return f"this machine has no {device_type} device"
    names = ", ".join(f"{device_type}:{i}" for i in range(count))
    return f"this machine has {count} {device_type} device{'s' if count > 1 else ''} ({names})"


def resolve_device(requested: str | None = None) -> str:
    """The canonical device string to run on, checked against what this machine has.

    `None` or `"auto"` picks the current accelerator device (or the CPU); an explicit `"cuda"`, `"cuda:1"`,
    `"npu:0"`, `"mps"` or `"cpu"` is checked. A malformed string or a device that is not there raises
    `DeviceError` naming it and listing what exists.
    """
    if requested is None or requested.strip().lower() == "auto":
        found = accelerator_type()
        if found is None:
            return "cpu"
        return "mps" if found == "mps" else f"{found}:{_current_index(found)}"
    device_type, index = _split(requested)
    if device_type == "cpu" or device_type == "mps":
        if device_type == "mps" and not _mps_available():
            raise DeviceError(f"`device` {requested!r} is not available: this machine has no Apple MPS device")
        return device_type
    if device_type == "npu" and not _load_npu_backend():
        raise DeviceError(f"`device` {requested!r} is not available: torch_npu is not installed")
    count = device_count(device_type)
    if index is None:
        index = _current_index(device_type) if count else 0
    if index >= count:
        raise DeviceError(f"`device` {requested!r} is not available: {_available_list(device_type)}")
    return f"{device_type}:{index}"


def _split(device: str | torch.device) -> tuple[str, int | None]:
    if isinstance(device, torch.device):
        return device.type, device.index
    try:
        return parse_device_string(str(device))
    except ConfigError as exc:
        raise DeviceError(str(exc)) from None


def memory_info(device: str | torch.device) -> MemoryInfo:
    """Free and total memory of `device` in bytes (for the CPU: available and total system memory)."""
    device_type, index = _split(device)
    if device_type == "cpu":
        vm = psutil.virtual_memory()
        return MemoryInfo(free_bytes=int(vm.available), total_bytes=int(vm.total))
    if device_type == "mps":
        if not _mps_available():
            raise DeviceError(f"`device` {device!r} is not available: this machine has no Apple MPS device")
        total = int(torch.mps.recommended_max_memory())
        return MemoryInfo(free_bytes=max(total - int(torch.mps.driver_allocated_memory()), 0), total_bytes=total)
    backend = _backend(device_type)
    if backend is None or not backend.is_available():
        raise DeviceError(f"`device` {str(device)!r} is not available: {_available_list(device_type)}")
    free, total = backend.mem_get_info(index if index is not None else _current_index(device_type))
    return MemoryInfo(free_bytes=int(free), total_bytes=int(total))


def _describe(device_type: str, index: int | None) -> DeviceInfo:
    device = device_type if index is None else f"{device_type}:{index}"
    if device_type == "cpu":
        name = f"CPU ({psutil.cpu_count(logical=True)} logical cores)"
    elif device_type == "mps":
        name = "Apple MPS"
    else:
        name = str(_backend(device_type).get_device_name(index))
    try:
        memory = memory_info(device)
    except Exception as exc:  # a device in a bad state should not hide the others
        logger.warning("cannot read the memory of %s: %s", device, exc)
        memory = None
    return DeviceInfo(device=device, type=device_type, index=index, name=name, memory=memory)


def detect_devices() -> list[DeviceInfo]:
    """Every device this machine has: the accelerators first (by type, then index), the CPU last."""
    devices: list[DeviceInfo] = []
    for device_type in INDEXED_TYPES:
        devices.extend(_describe(device_type, i) for i in range(device_count(device_type)))
    if _mps_available():
        devices.append(_describe("mps", None))
    devices.append(_describe("cpu", None))
    return devices


ALLOCATOR_ENV = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
"""The variables that configure CUDA's caching allocator (the second is its newer name)."""

EXPANDABLE_SEGMENTS = "expandable_segments:True"


def prefer_expandable_segments(environ) -> bool:
    """Makes CUDA's caching allocator grow its segments in place (`expandable_segments:True`) unless `environ` (the
    process's environment) already configures the allocator. After an out-of-memory error the memory freed is then
    usable by any later size: with fixed segments, a real OOM on the H200 left 6 GiB reserved in pieces that a small
    request could not use (benchmarks/oom_recovery.py). Where CUDA's allocator has not started, the variable is set
    for it to read; where it has, the setting is applied to it directly. Returns whether the setting was made."""
    if any(name in environ for name in ALLOCATOR_ENV):
        return False
    if not torch.cuda.is_initialized():
        environ["PYTORCH_CUDA_ALLOC_CONF"] = EXPANDABLE_SEGMENTS
        return True
    try:
        torch.cuda.memory._set_allocator_settings(EXPANDABLE_SEGMENTS)
    except (AttributeError, RuntimeError) as exc:  # a build without it (ROCm before 6, say)
        logger.warning("CUDA's allocator keeps fixed segments: %s", exc)
        return False
    environ["PYTORCH_CUDA_ALLOC_CONF"] = EXPANDABLE_SEGMENTS  # the same setting for the processes this one starts
    return True
