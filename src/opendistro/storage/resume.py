"""Resume state in SQLite: which pieces we already have, and proof the files are unchanged.

Re-hashing a large release on every start costs minutes, so we remember the
have-bitfield together with each file's ``(size, mtime_ns)``. The bitfield is
handed back only if every file still looks exactly as it did when we saved;
anything else (a file edited, truncated, replaced, or a different torrent
shape) returns ``None`` and the caller re-hashes. Resume data is therefore a
cache that can only save work, never make us trust bad data.

That also decides what happens to a damaged database: it is **treated as
empty**. A file that is not a readable SQLite database is renamed aside to
``<db>.corrupt`` and a fresh one is created; a read that fails later returns
``None``. Only a failing *write* raises :class:`StorageError`, because the
caller must know its progress was not recorded.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import StorageError

__all__ = ["ResumeStore"]

_SCHEMA_VERSION = 1
_STAT = struct.Struct(">qq")


def _pack_stats(file_stats: Sequence[tuple[int, int]]) -> bytes:
    try:
        return b"".join(_STAT.pack(size, mtime) for size, mtime in file_stats)
    except (struct.error, TypeError, ValueError) as exc:
        raise StorageError(f"file stats must be pairs of 64-bit integers: {exc}") from exc


def _check_bitfield(have: bytes, num_pieces: int) -> None:
    if num_pieces < 0:
        raise StorageError(f"num_pieces must not be negative, got {num_pieces}")
    expected = (num_pieces + 7) // 8
    if len(have) != expected:
        raise StorageError(f"bitfield has {len(have)} bytes, {num_pieces} pieces need {expected}")


class ResumeStore:
    """One SQLite file holding a row of resume state per torrent (keyed by info-hash).

    Safe to call from several threads: one connection, guarded by a lock.
    """

    def __init__(self, db_path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        """Open (creating if needed) the database; wait up to ``busy_timeout`` s for locks."""
        self.path = Path(db_path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.OperationalError as exc:
            # Locked, unreadable or unopenable: the file may be fine, so leave it alone.
            raise StorageError(f"cannot open resume database {self.path}: {exc}") from exc
        except sqlite3.DatabaseError:
            self._set_aside_corrupt_file()
            try:
                self._db = self._open()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open resume database {self.path}: {exc}") from exc
        except sqlite3.Error as exc:  # pragma: no cover - InterfaceError: _open binds nothing
            raise StorageError(f"cannot open resume database {self.path}: {exc}") from exc

    def save(
        self,
        info_hash: bytes,
        have: bytes,
        num_pieces: int,
        file_stats: Sequence[tuple[int, int]],
    ) -> None:
        """Record ``have`` for ``info_hash`` in one transaction.

        Call only after the data those bits describe has been flushed to disk,
        and pass the file stats taken *after* that flush.
        """
        _check_bitfield(have, num_pieces)
        stats = _pack_stats(file_stats)
        with self._lock:
            try:
                with self._db:
                    self._db.execute(
                        "INSERT INTO resume (info_hash, num_pieces, have, file_stats)"
                        " VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (info_hash) DO UPDATE SET"
                        " num_pieces = excluded.num_pieces, have = excluded.have,"
                        " file_stats = excluded.file_stats",
                        (bytes(info_hash), num_pieces, bytes(have), stats),
                    )
            except sqlite3.Error as exc:
                raise StorageError(f"cannot save resume state to {self.path}: {exc}") from exc

    def load(
        self, info_hash: bytes, num_pieces: int, file_stats: Sequence[tuple[int, int]]
    ) -> bytes | None:
        """The saved bitfield, or ``None`` if absent or if anything no longer matches."""
        try:
            stats = _pack_stats(file_stats)
        except StorageError:
            return None
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT num_pieces, have, file_stats FROM resume WHERE info_hash = ?",
                    (bytes(info_hash),),
                ).fetchone()
            except sqlite3.Error:
                return None
        if row is None:
            return None
        saved_pieces, have, saved_stats = row
        if saved_pieces != num_pieces or saved_stats != stats:
            return None
        if not isinstance(have, bytes) or len(have) != (num_pieces + 7) // 8:
            return None
        return have

    def forget(self, info_hash: bytes) -> None:
        """Delete the saved state of one torrent (after removing it, or to force a re-check)."""
        with self._lock:
            try:
                with self._db:
                    self._db.execute("DELETE FROM resume WHERE info_hash = ?", (bytes(info_hash),))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot update resume database {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResumeStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self._busy_timeout, check_same_thread=False)
        try:
            db.execute("PRAGMA synchronous = FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unknown resume schema version {version}")
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS resume ("
                    " info_hash BLOB PRIMARY KEY,"
                    " num_pieces INTEGER NOT NULL,"
                    " have BLOB NOT NULL,"
                    " file_stats BLOB NOT NULL)"
                )
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside_corrupt_file(self) -> None:
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
            for suffix in ("-journal", "-wal", "-shm"):
                stale = self.path.with_name(self.path.name + suffix)
                if stale.exists():
                    stale.unlink()
        except OSError as exc:
            raise StorageError(f"cannot move corrupt resume database aside: {exc}") from exc
