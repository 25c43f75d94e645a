"""BEP 52 merkle trees over 16 KiB blocks.

A v2 file is described by the root of a binary SHA-256 tree whose leaves are
the hashes of the file's 16 KiB blocks (the last block may be short and is
hashed as it is). The leaf layer is padded to a power of two with 32 zero
bytes, so a padded subtree of height ``h`` always has the same root,
:func:`zero_subtree_root` ``(h)``; we compute those once instead of hashing
zeros. The *piece layer* is the layer whose nodes each cover one piece; a
torrent ships it so a single piece can be checked without the whole file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..errors import IntegrityError

__all__ = [
    "BLOCK_SIZE",
    "HASH_SIZE",
    "block_hashes",
    "merkle_root",
    "piece_hash",
    "root_from_piece_layer",
    "single_piece_root",
    "split_layer",
    "zero_subtree_root",
]

BLOCK_SIZE = 16 * 1024
HASH_SIZE = 32
_MAX_HEIGHT = 64


def _build_zero_roots() -> tuple[bytes, ...]:
    roots = [bytes(HASH_SIZE)]
    for _ in range(_MAX_HEIGHT):
        roots.append(hashlib.sha256(roots[-1] + roots[-1]).digest())
    return tuple(roots)


_ZERO_ROOTS = _build_zero_roots()


def zero_subtree_root(height: int) -> bytes:
    """Root of a subtree of ``2**height`` zero leaves (height 0 is the zero hash)."""
    if not 0 <= height <= _MAX_HEIGHT:
        raise IntegrityError(f"merkle height {height} out of range")
    return _ZERO_ROOTS[height]


def _height_for(count: int) -> int:
    """Smallest ``h`` with ``2**h >= count``."""
    return max(0, (count - 1).bit_length())


def block_hashes(data: bytes | bytearray | memoryview) -> list[bytes]:
    """SHA-256 of each 16 KiB block of ``data``; hashes memoryview slices, never copies."""
    view = memoryview(data)
    return [
        hashlib.sha256(view[start : start + BLOCK_SIZE]).digest()
        for start in range(0, len(view), BLOCK_SIZE)
    ]


def merkle_root(leaves: Sequence[bytes], height: int | None = None, *, base: int = 0) -> bytes:
    """Root of a tree of ``2**height`` leaves: ``leaves`` then padding.

    ``base`` is the height of the given nodes above the 16 KiB block layer; padding
    at each level is the root of an all-zero subtree of the matching height, so
    the result equals hashing the full block layer padded with zero hashes.
    ``height`` defaults to the smallest tree that holds all leaves.
    """
    if not leaves:
        raise IntegrityError("a merkle tree needs at least one leaf")
    if height is None:
        height = _height_for(len(leaves))
    if len(leaves) > 1 << height:
        raise IntegrityError(f"{len(leaves)} leaves do not fit a tree of height {height}")
    layer = list(leaves)
    sha256 = hashlib.sha256
    for level in range(base, base + height):
        if len(layer) % 2:
            layer.append(_ZERO_ROOTS[level])
        layer = [sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


def piece_hash(data: bytes | bytearray | memoryview, piece_length: int) -> bytes:
    """Piece-layer node for one piece of file data (the last piece of a file may be short)."""
    return merkle_root(block_hashes(data), _height_for(piece_length // BLOCK_SIZE))


def single_piece_root(data: bytes | bytearray | memoryview) -> bytes:
    """``pieces root`` of a non-empty file no longer than one piece (no piece layer exists)."""
    return merkle_root(block_hashes(data))


def root_from_piece_layer(layer: Sequence[bytes], piece_length: int) -> bytes:
    """File root from its piece layer, padded with the roots of all-zero pieces."""
    return merkle_root(layer, base=_height_for(piece_length // BLOCK_SIZE))


def split_layer(layer: bytes) -> list[bytes]:
    """Cut a concatenated ``piece layers`` value into 32-byte hashes."""
    if len(layer) % HASH_SIZE:
        raise IntegrityError("piece layer length is not a multiple of 32")
    return [layer[i : i + HASH_SIZE] for i in range(0, len(layer), HASH_SIZE)]
