"""Output sizes as the official Wan code takes them.

- A text or video task makes the size it is given. The official `generate.py` runs only the sizes of
  `SUPPORTED_SIZES[task]`; wanserve runs a model's trained sizes and the further sizes the official code accepts
  for it (`ModelSpec.accepts_size`), and any other size only with `allow_untrained_size`.
- For an image-conditioned task (Wan2.1 I2V / FLF2V, Wan2.2 I2V-A14B, TI2V-5B with an image) the requested size
  is an AREA: the output keeps the input image's aspect ratio, rounded to the model's grid (VAE stride x patch
  size). Wan2.1 and Wan2.2 I2V use the `max_area` arithmetic of image2video.py; TI2V-5B uses
  `best_output_size` and then resizes and centre-crops the image to it.
- Wan2.2-Animate takes its size and length from the pose video (its 77 frames are the segment length).

The size is resolved at submission, so a job shows the size it will make before it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wanserve.engine.registry import ModelSpec
from wanserve.engine.requests import GenerationRequest, TaskKind
from wanserve.errors import InvalidRequestError

PATCH = 2
"""Spatial patch size of every Wan DiT (`patch_size` (1, 2, 2))."""

IMAGE_SIZED_TASKS = (TaskKind.I2V, TaskKind.FLF2V, TaskKind.TI2V)


@dataclass(frozen=True)
class InputShapes:
    """What submission learnt of the media inputs that decide the output shape."""

    image: tuple[int, int] | None = None
    """(width, height) of `image` as the engine will see it (EXIF orientation applied)."""
    pose_video: tuple[int, int, int] | None = None
    """(width, height, frames) of Animate's `pose_video`."""
    video: tuple[int, int, int, float] | None = None
    """(width, height, frames, fps) of an upscale's input `video`."""


def _sizes_text(sizes) -> str:
    return ", ".join(f"{w}x{h}" for w, h in sizes)


def check_size(
    spec: ModelSpec, width: int, height: int, allow_untrained: bool, what: str = "size", task: TaskKind | None = None
) -> None:
    """Refuses a size the official code would not run for `spec` (for t2i: its image sizes), unless
    `allow_untrained` says to."""
    if task == TaskKind.T2I and spec.image_sizes:
        trained, accepted = spec.image_sizes, ""
        if allow_untrained or (width, height) in trained:
            return
    else:
        trained = spec.sizes
        if allow_untrained or spec.accepts_size(width, height):
            return
        accepted = f"; the official code also runs {_sizes_text(spec.official_sizes)}" if spec.official_sizes else ""
    raise InvalidRequestError(
        "width",
        f"{what} {width}x{height} is not a trained size of {spec.name} (trained: {_sizes_text(trained)}{accepted}); "
        "set `allow_untrained_size` to run it anyway",
    )


def max_area_size(image_w: int, image_h: int, max_area: int, vae_stride: int, patch: int = PATCH) -> tuple[int, int]:
    """Wan's `max_area` rule: the latent side is sqrt(area x aspect) in VAE cells, floored to a whole number of
    patches, so the area never exceeds `max_area`. Returns (width, height) in pixels."""
    aspect = image_h / image_w
    cells_h = math.sqrt(max_area * aspect) // vae_stride // patch * patch
    cells_w = math.sqrt(max_area / aspect) // vae_stride // patch * patch
    return int(cells_w) * vae_stride, int(cells_h) * vae_stride


def best_output_size(image_w: int, image_h: int, grid_w: int, grid_h: int, area: int) -> tuple[int, int]:
    """Wan2.2 TI2V's rule: the grid-aligned size within `area` whose aspect ratio is closest to the image's,
    trying width-first and height-first rounding and keeping the better (height-first on a tie, as the official
    comparison is strict)."""
    ratio = image_w / image_h
    exact_w = math.sqrt(area * ratio)
    exact_h = area / exact_w
    width_first_w = int(exact_w // grid_w * grid_w)
    width_first = (width_first_w, int(area / width_first_w // grid_h * grid_h))
    height_first_h = int(exact_h // grid_h * grid_h)
    height_first = (int(area / height_first_h // grid_w * grid_w), height_first_h)

    def distortion(size: tuple[int, int]) -> float:
        other = size[0] / size[1]
        return max(ratio / other, other / ratio)

    return width_first if distortion(width_first) < distortion(height_first) else height_first


def image_output_size(spec: ModelSpec, width: int, height: int, image: tuple[int, int]) -> tuple[int, int]:
    """The output size of an image-conditioned request of (area) size `width` x `height` with an image of size
    `image`, as the official code of `spec`'s family computes it."""
    area, grid = width * height, spec.vae_stride * PATCH
    if spec.image_sizing == "best_output_size":
        out = best_output_size(image[0], image[1], grid, grid, area)
    else:
        out = max_area_size(image[0], image[1], area, spec.vae_stride)
    if min(out) < grid:
        raise InvalidRequestError(
            "image",
            f"`image` is {image[0]}x{image[1]}: at the area of {width}x{height} its aspect ratio leaves "
            f"{out[0]}x{out[1]}, under the {grid}-pixel grid of {spec.name}",
        )
    return out


def fit_to_inputs(spec: ModelSpec, request: GenerationRequest, shapes: InputShapes) -> GenerationRequest:
    """`request` with the output shape its inputs decide: an image task's size from the image's aspect ratio,
    Animate's size and length from the pose video, an upscale's from its input video. Other requests are returned
    unchanged."""
    if request.task == TaskKind.UPSCALE and shapes.video is not None:
        from wanserve.engine.upscale import fit_upscale

        return fit_upscale(request, shapes.video)
    if request.task in IMAGE_SIZED_TASKS and spec.image_sizing and shapes.image is not None:
        width, height = image_output_size(spec, request.width, request.height, shapes.image)
        return request.replace(width=width, height=height)
    if request.task == TaskKind.ANIMATE and shapes.pose_video is not None:
        width, height, frames = shapes.pose_video
        check_animate_size(spec, width, height, request.allow_untrained_size)
        frames = animate_frames(spec, frames, request.refert_num, request.clip_len)
        return request.replace(width=width, height=height, num_frames=frames)
    return request


def check_animate_size(spec: ModelSpec, width: int, height: int, allow_untrained: bool) -> None:
    """Animate's size is the pose video's: it must be on the grid and (without `allow_untrained_size`) 720p."""
    grid = spec.spatial_factor
    if width % grid or height % grid:
        raise InvalidRequestError(
            "pose_video", f"`pose_video` is {width}x{height}; Animate needs both sides to be multiples of {grid}"
        )
    check_size(spec, width, height, allow_untrained, what="`pose_video` size")


def animate_frames(spec: ModelSpec, pose_frames: int, refert_num: int, clip_len: int) -> int:
    """Animate's output length: the pose video's, which the pipeline covers in whole segments of `clip_len`
    frames. A segment after the first starts from the last `refert_num` frames made, so the video must be longer
    than that."""
    if not refert_num < pose_frames <= spec.max_frames:
        raise InvalidRequestError(
            "pose_video",
            f"`pose_video` has {pose_frames} frames; {spec.name} takes {refert_num + 1} to {spec.max_frames} "
            f"(with `refert_num` {refert_num})",
        )
    # Every segment after the first starts from the last `refert_num` frames the previous one made. diffusers
    # counts its segments as (padded length) // (clip_len - refert_num), the official count only when a segment
    # makes more new frames than it carries (77 - 5 for the real model); with fewer its run fails
    # (tests/engine/test_animate.py shows it for 9-frame segments carrying 5).
    if clip_len - refert_num <= refert_num:
        raise InvalidRequestError(
            "refert_num",
            f"`refert_num` {refert_num} needs segments longer than {2 * refert_num} frames; `clip_len` is "
            f"{clip_len} ({spec.name}'s default {spec.num_frames}): give a longer `clip_len` or `refert_num` 1",
        )
    return pose_frames
