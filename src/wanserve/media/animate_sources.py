"""The files of a Wan2.2-Animate job directory (what the official preprocessing writes), as wanserve inputs.

Shared by `POST /animate/jobs` (which also confines the directory and sniffs each file) and
`wanserve generate --src-root DIR`.
"""

from __future__ import annotations

from pathlib import Path

from wanserve.errors import InvalidRequestError

SOURCE_FILES = {
    "src_ref.png": ("image", "image"),
    "src_pose.mp4": ("pose_video", "video"),
    "src_face.mp4": ("face_video", "video"),
    "src_bg.mp4": ("background_video", "video"),
    "src_mask.mp4": ("mask", "video"),
}
"""file name -> (wanserve input, kind)"""
REQUIRED = ("src_ref.png", "src_pose.mp4", "src_face.mp4")
REPLACE_REQUIRED = ("src_bg.mp4", "src_mask.mp4")


def wanted_files(replace: bool) -> tuple[str, ...]:
    """The files a job needs: the reference and the pose and face videos, and for replace mode the background and
    mask videos."""
    return REQUIRED + (REPLACE_REQUIRED if replace else ())


def check_present(directory: Path, replace: bool, field: str, shown: str) -> None:
    """Raises `InvalidRequestError` naming `field` when `directory` lacks a file the mode needs."""
    missing = [name for name in wanted_files(replace) if not (directory / name).is_file()]
    if missing:
        raise InvalidRequestError(field, f"`{field}` {shown!r} lacks {', '.join(missing)}")


def source_paths(directory: str | Path, replace: bool, field: str = "src_root") -> dict[str, str]:
    """wanserve inputs (`image`, `pose_video`, ...) -> the paths of a local job directory's files."""
    path = Path(directory)
    if not path.is_dir():
        raise InvalidRequestError(field, f"`{field}` {str(directory)!r} is not an existing directory")
    check_present(path, replace, field, str(directory))
    return {SOURCE_FILES[name][0]: str(path / name) for name in wanted_files(replace)}
