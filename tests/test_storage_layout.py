"""PieceLayout: piece ranges map onto exactly the right bytes of the right files."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.errors import StorageError
from opendistro.storage.layout import Extent, PieceLayout


@dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]
    length: int
    offset: int
    is_padding: bool = False


def entries(sizes: list[int], padding: frozenset[int] = frozenset()) -> list[Entry]:
    result = []
    offset = 0
    for index, size in enumerate(sizes):
        result.append(Entry((f"f{index}",), size, offset, index in padding))
        offset += size
    return result


def test_piece_spanning_three_files_and_more() -> None:
    # Piece 0 covers all of f0 (3), f1 (2), f2 (4) and the first byte of f3.
    layout = PieceLayout(entries([3, 2, 4, 10]), piece_length=10, total_length=19)
    assert layout.num_pieces == 2
    assert layout.extents(0) == [
        Extent(0, 0, 3, 0),
        Extent(1, 0, 2, 3),
        Extent(2, 0, 4, 5),
        Extent(3, 0, 1, 9),
    ]
    assert layout.extents(1) == [Extent(3, 1, 9, 0)]
    assert layout.files_of_piece(0) == [0, 1, 2, 3]


def test_sub_range_offsets_are_relative_to_begin() -> None:
    layout = PieceLayout(entries([3, 2, 4, 10]), piece_length=10, total_length=19)
    assert layout.extents(0, begin=4, length=3) == [Extent(1, 1, 1, 0), Extent(2, 0, 2, 1)]
    assert layout.extents(0, begin=5, length=0) == []


def test_last_piece_is_short() -> None:
    layout = PieceLayout(entries([25]), piece_length=10, total_length=25)
    assert layout.num_pieces == 3
    assert [layout.piece_size(i) for i in range(3)] == [10, 10, 5]
    assert layout.extents(2) == [Extent(0, 20, 5, 0)]
    with pytest.raises(StorageError):
        layout.extents(2, 0, 6)


def test_zero_length_and_padding_files_have_no_extents() -> None:
    files = entries([5, 0, 3, 0, 2, 6], padding=frozenset({2}))
    layout = PieceLayout(files, piece_length=8, total_length=16)
    # f1 and f3 are empty; f2 is padding: bytes 5..8 belong to no extent.
    assert layout.extents(0) == [Extent(0, 0, 5, 0)]
    assert layout.extents(1) == [Extent(4, 0, 2, 0), Extent(5, 0, 6, 2)]
    assert layout.files_of_piece(1) == [4, 5]
    assert layout.pieces_of_file(1) == range(0)
    assert layout.pieces_of_file(5) == range(1, 2)
    assert layout.pieces_of_file(0) == range(0, 1)


def test_file_spanning_many_pieces() -> None:
    layout = PieceLayout(entries([3, 40, 1]), piece_length=8, total_length=44)
    assert layout.pieces_of_file(1) == range(0, 6)
    assert layout.pieces_of_file(2) == range(5, 6)
    assert layout.extents(3) == [Extent(1, 21, 8, 0)]


@pytest.mark.parametrize(
    ("index", "begin", "length"),
    [(-1, 0, 1), (3, 0, 1), (0, -1, 2), (0, 0, 11), (0, 5, 6), (0, 0, -1), (2, 4, 2)],
)
def test_out_of_range_requests_raise_storage_error(index: int, begin: int, length: int) -> None:
    layout = PieceLayout(entries([25]), piece_length=10, total_length=25)
    with pytest.raises(StorageError):
        layout.extents(index, begin, length)


def test_bad_file_indices_and_shapes_raise_storage_error() -> None:
    layout = PieceLayout(entries([25]), piece_length=10, total_length=25)
    with pytest.raises(StorageError):
        layout.pieces_of_file(1)
    with pytest.raises(StorageError):
        layout.piece_size(3)
    with pytest.raises(StorageError):  # overlapping files
        PieceLayout([Entry(("a",), 5, 0), Entry(("b",), 5, 3)], 4, 10)
    with pytest.raises(StorageError):  # file past the end
        PieceLayout(entries([5, 6]), 4, 10)
    with pytest.raises(StorageError):
        PieceLayout(entries([5]), 0, 5)
    with pytest.raises(StorageError, match="total length"):
        PieceLayout([], 4, -1)
    with pytest.raises(StorageError, match="negative"):
        PieceLayout([Entry(("a",), -1, 0)], 4, 10)
    with pytest.raises(StorageError, match="negative"):
        PieceLayout([Entry(("a",), 1, -1)], 4, 10)


def test_hundred_thousand_files() -> None:
    sizes = [(i % 7) * 3 for i in range(100_000)]
    total = sum(sizes)
    layout = PieceLayout(entries(sizes), piece_length=1024, total_length=total)
    middle = layout.num_pieces // 2
    found = layout.extents(middle)
    assert sum(e.length for e in found) == 1024
    start = middle * 1024
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    for extent in found:
        assert offsets[extent.file_index] + extent.file_offset == start + extent.piece_offset


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[Entry], int, int]:
    sizes = draw(st.lists(st.integers(0, 50), min_size=1, max_size=12))
    padding = frozenset(draw(st.sets(st.integers(0, len(sizes) - 1), max_size=len(sizes) // 2)))
    files = entries(sizes, padding)
    total = sum(sizes)
    piece_length = draw(st.integers(1, 40))
    return files, piece_length, total


@settings(max_examples=300, deadline=None)
@given(layouts(), st.data())
def test_extents_rebuild_exactly_the_requested_range(
    shape: tuple[list[Entry], int, int], data: st.DataObject
) -> None:
    files, piece_length, total = shape
    layout = PieceLayout(files, piece_length, total)
    assert layout.num_pieces == -(-total // piece_length)
    # Give every stored byte a distinct value; padding bytes read as zero.
    contents = [
        bytes(((i * 31 + j) % 251) + 1 for j in range(f.length)) for i, f in enumerate(files)
    ]
    whole = b"".join(bytes(f.length) if f.is_padding else contents[i] for i, f in enumerate(files))
    if layout.num_pieces == 0:
        return
    index = data.draw(st.integers(0, layout.num_pieces - 1))
    size = layout.piece_size(index)
    begin = data.draw(st.integers(0, size))
    length = data.draw(st.integers(0, size - begin))
    rebuilt = bytearray(length)
    previous_end = 0
    for extent in layout.extents(index, begin, length):
        assert extent.length > 0
        assert extent.piece_offset >= previous_end  # sorted, no overlap
        previous_end = extent.piece_offset + extent.length
        assert not files[extent.file_index].is_padding
        source = contents[extent.file_index][
            extent.file_offset : extent.file_offset + extent.length
        ]
        assert len(source) == extent.length
        rebuilt[extent.piece_offset : previous_end] = source
    start = index * piece_length + begin
    assert bytes(rebuilt) == whole[start : start + length]
    assert sum(layout.piece_size(i) for i in range(layout.num_pieces)) == total
