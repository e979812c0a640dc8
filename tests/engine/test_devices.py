"""Device detection and choice: the real CPU machine, plus CUDA/NPU/MPS branches through fake backends."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from wanserve.engine import devices
from wanserve.engine.devices import MemoryInfo, accelerator_type, detect_devices, memory_info, resolve_device
from wanserve.errors import DeviceError

GIB = 2**30
HAS_ACCELERATOR = accelerator_type() is not None


class FakeBackend:
    """The slice of the `torch.cuda` / `torch.npu` API that devices.py uses."""

    def __init__(self, names: list[str], total_gib: int = 80, current: int = 0):
        self.names = names
        self.total = total_gib * GIB
        self.current = current

    def is_available(self) -> bool:
        return bool(self.names)

    def device_count(self) -> int:
        return len(self.names)

    def current_device(self) -> int:
        return self.current

    def get_device_name(self, index: int) -> str:
        return self.names[index]

    def mem_get_info(self, index: int) -> tuple[int, int]:
        return (self.total - (index + 1) * GIB, self.total)


@pytest.fixture
def fake_machine(monkeypatch):
    """Installs fake backends: `fake_machine(cuda=[...], npu=[...], accelerator="cuda")`."""

    def install(cuda=(), npu=(), accelerator=None, cuda_current=0):
        backends = {"cuda": FakeBackend(list(cuda), current=cuda_current), "npu": FakeBackend(list(npu), 64)}
        monkeypatch.setattr(devices, "_backend", lambda t: backends.get(t) if t != "npu" or npu else None)
        monkeypatch.setattr(devices, "_load_npu_backend", lambda: bool(npu))
        monkeypatch.setattr(devices, "_mps_available", lambda: False)
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: accelerator is not None)
        monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: SimpleNamespace(type=accelerator))
        return backends

    return install


def test_detect_devices_lists_cpu_last_with_memory():
    found = detect_devices()

    cpu = found[-1]
    assert (cpu.device, cpu.type, cpu.index) == ("cpu", "cpu", None)
    assert cpu.memory is not None and 0 < cpu.memory.free_bytes <= cpu.memory.total_bytes
    assert len(found) - 1 == sum(devices.device_count(t) for t in devices.ACCELERATOR_TYPES)


@pytest.mark.skipif(HAS_ACCELERATOR, reason="this machine has an accelerator")
def test_resolve_device_auto_without_accelerator_is_cpu():
    assert resolve_device(None) == "cpu"
    assert resolve_device("auto") == "cpu"


def test_resolve_device_explicit_cpu():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "tpu:0", ""])
def test_resolve_device_malformed_names_it(bad):
    with pytest.raises(DeviceError) as err:
        resolve_device(bad)

    assert f"`device` {bad!r} is not a device" in str(err.value)


def test_resolve_device_auto_picks_current_cuda_device(fake_machine):
    fake_machine(cuda=["NVIDIA H100", "NVIDIA H100"], accelerator="cuda", cuda_current=1)

    assert resolve_device(None) == "cuda:1"
    assert resolve_device("cuda") == "cuda:1"
    assert resolve_device("cuda:0") == "cuda:0"


def test_resolve_device_missing_cuda_index_names_it(fake_machine):
    fake_machine(cuda=["NVIDIA H100", "NVIDIA H100"], accelerator="cuda")

    with pytest.raises(DeviceError) as err:
        resolve_device("cuda:3")

    assert str(err.value) == "`device` 'cuda:3' is not available: this machine has 2 cuda devices (cuda:0, cuda:1)"


def test_resolve_device_cuda_on_cpu_machine_names_it(fake_machine):
    fake_machine()

    with pytest.raises(DeviceError, match="`device` 'cuda' is not available: this machine has no cuda device"):
        resolve_device("cuda")


def test_resolve_device_auto_picks_npu(fake_machine):
    fake_machine(npu=["Ascend910B"], accelerator="npu")

    assert accelerator_type() == "npu"
    assert resolve_device(None) == "npu:0"
    assert resolve_device("npu:0") == "npu:0"


def test_resolve_device_npu_without_torch_npu_names_it(fake_machine):
    fake_machine(cuda=["NVIDIA H100"], accelerator="cuda")

    with pytest.raises(DeviceError, match="`device` 'npu:0' is not available: torch_npu is not installed"):
        resolve_device("npu:0")


def test_resolve_device_mps_missing_names_it(fake_machine):
    fake_machine()

    with pytest.raises(DeviceError, match="`device` 'mps' is not available: this machine has no Apple MPS device"):
        resolve_device("mps")


def test_detect_devices_lists_fake_accelerators_first(fake_machine):
    fake_machine(cuda=["NVIDIA H100", "NVIDIA A100"], npu=["Ascend910B"], accelerator="cuda")

    found = detect_devices()

    assert [d.device for d in found] == ["cuda:0", "cuda:1", "npu:0", "cpu"]
    assert [d.name for d in found[:3]] == ["NVIDIA H100", "NVIDIA A100", "Ascend910B"]
    assert found[1].memory == MemoryInfo(free_bytes=78 * GIB, total_bytes=80 * GIB)
    assert found[2].memory == MemoryInfo(free_bytes=63 * GIB, total_bytes=64 * GIB)


def test_memory_info_per_device(fake_machine):
    fake_machine(cuda=["NVIDIA H100", "NVIDIA H100"], accelerator="cuda", cuda_current=1)

    assert memory_info("cuda:0").free_gib == 79
    assert memory_info("cuda").free_gib == 78  # the current device
    assert memory_info(torch.device("cpu")).total_bytes > 0
    with pytest.raises(DeviceError, match="this machine has no npu device"):
        memory_info("npu:0")


def test_accelerator_type_unsupported_accelerator_falls_back_to_cpu(fake_machine):
    fake_machine(accelerator="hpu")

    assert accelerator_type() is None
    assert resolve_device(None) == "cpu"


def test_accelerator_type_without_torch_accelerator_asks_backends(fake_machine, monkeypatch):
    fake_machine(npu=["Ascend910B"])
    monkeypatch.delattr(torch, "accelerator")

    assert accelerator_type() == "npu"


def test_load_npu_backend_without_torch_npu_is_false():
    import importlib.util

    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is installed here")

    assert devices._load_npu_backend() is False
    assert devices.device_count("npu") == 0


def test_cuda_allocator_gets_expandable_segments_unless_the_environment_configures_it():
    from wanserve.engine.devices import EXPANDABLE_SEGMENTS, prefer_expandable_segments

    environ: dict[str, str] = {}
    assert prefer_expandable_segments(environ) is True
    assert environ == {"PYTORCH_CUDA_ALLOC_CONF": EXPANDABLE_SEGMENTS}
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        mine = {name: "max_split_size_mb:512"}
        assert prefer_expandable_segments(mine) is False
        assert mine == {name: "max_split_size_mb:512"}


def test_an_engine_for_the_cpu_leaves_the_allocator_settings_alone(monkeypatch):
    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine

    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.setenv(name, "")  # so that the test's end restores what was there (or nothing)
        monkeypatch.delenv(name)
    Engine(EngineConfig(device="cpu"))
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ
    Engine(EngineConfig(device="auto"))  # may be CUDA: set before the device is asked for
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
