"""Memory estimates computed from parameter counts, dtypes, the memory options and the size of the request.

Weights: each component's parameter count (engine/architectures.py, from the real configs) times the bytes of the
dtype `MemoryConfig` loads it in (diffusers keeps the Wan transformers' norms and modulation tables in float32).

Peak accelerator memory of one generation: the largest of its stages, each being the weights resident on the
device during that stage plus what the stage allocates:
- denoising: one transformer forward at batch 1 (CFG runs the two branches one after the other). Per latent token
  it holds `14.8 x dim + 2.74 x ffn_dim` bytes at 16-bit (hidden states, q/k/v, the float32 norm and modulation
  temporaries, the feed-forward's two intermediates). TI2V-5B adds its per-token timestep embedding
  (`expand_timesteps`: 6 x dim in float32, ~38 x dim bytes), VACE its control hints (2 x dim bytes per VACE layer,
  all kept until their block runs). These coefficients come from tracing real-size blocks with fake tensors
  (torch's `MemTracker` under `FakeTensorMode`, no memory used); tests/engine/test_memory_estimate.py traces them
  again and checks the formula.
- decoding: the Wan VAE decodes a few frames at a time with cached features, so its peak is per output pixel of
  one frame (28.2 kB for the Wan2.1 VAE in float32, measured on the H200: a 14B 832x480x81 decode peaked 10.82 GiB
  over the weights, against 19.7 kB traced on the CPU, the rest being CUDA's allocator and cuDNN's convolution
  workspaces; 31.5 kB for the Wan2.2 VAE, its CPU trace of 22 kB scaled by the same factor, not measured on a GPU;
  ~10 kB when there is one latent frame (the CPU trace's 7 kB scaled alike), as for text-to-image), plus the decoded video (12 bytes a pixel a frame) and
  its post-processing copies. Tiling bounds the per-pixel part to a 256 x 256
  tile.
With `offload="none"` every component stays on the device (the text encoder stays on the CPU with
`text_encoder_on_cpu`); with `offload="model"` one component at a time is; with `offload="group"` each component
keeps its non-block layers and one group of blocks (two with the prefetch stream) on the device, an upper bound
for `leaf_level`. CUDA's allocator keeps some memory reserved beyond this (fragmentation, cuDNN workspaces), and
the attention must be a fused kernel (flash, cuDNN or memory-efficient SDPA: a math-kernel fallback holds the full
score matrix). `benchmarks/memory_check.py` compares the estimate with `torch.cuda.max_memory_allocated()`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from wanserve.engine.architectures import ARCHITECTURES, PARAM_COUNTS, Architecture, ParamCount
from wanserve.engine.config import MemoryConfig

if TYPE_CHECKING:
    from wanserve.engine.registry import ModelSpec

GIB = 2**30
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

DIT_BYTES_PER_TOKEN_DIM = 14.8
DIT_BYTES_PER_TOKEN_FFN = 2.74
EXPAND_TIMESTEPS_BYTES_PER_TOKEN_DIM = 38.0
VACE_BYTES_PER_TOKEN_DIM = 2.0
"""The control hidden states, plus one hint of this size per VACE layer."""
VAE_DECODE_BYTES_PER_PIXEL = {"wan2.1-vae": 28_200, "wan2.2-vae": 31_500}
VAE_FIRST_FRAME_BYTES_PER_PIXEL = {"wan2.1-vae": 10_000, "wan2.2-vae": 8_400}
"""One latent frame (text-to-image): the CPU traces (7.0 and 5.9 kB) scaled by the H200's measured 28.2 / 19.7."""
VAE_TILE = 256
VAE_TILE_STRIDE = 192
"""diffusers' `AutoencoderKLWan` tiling defaults (`tile_sample_min_*`, `tile_sample_stride_*`)."""
ANIMATE_SEGMENT_FRAMES = 77


@dataclass(frozen=True)
class MemoryEstimate:
    """One generation's memory, in GiB."""

    weights_gib: float
    """Every component's weights in its dtype (where they live depends on the offload mode)."""
    device_weights_gib: float
    """Weights on the accelerator at the peak."""
    denoise_activations_gib: float
    decode_activations_gib: float
    peak_gib: float
    """Peak accelerator memory of the generation."""
    offload: str

    def as_dict(self) -> dict:
        return asdict(self)


def _bytes(count: ParamCount, dtype: str, diffusers_model: bool) -> float:
    """Bytes of one component's parameters loaded in `dtype`."""
    size = DTYPE_BYTES[dtype]
    kept = count.float32 if size == 2 and (diffusers_model or dtype == "float16") else 0
    return (count.total - kept) * size + kept * 4


def _dtype_of(component: str, memory: MemoryConfig) -> str:
    if component.startswith("transformer"):
        return memory.transformer_dtype
    return getattr(memory, f"{component}_dtype")


def component_bytes(arch: Architecture, memory: MemoryConfig) -> dict[str, float]:
    """Pipeline component name -> bytes of its weights under `memory`'s dtypes."""
    return {
        name: _bytes(
            PARAM_COUNTS[key], _dtype_of(name, memory), diffusers_model=name in ("transformer", "transformer_2")
        )
        for name, key in arch.components().items()
    }


def weights_bytes(spec: ModelSpec, memory: MemoryConfig | None = None) -> float | None:
    """All weights of `spec` in bytes under `memory`'s dtypes; `None` for models without an architecture (tiny)."""
    arch = ARCHITECTURES.get(spec.name)
    if arch is None:
        return None
    return sum(component_bytes(arch, memory or MemoryConfig()).values())


def latent_tokens(spec: ModelSpec, width: int, height: int, num_frames: int) -> int:
    """Transformer tokens of one sample: latent frames x latent rows x latent columns, after 2x2 patches."""
    stride = 16 if spec.vae == "wan2.2" else 8
    if spec.pipeline == "WanAnimatePipeline":
        # Animate denoises one 77-frame segment at a time, plus the reference image's latent frame.
        num_frames = min(num_frames, ANIMATE_SEGMENT_FRAMES) + 4
    latent_frames = (num_frames - 1) // 4 + 1
    return latent_frames * (height // (stride * 2)) * (width // (stride * 2))


def denoise_activation_bytes(spec: ModelSpec, arch: Architecture, memory: MemoryConfig, tokens: int) -> float:
    """What one transformer forward allocates beyond its weights."""
    config = arch.transformer_config
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    per_token = DIT_BYTES_PER_TOKEN_DIM * dim + DIT_BYTES_PER_TOKEN_FFN * config["ffn_dim"]
    per_token *= DTYPE_BYTES[memory.transformer_dtype] / 2
    if spec.vae == "wan2.2":
        per_token += EXPAND_TIMESTEPS_BYTES_PER_TOKEN_DIM * dim
    if "vace_layers" in config:
        per_token += VACE_BYTES_PER_TOKEN_DIM * dim * (1 + len(config["vace_layers"]))
    return tokens * per_token


def decode_activation_bytes(arch: Architecture, memory: MemoryConfig, width: int, height: int, frames: int) -> float:
    """What the VAE decode of `frames` frames at `width` x `height` allocates beyond its weights."""
    scale = DTYPE_BYTES[memory.vae_dtype] / 4
    table = VAE_FIRST_FRAME_BYTES_PER_PIXEL if frames == 1 else VAE_DECODE_BYTES_PER_PIXEL
    per_pixel = table[arch.vae] * scale
    video = 12 * frames * width * height * scale
    if memory.vae_tiling:
        tiles = math.ceil(width / VAE_TILE_STRIDE) * math.ceil(height / VAE_TILE_STRIDE)
        inner = per_pixel * min(width, VAE_TILE) * min(height, VAE_TILE) + 12 * frames * tiles * VAE_TILE**2 * scale
    else:
        inner = per_pixel * width * height
    return max(inner + video, 3 * video)


def _resident(name: str, key: str, nbytes: float, memory: MemoryConfig) -> float:
    """Bytes of one component on the device while it runs, under `memory.offload`."""
    count = PARAM_COUNTS[key]
    if memory.offload != "group" or not count.in_blocks:
        return nbytes
    groups = (memory.blocks_per_group or 1) * (2 if memory.group_offload_use_stream else 1)
    on_device = count.total - count.in_blocks + min(groups * count.per_block, count.in_blocks)
    return nbytes * on_device / count.total


def estimate_memory(
    spec: ModelSpec,
    memory: MemoryConfig | None = None,
    width: int | None = None,
    height: int | None = None,
    num_frames: int | None = None,
) -> MemoryEstimate | None:
    """The memory of one generation of `spec` (default size and frames unless given); `None` for tiny models."""
    arch = ARCHITECTURES.get(spec.name)
    if arch is None:
        return None
    memory = memory or MemoryConfig()
    width, height = (width, height) if width and height else spec.default_size
    num_frames = num_frames or spec.num_frames
    nbytes = component_bytes(arch, memory)
    keys = arch.components()
    on_cpu = {"text_encoder"} if memory.text_encoder_on_cpu else set()
    denoise = denoise_activation_bytes(spec, arch, memory, latent_tokens(spec, width, height, num_frames))
    decode = decode_activation_bytes(arch, memory, width, height, num_frames)

    # 1. What each stage needs on the device: its component(s) and what it allocates.
    stage_needs = {"transformer": denoise, "vae": decode, "text_encoder": 0.0, "image_encoder": 0.0}
    if memory.offload == "none":
        device_weights = sum(b for name, b in nbytes.items() if name not in on_cpu)
        peak = device_weights + max(denoise, decode)
    else:
        # 2. With offload, one component at a time is on the device (one expert of a two-expert model).
        stages = []
        for name, need in stage_needs.items():
            if name not in nbytes or name in on_cpu:
                continue
            stages.append((_resident(name, keys[name], nbytes[name], memory), need))
        device_weights, peak = max(((w, w + need) for w, need in stages), key=lambda pair: pair[1])
    return MemoryEstimate(
        weights_gib=round(sum(nbytes.values()) / GIB, 2),
        device_weights_gib=round(device_weights / GIB, 2),
        denoise_activations_gib=round(denoise / GIB, 2),
        decode_activations_gib=round(decode / GIB, 2),
        peak_gib=round(peak / GIB, 2),
        offload=memory.offload,
    )


@dataclass(frozen=True)
class FitAdvice:
    """What would fit a device of `budget_gib` when a request does not: each alternative keeps the rest of the
    request as it is."""

    needed_gib: float
    budget_gib: float
    num_frames: int | None = None
    """The most frames (4k+1, at the requested size) that fit; None when even 1 does not."""
    size: tuple[int, int] | None = None
    """The largest of the model's sizes that fits at the requested length; None when none does."""
    offload: str | None = None
    """The first memory option that fits the request unchanged (a deployment setting)."""

    @property
    def field(self) -> str:
        """The request field the first alternative changes (what a 422 names)."""
        return "num_frames" if self.num_frames else "width" if self.size else "model"

    def message(self, model: str, device: str = "the worker's device") -> str:
        ways = []
        if self.num_frames:
            ways.append(f"`num_frames` <= {self.num_frames}")
        if self.size:
            ways.append(f"a smaller size such as {self.size[0]}x{self.size[1]}")
        if self.offload:
            ways.append(f"the memory option {self.offload} (a deployment setting)")
        would = "; would fit: " + ", or ".join(ways) if ways else "; nothing smaller of this model fits it"
        return (
            f"this request needs about {self.needed_gib:.1f} GiB of accelerator memory for {model} but {device} "
            f"has {self.budget_gib:.1f} GiB{would}"
        )


OFFLOAD_OPTIONS: tuple[tuple[str, dict], ...] = (
    ("WANSERVE_T5_CPU=1", {"text_encoder_on_cpu": True}),
    ("WANSERVE_OFFLOAD=model with WANSERVE_T5_CPU=1", {"offload": "model", "text_encoder_on_cpu": True}),
    ("WANSERVE_OFFLOAD=group with WANSERVE_T5_CPU=1", {"offload": "group", "text_encoder_on_cpu": True}),
    (
        "WANSERVE_OFFLOAD=group, WANSERVE_T5_CPU=1 and WANSERVE_VAE_TILING=1",
        {"offload": "group", "text_encoder_on_cpu": True, "vae_tiling": True},
    ),
)


def fit_advice(
    spec: ModelSpec, memory: MemoryConfig, width: int, height: int, num_frames: int, budget_gib: float
) -> FitAdvice | None:
    """None when one generation of this size fits in `budget_gib` (or the model has no estimate, as the tiny
    ones); else what would fit: fewer frames, one of the model's smaller sizes, or a memory option."""
    from dataclasses import replace

    estimate = estimate_memory(spec, memory, width, height, num_frames)
    if estimate is None or estimate.peak_gib <= budget_gib:
        return None

    def fits(mem: MemoryConfig, w: int, h: int, f: int) -> bool:
        return estimate_memory(spec, mem, w, h, f).peak_gib <= budget_gib

    k = spec.temporal_factor
    # Down to 1 + k frames: one frame is an image, not a shorter video.
    frames = next((f for f in range(num_frames - k, k, -k) if fits(memory, width, height, f)), None)
    smaller = sorted((s for s in spec.sizes if s[0] * s[1] < width * height), key=lambda s: -s[0] * s[1])
    size = next((s for s in smaller if fits(memory, s[0], s[1], num_frames)), None)
    offload = None
    for label, changes in OFFLOAD_OPTIONS:
        candidate = replace(memory, **{k: v for k, v in changes.items() if k != "offload" or memory.offload != v})
        if candidate != memory and fits(candidate, width, height, num_frames):
            offload = label
            break
    return FitAdvice(estimate.peak_gib, budget_gib, frames, size, offload)
