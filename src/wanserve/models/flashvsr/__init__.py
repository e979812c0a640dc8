"""FlashVSR v1.1 (one-step streaming video super-resolution) on diffusers' Wan building blocks; see
docs/upscale.md."""

from wanserve.models.flashvsr.loading import build_random_flashvsr, load_flashvsr
from wanserve.models.flashvsr.pipeline import VARIANTS, FlashVSRModel, FlashVSRRun, UpscaleOptions, output_frames

__all__ = [
    "VARIANTS",
    "FlashVSRModel",
    "FlashVSRRun",
    "UpscaleOptions",
    "build_random_flashvsr",
    "load_flashvsr",
    "output_frames",
]
