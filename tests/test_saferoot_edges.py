"""SafeRoot on real folders: symlinks, odd file types and failing calls, on both code paths.

Linux has ``dir_fd`` and ``O_NOFOLLOW``, so SafeRoot normally walks components
with descriptors. Platforms without them (Windows) take the ``lstat`` +
``realpath`` fallback; that fallback is plain portable code, so it is run here
too by switching the platform flag, and must refuse the same things.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from opendistro.errors import StorageError, UnsafePathError
from opendistro.storage import _saferoot
from opendistro.storage._saferoot import SafeRoot

TOO_LONG = "n" * 300  # longer than NAME_MAX (255) on every Linux file system


@pytest.fixture(params=["dir_fd", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    assert _saferoot._USE_DIR_FD, "these tests expect a POSIX platform with dir_fd support"
    if request.param == "fallback":
        monkeypatch.setattr(_saferoot, "_USE_DIR_FD", False)
    yield request.param


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A download folder and, beside it, an outside folder holding a precious file."""
    root = tmp_path / "dl"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    return root, outside


def read_fd(fd: int) -> bytes:
    try:
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


def test_open_file_creates_folders_and_reads_back(mode: str, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    safe = SafeRoot(root)
    fd = safe.open_file(("a", "b", "f"), write=True)
    os.pwrite(fd, b"data", 0)
    os.close(fd)
    assert (root / "a" / "b" / "f").read_bytes() == b"data"
    assert read_fd(safe.open_file(("a", "b", "f"), write=False)) == b"data"
    info = safe.stat(("a", "b", "f"))
    assert info is not None and info.st_size == 4


def test_missing_file_is_a_storage_error_when_reading(mode: str, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    safe = SafeRoot(root)
    with pytest.raises(StorageError) as caught:
        safe.open_file(("nope",), write=False)
    assert not isinstance(caught.value, UnsafePathError)
    with pytest.raises(StorageError):
        safe.open_file(("nope",), write=True, create=False)  # reopening for a flush
    assert safe.stat(("nope",)) is None
    assert safe.stat(("missing-folder", "nope")) is None
    assert not (root / "nope").exists()


def test_symlinked_leaf_and_parent_are_refused(mode: str, layout: tuple[Path, Path]) -> None:
    root, outside = layout
    (root / "leaf").symlink_to(outside / "victim")
    (root / "folder").symlink_to(outside)
    safe = SafeRoot(root)
    for write in (False, True):
        with pytest.raises(UnsafePathError):
            safe.open_file(("leaf",), write=write)
        with pytest.raises(UnsafePathError):
            safe.open_file(("folder", "victim"), write=write)
    with pytest.raises(UnsafePathError):
        safe.make_dirs(("folder", "new"))
    # stat() never reports what a link points at: the link itself (dir_fd) or nothing.
    info = safe.stat(("leaf",))
    if mode == "dir_fd":
        assert info is not None and stat.S_ISLNK(info.st_mode)
    else:
        assert info is None
    assert (outside / "victim").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_a_folder_or_fifo_is_not_a_regular_file(mode: str, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "folder").mkdir()
    os.mkfifo(root / "fifo")
    safe = SafeRoot(root)
    for name in ("folder", "fifo"):
        with pytest.raises(StorageError, match="not a regular file"):
            safe.open_file((name,), write=False)


def test_a_file_where_a_folder_is_expected_is_a_storage_error(
    mode: str, layout: tuple[Path, Path]
) -> None:
    root, _ = layout
    (root / "plain").write_bytes(b"x")
    safe = SafeRoot(root)
    for write in (False, True):
        with pytest.raises(StorageError) as caught:
            safe.open_file(("plain", "child"), write=write)
        assert not isinstance(caught.value, UnsafePathError)
    with pytest.raises(StorageError):
        safe.make_dirs(("plain",))
    assert safe.stat(("plain", "child")) is None
    assert (root / "plain").read_bytes() == b"x"


def test_an_overlong_folder_name_is_a_storage_error(mode: str, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    safe = SafeRoot(root)
    with pytest.raises(StorageError, match="cannot create"):
        safe.make_dirs((TOO_LONG, "x"))
    with pytest.raises(StorageError):
        safe.open_file((TOO_LONG, "x"), write=True)
    assert list(root.iterdir()) == []


def test_replace_all_moves_files_into_new_folders(mode: str, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    safe = SafeRoot(root)
    for name in ("one", "two"):
        os.close(safe.open_file(("stage", name), write=True))
        (root / "stage" / name).write_bytes(name.encode())
    (root / "final").mkdir()
    (root / "final" / "two").write_bytes(b"old")
    safe.replace_all(
        [(("stage", "one"), ("final", "sub", "one")), (("stage", "two"), ("final", "two"))]
    )
    safe.sync_root()
    assert (root / "final" / "sub" / "one").read_bytes() == b"one"
    assert (root / "final" / "two").read_bytes() == b"two"
    assert list((root / "stage").iterdir()) == []


def test_replace_all_never_writes_through_a_symlinked_target(
    mode: str, layout: tuple[Path, Path]
) -> None:
    root, outside = layout
    safe = SafeRoot(root)
    os.close(safe.open_file(("stage", "f"), write=True))
    (root / "stage" / "f").write_bytes(b"new")
    (root / "f").symlink_to(outside / "victim")
    if mode == "dir_fd":
        # rename() over a symlink replaces the link itself.
        safe.replace_all([(("stage", "f"), ("f",))])
        assert not (root / "f").is_symlink()
        assert (root / "f").read_bytes() == b"new"
    else:
        # The fallback cannot rename atomically relative to a checked folder: it refuses.
        with pytest.raises(UnsafePathError):
            safe.replace_all([(("stage", "f"), ("f",))])
        assert (root / "f").is_symlink()
    assert (outside / "victim").read_bytes() == b"precious"


def test_replace_all_refuses_a_symlinked_target_folder(
    mode: str, layout: tuple[Path, Path]
) -> None:
    root, outside = layout
    safe = SafeRoot(root)
    os.close(safe.open_file(("stage", "f"), write=True))
    (root / "final").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        safe.replace_all([(("stage", "f"), ("final", "f"))])
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (root / "stage" / "f").exists()


def test_replace_all_onto_a_folder_is_a_storage_error(
    mode: str, layout: tuple[Path, Path]
) -> None:
    root, _ = layout
    safe = SafeRoot(root)
    os.close(safe.open_file(("stage", "f"), write=True))
    (root / "final" / "f").mkdir(parents=True)
    (root / "stage" / "d").mkdir()
    (root / "final" / "g").write_bytes(b"g")
    with pytest.raises(StorageError):
        safe.replace_all([(("stage", "f"), ("final", "f"))])  # a file onto a folder
    with pytest.raises(StorageError) as caught:
        safe.replace_all([(("stage", "d"), ("final", "g"))])  # a folder onto a file
    assert not isinstance(caught.value, UnsafePathError)
    assert (root / "stage" / "f").is_file()
    assert (root / "final" / "g").read_bytes() == b"g"


def test_remove_tree(mode: str, layout: tuple[Path, Path]) -> None:
    root, outside = layout
    safe = SafeRoot(root)
    os.close(safe.open_file(("gone", "deep", "f"), write=True))
    (root / "gone" / "link").symlink_to(outside)
    safe.remove_tree("gone")
    assert not (root / "gone").exists()
    safe.remove_tree("gone")  # already absent: nothing to do
    (root / "plain").write_bytes(b"x")
    with pytest.raises(StorageError):
        safe.remove_tree("plain")  # not a folder
    assert (root / "plain").read_bytes() == b"x"
    assert (outside / "victim").read_bytes() == b"precious"


def test_remove_tree_never_deletes_through_a_symlink(
    mode: str, layout: tuple[Path, Path]
) -> None:
    root, outside = layout
    (root / "staging").symlink_to(outside)
    with pytest.raises(StorageError):
        SafeRoot(root).remove_tree("staging")
    assert (outside / "victim").read_bytes() == b"precious"


def test_fallback_refuses_components_that_resolve_outside(
    monkeypatch: pytest.MonkeyPatch, layout: tuple[Path, Path]
) -> None:
    # Callers validate components (no ".."), but the fallback also checks the resolved path.
    monkeypatch.setattr(_saferoot, "_USE_DIR_FD", False)
    root, outside = layout
    with pytest.raises(UnsafePathError, match="outside"):
        SafeRoot(root).open_file(("..", "outside", "victim"), write=True)
    assert (outside / "victim").read_bytes() == b"precious"


def test_missing_download_folder_is_a_storage_error(tmp_path: Path) -> None:
    safe = SafeRoot(tmp_path / "absent")
    with pytest.raises(StorageError, match="download folder"):
        safe.open_file(("f",), write=False)
    safe.make_dirs(())  # creating the root itself is allowed
    assert (tmp_path / "absent").is_dir()
