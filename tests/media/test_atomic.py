"""Atomic output files: complete or absent, and published with the process's usual file mode."""

from __future__ import annotations

import os
import stat

import pytest

from wanserve.media.atomic import atomic_output, process_umask


def test_atomic_output_file_mode_follows_umask_not_0600(tmp_path):
    target = tmp_path / "out.mp4"
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"data")
        assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o600  # mkstemp's private mode while being written
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~process_umask()
    assert process_umask() & 0o040 or mode & 0o040  # group-readable unless the umask itself forbids it


def test_atomic_output_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        open(tmp, "wb").close()
        raise RuntimeError("encoder failed")
    assert list(tmp_path.iterdir()) == []
