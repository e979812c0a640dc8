"""`JobFiles`: a job's files in storage, by key. Inputs go in at submission and come back out on whichever host's
worker runs the job; outputs go in when it succeeds; both go away with the job (or at retention).

Keys: `inputs/<job id>/<field>[-<i>]`, `outputs/<job id>.mp4` (`.png` for text-to-image) and `outputs/<job id>.jpg`
(the thumbnail). Rows
hold keys, never paths, so every process of a deployment finds the same files.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from wanserve.storage.base import Storage

logger = logging.getLogger(__name__)

VARIANTS = {
    "video": (".mp4", "video/mp4"),
    "thumbnail": (".jpg", "image/jpeg"),
    "partial": ("_partial.mp4", "video/mp4"),
}
"""Output variant -> (suffix, media type). The `video` variant is the main output: a PNG for text-to-image jobs;
`partial` is what an upscale wrote before it failed or was cancelled."""
MEDIA_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg"}
"""Suffix of a stored output -> its media type."""


def _checked_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"job id {job_id!r} is not a UUID") from None


def output_key(job_id: str, variant: str = "video", suffix: str | None = None) -> str:
    """The key of a job's MP4 (`video`; `suffix=".png"` for an image) or JPEG thumbnail (`thumbnail`)."""
    suffix = suffix or VARIANTS[variant][0]
    if suffix.removeprefix("_partial") not in MEDIA_TYPES:
        raise ValueError(f"output suffix {suffix!r} is not one of {', '.join(MEDIA_TYPES)}")
    return f"outputs/{_checked_id(job_id)}{suffix}"


def input_key(job_id: str, name: str) -> str:
    """The key of one uploaded input of a job."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"input name {name!r} is not a plain name")
    return f"inputs/{_checked_id(job_id)}/{name}"


@dataclass(frozen=True)
class OutputKeys:
    """Where a succeeded job's files are stored."""

    video_key: str
    thumbnail_key: str
    video_bytes: int


class JobFiles:
    """A job's inputs and outputs in a `Storage`."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def save_input(self, job_id: str, name: str, data: bytes) -> str:
        """Stores one input and returns its key."""
        key = input_key(job_id, name)
        self.storage.put(key, BytesIO(data))
        return key

    def fetch_inputs(self, inputs: dict[str, Any], directory: str | os.PathLike) -> dict[str, Any]:
        """Copies a job's stored inputs (field -> key, or list of keys) into `directory`; returns field -> path."""
        paths: dict[str, Any] = {}

        def fetch(key: str) -> str:
            target = Path(directory) / key.rsplit("/", 1)[-1]
            with self.storage.open(key) as source, open(target, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            return str(target)

        for name, value in inputs.items():
            paths[name] = [fetch(k) for k in value] if isinstance(value, list) else fetch(value)
        return paths

    def store_outputs(
        self, job_id: str, video_path: str | os.PathLike, thumbnail_path: str | os.PathLike
    ) -> OutputKeys:
        """Puts a finished job's MP4 (or PNG) and thumbnail into storage (thumbnail first: a job with a video has
        both). The main output's key keeps its file's suffix."""
        suffix = os.path.splitext(os.fspath(video_path))[1].lower()
        keys = OutputKeys(
            output_key(job_id, "video", suffix), output_key(job_id, "thumbnail"), os.path.getsize(video_path)
        )
        self.storage.put(keys.thumbnail_key, thumbnail_path)
        self.storage.put(keys.video_key, video_path)
        return keys

    def store_partial(self, job_id: str, path: str | os.PathLike) -> tuple[str, int]:
        """Puts the partial MP4 of an upscale that stopped early into storage: (key, bytes)."""
        key = output_key(job_id, "partial")
        self.storage.put(key, path)
        return key, os.path.getsize(path)

    def delete_inputs(self, job_id: str) -> None:
        """Removes the job's inputs (after it finished, or when it was never created). Never raises: a storage
        hiccup must not undo the job's own outcome; leftovers go at retention."""
        try:
            self.storage.delete_prefix(f"inputs/{_checked_id(job_id)}/")
        except Exception:
            logger.exception("job %s: could not delete its inputs", job_id)

    def delete_all(self, job_id: str) -> None:
        """Removes everything the job left in storage."""
        self.delete_inputs(job_id)
        for suffix in (*MEDIA_TYPES, VARIANTS["partial"][0]):
            try:
                self.storage.delete(output_key(job_id, suffix=suffix))
            except Exception:
                logger.exception("job %s: could not delete its %s output", job_id, suffix)
