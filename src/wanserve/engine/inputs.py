"""Turning a request's media inputs into the keyword arguments of its diffusers pipeline."""

from __future__ import annotations

from typing import Any

from wanserve.engine.registry import ModelSpec
from wanserve.engine.requests import GenerationRequest, TaskKind
from wanserve.errors import InvalidRequestError
from wanserve.media.images import cover_and_crop, letterbox, load_image
from wanserve.media.video import MAX_VIDEO_FRAME_PIXELS, load_video, probe_video


def animate_segments(clip_len: int, num_frames: int, refert_num: int = 1) -> int:
    """How many segments of `clip_len` frames Wan-Animate runs to cover `num_frames`, each after the first
    starting from the last `refert_num` frames made (Wan2.2 animate.py `get_valid_len`; diffusers the same)."""
    effective = clip_len - refert_num
    return -(-(num_frames - refert_num) // effective) if num_frames > refert_num else 1


def effective_steps(spec: ModelSpec, request: GenerationRequest) -> int:
    """Denoising steps the pipeline will actually run, over all segments.

    Video-to-video skips the first `1 - strength` of the schedule; Animate denoises each segment in full.
    """
    if request.task == TaskKind.V2V:
        return max(1, min(int(request.num_inference_steps * request.strength), request.num_inference_steps))
    if request.task == TaskKind.ANIMATE:
        return request.num_inference_steps * animate_segments(request.clip_len, request.num_frames, request.refert_num)
    return request.num_inference_steps


VIDEO_INPUTS = ("video", "mask", "pose_video", "face_video", "background_video")
"""Media inputs that are videos (a VACE or Animate `mask` is a video of masks)."""


def _check_length(field: str, have: int, need: int) -> None:
    if have < need:
        raise InvalidRequestError(field, f"`{field}` has {have} frames; at least {need} are needed (`num_frames`)")


def _video(source, field: str, num_frames: int, mode: str = "RGB"):
    """The first `num_frames` frames of an input video; a shorter video is refused, never padded."""
    frames = load_video(source, field=field, max_frames=num_frames)
    _check_length(field, len(frames), num_frames)
    return [frame.convert(mode) for frame in frames]


def probe_media(request: GenerationRequest) -> None:
    """Checks every media input of the request as the run will read it, without decoding whole videos: images
    decode, videos open, have at least `num_frames` frames and frames within the size limit.

    Raises `InvalidRequestError` naming the field. The job service calls this at submission, so a too-short or
    unreadable input is a 422, never a failed job.
    """
    for name in ("image", "last_image"):
        value = getattr(request, name)
        if value is not None:
            load_image(value, field=name)
    for i, ref in enumerate(request.reference_images):
        load_image(ref, field=f"reference_images[{i}]")
    infos = {}
    for name in VIDEO_INPUTS:
        value = getattr(request, name)
        if value is None:
            continue
        info = infos[name] = probe_video(value, name)
        if info.width * info.height > MAX_VIDEO_FRAME_PIXELS:
            raise InvalidRequestError(
                name,
                f"`{name}` frames are {info.width}x{info.height}, more than the limit of {MAX_VIDEO_FRAME_PIXELS} "
                "pixels",
            )
    if request.task == TaskKind.ANIMATE and "pose_video" in infos:
        check_driving_videos(infos)
    for name, info in infos.items():
        _check_length(name, info.num_frames, request.num_frames)


FPS_TOLERANCE = 0.01
"""Relative difference of frame rates still taken as the same rate (29.97 vs 30000/1001 written differently)."""


def check_driving_videos(infos: dict) -> None:
    """Animate's driving videos come from one preprocessing run of one video, and the pipeline takes frame i of
    each together: their frame counts and frame rates must agree with the pose video's, the background and mask
    must be of its size, and the face crops square (the preprocessing writes 512x512; the pipeline scales them to
    the model's face size). `infos` maps input names to their `VideoInfo`. Raises `InvalidRequestError` naming the
    field and its value."""
    pose = infos["pose_video"]
    for name, info in infos.items():
        if name == "pose_video":
            continue
        if info.num_frames != pose.num_frames:
            raise InvalidRequestError(
                name,
                f"`{name}` has {info.num_frames} frames and `pose_video` {pose.num_frames}: the driving videos "
                "must have the same length (frame i of each is used together)",
            )
        if pose.fps and info.fps and abs(info.fps - pose.fps) > FPS_TOLERANCE * pose.fps:
            raise InvalidRequestError(
                name,
                f"`{name}` is {info.fps:g} fps and `pose_video` {pose.fps:g} fps: the driving videos must have one "
                "frame rate",
            )
        if name == "face_video":
            if info.width != info.height:
                raise InvalidRequestError(
                    name, f"`face_video` frames are {info.width}x{info.height}; the face crops must be square"
                )
        elif (info.width, info.height) != (pose.width, pose.height):
            raise InvalidRequestError(
                name,
                f"`{name}` frames are {info.width}x{info.height} and `pose_video`'s {pose.width}x{pose.height}: "
                "they must be of one size",
            )


def load_media(request: GenerationRequest) -> dict[str, Any]:
    """Decodes every media input of the request (images as PIL, videos as lists of PIL frames).

    Raises `InvalidRequestError` naming the field when an input is unreadable or too short (`probe_media` checked
    the same at submission).
    """
    n = request.num_frames
    out: dict[str, Any] = {}
    if request.image is not None:
        out["image"] = load_image(request.image, field="image")
    if request.last_image is not None:
        out["last_image"] = load_image(request.last_image, field="last_image")
    if request.reference_images:
        out["reference_images"] = [
            load_image(ref, field=f"reference_images[{i}]") for i, ref in enumerate(request.reference_images)
        ]
    if request.video is not None:
        out["video"] = _video(request.video, "video", n)
    if request.mask is not None:
        out["mask"] = _video(request.mask, "mask", n, mode="L")
    for name in VIDEO_INPUTS[2:]:
        value = getattr(request, name)
        if value is not None:
            out[name] = _video(value, name, n)
    return out


def pipeline_inputs(spec: ModelSpec, request: GenerationRequest) -> dict[str, Any]:
    """The task-specific keyword arguments for `pipe(...)`."""
    media = load_media(request)
    task = request.task
    kwargs: dict[str, Any] = {}
    if task in (TaskKind.I2V, TaskKind.FLF2V, TaskKind.TI2V) and "image" in media:
        kwargs["image"] = media["image"]
        if spec.image_sizing == "best_output_size":
            # Wan2.2 TI2V scales the image to cover the output size and centre-crops it (textimage2video.py
            # 467-473); diffusers would stretch it instead.
            kwargs["image"] = cover_and_crop(media["image"], request.width, request.height)
        if "last_image" in media:
            kwargs["last_image"] = media["last_image"]
        # The pipeline runs the CLIP image encoder itself: diffusers refuses `image` and `image_embeds` together,
        # and it needs `image` for the VAE-encoded condition.
    elif task == TaskKind.V2V:
        kwargs.update(video=media["video"], strength=request.strength)
    elif task == TaskKind.VACE:
        if "video" in media:
            kwargs["video"] = media["video"]
        if "mask" in media:
            kwargs["mask"] = media["mask"]
        if "reference_images" in media:
            kwargs["reference_images"] = media["reference_images"]
        kwargs["conditioning_scale"] = request.conditioning_scale
    elif task == TaskKind.CONTROL:
        kwargs["control_video"] = media["video"]
    elif task == TaskKind.ANIMATE:
        kwargs.update(
            # The reference is letterboxed onto black at the pose video's size, as the official code pads it
            # (Wan2.2 animate.py 237-281); diffusers would fill the margins with stretched edges.
            image=letterbox(media["image"], request.width, request.height),
            pose_video=media["pose_video"],
            face_video=media["face_video"],
            mode=request.animate_mode,
            segment_frame_length=request.clip_len,
            prev_segment_conditioning_frames=request.refert_num,
        )
        if request.animate_mode == "replace":
            kwargs.update(background_video=media["background_video"], mask_video=media["mask"])
    return kwargs
