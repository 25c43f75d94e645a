"""BEP 52 merkle trees over 16 KiB blocks.

A v2 file is described by the root of a binary SHA-256 tree whose leaves are
the hashes of the file's 16 KiB blocks (the last block may be short and is
hashed as it is). The leaf layer is padded to a power of two with 32 zero
bytes, so a padded subtree of height ``h`` always has the same root,
:func:`zero_subtree_root` ``(h)``; we compute those once instead of hashing
zeros. The *piece layer* is the layer whose nodes each cover one piece; a
torrent ships it so a single piece can be checked without the whole file.

A torrent fetched through a magnet link has no piece layers; they come from
peers in BEP 52 ``hash request``/``hashes`` messages. :class:`PieceLayerTree`
answers such requests and :func:`verify_hashes` checks a reply against the
file's root before anything trusts it. Both sides agree on the request rules
through :func:`check_hash_request` and on which uncle hashes a reply carries
through :func:`uncle_positions` (the layout libtorrent serves).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..errors import IntegrityError

__all__ = [
    "BLOCK_SIZE",
    "HASH_SIZE",
    "PieceLayerTree",
    "block_hashes",
    "check_hash_request",
    "merkle_layers",
    "merkle_root",
    "piece_hash",
    "root_from_piece_layer",
    "single_piece_root",
    "split_layer",
    "tree_height",
    "uncle_positions",
    "verify_hashes",
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


def merkle_layers(leaves: Sequence[bytes], height: int, *, base: int = 0) -> list[list[bytes]]:
    """Every layer of a ``2**height``-wide tree at ``base``, from ``leaves`` (padded) to the root.

    For answering requests that need inner nodes, not just the root. Memory is
    about twice the padded width.
    """
    if not leaves:
        raise IntegrityError("a merkle tree needs at least one leaf")
    width = 1 << height
    if len(leaves) > width:
        raise IntegrityError(f"{len(leaves)} leaves do not fit a tree of height {height}")
    layer = list(leaves)
    layer.extend([_ZERO_ROOTS[base]] * (width - len(layer)))
    layers = [layer]
    sha256 = hashlib.sha256
    while len(layer) > 1:
        layer = [sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
        layers.append(layer)
    return layers


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


def tree_height(file_length: int) -> int:
    """Height of a file's merkle tree: leaves are its 16 KiB blocks rounded up to 2**h."""
    if file_length <= 0:
        raise IntegrityError("empty files have no merkle tree")
    return _height_for(-(-file_length // BLOCK_SIZE))


class PieceLayerTree:
    """The upper part of one file's tree, from its piece layer to the root.

    Built once from a (verified) piece layer, it answers BEP 52 ``hash request``
    messages whose base layer is the piece layer or any layer above it. Memory
    is about two hashes per piece of the file.
    """

    def __init__(self, piece_layer: Sequence[bytes], piece_length: int, file_length: int) -> None:
        self.base_height = _height_for(piece_length // BLOCK_SIZE)
        self.height = max(tree_height(file_length), self.base_height)
        top = self.height - self.base_height
        if not 0 < len(piece_layer) <= 1 << top:
            raise IntegrityError("piece layer does not fit the file's tree")
        self._layers = merkle_layers(piece_layer, top, base=self.base_height)

    @property
    def root(self) -> bytes:
        return self._layers[-1][0]

    def node(self, layer: int, index: int) -> bytes:
        """Node ``index`` of the layer ``layer`` levels above the piece layer (padding included)."""
        if not 0 <= layer < len(self._layers) or not 0 <= index < len(self._layers[layer]):
            raise IntegrityError(f"no node {index} in layer {layer} of this tree")
        return self._layers[layer][index]

    def hashes(self, index: int, length: int, proof_layers: int, *, layer: int = 0) -> list[bytes]:
        """The payload of a ``hashes`` reply: base hashes, then uncles towards the root.

        ``layer`` is the base layer's height above the piece layer (0: the piece layer).
        """
        if not 0 <= layer < len(self._layers):
            raise IntegrityError(f"layer {layer} is not in this tree")
        base = self._layers[layer]
        check_hash_request(len(base), index, length, proof_layers)
        result = base[index : index + min(length, len(base))]
        for height, node in uncle_positions(len(base), index, length, proof_layers):
            result.append(self._layers[layer + height][node])
        return result


def check_hash_request(width: int, index: int, length: int, proof_layers: int) -> None:
    """Raise IntegrityError unless a request fits a layer of ``width`` (a power of two) nodes.

    BEP 52: length is a power of two of at least 2 (one node only when the whole
    layer is one node; a length past the layer's end is truncated) and index a
    multiple of it. Like libtorrent we refuse more proof layers than there are
    layers above the base: the reply would not say which were left out.
    """
    if length < min(2, width) or length & (length - 1):
        raise IntegrityError(f"bad hash request length {length}")
    if index < 0 or index % length or index >= width:
        raise IntegrityError(f"bad hash request index {index}")
    if proof_layers < 0 or (width > 1 and proof_layers >= width.bit_length() - 1):
        raise IntegrityError(f"bad hash request proof layer count {proof_layers}")


def uncle_positions(
    width: int, index: int, length: int, proof_layers: int
) -> list[tuple[int, int]]:
    """(height above the base, node) of each uncle a reply carries, lowest first.

    BEP 52: proof layer ``j`` holds the sibling of the base range's ancestor ``j``
    layers up. Those below the range's own subtree root are implied by the base
    hashes and omitted (the first ``log2(length) - 1``); the root has no sibling.
    """
    top = width.bit_length() - 1
    subtree = min(length.bit_length() - 1, top)
    return [
        (height, (index >> height) ^ 1)
        for height in range(max(subtree, 1), min(proof_layers, top - 1) + 1)
    ]


def verify_hashes(
    root: bytes,
    base_height: int,
    height: int,
    index: int,
    length: int,
    proof_layers: int,
    hashes: Sequence[bytes],
) -> list[bytes]:
    """Check a ``hashes`` reply against a file's root and return its base hashes.

    ``base_height`` is the requested layer above the blocks and ``height`` the
    tree's height (:func:`tree_height`). The proof must reach the root: ask for
    the whole layer, or for at least ``height - base_height - 1`` proof layers.
    Base hashes past the end of the file are the roots of all-zero subtrees.
    Raises IntegrityError when anything does not add up.
    """
    if not 0 <= base_height <= height:
        raise IntegrityError("base layer above the root")
    width = 1 << (height - base_height)
    check_hash_request(width, index, length, proof_layers)
    top = height - base_height
    subtree = min(length.bit_length() - 1, top)
    count = min(length, width)
    uncles = uncle_positions(width, index, length, proof_layers)
    if subtree + len(uncles) < top:
        raise IntegrityError("proof does not reach the root; request more proof layers")
    if len(hashes) != count + len(uncles) or any(len(h) != HASH_SIZE for h in hashes):
        raise IntegrityError("hashes reply has the wrong number or size of hashes")
    base = list(hashes[:count])
    node = merkle_root(base, subtree, base=base_height)
    position = index >> subtree
    sha256 = hashlib.sha256
    for uncle in hashes[count:]:
        pair = node + uncle if position % 2 == 0 else uncle + node
        node = sha256(pair).digest()
        position >>= 1
    if node != root:
        raise IntegrityError("hashes do not lead to the file's root")
    return base
