"""What `wanserve doctor` checks: Python, PyTorch, devices, libraries, PyAV/FFmpeg, disk space, model weights.

Each check returns a `CheckResult` (`ok`, `warn` or `fail`) with a message a user can act on and details for
`--json`. Only `fail` means wanserve cannot work here; `warn` means it works with limits (CPU only, little disk).
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wanserve.engine.config import WeightsConfig
from wanserve.engine.registry import CATALOG, ModelSpec

logger = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_PYTHON = (3, 10)
MIN_DATA_FREE_GIB = 5.0
"""Below this much free space in the data directory (job outputs, database) the disk check warns."""
MIN_MODELS_FREE_GIB = 50.0
"""Below this much free space in the models directory (one 14B model is ~60-80 GiB) the disk check warns."""
REQUIRED_LIBRARIES = {"diffusers": "0.42.1", "transformers": "4.57", "accelerate": "1.0", "av": "14.0"}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    status: str
    """`ok`, `warn` or `fail`."""
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelReadiness:
    """Whether one catalog model can serve here, and why not."""

    name: str
    ready: bool
    random_weights: bool
    path: str | None = None
    layout: str | None = None
    missing: tuple[str, ...] = ()
    memory_gb: float = 0.0
    """Estimated peak accelerator memory of one default generation, in GiB (default memory options: bf16, no
    offload; engine/memory_estimate.py). 0 for the tiny models."""
    message: str = ""


@dataclass(frozen=True)
class DoctorReport:
    """Every check and every model's readiness."""

    checks: tuple[CheckResult, ...]
    models: tuple[ModelReadiness, ...]

    @property
    def ok(self) -> bool:
        """False when any check failed (warnings do not count)."""
        return all(check.status != FAIL for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: `ok`, `checks` and `models`."""
        return {
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "models": [{**asdict(m), "missing": list(m.missing)} for m in self.models],
        }


def check_python() -> CheckResult:
    """Python is at least `MIN_PYTHON`."""
    version = ".".join(map(str, sys.version_info[:3]))
    details = {"version": version, "executable": sys.executable}
    if sys.version_info[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return CheckResult("python", FAIL, f"Python {version} is too old; wanserve needs {need} or newer", details)
    return CheckResult("python", OK, f"Python {version}", details)


def check_torch() -> CheckResult:
    """PyTorch imports, and which accelerator build it is (CUDA, ROCm, XPU or CPU only)."""
    try:
        import torch
    except Exception as exc:
        return CheckResult("torch", FAIL, f"PyTorch does not import: {exc}")
    details: dict[str, Any] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "xpu": getattr(torch.version, "xpu", None),
        "cudnn": torch.backends.cudnn.version() if torch.version.cuda else None,
    }
    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda}"
    elif details["hip"]:
        build = f"ROCm {details['hip']}"
    elif details["xpu"]:
        build = f"XPU {details['xpu']}"
    else:
        build = "CPU only"
    details["build"] = build
    if build == "CPU only" and Path("/dev/nvidiactl").exists():
        return CheckResult(
            "torch",
            WARN,
            f"PyTorch {torch.__version__} is a CPU-only build, but this machine has an NVIDIA driver: "
            "install a CUDA build of torch to use the GPU",
            details,
        )
    return CheckResult("torch", OK, f"PyTorch {torch.__version__} ({build})", details)


def check_devices(device: str | None = None) -> CheckResult:
    """The devices this machine has, their memory, and the device the engine would pick (or `device`)."""
    from wanserve.engine.devices import detect_devices, resolve_device
    from wanserve.errors import DeviceError

    found = detect_devices()
    listed = [
        {
            "device": d.device,
            "name": d.name,
            "free_gib": round(d.memory.free_gib, 1) if d.memory else None,
            "total_gib": round(d.memory.total_gib, 1) if d.memory else None,
        }
        for d in found
    ]
    details: dict[str, Any] = {"devices": listed}
    try:
        chosen = resolve_device(device)
    except DeviceError as exc:
        return CheckResult("devices", FAIL, str(exc), details)
    details["selected"] = chosen
    accelerators = [d for d in found if d.type != "cpu"]
    summary = ", ".join(
        f"{d['device']} ({d['name']}" + (f", {d['free_gib']}/{d['total_gib']} GiB free)" if d["total_gib"] else ")")
        for d in listed
    )
    if not accelerators:
        return CheckResult(
            "devices", WARN, f"no accelerator, CPU only: only the tiny models are practical here ({summary})", details
        )
    return CheckResult("devices", OK, f"using {chosen}; found {summary}", details)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_libraries() -> CheckResult:
    """diffusers, transformers, accelerate and PyAV are installed in at least the versions wanserve needs."""
    versions: dict[str, str | None] = {}
    problems = []
    for name, minimum in REQUIRED_LIBRARIES.items():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
            problems.append(f"{name} is not installed (need >= {minimum})")
            continue
        if _version_tuple(versions[name]) < _version_tuple(minimum):
            problems.append(f"{name} {versions[name]} is older than {minimum}")
    details = {"versions": versions, "required": REQUIRED_LIBRARIES}
    if problems:
        return CheckResult("libraries", FAIL, "; ".join(problems), details)
    return CheckResult("libraries", OK, ", ".join(f"{k} {v}" for k, v in versions.items()), details)


def check_video_encoding(quick: bool = False) -> CheckResult:
    """PyAV and its FFmpeg have the libx264 encoder; unless `quick`, a 2-frame MP4 is encoded and probed."""
    try:
        import av
        import av.codec
    except Exception as exc:
        return CheckResult("video", FAIL, f"PyAV does not import: {exc}")
    details: dict[str, Any] = {
        "pyav": av.__version__,
        "ffmpeg": getattr(av, "ffmpeg_version_info", None),
        "libraries": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
    }
    try:
        av.codec.Codec("libx264", "w")
    except ValueError:
        return CheckResult(
            "video", FAIL, "PyAV's FFmpeg has no libx264 encoder; MP4 outputs cannot be written", details
        )
    details["libx264"] = True
    if quick:
        return CheckResult("video", OK, f"PyAV {av.__version__}, FFmpeg {details['ffmpeg']}, libx264 present", details)
    import numpy as np

    from wanserve.media.video import encode_mp4, probe_video

    try:
        with tempfile.TemporaryDirectory(prefix="wanserve-doctor-") as tmp:
            path = Path(tmp) / "check.mp4"
            encode_mp4(np.zeros((2, 16, 16, 3), dtype=np.uint8), path, fps=8)
            info = probe_video(path)
    except Exception as exc:
        return CheckResult("video", FAIL, f"test encode with libx264 failed: {exc}", details)
    details["test_encode"] = asdict(info)
    if (info.codec, info.pix_fmt, info.num_frames) != ("h264", "yuv420p", 2):
        return CheckResult("video", FAIL, f"test encode produced {info}, not 2 h264 yuv420p frames", details)
    return CheckResult(
        "video", OK, f"PyAV {av.__version__}, FFmpeg {details['ffmpeg']}, libx264 test encode ok", details
    )


def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(data_dir: Path, models_dir: Path) -> CheckResult:
    """Free space (and write access) where outputs and model weights go."""
    import os

    details: dict[str, Any] = {}
    warnings, failures = [], []
    for label, path, minimum in (("data", data_dir, MIN_DATA_FREE_GIB), ("models", models_dir, MIN_MODELS_FREE_GIB)):
        path = path.expanduser().absolute()
        existing = _existing_ancestor(path)
        free_gib = shutil.disk_usage(existing).free / 2**30
        writable = os.access(existing, os.W_OK)
        details[label] = {"path": str(path), "free_gib": round(free_gib, 1), "writable": writable}
        if not writable:
            failures.append(f"{label} directory {str(path)!r} is not writable")
        elif free_gib < minimum:
            warnings.append(f"{label} directory {str(path)!r} has {free_gib:.1f} GiB free (less than {minimum:g})")
    summary = ", ".join(f"{k} {v['path']}: {v['free_gib']} GiB free" for k, v in details.items())
    if failures:
        return CheckResult("disk", FAIL, "; ".join(failures), details)
    if warnings:
        return CheckResult("disk", WARN, "; ".join(warnings), details)
    return CheckResult("disk", OK, summary, details)


def model_readiness(spec: ModelSpec, weights: WeightsConfig) -> ModelReadiness:
    """Whether `spec`'s weights are present and complete (tiny models are always ready, with random weights)."""
    if spec.tiny:
        return ModelReadiness(spec.name, True, True, message="built in, random weights (tests only)")
    from wanserve.engine.loading import weights_status

    status = weights_status(spec, weights)
    if status.complete:
        message = f"{status.layout} layout at {status.path}"
    elif status.present:
        message = f"incomplete at {status.path}: {len(status.missing)} file(s) missing"
    else:
        message = "weights not found" + (f" at {status.path}" if status.path else "")
    return ModelReadiness(
        spec.name,
        status.complete,
        False,
        path=status.path,
        layout=status.layout,
        missing=tuple(status.missing),
        memory_gb=_peak_gib(spec),
        message=message,
    )


def _peak_gib(spec: ModelSpec) -> float:
    from wanserve.engine.memory_estimate import estimate_memory

    estimate = estimate_memory(spec)
    return estimate.peak_gib if estimate is not None else 0.0


def check_models(models: list[ModelReadiness]) -> CheckResult:
    """Summarises model readiness: a warning when only the tiny (random-weight) models can serve."""
    ready = [m.name for m in models if m.ready and not m.random_weights]
    incomplete = [m.name for m in models if not m.ready and m.path]
    details = {"ready": ready, "incomplete": incomplete}
    if incomplete:
        return CheckResult(
            "models", WARN, f"incomplete weights for {', '.join(incomplete)}; run `wanserve download`", details
        )
    if not ready:
        return CheckResult(
            "models", WARN, "no real model weights found: only the tiny models (random weights) can serve", details
        )
    return CheckResult("models", OK, f"ready: {', '.join(ready)}", details)


def run_diagnostics(
    data_dir: Path,
    weights: WeightsConfig | None = None,
    quick: bool = False,
    device: str | None = None,
) -> DoctorReport:
    """Runs every check; weights are looked for where `weights` says (the loader's own rule)."""
    weights = weights or WeightsConfig()
    checks = [check_python(), check_torch(), check_devices(device), check_libraries(), check_video_encoding(quick)]
    checks.append(check_disk(data_dir, Path(weights.models_dir)))
    models = [model_readiness(spec, weights) for spec in CATALOG.values()]
    checks.append(check_models(models))
    for check in checks:
        logger.debug("doctor %s: %s %s", check.name, check.status, check.message)
    return DoctorReport(tuple(checks), tuple(models))
