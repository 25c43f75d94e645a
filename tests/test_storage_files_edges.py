"""FileStorage edge cases: bad arguments, a full disk, tampered staging files, descriptor reuse."""

from __future__ import annotations

import os
import random
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from opendistro.errors import StorageError, UnsafePathError
from opendistro.storage import FileStorage

from .test_storage_files import (
    MULTI,
    PIECE,
    content_for,
    make_entries,
    piece_space,
    storage,
    write_everything,
)


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Make the kernel refuse (EFBIG) to grow any file past ``limit`` bytes, like a full quota."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_bad_arguments_are_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="mode"):
        storage(tmp_path, mode="upload")
    with pytest.raises(StorageError, match="max_open_files"):
        storage(tmp_path, max_open_files=0)
    two = make_entries([(("a",), 3, False), (("b",), 3, False)])
    with pytest.raises(StorageError, match="exactly one stored file"):
        storage(tmp_path, files=two, name="a", is_multi_file=False)
    assert list(tmp_path.iterdir()) == []


def test_data_path_follows_the_data(tmp_path: Path) -> None:
    store = storage(tmp_path)
    assert store.data_path == tmp_path / ".rel.opendistro"
    write_everything(store, piece_space(MULTI, content_for(MULTI)))
    store.finalize()
    assert store.data_path == tmp_path / "rel"
    with pytest.raises(StorageError, match="download in progress"):
        store.finalize()
    store.close()


def test_preallocating_a_single_file_seed_creates_no_staging_folder(tmp_path: Path) -> None:
    files = make_entries([(("movie.iso",), 50, False)])
    (tmp_path / "movie.iso").write_bytes(b"x" * 80)  # too long: cut to the torrent's size
    with storage(tmp_path, mode="seed", files=files, name="movie.iso", is_multi_file=False) as s:
        s.preallocate()
        assert s.data_path == tmp_path / "movie.iso"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movie.iso"]
    assert (tmp_path / "movie.iso").read_bytes() == b"x" * 50


def test_a_full_disk_is_a_storage_error_not_a_crash(tmp_path: Path) -> None:
    files = make_entries([(("big.bin",), 4 * PIECE, False)])
    store = storage(tmp_path, files=files, name="big.bin", is_multi_file=False)
    with file_size_limit(2 * PIECE):
        with pytest.raises(StorageError, match="cannot preallocate"):
            store.preallocate()
        store.write_block(0, 0, b"a" * PIECE)  # below the limit: fine
        with pytest.raises(StorageError, match="cannot write"):
            store.write_block(3, 0, b"d" * PIECE)
    assert store.read_block(0, 0, PIECE) == b"a" * PIECE
    store.close()


def test_flush_reopens_and_syncs_an_evicted_file_without_leaking(tmp_path: Path) -> None:
    content = content_for(MULTI)
    store = storage(tmp_path, max_open_files=1)
    store.preallocate()
    store.write_block(0, 0, content[0][:PIECE])  # a.bin
    store.write_block(7, 0, content[5])  # d.bin evicts a.bin, unsynced
    store.close()
    before = open_descriptors()
    store.flush()
    assert open_descriptors() == before  # a.bin was reopened for the fsync and closed again
    assert (store.staging_path / "a.bin").read_bytes()[:PIECE] == content[0][:PIECE]


def test_finalize_refuses_a_staged_file_hard_linked_after_writing(tmp_path: Path) -> None:
    files = make_entries([(("movie.iso",), 50, False)])
    data = random.Random(9).randbytes(50)
    store = storage(tmp_path, files=files, name="movie.iso", is_multi_file=False)
    write_everything(store, data)
    store.close()
    os.link(store.staging_path / "movie.iso", tmp_path / "other-name")
    with pytest.raises(UnsafePathError, match="hard links"):
        store.finalize()
    assert not (tmp_path / "movie.iso").exists()
    assert store.mode == "download"


def test_finalize_cuts_a_staged_file_that_grew(tmp_path: Path) -> None:
    files = make_entries([(("movie.iso",), 50, False)])
    data = random.Random(10).randbytes(50)
    store = storage(tmp_path, files=files, name="movie.iso", is_multi_file=False)
    write_everything(store, data)
    store.close()
    with open(store.staging_path / "movie.iso", "ab") as staged:
        staged.write(b"junk appended by someone else")
    store.finalize()
    assert (tmp_path / "movie.iso").read_bytes() == data
    store.close()


def test_file_storage_is_a_context_manager(tmp_path: Path) -> None:
    before = open_descriptors()
    with FileStorage(
        download_dir=tmp_path,
        name="x.bin",
        files=make_entries([(("x.bin",), 5, False)]),
        piece_length=PIECE,
        total_length=5,
        is_multi_file=False,
        mode="download",
    ) as store:
        store.write_block(0, 0, b"hello")
        assert open_descriptors() == before + 1
    assert open_descriptors() == before
