"""Hash-check data already on disk, one piece at a time.

Used when resume state is missing or stale, and when seeding a release from
files the user points us at. Reading strictly one piece at a time keeps memory
flat however large the release; a missing or short file is not an error here,
it just means the pieces it holds are not verified yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import StorageError
from .files import FileStorage

__all__ = ["check_pieces"]


def check_pieces(
    storage: FileStorage,
    verify: Callable[[int, bytes], bool],
    pieces: Iterable[int] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> set[int]:
    """Return the indices among ``pieces`` (default: all) whose data passes ``verify``.

    ``progress(done, total)`` is called after each piece so a UI can show a bar.
    """
    indices = list(range(storage.num_pieces) if pieces is None else pieces)
    good: set[int] = set()
    for done, index in enumerate(indices, start=1):
        try:
            data = storage.read_piece(index)
        except StorageError:
            data = None
        if data is not None and verify(index, data):
            good.add(index)
        del data
        if progress is not None:
            progress(done, len(indices))
    return good
