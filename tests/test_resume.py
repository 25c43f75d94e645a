"""ResumeStore: resume state survives restarts only while the files are untouched."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from opendistro.errors import StorageError
from opendistro.storage import FileStorage, ResumeStore

HASH = bytes(range(20))
OTHER = bytes(range(1, 21))


@dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]
    length: int
    offset: int
    is_padding: bool = False


def seeded_storage(root: Path) -> FileStorage:
    (root / "rel").mkdir()
    (root / "rel" / "a").write_bytes(b"a" * 20)
    (root / "rel" / "b").write_bytes(b"b" * 30)
    return FileStorage(
        download_dir=root,
        name="rel",
        files=[Entry(("a",), 20, 0), Entry(("b",), 30, 20)],
        piece_length=8,
        total_length=50,
        is_multi_file=True,
        mode="seed",
    )


def test_round_trip_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "resume.sqlite"
    stats = [(20, 111), (30, 222)]
    with ResumeStore(db) as store:
        store.save(HASH, b"\xff\xc0", 10, stats)
        store.save(OTHER, b"\x80", 1, [(1, 1)])
        store.save(HASH, b"\xff\x80", 10, stats)  # later save wins
    with ResumeStore(db) as store:
        assert store.load(HASH, 10, stats) == b"\xff\x80"
        assert store.load(OTHER, 1, [(1, 1)]) == b"\x80"
        assert store.load(bytes(20), 10, stats) is None
        store.forget(HASH)
    with ResumeStore(db) as store:
        assert store.load(HASH, 10, stats) is None
        assert store.load(OTHER, 1, [(1, 1)]) == b"\x80"


def test_shape_changes_invalidate(tmp_path: Path) -> None:
    with ResumeStore(tmp_path / "r.db") as store:
        store.save(HASH, b"\xff\xc0", 10, [(20, 111), (30, 222)])
        assert store.load(HASH, 11, [(20, 111), (30, 222)]) is None
        assert store.load(HASH, 10, [(20, 111)]) is None
        assert store.load(HASH, 10, [(20, 111), (30, 222), (0, 0)]) is None
        assert store.load(HASH, 10, [(20, 111), (30, 222)]) == b"\xff\xc0"


def test_touched_file_invalidates(tmp_path: Path) -> None:
    storage = seeded_storage(tmp_path)
    have = b"\xfe"  # 7 pieces
    with ResumeStore(tmp_path / "r.db") as store:
        store.save(HASH, have, 7, storage.file_stats())
        assert store.load(HASH, 7, storage.file_stats()) == have

        b_file = tmp_path / "rel" / "b"
        info = b_file.stat()
        os.utime(b_file, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
        assert store.load(HASH, 7, storage.file_stats()) is None

        store.save(HASH, have, 7, storage.file_stats())
        assert store.load(HASH, 7, storage.file_stats()) == have
        with b_file.open("ab") as handle:  # size change, mtime forced back
            handle.write(b"!")
        os.utime(b_file, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
        assert store.load(HASH, 7, storage.file_stats()) is None

        b_file.unlink()
        assert store.load(HASH, 7, storage.file_stats()) is None
    storage.close()


def test_bad_arguments_raise_storage_error(tmp_path: Path) -> None:
    with ResumeStore(tmp_path / "r.db") as store:
        with pytest.raises(StorageError):
            store.save(HASH, b"\xff", 10, [])  # 10 pieces need 2 bytes
        with pytest.raises(StorageError):
            store.save(HASH, b"", -1, [])
        with pytest.raises(StorageError):
            store.save(HASH, b"\xff", 8, [(2**64, 0)])
        assert store.load(HASH, 8, [(2**64, 0)]) is None


def test_corrupt_database_is_treated_as_empty(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    db.write_bytes(b"this is not sqlite" * 300)
    with ResumeStore(db) as store:
        assert store.load(HASH, 8, []) is None
        store.save(HASH, b"\x01", 8, [])
        assert store.load(HASH, 8, []) == b"\x01"
    assert (tmp_path / "r.db.corrupt").read_bytes() == b"this is not sqlite" * 300
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT count(*) FROM resume").fetchone() == (1,)


def test_unknown_schema_version_is_set_aside(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with sqlite3.connect(db) as future:
        future.execute("PRAGMA user_version = 99")
    future.close()
    with ResumeStore(db) as store:
        assert store.load(HASH, 8, []) is None
    assert (tmp_path / "r.db.corrupt").exists()


def test_unwritable_location_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        ResumeStore(tmp_path / "missing-folder" / "r.db")


def test_locked_database_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResumeStore(db) as store:
        store.save(HASH, b"\x01", 8, [])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError):
            store = ResumeStore(db, busy_timeout=0.05)
            store.save(HASH, b"\x02", 8, [])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not (tmp_path / "r.db.corrupt").exists()
    with ResumeStore(db) as store:
        assert store.load(HASH, 8, []) == b"\x01"


def test_calls_while_another_process_holds_the_lock_fail_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResumeStore(db, busy_timeout=0.05) as store:
        store.save(HASH, b"\x01", 8, [])
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StorageError, match="cannot save"):
                store.save(HASH, b"\x02", 8, [])
            with pytest.raises(StorageError, match="cannot update"):
                store.forget(HASH)
            assert store.load(HASH, 8, []) is None  # unreadable now: resume is not trusted
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.load(HASH, 8, []) == b"\x01"


def test_a_tampered_bitfield_is_not_trusted(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResumeStore(db) as store:
        store.save(HASH, b"\x01", 8, [])
        store.save(OTHER, b"\x01", 8, [])
    with sqlite3.connect(db) as tamper:
        tamper.execute("UPDATE resume SET have = ? WHERE info_hash = ?", (b"\x01\x02", HASH))
        tamper.execute("UPDATE resume SET have = 'text' WHERE info_hash = ?", (OTHER,))
    tamper.close()
    with ResumeStore(db) as store:
        assert store.load(HASH, 8, []) is None
        assert store.load(OTHER, 8, []) is None


def test_a_database_failing_its_integrity_check_is_set_aside(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResumeStore(db) as store:
        store.save(HASH, b"\x01", 8, [])
    raw = bytearray(db.read_bytes())
    raw[36:40] = (5).to_bytes(4, "big")  # header claims 5 free pages: quick_check disagrees
    db.write_bytes(bytes(raw))
    with ResumeStore(db) as store:
        assert store.load(HASH, 8, []) is None
        store.save(HASH, b"\x02", 8, [])
        assert store.load(HASH, 8, []) == b"\x02"
    assert (tmp_path / "r.db.corrupt").exists()


def test_a_corrupt_database_that_cannot_be_set_aside_raises(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    db.write_bytes(b"this is not sqlite" * 300)
    (tmp_path / "r.db-shm").mkdir()  # a stale side file that cannot simply be unlinked
    with pytest.raises(StorageError, match="aside"):
        ResumeStore(db)
    assert (tmp_path / "r.db.corrupt").read_bytes() == b"this is not sqlite" * 300


def test_a_corrupt_database_on_a_full_disk_raises(tmp_path: Path) -> None:
    from .test_storage_files_edges import file_size_limit

    db = tmp_path / "r.db"
    db.write_bytes(b"this is not sqlite" * 300)
    with file_size_limit(0), pytest.raises(StorageError, match="cannot open"):
        ResumeStore(db)  # set aside, but the fresh database cannot be written
    assert (tmp_path / "r.db.corrupt").exists()
