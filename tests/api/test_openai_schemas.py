"""OpenAI field and status mapping (no server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest

from wanserve.api.schemas.openai import frames_to_seconds, parse_size, seconds_to_frames, video_object
from wanserve.engine.registry import get_spec
from wanserve.errors import InvalidRequestError

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@dataclass
class View:
    id: str = "8d0f6a3e-8a59-4f44-9d55-1b2f0b6c1a11"
    model: str = "tiny-t2v"
    status: str = "queued"
    progress: float = 0.0
    params: dict[str, Any] = field(
        default_factory=lambda: {"prompt": "a cat", "width": 64, "height": 64, "num_frames": 9, "fps": 8}
    )
    error_type: str | None = None
    error_message: str | None = None
    random_weights: bool = True
    created_at: datetime = T0
    finished_at: datetime | None = None
    expires_at: datetime | None = None


@pytest.mark.parametrize(
    ("model", "seconds", "frames"),
    [("wan2.1-t2v-14b", "5", 81), ("wan2.1-t2v-14b", "4", 65), ("tiny-t2v", "1", 9), ("wan2.2-ti2v-5b", "5", 121)],
)
def test_seconds_to_frames_follows_4k_plus_1(model: str, seconds: str, frames: int) -> None:
    assert seconds_to_frames(get_spec(model), seconds) == frames


def test_seconds_to_frames_rejects_too_long() -> None:
    with pytest.raises(
        InvalidRequestError, match=r"`seconds` '8' means 65 frames at 8 fps; tiny-t2v makes at most 33"
    ) as info:
        seconds_to_frames(get_spec("tiny-t2v"), "8")
    assert info.value.field == "seconds"


@pytest.mark.parametrize("value", ["-1", "0", "abc", "", "4s", True])
def test_seconds_to_frames_rejects_bad_values(value) -> None:
    with pytest.raises(InvalidRequestError) as info:
        seconds_to_frames(get_spec("tiny-t2v"), value)
    assert info.value.field == "seconds"


def test_frames_to_seconds() -> None:
    assert frames_to_seconds(81, 16) == "5"
    assert frames_to_seconds(9, 8) == "1"


def test_parse_size() -> None:
    assert parse_size("1280x720") == (1280, 720)
    with pytest.raises(InvalidRequestError, match="`size` must look like 1280x720") as info:
        parse_size("1280*")
    assert info.value.field == "size"


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        ("queued", None, "queued"),
        ("running", None, "in_progress"),
        ("succeeded", None, "completed"),
        ("failed", "generation_failed", "failed"),
        ("cancelled", "cancelled", "failed"),
        ("expired", None, "completed"),
        ("expired", "generation_failed", "failed"),
    ],
)
def test_video_object_status_mapping(status: str, error_type: str | None, expected: str) -> None:
    video = video_object(View(status=status, error_type=error_type, error_message="boom" if error_type else None))
    assert video.status == expected
    assert (video.error is not None) == (expected == "failed")


def test_video_object_fields() -> None:
    video = video_object(View(status="running", progress=0.424))
    assert video.object == "video" and video.created_at == int(T0.timestamp())
    assert video.progress == 42 and video.size == "64x64" and video.seconds == "1"
    assert video.remixed_from_video_id is None and video.completed_at is None and video.random_weights
    done = video_object(View(status="succeeded", progress=1.0, finished_at=T0, expires_at=T0))
    assert done.progress == 100 and done.completed_at == int(T0.timestamp()) and done.expires_at is not None
    cancelled = video_object(View(status="cancelled", error_type="cancelled", error_message="cancelled by request"))
    assert cancelled.error.code == "cancelled" and cancelled.error.message == "cancelled by request"
