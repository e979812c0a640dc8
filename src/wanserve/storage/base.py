"""The `Storage` protocol: job files by key, wherever they live.

A key is a relative, slash-separated name (`outputs/<job id>.mp4`); every process of a deployment (the API, workers
on other hosts) resolves the same key to the same bytes. Clients never see where a key lives: the API streams the
bytes (with range requests) or redirects to a presigned URL.
"""

from __future__ import annotations

import os
import re
from typing import BinaryIO, Protocol

from wanserve.errors import WanserveError

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")

FileSource = str | os.PathLike | BinaryIO
"""What `put` stores: a local file's path, or a readable binary file object."""


class StorageKeyNotFound(WanserveError, FileNotFoundError):
    """No object is stored under the key."""

    error_type = "not_found"


def check_key(key: str) -> str:
    """`key` when it is a plain relative name (no `..`, no leading `/`, no odd characters); `ValueError` otherwise."""
    if not isinstance(key, str) or len(key) > 512 or not _KEY_RE.match(key) or ".." in key.split("/"):
        raise ValueError(f"storage key {key!r} is not a plain relative name")
    return key


class Storage(Protocol):
    """Where job inputs and outputs live. Implementations are thread-safe."""

    def put(self, key: str, file: FileSource) -> None:
        """Stores the file under `key`, replacing what was there; readers see the old or the new bytes, never
        half of them."""

    def open(self, key: str) -> BinaryIO:
        """A seekable binary reader of the object (seek + read gives range reads). `StorageKeyNotFound` when absent."""

    def size(self, key: str) -> int:
        """The object's length in bytes. `StorageKeyNotFound` when absent."""

    def url(self, key: str) -> str | None:
        """A presigned download URL where the backend has one, else None."""

    def delete(self, key: str) -> None:
        """Removes the object; nothing happens when it is absent."""

    def delete_prefix(self, prefix: str) -> None:
        """Removes every object whose key starts with `prefix` (a folder: `inputs/<job id>/`)."""

    def describe(self) -> str:
        """Where the objects live, for logs (never sent to clients)."""
