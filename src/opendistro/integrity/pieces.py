"""Checking one whole piece against the torrent's hashes.

The verifier is built once per torrent and is read-only afterwards, so worker
threads may call :meth:`PieceVerifier.verify` concurrently (hashlib releases
the GIL on large buffers). Data is hashed through memoryview slices; nothing is
copied.

Which hash applies:

* v1: SHA-1 of the piece as it sits in the piece space (pad bytes are zeros).
* v2: in a v2 or hybrid torrent every piece belongs to at most one file. The
  file's bytes in the piece are cut into 16 KiB blocks and their merkle subtree
  is compared with the file's piece layer, or, for a file of at most one piece,
  with its ``pieces root``. A piece made only of padding has no v2 hash.
* hybrid: both must match.

A v2 torrent fetched through a magnet link starts without piece layers; until
they are added (:meth:`Metainfo.with_piece_layers`) pieces of multi-piece files
cannot be checked and :meth:`verify` raises ``IntegrityError("piece layers
unknown")`` rather than guessing. A hybrid torrent in the same situation is
checked with SHA-1 alone, which the info-hash already authenticates.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from . import merkle

if TYPE_CHECKING:
    from ..metainfo import FileEntry, Metainfo

__all__ = ["PieceVerifier"]


def _all_zero(view: memoryview) -> bool:
    """Padding must read as zeros; compare in C rather than looping per byte."""
    return view.tobytes() == bytes(len(view))


class PieceVerifier:
    """Verifies whole pieces of one torrent; immutable after construction."""

    def __init__(self, metainfo: Metainfo) -> None:
        self._metainfo = metainfo
        self._check_v1 = metainfo.info_hash_v1 is not None
        self._check_v2 = metainfo.info_hash_v2 is not None
        self._piece_height = max(0, (metainfo.piece_length // merkle.BLOCK_SIZE - 1).bit_length())
        files = [entry for entry in metainfo.files if not entry.is_padding and entry.length > 0]
        # Files in a v2 piece space start on piece boundaries, so the first piece
        # of each file is enough to find the file that owns any piece.
        self._v2_files: tuple[FileEntry, ...] = tuple(files) if self._check_v2 else ()
        self._v2_first_pieces: tuple[int, ...] = tuple(
            entry.offset // metainfo.piece_length for entry in self._v2_files
        )

    def verify(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` is exactly piece ``index`` as the torrent describes it."""
        metainfo = self._metainfo
        if not 0 <= index < metainfo.num_pieces:
            raise IntegrityError(f"piece index {index} out of range")
        view = memoryview(data).cast("B")
        if len(view) != metainfo.piece_size(index):
            return False
        if self._check_v1 and hashlib.sha1(view).digest() != metainfo.piece_hash_v1(index):
            return False
        return not self._check_v2 or self._verify_v2(index, view)

    def _verify_v2(self, index: int, view: memoryview) -> bool:
        metainfo = self._metainfo
        piece_length = metainfo.piece_length
        position = bisect.bisect_right(self._v2_first_pieces, index) - 1
        piece_start = index * piece_length
        if position < 0 or self._v2_files[position].end <= piece_start:
            # Only padding lives here; it must be zeros, which v1 checks in a
            # hybrid torrent and we check directly for v2.
            return _all_zero(view)
        entry = self._v2_files[position]
        used = min(piece_length, entry.end - piece_start)
        file_part = view[:used]
        if used < len(view) and not _all_zero(view[used:]):
            return False
        root = entry.pieces_root
        assert root is not None
        if entry.length <= piece_length:
            return merkle.single_piece_root(file_part) == root
        layer = metainfo.piece_layers.get(root)
        if layer is None:
            if self._check_v1:
                # Hybrid from a magnet: SHA-1 already vouched for the piece.
                return True
            raise IntegrityError("piece layers unknown")
        piece_in_file = index - self._v2_first_pieces[position]
        expected = layer[piece_in_file * merkle.HASH_SIZE : (piece_in_file + 1) * merkle.HASH_SIZE]
        leaves = merkle.block_hashes(file_part)
        return merkle.merkle_root(leaves, self._piece_height) == expected

    def can_verify(self, index: int) -> bool:
        """False only for pieces of a v2-only torrent whose piece layer is still unknown."""
        if self._check_v1 or not 0 <= index < self._metainfo.num_pieces:
            return self._check_v1
        position = bisect.bisect_right(self._v2_first_pieces, index) - 1
        if position < 0:  # pragma: no cover - v2-only: a data file starts at piece 0
            return True
        return self._metainfo.has_piece_layer(self._v2_files[position])
