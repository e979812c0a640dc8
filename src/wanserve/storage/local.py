"""`LocalStorage`: job outputs and inputs in local directories.

Layout: `<output_dir>/<job id>.mp4` and `<job id>.jpg` beside it (the engine writes both); inputs under
`<input_dir>/<job id>/<field>[-<i>]`. Job ids are checked to be UUIDs before they become paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)


def _checked_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"job id {job_id!r} is not a UUID") from None


class LocalStorage:
    """Job files on the local file system."""

    def __init__(self, output_dir: Path, input_dir: Path):
        self.output_dir = Path(output_dir)
        self.input_dir = Path(input_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.input_dir.mkdir(parents=True, exist_ok=True)

    def video_path(self, job_id: str) -> Path:
        """Where the job's MP4 goes (the engine writes it there atomically)."""
        return self.output_dir / f"{_checked_id(job_id)}.mp4"

    def thumbnail_path(self, job_id: str) -> Path:
        """The JPEG thumbnail beside the MP4."""
        return self.video_path(job_id).with_suffix(".jpg")

    def save_input(self, job_id: str, name: str, data: bytes) -> Path:
        """Writes one input file atomically and returns its path."""
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"input name {name!r} is not a plain name")
        folder = self.input_dir / _checked_id(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def delete_inputs(self, job_id: str) -> None:
        """Removes the job's input files (after it finished, or when it was never created)."""
        shutil.rmtree(self.input_dir / _checked_id(job_id), ignore_errors=True)

    def delete_outputs(self, job_id: str) -> None:
        """Removes the job's MP4 and thumbnail."""
        for path in (self.video_path(job_id), self.thumbnail_path(job_id)):
            path.unlink(missing_ok=True)

    def delete_all(self, job_id: str) -> None:
        """Removes everything the job left on disk."""
        self.delete_inputs(job_id)
        self.delete_outputs(job_id)
