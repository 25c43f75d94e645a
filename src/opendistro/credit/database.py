"""One SQLite connection shared by worker threads, one transaction at a time.

The credit ledger and the tracker's credit store are written from trio's
worker threads (SQLite calls block). A single connection opened with
``check_same_thread=False`` behind a lock keeps their transactions whole, and
every SQLite failure surfaces as a :class:`~opendistro.errors.StorageError`
that names the file, so callers handle one error type.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StorageError

__all__ = ["LockedConnection"]


class LockedConnection:
    """``connection`` behind a lock; ``what`` names the file in error messages."""

    def __init__(self, connection: sqlite3.Connection, what: str) -> None:
        self.what = what
        self._connection = connection
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one transaction: committed on success, rolled back on error."""
        with self._lock:
            try:
                with self._connection:
                    yield self._connection
            except sqlite3.Error as exc:
                raise StorageError(f"{self.what}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._connection.close()
