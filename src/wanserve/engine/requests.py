"""The only types that cross from `worker/` into `engine/` and between ranks: frozen, picklable dataclasses."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from wanserve.engine.lora import LoraRef


class TaskKind(str, enum.Enum):
    """What a generation does with its inputs."""

    T2V = "t2v"  # text to video
    T2I = "t2i"  # text to image: one frame of a text-to-video model, written as a PNG (Wan2.1 `t2i-14B`)
    I2V = "i2v"  # first frame (image) to video
    FLF2V = "flf2v"  # first and last frame to video
    TI2V = "ti2v"  # Wan2.2 TI2V-5B: text, optionally with a first frame
    V2V = "v2v"  # video to video with `strength`
    VACE = "vace"  # control video, mask and reference images
    ANIMATE = "animate"  # Wan2.2-Animate: reference image + pose/face videos
    UPSCALE = "upscale"  # FlashVSR video super-resolution of an input video
    CONTROL = "control"  # Wan2.2-Fun-Control: a control video (edges, depth, pose) guides the video


class Stage(str, enum.Enum):
    """The stages one generation passes through, in order."""

    LOADING = "loading"
    ENCODING_TEXT = "encoding_text"
    ENCODING_IMAGE = "encoding_image"
    DENOISING = "denoising"
    DECODING = "decoding"
    WRITING = "writing"
    UPSCALING = "upscaling"
    """FlashVSR: one step per chunk of 8 output frames (an upscale job, or the second part of a chained job)."""


# A media input is the file's bytes, a local path, or a `data:` URL. http(s) URLs are fetched (with limits) by the
# layer that accepted them, never by the engine.
MediaInput = bytes | str


@dataclass(frozen=True)
class GenerationRequest:
    """One generation, with every parameter resolved (no `None` where the model has a default)."""

    model: str
    task: TaskKind
    prompt: str = ""
    negative_prompt: str = ""
    width: int = 832
    height: int = 480
    num_frames: int = 81
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None
    """Guidance of the low-noise expert (Wan2.2 A14B only)."""
    boundary_ratio: float | None = None
    """Switch from the high-noise to the low-noise expert at t >= boundary_ratio * 1000 (Wan2.2 A14B only)."""
    flow_shift: float = 5.0
    solver: str = "unipc"
    seed: int = 0
    fps: int = 16
    """Frame rate of the output video (the engine passes it on in the result; the writer uses it)."""
    crf: int = 18
    """H.264 constant rate factor of the output (0 lossless .. 51 worst)."""
    strength: float = 0.8
    """v2v only: how much of the input video is replaced by noise (0..1)."""
    image: MediaInput | None = None
    last_image: MediaInput | None = None
    video: MediaInput | None = None
    mask: MediaInput | None = None
    reference_images: tuple[MediaInput, ...] = ()
    animate_mode: str = "animate"
    """animate only: `animate` (move the reference) or `replace` (put the reference into the video)."""
    pose_video: MediaInput | None = None
    face_video: MediaInput | None = None
    background_video: MediaInput | None = None
    max_sequence_length: int = 512
    allow_untrained_size: bool = False
    """Run a size the official code would refuse for this model (outside its trained sizes)."""
    conditioning_scale: float = 1.0
    """vace only: weight of the control signal (the official `context_scale` / `vace_context_scale`)."""
    refert_num: int = 1
    """animate only: frames each segment takes from the previous one (1 or 5, as the official code)."""
    loras: tuple[LoraRef, ...] = ()
    """LoRA adapters for this generation (engine/lora.py); their files are checked at submission."""
    clip_len: int = 77
    """animate only: frames of one segment (4k+1; the official `clip_len`, diffusers' `segment_frame_length`)."""
    speed: str = "exact"
    """The speed preset asked for (`exact`, `fast`, `fastest`); the four fields below are what it resolved to."""
    fp8_gemm: bool = False
    fp8_attention: bool = False
    step_cache: str = "none"
    step_cache_threshold: float = 0.0
    step_cache_start: int = 0
    step_cache_end: int = 0
    step_cache_interval: int = 0
    """The `interval` step cache's window [start, end) and period (0 for other caches)."""
    scale: int = 4
    """upscale only: 2 or 4 (FlashVSR was trained for 4)."""
    input_width: int | None = None
    """upscale only: the input is first resized to this width, height following (ffmpeg `scale=W:-2`)."""
    quality: int = 6
    """upscale only: export quality 1..10 (imageio's scale: H.264 CRF = (1 - quality / 10) x 51)."""
    upscale: dict | None = None
    """Generation tasks: upscale the result too (`{"scale": 2, "model": ..., "quality": ...}`; a chained job)."""

    def replace(self, **changes) -> GenerationRequest:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to `on_progress` at every stage change and after every denoising step."""

    stage: Stage
    step: int = 0
    """Denoising steps completed so far (0..steps)."""
    steps: int = 0
    step_time_s: float | None = None
    """Seconds the last denoising step took, when this event reports a step."""
    segment: int = 0
    """Animate: the segment (1-based) the reported steps belong to; 0 before denoising and for other tasks."""
    segments: int = 1
    """How many segments the run denoises one after the other (Animate covers a long pose video in several)."""


@dataclass(frozen=True)
class GenerationResult:
    """What one finished generation produced: the frames, never a file (the caller encodes and stores them)."""

    frames: np.ndarray = field(compare=False, repr=False)
    """The decoded video, uint8 [frames, height, width, 3] RGB."""
    width: int
    height: int
    num_frames: int
    fps: int
    seed: int
    random_weights: bool
    """True when the model that produced this has random (tiny or untrained) weights."""
    stage_times_s: dict[str, float] = field(default_factory=dict)
    step_times_s: tuple[float, ...] = ()
    speed: dict[str, str] = field(default_factory=dict)
    """The speed options the model ran with (attention kernel, compile); exact options only change rounding."""
    loras: tuple[dict, ...] = ()
    """The LoRAs applied: `name` or `path`, `strength`, and the `file` loaded."""


ProgressCallback = Callable[[ProgressEvent], None]
StopCallback = Callable[[], bool]
