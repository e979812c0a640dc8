"""Path confinement under a root directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanserve.errors import InvalidRequestError
from wanserve.media.paths import confine_existing_dir, confine_existing_file, confine_path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs"
    (jobs / "job1").mkdir(parents=True)
    (jobs / "job1" / "src_ref.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("secret")
    return jobs


def test_confine_relative_inside(root: Path) -> None:
    assert confine_path("job1/src_ref.png", root, "src_root_path") == (root / "job1" / "src_ref.png").resolve()


def test_confine_absolute_inside(root: Path) -> None:
    assert confine_path(str(root / "job1"), root, "src_root_path") == (root / "job1").resolve()


def test_confine_root_itself_allowed(root: Path) -> None:
    assert confine_path(".", root, "src_root_path") == root.resolve()


@pytest.mark.parametrize("value", ["../secret.txt", "job1/../../secret.txt", "job1/../job1"])
def test_confine_refuses_dotdot(root: Path, value: str) -> None:
    with pytest.raises(InvalidRequestError, match="`src_root_path` must not contain `..`") as info:
        confine_path(value, root, "src_root_path")
    assert info.value.field == "src_root_path"


def test_confine_refuses_absolute_outside(root: Path) -> None:
    with pytest.raises(InvalidRequestError, match="`src_root_path` must be inside the allowed directory, got '/etc'"):
        confine_path("/etc", root, "src_root_path")


def test_confine_refuses_sibling_with_common_prefix(root: Path) -> None:
    sibling = root.parent / "jobs-other"
    sibling.mkdir()
    with pytest.raises(InvalidRequestError, match="inside the allowed directory"):
        confine_path(str(sibling), root, "src_root_path")


def test_confine_refuses_nul(root: Path) -> None:
    with pytest.raises(InvalidRequestError, match="`src_root_path` must not contain NUL"):
        confine_path("job1\x00/x", root, "src_root_path")


def test_confine_refuses_empty(root: Path) -> None:
    with pytest.raises(InvalidRequestError, match="`src_root_path` must not be empty"):
        confine_path("  ", root, "src_root_path")


def test_confine_refuses_symlink_escaping(root: Path) -> None:
    (root / "job1" / "escape").symlink_to(root.parent / "secret.txt")
    (root / "linkdir").symlink_to(root.parent)
    for value in ("job1/escape", "linkdir/secret.txt", "linkdir"):
        with pytest.raises(InvalidRequestError, match="inside the allowed directory"):
            confine_path(value, root, "src_root_path")


def test_confine_follows_symlink_inside(root: Path) -> None:
    (root / "alias").symlink_to(root / "job1")
    assert confine_path("alias/src_ref.png", root, "f") == (root / "job1" / "src_ref.png").resolve()


def test_confine_root_given_through_symlink(tmp_path: Path, root: Path) -> None:
    link_root = tmp_path / "root-link"
    link_root.symlink_to(root)
    assert confine_path(str(root / "job1"), link_root, "f") == (root / "job1").resolve()


def test_confine_existing_file_and_dir(root: Path) -> None:
    assert confine_existing_file("job1/src_ref.png", root, "image").name == "src_ref.png"
    assert confine_existing_dir("job1", root, "src_root_path").name == "job1"
    with pytest.raises(InvalidRequestError, match="`image` is not an existing file: 'job1'"):
        confine_existing_file("job1", root, "image")
    with pytest.raises(InvalidRequestError, match="`src_root_path` is not an existing directory: 'nope'"):
        confine_existing_dir("nope", root, "src_root_path")
