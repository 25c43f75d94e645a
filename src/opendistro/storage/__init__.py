"""Release data on disk: where pieces live among files, how they are read and written,
and what we remember between runs.

``layout`` is pure arithmetic shared with the simulator; ``files`` and
``check`` do blocking I/O meant to run in worker threads; ``resume`` keeps the
have-bitfield in SQLite so restarts need not re-hash everything.
"""

from __future__ import annotations

from .check import check_pieces
from .files import FileStorage, StorageMode, stored_file_paths
from .layout import Extent, FileEntryLike, PieceLayout
from .resume import ResumeStore

__all__ = [
    "Extent",
    "FileEntryLike",
    "FileStorage",
    "PieceLayout",
    "ResumeStore",
    "StorageMode",
    "check_pieces",
    "stored_file_paths",
]
