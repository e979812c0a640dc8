"""OpenAI videos API shapes (`/v1/videos`) and the mapping between them and wanserve jobs.

The mapping lives here, at the API edge; nothing below the API knows about OpenAI's vocabulary.

- `status`: queued -> `queued`, running -> `in_progress`, succeeded -> `completed`, failed and cancelled -> `failed`
  (a cancelled job's `error.code` is `cancelled`); an expired job keeps the status it finished with.
- `seconds` (a string such as "4") -> `num_frames = k * round(seconds * fps / k) + 1`, with `fps` and `k` (the
  temporal factor, 4 for every Wan model) of the model: "4" at 16 fps -> 65 frames, "5" -> 81. A clip longer than the
  model allows is refused naming `seconds`. The `seconds` shown back is the clip's real length,
  `(num_frames - 1) / fps` ("4" again for "4" at 16 fps).
- `size` "WxH" -> `width`, `height`, checked by the model's rules.
- `model`: a wanserve model name; OpenAI's own names (`sora-2`, `sora-2-pro`, ...) mean the server's default model,
  and the `model` field of the answer names the model that really runs.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from wanserve.engine.registry import ModelSpec
from wanserve.errors import InvalidRequestError

OPENAI_MODEL_PREFIX = "sora-"
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20

_STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "failed",
}
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
_SECONDS = re.compile(r"^\s*\d{1,4}(\.\d{1,3})?\s*$")


class VideoError(BaseModel):
    """Why a video failed."""

    code: str
    message: str


class VideoObject(BaseModel):
    """OpenAI's video object."""

    id: str
    object: Literal["video"] = "video"
    created_at: int
    """Unix seconds."""
    status: Literal["queued", "in_progress", "completed", "failed"]
    model: str
    progress: int = Field(ge=0, le=100)
    seconds: str
    size: str
    prompt: str | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    error: VideoError | None = None
    remixed_from_video_id: None = None
    random_weights: bool = False
    """wanserve addition: true when the model has random (tiny) weights and draws noise, not pictures."""


class VideoList(BaseModel):
    """OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[VideoObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class VideoDeleted(BaseModel):
    """Answer of DELETE /v1/videos/{id}."""

    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error body: `{"error": {message, type, param, code}}`."""

    error: OpenAIErrorDetail


def openai_error_type(http_status: int) -> str:
    """OpenAI's `error.type` for an HTTP status."""
    if http_status == 401:
        return "authentication_error"
    if http_status == 403:
        return "permission_error"
    if http_status == 429:
        return "rate_limit_error"
    if http_status >= 500:
        return "server_error"
    return "invalid_request_error"


def is_openai_model_name(name: str) -> bool:
    """True for OpenAI's own video model names, which mean the server's default model here."""
    return name.startswith(OPENAI_MODEL_PREFIX)


def parse_size(value: str) -> tuple[int, int]:
    """`"1280x720"` -> (1280, 720). Raises `InvalidRequestError` naming `size`."""
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise InvalidRequestError("size", f"`size` must look like 1280x720 (width x height), got {value!r}")
    return int(match.group(1)), int(match.group(2))


def seconds_to_frames(spec: ModelSpec, value: str) -> int:
    """OpenAI `seconds` -> `num_frames` for `spec` (see the module docstring). Raises naming `seconds`."""
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not _SECONDS.match(str(value)):
        raise InvalidRequestError(
            "seconds", f'`seconds` must be a positive number of seconds such as "4", got {value!r}'
        )
    seconds = float(value)
    if seconds <= 0:
        raise InvalidRequestError("seconds", f"`seconds` must be positive, got {value!r}")
    k = spec.temporal_factor
    frames = k * round(seconds * spec.fps / k) + 1
    if frames > spec.max_frames:
        longest_s = (spec.max_frames - 1) / spec.fps
        raise InvalidRequestError(
            "seconds",
            f"`seconds` {value!r} means {frames} frames at {spec.fps} fps; {spec.name} makes at most "
            f"{spec.max_frames} frames ({longest_s:g} s)",
        )
    return frames


def frames_to_seconds(num_frames: int, fps: int) -> str:
    """The duration OpenAI shows for a clip: `(num_frames - 1) / fps`, as a short string."""
    return f"{(num_frames - 1) / fps:g}" if fps else "0"


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _openai_status(view: Any) -> str:
    status = view.status
    if status == "expired":
        status = "succeeded" if view.error_type is None else "failed"
    return _STATUS.get(status, "failed")


def video_object(view: Any) -> VideoObject:
    """The OpenAI video object of a job (`jobs.views.JobView`)."""
    params = view.params or {}
    status = _openai_status(view)
    error = None
    if status == "failed":
        error = VideoError(
            code=view.error_type or ("cancelled" if view.status == "cancelled" else "failed"),
            message=view.error_message or f"the job {view.status}",
        )
    seconds = frames_to_seconds(int(params.get("num_frames", 1)), int(params.get("fps", 0)))
    return VideoObject(
        id=view.id,
        created_at=_unix(view.created_at) or 0,
        status=status,
        model=view.model,
        progress=100 if status == "completed" else max(0, min(100, math.floor(view.progress * 100))),
        seconds=str(seconds),
        size=f"{params.get('width', 0)}x{params.get('height', 0)}",
        prompt=params.get("prompt"),
        completed_at=_unix(view.finished_at) if status in ("completed", "failed") else None,
        expires_at=_unix(view.expires_at),
        error=error,
        random_weights=bool(view.random_weights),
    )
