import hashlib
import os

import pytest

from opendistro.errors import IntegrityError
from opendistro.integrity import merkle

BLOCK = merkle.BLOCK_SIZE


def naive_root(data: bytes, leaves: int) -> bytes:
    """Reference: hash every block, pad with zero hashes, fold pairwise."""
    layer = [hashlib.sha256(data[i : i + BLOCK]).digest() for i in range(0, len(data), BLOCK)]
    layer += [bytes(32)] * (leaves - len(layer))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


def test_zero_subtree_roots_are_hashes_of_zero_trees() -> None:
    assert merkle.zero_subtree_root(0) == bytes(32)
    level1 = hashlib.sha256(bytes(64)).digest()
    assert merkle.zero_subtree_root(1) == level1
    assert merkle.zero_subtree_root(2) == hashlib.sha256(level1 + level1).digest()


def test_single_block_root_is_the_block_hash() -> None:
    data = b"hello"
    assert merkle.single_piece_root(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("size", [BLOCK + 1, 3 * BLOCK, 5 * BLOCK - 7])
def test_single_piece_root_pads_leaves_to_power_of_two(size: int) -> None:
    data = os.urandom(size)
    blocks = -(-size // BLOCK)
    leaves = 1 << (blocks - 1).bit_length()
    assert merkle.single_piece_root(data) == naive_root(data, leaves)


@pytest.mark.parametrize("size", [4 * BLOCK + 1, 9 * BLOCK, 13 * BLOCK + 100])
def test_root_from_piece_layer_equals_root_of_whole_padded_tree(size: int) -> None:
    piece_length = 4 * BLOCK
    data = os.urandom(size)
    layer = [
        merkle.piece_hash(memoryview(data)[i : i + piece_length], piece_length)
        for i in range(0, size, piece_length)
    ]
    pieces = len(layer)
    total_leaves = (1 << (pieces - 1).bit_length()) * 4
    assert merkle.root_from_piece_layer(layer, piece_length) == naive_root(data, total_leaves)
    # Each piece-layer node is the root of that piece's 4 (zero-padded) leaves.
    last = data[(pieces - 1) * piece_length :]
    assert layer[-1] == naive_root(last, 4)


def test_merkle_errors_are_typed() -> None:
    with pytest.raises(IntegrityError):
        merkle.merkle_root([])
    with pytest.raises(IntegrityError):
        merkle.merkle_root([bytes(32)] * 3, height=1)
    with pytest.raises(IntegrityError):
        merkle.split_layer(b"x" * 33)
    assert merkle.split_layer(b"a" * 32 + b"b" * 32) == [b"a" * 32, b"b" * 32]
