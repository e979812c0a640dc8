"""Atomic output files: written under a temporary name beside the target, renamed into place when complete."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path in `path`'s directory; renames it to `path` when the block finishes.

    If the block raises (an encoder error, a cancellation, KeyboardInterrupt), the temporary file is removed
    and nothing appears at `path`; an older file already at `path` is left as it was. The rename is atomic
    within one filesystem (same directory), so a reader sees either no file or the complete one.
    `suffix` is kept on the temporary name for tools that pick a format from the extension.
    """
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory {str(directory)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        logger.debug("discarded incomplete output %s", target)
        raise
