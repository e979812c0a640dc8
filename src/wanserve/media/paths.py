"""Keeping user-supplied file paths inside a configured root directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from wanserve.errors import InvalidRequestError

logger = logging.getLogger(__name__)

MAX_PATH_CHARS = 4096


def confine_path(
    path: str | os.PathLike[str], root: str | os.PathLike[str], field: str, base: str | os.PathLike[str] | None = None
) -> Path:
    """The real path of `path` (relative to `base`, default `root`; or absolute) after checking it stays inside
    `root`.

    Refuses NUL characters, any `..` component, and anything whose real path (symlinks resolved) is outside the
    real path of `root`. Raises `InvalidRequestError` naming `field` and the value. The path need not exist.
    """
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InvalidRequestError(field, f"`{field}` must be a string path, got {type(text).__name__}")
    shown = text[:200]
    if not text.strip():
        raise InvalidRequestError(field, f"`{field}` must not be empty")
    if "\x00" in text:
        raise InvalidRequestError(field, f"`{field}` must not contain NUL characters, got {shown!r}")
    if len(text) > MAX_PATH_CHARS:
        raise InvalidRequestError(field, f"`{field}` must be at most {MAX_PATH_CHARS} characters, got {len(text)}")
    candidate = Path(text)
    if ".." in candidate.parts:
        raise InvalidRequestError(field, f"`{field}` must not contain `..`, got {shown!r}")
    real_root = Path(root).resolve()
    joined = candidate if candidate.is_absolute() else (Path(base).resolve() if base else real_root) / candidate
    real = joined.resolve()  # follows every symlink that exists, so a link pointing outside is caught below
    if real != real_root and not real.is_relative_to(real_root):
        logger.info("refused %s=%r: resolves to %s, outside %s", field, shown, real, real_root)
        raise InvalidRequestError(field, f"`{field}` must be inside the allowed directory, got {shown!r}")
    return real


def confine_existing_file(path: str | os.PathLike[str], root: str | os.PathLike[str], field: str) -> Path:
    """`confine_path`, and the result must be an existing regular file."""
    real = confine_path(path, root, field)
    if not real.is_file():
        raise InvalidRequestError(field, f"`{field}` is not an existing file: {os.fspath(path)!r}")
    return real


def confine_existing_dir(
    path: str | os.PathLike[str], root: str | os.PathLike[str], field: str, base: str | os.PathLike[str] | None = None
) -> Path:
    """`confine_path`, and the result must be an existing directory."""
    real = confine_path(path, root, field, base)
    if not real.is_dir():
        raise InvalidRequestError(field, f"`{field}` is not an existing directory: {os.fspath(path)!r}")
    return real
