"""`LocalStorage`: objects as files under local directories.

A key's first segment picks the directory (`outputs/<job id>.mp4` -> `<outputs dir>/<job id>.mp4`), so outputs can
live apart from uploaded inputs (the replaced services' `OUTPUT_DIR`). Writes go to a temporary file beside the
target and are renamed into place (`media.atomic`), so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from wanserve.media.atomic import atomic_output
from wanserve.storage.base import FileSource, StorageKeyNotFound, check_key

logger = logging.getLogger(__name__)


class LocalStorage:
    """Objects in local directories, one per top-level key segment."""

    def __init__(self, directories: Mapping[str, Path]):
        self.directories = {name: Path(path).resolve() for name, path in directories.items()}
        for path in self.directories.values():
            path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def under(cls, root: Path, *areas: str) -> LocalStorage:
        """Every area (`outputs`, `inputs`) as a sub-directory of `root`."""
        return cls({area: Path(root) / area for area in areas})

    def path(self, key: str) -> Path:
        """The file behind `key` (for this host only; never sent to a client)."""
        area, _, rest = check_key(key).partition("/")
        if area not in self.directories or not rest:
            raise ValueError(f"storage key {key!r} is not under {', '.join(sorted(self.directories))}")
        return self.directories[area] / rest

    def put(self, key: str, file: FileSource) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as tmp, open(tmp, "wb") as out:
            if isinstance(file, str | os.PathLike):
                with open(file, "rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            else:
                shutil.copyfileobj(file, out, 1 << 20)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise StorageKeyNotFound(f"no object {key!r}") from None

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise StorageKeyNotFound(f"no object {key!r}") from None

    def url(self, key: str) -> str | None:
        return None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        folder = prefix.rstrip("/")
        path = self.path(folder)
        if prefix.endswith("/"):
            shutil.rmtree(path, ignore_errors=True)
            return
        for candidate in path.parent.glob(f"{path.name}*"):
            if candidate.is_dir():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)

    def describe(self) -> str:
        return "local directories " + ", ".join(f"{k}={v}" for k, v in sorted(self.directories.items()))
