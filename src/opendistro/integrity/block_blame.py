"""Naming the bad 16 KiB blocks of a v2 piece that failed its hash check (smart ban).

When a v1 piece fails, all we know is that someone among the peers who sent its
blocks lied. v2 can say who: a piece hash is the root of a merkle subtree over
the piece's 16 KiB blocks, so once we know the true hashes of those leaves, the
blocks whose hashes differ are exactly the bad ones, and so are their senders.

The true leaves come from another peer, through a BEP 52 hash request for base
layer 0 covering the whole piece. They need no proof layers: the subtree they
span is the piece's own, whose root is the piece hash we already trust, so
:meth:`BlockBlame.leaves_received` hashes them up and compares.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import IntegrityError, MetainfoError, RemoteProtocolError
from ..wire.messages import Hashes, HashRequest
from . import merkle
from .hash_exchange import piece_height

if TYPE_CHECKING:
    from ..metainfo import FileEntry, Metainfo

__all__ = ["BlockBlame"]


class BlockBlame:
    """Finds the bad blocks of failed pieces of one v2 (or hybrid) torrent; read-only."""

    def __init__(self, metainfo: Metainfo) -> None:
        if not metainfo.has_v2:
            raise MetainfoError("blocks can only be blamed in v2 torrents")
        self._metainfo = metainfo
        self._piece_height = piece_height(metainfo.piece_length)
        # Every v2 file starts on a piece boundary, so its first piece finds it.
        self._files: tuple[FileEntry, ...] = tuple(
            entry for entry in metainfo.files if not entry.is_padding and entry.length > 0
        )
        self._first_pieces = tuple(entry.offset // metainfo.piece_length for entry in self._files)

    def _locate(self, piece_index: int) -> tuple[FileEntry, int]:
        """The file that owns ``piece_index`` and the piece's index within it."""
        if not 0 <= piece_index < self._metainfo.num_pieces:
            raise IntegrityError(f"piece index {piece_index} out of range")
        position = bisect.bisect_right(self._first_pieces, piece_index) - 1
        if position < 0 or self._files[position].end <= piece_index * self._metainfo.piece_length:
            raise IntegrityError(f"piece {piece_index} holds only padding")
        return self._files[position], piece_index - self._first_pieces[position]

    def _span_height(self, entry: FileEntry) -> int:
        # A file of one piece has a tree shorter than a piece: the piece is the whole tree.
        return min(self._piece_height, merkle.tree_height(entry.length))

    def piece_hash(self, piece_index: int) -> bytes:
        """The trusted hash of a piece: its piece-layer node, or the root of a one-piece file."""
        entry, piece = self._locate(piece_index)
        root = entry.pieces_root
        assert root is not None
        if entry.length <= self._metainfo.piece_length:
            return root
        layer = self._metainfo.piece_layers.get(root)
        if layer is None:
            raise IntegrityError("piece layers unknown")
        return layer[piece * merkle.HASH_SIZE : (piece + 1) * merkle.HASH_SIZE]

    def block_hashes(self, piece_index: int, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Hashes of the blocks of a piece as we received it (padding past the file is skipped)."""
        entry, _ = self._locate(piece_index)
        used = min(
            self._metainfo.piece_length, entry.end - piece_index * self._metainfo.piece_length
        )
        return merkle.block_hashes(memoryview(data).cast("B")[:used])

    def leaf_request(self, piece_index: int) -> HashRequest | None:
        """The hash request for the leaves of one piece, or None for a one-block piece.

        A piece of one block needs no request: its only leaf is the piece hash, so
        pass ``[piece_hash(piece_index)]`` as the verified leaves.
        """
        entry, piece = self._locate(piece_index)
        span_height = self._span_height(entry)
        if span_height == 0:
            return None
        assert entry.pieces_root is not None
        return HashRequest(entry.pieces_root, 0, piece << span_height, 1 << span_height, 0)

    def leaves_received(self, piece_index: int, message: Hashes) -> list[bytes]:
        """The piece's leaf hashes from an answer to :meth:`leaf_request`, checked.

        The result is padded with zero hashes to a power of two, as the tree is.
        Raises RemoteProtocolError when ``message`` answers another request and
        IntegrityError when its leaves do not hash up to the piece hash.
        """
        expected = self.leaf_request(piece_index)
        answered = HashRequest(
            message.pieces_root,
            message.base_layer,
            message.index,
            message.length,
            message.proof_layers,
        )
        if expected is None or answered != expected:
            raise RemoteProtocolError("hashes message does not answer this piece's leaf request")
        return merkle.verify_hashes(
            self.piece_hash(piece_index),
            0,
            expected.length.bit_length() - 1,
            0,
            expected.length,
            0,
            merkle.split_layer(message.hashes),
        )

    @staticmethod
    def bad_blocks(
        piece_layer_hash: bytes,
        received_block_hashes: Sequence[bytes],
        verified_leaf_hashes: Sequence[bytes],
    ) -> list[int]:
        """Indices (within the piece) of the received blocks whose hash is not the true one.

        ``verified_leaf_hashes`` are the piece's leaves padded to a power of two (as
        :meth:`leaves_received` returns them); they are checked against
        ``piece_layer_hash`` here again, so leaves of unknown origin can never
        get an honest peer banned. Raises IntegrityError when they do not match.
        """
        count = len(verified_leaf_hashes)
        if not count or count & (count - 1):
            raise IntegrityError("leaf hashes of a piece come padded to a power of two")
        if merkle.merkle_root(verified_leaf_hashes, count.bit_length() - 1) != piece_layer_hash:
            raise IntegrityError("leaf hashes do not add up to the piece hash")
        if len(received_block_hashes) > count:
            raise IntegrityError("more blocks than the piece has leaves")
        return [
            index
            for index, got in enumerate(received_block_hashes)
            if got != verified_leaf_hashes[index]
        ]
