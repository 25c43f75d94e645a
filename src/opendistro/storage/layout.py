"""Pure arithmetic that maps the torrent's piece space onto its files.

A torrent treats all of its files as one long byte string cut into pieces; the
disk holds separate files. Every read, write and hash check has to translate a
``(piece, begin, length)`` range into the pieces of files it touches. Keeping
that translation pure (no I/O) lets the simulator, the file backend and the
tests share one implementation, and lets hypothesis check it exhaustively.

Padding files (BEP 47 ``.pad`` files and virtual alignment gaps) occupy piece
space but are never stored, so they never appear in an :class:`Extent`; callers
read them as zeros and drop writes to them. Lookups use :mod:`bisect` over the
stored files' start offsets so a torrent with 100 000 files costs
``O(log n + k)`` per block, never a linear scan.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import StorageError

__all__ = ["Extent", "FileEntryLike", "PieceLayout"]


class FileEntryLike(Protocol):
    """What storage needs to know about one file of a torrent.

    Declared as a protocol so storage does not depend on how metainfo parses
    .torrent files: any object with these read-only attributes will do.
    """

    @property
    def path(self) -> tuple[str, ...]:
        """Components relative to the torrent root; ``(name,)`` for a single file."""
        ...

    @property
    def length(self) -> int:
        """Size of the file in bytes."""
        ...

    @property
    def offset(self) -> int:
        """Offset of the file's first byte in the piece space."""
        ...

    @property
    def is_padding(self) -> bool:
        """True for pad files and alignment gaps, which are never stored."""
        ...


@dataclass(frozen=True, slots=True)
class Extent:
    """One contiguous run of bytes inside one stored file.

    ``piece_offset`` is relative to the start of the *requested* range, so a
    caller can slice its block buffer with ``buf[e.piece_offset:e.piece_offset + e.length]``.
    """

    file_index: int
    file_offset: int
    length: int
    piece_offset: int


class PieceLayout:
    """Where each piece's bytes live among a torrent's files.

    ``files`` must be in piece-space order and must not overlap; gaps between
    them are tolerated and behave like padding (read as zeros, never stored).
    """

    __slots__ = (
        "_file_count",
        "_file_ranges",
        "_stored_indices",
        "_stored_lengths",
        "_stored_starts",
        "num_pieces",
        "piece_length",
        "total_length",
    )

    def __init__(
        self, files: Sequence[FileEntryLike], piece_length: int, total_length: int
    ) -> None:
        if piece_length <= 0:
            raise StorageError(f"piece length must be positive, got {piece_length}")
        if total_length < 0:
            raise StorageError(f"total length must not be negative, got {total_length}")
        self.piece_length = piece_length
        self.total_length = total_length
        self.num_pieces = -(-total_length // piece_length)
        self._file_count = len(files)
        # (offset, length) of every file, padding included, for pieces_of_file().
        self._file_ranges: list[tuple[int, int]] = []
        # Parallel arrays of stored files with data, sorted by start offset.
        self._stored_starts: list[int] = []
        self._stored_lengths: list[int] = []
        self._stored_indices: list[int] = []
        end_of_previous = 0
        for index, entry in enumerate(files):
            offset, length = entry.offset, entry.length
            if length < 0 or offset < 0:
                raise StorageError(f"file {index} has a negative offset or length")
            if offset < end_of_previous:
                raise StorageError(f"file {index} overlaps the file before it")
            if offset + length > total_length:
                raise StorageError(f"file {index} extends past the total length")
            end_of_previous = offset + length
            self._file_ranges.append((offset, length))
            if length and not entry.is_padding:
                self._stored_starts.append(offset)
                self._stored_lengths.append(length)
                self._stored_indices.append(index)

    def piece_size(self, index: int) -> int:
        """Size of piece ``index``: ``piece_length`` except for a shorter last piece."""
        self._check_piece(index)
        start = index * self.piece_length
        return min(self.piece_length, self.total_length - start)

    def extents(self, index: int, begin: int = 0, length: int | None = None) -> list[Extent]:
        """Stored file runs that hold bytes ``[begin, begin + length)`` of piece ``index``.

        Bytes that fall in padding files or gaps are simply not covered by any
        extent. Raises :class:`StorageError` if the range leaves the piece.
        """
        size = self.piece_size(index)
        if length is None:
            length = size - begin
        if begin < 0 or length < 0 or begin + length > size:
            raise StorageError(
                f"range begin={begin} length={length} is outside piece {index} of size {size}"
            )
        start = index * self.piece_length + begin
        return self._extents_of_range(start, start + length)

    def files_of_piece(self, index: int) -> list[int]:
        """Indices of stored files that hold at least one byte of piece ``index``.

        Padding and zero-length files are left out: they have no bytes to hold.
        """
        return [extent.file_index for extent in self.extents(index)]

    def file_range(self, file_index: int) -> tuple[int, int]:
        """``(offset, length)`` of file ``file_index`` in the piece space."""
        if not 0 <= file_index < self._file_count:
            raise StorageError(f"file index {file_index} out of range")
        return self._file_ranges[file_index]

    def pieces_of_file(self, file_index: int) -> range:
        """Pieces that overlap file ``file_index``; empty for a zero-length file."""
        offset, length = self.file_range(file_index)
        if length == 0:
            return range(0)
        first = offset // self.piece_length
        last = (offset + length - 1) // self.piece_length
        return range(first, last + 1)

    def _check_piece(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise StorageError(f"piece index {index} out of range (0..{self.num_pieces - 1})")

    def _extents_of_range(self, start: int, end: int) -> list[Extent]:
        result: list[Extent] = []
        if start >= end:
            return result
        starts = self._stored_starts
        # The last stored file starting at or before `start` may cover it.
        position = max(bisect_right(starts, start) - 1, 0)
        while position < len(starts) and starts[position] < end:
            file_start = starts[position]
            file_end = file_start + self._stored_lengths[position]
            low = max(start, file_start)
            high = min(end, file_end)
            if low < high:
                result.append(
                    Extent(
                        file_index=self._stored_indices[position],
                        file_offset=low - file_start,
                        length=high - low,
                        piece_offset=low - start,
                    )
                )
            position += 1
        return result
