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


def file_piece_layer(size: int, piece_length: int) -> tuple[bytes, list[bytes], bytes]:
    data = os.urandom(size)
    layer = [
        merkle.piece_hash(memoryview(data)[i : i + piece_length], piece_length)
        for i in range(0, size, piece_length)
    ]
    return data, layer, merkle.root_from_piece_layer(layer, piece_length)


@pytest.mark.parametrize("pieces", [2, 3, 5, 8, 13])
def test_hash_requests_answered_and_verified_against_the_root(pieces: int) -> None:
    piece_length = 4 * BLOCK
    size = (pieces - 1) * piece_length + 1000
    _, layer, root = file_piece_layer(size, piece_length)
    tree = merkle.PieceLayerTree(layer, piece_length, size)
    assert tree.root == root
    height = merkle.tree_height(size)
    width = 1 << (height - tree.base_height)
    pad = merkle.zero_subtree_root(tree.base_height)
    padded = layer + [pad] * (width - len(layer))
    for length in (2, 4, 8, 512):
        for index in range(0, width, length):
            proof_layers = height - tree.base_height - 1
            reply = tree.hashes(index, length, proof_layers)
            got = merkle.verify_hashes(
                root, tree.base_height, height, index, length, proof_layers, reply
            )
            assert got == padded[index : index + length]
            if len(reply) > 1:
                tampered = list(reply)
                tampered[-1] = bytes(32)
                with pytest.raises(IntegrityError):
                    merkle.verify_hashes(
                        root, tree.base_height, height, index, length, proof_layers, tampered
                    )


def test_whole_layer_needs_no_proof_and_short_proofs_are_refused() -> None:
    piece_length = 2 * BLOCK
    size = 6 * piece_length
    _, layer, root = file_piece_layer(size, piece_length)
    tree = merkle.PieceLayerTree(layer, piece_length, size)
    height = merkle.tree_height(size)
    whole = tree.hashes(0, 8, 0)
    assert merkle.verify_hashes(root, tree.base_height, height, 0, 8, 0, whole)[:6] == layer
    with pytest.raises(IntegrityError, match="proof"):
        merkle.verify_hashes(root, tree.base_height, height, 2, 2, 0, tree.hashes(2, 2, 0))
    with pytest.raises(IntegrityError):
        tree.hashes(1, 2, 0)  # index must be a multiple of length
    with pytest.raises(IntegrityError):
        tree.hashes(0, 3, 0)
    with pytest.raises(IntegrityError):
        merkle.verify_hashes(root, tree.base_height, height, 0, 8, 0, whole[:-1])


def test_leaf_layer_requests_with_block_sized_pieces() -> None:
    size = 11 * BLOCK + 5
    data, layer, root = file_piece_layer(size, BLOCK)
    assert layer == merkle.block_hashes(data)
    tree = merkle.PieceLayerTree(layer, BLOCK, size)
    height = merkle.tree_height(size)
    assert tree.base_height == 0 and height == 4
    reply = tree.hashes(8, 4, 3)
    assert merkle.verify_hashes(root, 0, height, 8, 4, 3, reply) == [*layer[8:12], bytes(32)][:4]
    # 4 base hashes + uncles at heights 2 and 3 (height 1 is implied by the base).
    assert len(reply) == 4 + 2


def test_merkle_layers_pad_and_end_at_the_root() -> None:
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
    layers = merkle.merkle_layers(leaves, 3)
    assert [len(layer) for layer in layers] == [8, 4, 2, 1]
    assert layers[0][5:] == [bytes(32)] * 3
    assert layers[-1][0] == merkle.merkle_root(leaves, 3)
    padded = merkle.merkle_layers(leaves[:1], 2, base=1)
    assert padded[0][1:] == [merkle.zero_subtree_root(1)] * 3
    assert padded[-1][0] == merkle.merkle_root(leaves[:1], 2, base=1)
    with pytest.raises(IntegrityError):
        merkle.merkle_layers(leaves, 2)
    with pytest.raises(IntegrityError):
        merkle.merkle_layers([], 2)


def test_layers_above_the_piece_layer_are_answered_and_verified() -> None:
    piece_length = 2 * BLOCK
    size = 21 * piece_length - 5
    _, layer, root = file_piece_layer(size, piece_length)
    tree = merkle.PieceLayerTree(layer, piece_length, size)
    height = merkle.tree_height(size)
    assert tree.node(0, 3) == layer[3]
    assert tree.node(5, 0) == root
    for above in range(1, 5):
        base_height = tree.base_height + above
        width = 1 << (height - base_height)
        proof_layers = height - base_height - 1
        for index in range(0, width, 2):
            reply = tree.hashes(index, 2, proof_layers, layer=above)
            got = merkle.verify_hashes(root, base_height, height, index, 2, proof_layers, reply)
            assert got == [tree.node(above, index), tree.node(above, index + 1)]
    with pytest.raises(IntegrityError):
        tree.hashes(0, 2, 0, layer=6)  # above the root
    with pytest.raises(IntegrityError):
        tree.node(1, 16)


def test_proof_layers_are_bounded_by_the_layers_above_the_base() -> None:
    # 32 nodes: 5 layers above the base, so at most 4 proof layers (the root has no sibling).
    merkle.check_hash_request(32, 0, 2, 4)
    with pytest.raises(IntegrityError, match="proof layer"):
        merkle.check_hash_request(32, 0, 2, 5)
    with pytest.raises(IntegrityError, match="proof layer"):
        merkle.check_hash_request(32, 0, 2, -1)
    # A request for the whole layer needs no uncle; length 1 is only for a one-node layer.
    assert merkle.uncle_positions(32, 0, 32, 4) == []
    assert merkle.uncle_positions(32, 8, 4, 4) == [(2, 3), (3, 0), (4, 1)]
    merkle.check_hash_request(1, 0, 1, 0)
    with pytest.raises(IntegrityError, match="length"):
        merkle.check_hash_request(32, 3, 1, 0)


def test_out_of_range_shapes_are_integrity_errors() -> None:
    assert merkle.zero_subtree_root(0) == bytes(32)
    for height in (-1, 10_000):
        with pytest.raises(IntegrityError, match="out of range"):
            merkle.zero_subtree_root(height)
    with pytest.raises(IntegrityError, match="empty files"):
        merkle.tree_height(0)
    piece_length = 4 * merkle.BLOCK_SIZE
    file_length = 3 * piece_length  # a tree with room for 4 pieces
    with pytest.raises(IntegrityError, match="does not fit"):
        merkle.PieceLayerTree([], piece_length, file_length)
    with pytest.raises(IntegrityError, match="does not fit"):
        merkle.PieceLayerTree([bytes(32)] * 5, piece_length, file_length)
    with pytest.raises(IntegrityError, match="above the root"):
        merkle.verify_hashes(bytes(32), 5, 4, 0, 1, 0, [bytes(32)])
