"""Engine configuration: frozen dataclasses, passed in explicitly, validated when built.

Cross-field checks live in `__post_init__` and name both conflicting values. Nothing here touches hardware:
whether a configured device exists is checked by `engine.devices.resolve_device` when the engine starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wanserve.errors import WanserveError

if TYPE_CHECKING:
    import torch

    from wanserve.engine.parallel import ParallelConfig

DTYPE_NAMES = ("bfloat16", "float16", "float32")
OFFLOAD_MODES = ("none", "model", "group")
GROUP_OFFLOAD_TYPES = ("block_level", "leaf_level")
ATTENTION_CHOICES = ("auto", "fa3", "cudnn", "flash", "native")
COMPILE_CHOICES = ("auto", "none", "blocks")

DEVICE_RE = re.compile(r"^(cuda|npu|xpu|mps|cpu)(?::(\d+))?$")
"""Device strings wanserve accepts (`auto` aside): `cuda`, `cuda:1`, `npu:0`, `xpu`, `mps`, `cpu`."""
DEVICE_FORMS = "`auto`, `cpu`, `mps`, `cuda`, `cuda:N`, `npu`, `npu:N`, `xpu`, `xpu:N`"


class ConfigError(WanserveError, ValueError):
    """A configuration value is invalid or conflicts with another. The message names the field(s) and values."""

    error_type = "invalid_config"

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def torch_dtype(name: str, field: str = "dtype") -> torch.dtype:
    """The `torch.dtype` for `bfloat16`, `float16` or `float32`; `ConfigError` naming `field` otherwise."""
    import torch

    if name not in DTYPE_NAMES:
        raise ConfigError(field, f"`{field}` must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return getattr(torch, name)


def parse_device_string(text: str, field: str = "device") -> tuple[str, int | None]:
    """Splits `cuda:1` into (`cuda`, 1) and `mps` into (`mps`, None); `ConfigError` for anything else."""
    match = DEVICE_RE.match(text.strip().lower())
    if match is None:
        raise ConfigError(field, f"`{field}` {text!r} is not a device; use one of {DEVICE_FORMS}")
    device_type, index = match.group(1), match.group(2)
    if device_type in ("cpu", "mps") and index not in (None, "0"):
        raise ConfigError(field, f"`{field}` {text!r} is not a device: {device_type} has no index but 0")
    return device_type, int(index) if index is not None else None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(name, f"`{name}` must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class MemoryConfig:
    """Where the pipeline's weights live and in which precision. Applied by `engine.memory`."""

    text_encoder_on_cpu: bool = False
    """Keep the UMT5 text encoder on the CPU and encode prompts there (the seed services' `T5_CPU`)."""
    offload: str = "none"
    """`none` (everything on the device), `model` (one whole component on the device at a time) or `group`
    (groups of layers streamed onto the device as they run; least memory)."""
    group_offload_type: str = "block_level"
    """`block_level` (groups of transformer blocks) or `leaf_level` (single layers). Only with `offload="group"`."""
    group_offload_blocks: int | None = None
    """Blocks per group for `block_level`; `None` means 1. Only with `offload="group"`, `block_level`."""
    group_offload_use_stream: bool = False
    """Prefetch the next group on a side stream while the current one computes. Only with `offload="group"`."""
    vae_tiling: bool = False
    """Decode the video in overlapping spatial tiles (less memory at high resolution, tiny seam blending)."""
    transformer_dtype: str = "bfloat16"
    text_encoder_dtype: str = "bfloat16"
    image_encoder_dtype: str = "float16"
    """CLIP image encoder (I2V, FLF2V, Animate); the official code runs it in float16 (Wan2.1
    wan/configs/wan_i2v_14B.py:18, Wan2.2 wan/animate.py:102-103). Tiny models stay in float32."""
    vae_dtype: str = "float32"
    """The Wan VAE is run in float32 by the official code and the diffusers examples."""
    dfloat11_dir: str | None = None
    """Serve the transformer(s) from DFloat11-compressed weights in this directory (`wanserve compress --format
    df11`): lossless, ~30% less memory for the weights; each block is decoded just before it runs."""
    dfloat11_cpu_offload: bool = False
    """Keep the compressed blocks on the CPU (pinned) and copy each to the device as it runs. Needs `dfloat11_dir`."""
    max_memory_gib: float | None = None
    """Accelerator memory this worker may use (a cap on a larger device): admission plans against it and CUDA's
    allocator is limited to it. `None`: the whole device."""

    def __post_init__(self) -> None:
        if self.dfloat11_dir is not None:
            object.__setattr__(self, "dfloat11_dir", str(self.dfloat11_dir))
            if self.transformer_dtype != "bfloat16":
                raise ConfigError(
                    "dfloat11_dir",
                    f"`dfloat11_dir` holds bfloat16 weights; it needs `transformer_dtype`='bfloat16', got "
                    f"{self.transformer_dtype!r}",
                )
            if self.offload != "none":
                raise ConfigError(
                    "dfloat11_dir",
                    f"`dfloat11_dir` streams compressed blocks itself; it needs `offload`='none', got "
                    f"`offload`={self.offload!r} (use `dfloat11_cpu_offload` to keep the blocks on the CPU)",
                )
        elif self.dfloat11_cpu_offload:
            raise ConfigError("dfloat11_cpu_offload", "`dfloat11_cpu_offload`=True needs `dfloat11_dir`")
        if self.max_memory_gib is not None and not self.max_memory_gib > 0:
            raise ConfigError("max_memory_gib", f"`max_memory_gib` must be above 0, got {self.max_memory_gib!r}")
        _check_choice("offload", self.offload, OFFLOAD_MODES)
        _check_choice("group_offload_type", self.group_offload_type, GROUP_OFFLOAD_TYPES)
        for name in ("transformer_dtype", "text_encoder_dtype", "image_encoder_dtype", "vae_dtype"):
            _check_choice(name, getattr(self, name), DTYPE_NAMES)
        if self.offload != "group":
            for name, default in (
                ("group_offload_type", "block_level"),
                ("group_offload_blocks", None),
                ("group_offload_use_stream", False),
            ):
                value = getattr(self, name)
                if value != default:
                    raise ConfigError(
                        name, f"`{name}`={value!r} needs `offload`='group', got `offload`={self.offload!r}"
                    )
        if self.group_offload_blocks is not None:
            if self.group_offload_type != "block_level":
                raise ConfigError(
                    "group_offload_blocks",
                    f"`group_offload_blocks`={self.group_offload_blocks} needs `group_offload_type`='block_level', "
                    f"got `group_offload_type`={self.group_offload_type!r}",
                )
            if isinstance(self.group_offload_blocks, bool) or self.group_offload_blocks < 1:
                raise ConfigError(
                    "group_offload_blocks",
                    f"`group_offload_blocks` must be at least 1, got {self.group_offload_blocks}",
                )

    @property
    def blocks_per_group(self) -> int | None:
        """What diffusers' `num_blocks_per_group` gets: the configured count for `block_level`, else `None`."""
        if self.group_offload_type != "block_level":
            return None
        return self.group_offload_blocks or 1


@dataclass(frozen=True)
class SpeedConfig:
    """Exact speed options (output within bf16 rounding of the plain run). Applied by `engine.speed`."""

    attention: str = "auto"
    """Attention kernel: `auto` (FlashAttention-3 where importable on a Hopper GPU, else cuDNN on CUDA, else
    PyTorch's own), `fa3`, `cudnn`, `flash` (FlashAttention-2 through SDPA) or `native`."""
    compile: str = "auto"
    """`blocks`: `torch.compile` the repeated transformer blocks (regional compile); `none`; `auto` is `blocks` on
    CUDA and `none` elsewhere (compiling a tiny CPU model costs more than it saves)."""
    compile_backend: str = "inductor"
    """`torch.compile` backend for `blocks`; `eager` traces the whole graph without generating code (tests)."""
    compile_cache_dir: str | None = None
    """Where compiled kernels are cached across restarts (Inductor's cache directory); `None` keeps its default."""
    cudnn_benchmark: bool = True
    """On CUDA, let cuDNN time its convolution algorithms at the first call of each shape and keep the fastest
    (`torch.backends.cudnn.benchmark`): the VAE's 3-D convolutions; the start-up warm-up pays the search."""

    def __post_init__(self) -> None:
        _check_choice("attention", self.attention, ATTENTION_CHOICES)
        _check_choice("compile", self.compile, COMPILE_CHOICES)

    def compile_mode(self, device_type: str) -> str:
        """`blocks` or `none` for a device of this type (`auto` resolved)."""
        if self.compile == "auto":
            return "blocks" if device_type == "cuda" else "none"
        return self.compile


@dataclass(frozen=True)
class LoraConfig:
    """Where per-job LoRAs may come from and how many stay loaded. Applied by `engine.lora`."""

    lora_dir: str | None = None
    """LoRAs named by `name` are files in this directory (`<name>.safetensors`, ...)."""
    allowed_dirs: tuple[str, ...] = ()
    """Further directories a LoRA given by `path` may lie in (besides `lora_dir`); nothing else is readable."""
    max_loaded: int = 4
    """Adapters kept loaded on a model between jobs; the least recently used is dropped beyond this."""
    hotswap_rank: int = 128
    """With compiled blocks: the rank of the one LoRA slot each job's LoRAs are swapped into (their ranks added up
    must fit), so switching LoRAs never recompiles; 0 turns the slot off (adapters as without compile)."""

    def __post_init__(self) -> None:
        if self.lora_dir is not None:
            object.__setattr__(self, "lora_dir", str(self.lora_dir))
        object.__setattr__(self, "allowed_dirs", tuple(str(d) for d in self.allowed_dirs))
        for name, value in (("lora_dir", self.lora_dir), *(("allowed_dirs", d) for d in self.allowed_dirs)):
            if value is not None and not str(value).strip():
                raise ConfigError(name, f"`{name}` holds an empty path; leave it unset instead")
        if isinstance(self.max_loaded, bool) or not isinstance(self.max_loaded, int) or self.max_loaded < 1:
            raise ConfigError("max_loaded", f"`max_loaded` must be an integer of at least 1, got {self.max_loaded!r}")
        if isinstance(self.hotswap_rank, bool) or not isinstance(self.hotswap_rank, int) or self.hotswap_rank < 0:
            raise ConfigError("hotswap_rank", f"`hotswap_rank` must be an integer >= 0, got {self.hotswap_rank!r}")

    @property
    def enabled(self) -> bool:
        """Whether jobs may name LoRAs at all (a directory is configured)."""
        return bool(self.search_dirs)

    @property
    def search_dirs(self) -> tuple[str, ...]:
        """The directories a LoRA `path` may be in: `lora_dir` first, then `allowed_dirs`."""
        return ((self.lora_dir,) if self.lora_dir else ()) + self.allowed_dirs


def _freeze_paths(paths: Mapping[str, str] | tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    items = paths.items() if isinstance(paths, Mapping) else paths
    frozen: dict[str, str] = {}
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ConfigError("model_paths", f"`model_paths` must map model names to paths, got item {item!r}")
        name, path = item
        if not isinstance(name, str) or not isinstance(path, str) or not path.strip():
            raise ConfigError("model_paths", f"`model_paths` entry {name!r} needs a non-empty path, got {path!r}")
        if name in frozen:
            raise ConfigError("model_paths", f"`model_paths` names {name!r} twice")
        frozen[name] = path
    return tuple(sorted(frozen.items()))


DEFAULT_MODELS_DIR = "~/.cache/wanserve/models"


@dataclass(frozen=True)
class WeightsConfig:
    """Where weights are: the one rule `engine.loading.resolve_model_dir` applies for every command (`serve`,
    `worker`, `generate`, `models`, `doctor`, `download`). Built from `Settings`; the engine reads no environment."""

    models_dir: str = DEFAULT_MODELS_DIR
    """Directory holding one sub-directory per model (by catalog name or hub repository name); downloads go to
    `<models_dir>/<model>`."""
    model_paths: tuple[tuple[str, str], ...] = ()
    """Explicit weight locations, (model name, path) pairs; a dict is accepted and frozen, sorted by name."""
    checkpoint_dir: str | None = None
    """One model's directory (the replaced services' `WAN_CHECKPOINT_DIR` / `MODEL_CKPT_DIR`): used for any real
    model of the kind it holds."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_paths", _freeze_paths(self.model_paths))
        if not str(self.models_dir).strip():
            raise ConfigError("models_dir", "`models_dir` is an empty string; leave it unset instead")
        object.__setattr__(self, "models_dir", str(self.models_dir))
        if self.checkpoint_dir is not None:
            if not str(self.checkpoint_dir).strip():
                raise ConfigError("checkpoint_dir", "`checkpoint_dir` is an empty string; leave it unset instead")
            object.__setattr__(self, "checkpoint_dir", str(self.checkpoint_dir))
        from wanserve.engine.registry import CATALOG

        for name, _ in self.model_paths:
            spec = CATALOG.get(name)
            if spec is None:
                raise ConfigError(
                    "model_paths",
                    f"`model_paths` names {name!r}, which is not a known model; known: {', '.join(CATALOG)}",
                )
            if spec.tiny:
                raise ConfigError(
                    "model_paths",
                    f"`model_paths` names {name!r}, a tiny model with built-in random weights and no path",
                )

    @classmethod
    def of(cls, models_dir=None, model_paths=(), checkpoint_dir=None) -> WeightsConfig:
        """Builds one from optional values (None: the default `models_dir`, no checkpoint directory)."""
        return cls(str(models_dir) if models_dir else DEFAULT_MODELS_DIR, model_paths, checkpoint_dir or None)

    def model_path(self, name: str) -> str | None:
        """The explicit weight path configured for `name`, or `None`."""
        return dict(self.model_paths).get(name)

    def download_dir(self, name: str) -> Path:
        """Where `wanserve download` puts `name`: its explicit path, else `<models_dir>/<name>`."""
        explicit = self.model_path(name)
        return Path(explicit).expanduser() if explicit else Path(self.models_dir).expanduser() / name


UPSCALE_KERNELS = ("auto", "dense", "flex")


@dataclass(frozen=True)
class UpscaleConfig:
    """How FlashVSR upscales (the `upscale` task)."""

    streaming_lq_max_bytes: int = 2 << 30
    """Bytes of decoded input frames the streaming buffer may hold (FLASHVSR_STREAMING_LQ_MAX_BYTES); a chunk that
    needs more fails, naming the setting."""
    cache_offload: bool = False
    """Keep each block's KV cache on the CPU between chunks, for small GPUs (FLASHVSR_CACHE_OFFLOAD)."""
    kernel: str = "auto"
    """Block-sparse attention kernel: `flex` (FlexAttention, CUDA), `dense` (masked SDPA), `auto` (flex on CUDA)."""

    def __post_init__(self) -> None:
        if self.streaming_lq_max_bytes < 1 << 20:
            raise ConfigError(
                "streaming_lq_max_bytes",
                f"`streaming_lq_max_bytes` must be at least 1 MiB, got {self.streaming_lq_max_bytes}",
            )
        if self.kernel not in UPSCALE_KERNELS:
            raise ConfigError("kernel", f"`kernel` must be one of {', '.join(UPSCALE_KERNELS)}, got {self.kernel!r}")


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to know about this machine and where weights are. Hashable, picklable."""

    device: str | None = None
    """`None` or `auto` for the current accelerator (or the CPU); else `cuda`, `cuda:1`, `npu:0`, `mps`, `cpu`."""
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    upscale: UpscaleConfig = field(default_factory=UpscaleConfig)
    tiny_fallback: bool = True
    """Serve the built-in `tiny-*` models (random weights) when no real model's weights are found."""
    relighting_lora: str | None = None
    """Wan2.2-Animate's relighting LoRA file (`relighting_lora.ckpt`), applied in replace mode; unset: the model
    directory's `relighting_lora.ckpt` when there is one (engine/relighting.py)."""
    parallel: ParallelConfig | None = None
    """How one job spreads over the ranks of a worker group (None: one rank). The process group must exist before
    the first generation (`wanserve.worker.group`)."""

    @property
    def device_type(self) -> str | None:
        """The requested device's type (`cuda`, `cpu`, ...); None for the automatic choice (`None` or `auto`)."""
        if self.device is None or self.device.strip().lower() == "auto":
            return None
        return parse_device_string(self.device)[0]

    def __post_init__(self) -> None:
        if not isinstance(self.memory, MemoryConfig):
            raise ConfigError("memory", f"`memory` must be a MemoryConfig, got {type(self.memory).__name__}")
        if not isinstance(self.speed, SpeedConfig):
            raise ConfigError("speed", f"`speed` must be a SpeedConfig, got {type(self.speed).__name__}")
        if not isinstance(self.lora, LoraConfig):
            raise ConfigError("lora", f"`lora` must be a LoraConfig, got {type(self.lora).__name__}")
        if not isinstance(self.weights, WeightsConfig):
            raise ConfigError("weights", f"`weights` must be a WeightsConfig, got {type(self.weights).__name__}")
        if self.device_type == "cpu" and self.memory.offload != "none":
            raise ConfigError(
                "memory.offload",
                f"`memory.offload`={self.memory.offload!r} moves weights between the CPU and an accelerator, "
                f"but `device`={self.device!r}; use `offload`='none' on the CPU",
            )
