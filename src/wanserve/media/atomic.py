"""Atomic output files: written under a temporary name beside the target, renamed into place when complete."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


@functools.cache
def process_umask() -> int:
    """This process's umask, read without changing it (Linux `/proc`), else by setting and restoring it once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        # mkstemp makes the file 0600; an output is published like any file the process creates (0666 less the
        # umask: group- and world-readable under the usual 022), so a web server or another user can serve it.
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        logger.debug("discarded incomplete output %s", target)
        raise
