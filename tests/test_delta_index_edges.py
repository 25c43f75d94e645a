"""Limits and malformed input of the delta index that the main tests do not reach.

The model refuses what no encoder may produce, and the decoder refuses each
wrongly typed field with DeltaIndexError, whatever the document holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from opendistro import bencode
from opendistro.delta.chunker import ChunkerParams
from opendistro.delta.index import (
    MAX_CHUNKS,
    MAX_FILES,
    MAX_INDEX_SIZE,
    MAX_RECIPE_KEYS,
    MAX_SEGMENTS,
    DeltaIndex,
    IndexedFile,
    Segment,
    SimpleLayout,
    read_raw_content,
    whole_file_segments,
)
from opendistro.errors import DeltaIndexError, StorageError

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")
V1 = hashlib.sha1(b"torrent").digest()
CHUNK = (64, bytes(16))


def index_of(*files: IndexedFile) -> DeltaIndex:
    return DeltaIndex(1, SMALL, V1, None, "release", files)


def one_segment_file(name: str, segment: Segment) -> IndexedFile:
    return IndexedFile((name,), segment.length, (segment,))


# -- the model ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("raw", 0, 1, -1, ()), "content length must be a non-negative integer"),
        (("gzip", 0, 10, 64, (CHUNK,), [("level", 9)], bytes(32)), "recipe must be a mapping"),
        (
            ("gzip", 0, 10, 64, (CHUNK,), {f"k{n}": n for n in range(33)}, bytes(32)),
            f"more than {MAX_RECIPE_KEYS} keys",
        ),
        (("raw", 0, 64, 64, (CHUNK,), None, None, 404), "fallback reason must be text"),
    ],
)
def test_more_segment_rules(arguments: tuple[object, ...], message: str) -> None:
    with pytest.raises(DeltaIndexError, match=message):
        Segment(*arguments)  # type: ignore[arg-type]


def test_file_segments_must_be_a_tuple_of_segments() -> None:
    segment = Segment("raw", 0, 64, 64, (CHUNK,))
    with pytest.raises(DeltaIndexError, match="segments must be a tuple"):
        IndexedFile(("f",), 64, [segment])  # type: ignore[arg-type]
    with pytest.raises(DeltaIndexError, match="segment 0 is not a Segment"):
        IndexedFile(("f",), 64, (SimpleLayout("raw", 0, 64),))  # type: ignore[arg-type]


def test_index_entries_must_be_indexed_files() -> None:
    with pytest.raises(DeltaIndexError, match="files must be IndexedFile entries"):
        index_of(("f",))  # type: ignore[arg-type]
    with pytest.raises(DeltaIndexError, match="release name must be text"):
        DeltaIndex(1, SMALL, V1, None, b"release", (IndexedFile(("f",), 0, ()),))  # type: ignore[arg-type]


def test_model_limits_on_files_segments_and_chunks() -> None:
    empty = IndexedFile(("f",), 0, ())
    with pytest.raises(DeltaIndexError, match=f"more than {MAX_FILES} files"):
        index_of(*(empty,) * (MAX_FILES + 1))
    # Eleven segments per file in 91,000 files: over a million segments.
    segments = tuple(Segment("raw", 64 * n, 64, 64, (CHUNK,)) for n in range(11))
    many = [IndexedFile((f"f{n}",), 64 * 11, segments) for n in range(91_000)]
    with pytest.raises(DeltaIndexError, match=f"more than {MAX_SEGMENTS} segments"):
        index_of(*many)
    # 101 files of 100,000 chunks each: over ten million chunks.
    big = Segment("raw", 0, 64 * 100_000, 64 * 100_000, (CHUNK,) * 100_000)
    with pytest.raises(DeltaIndexError, match=f"more than {MAX_CHUNKS} chunks"):
        index_of(*(one_segment_file(f"f{n}", big) for n in range(101)))


def test_an_index_too_large_to_encode_is_refused() -> None:
    recipe: dict[str, int | bytes] = {f"k{n}": bytes(65536) for n in range(MAX_RECIPE_KEYS)}
    segment = Segment("gzip", 0, 10, 64, (CHUNK,), recipe, bytes(32))
    count = MAX_INDEX_SIZE // (MAX_RECIPE_KEYS * 65536) + 1
    index = index_of(*(one_segment_file(f"f{n}", segment) for n in range(count)))
    with pytest.raises(DeltaIndexError, match="would be larger than"):
        index.encode()


# -- the decoder --------------------------------------------------------------------------


def document() -> dict[bytes, Any]:
    segment = Segment("gzip", 0, 10, 64, (CHUNK,), {"level": 9}, bytes(32))
    decoded: dict[bytes, Any] = bencode.decode(index_of(one_segment_file("f", segment)).encode())
    return decoded


def first_segment(doc: dict[bytes, Any]) -> dict[bytes, Any]:
    segment: dict[bytes, Any] = doc[b"files"][0][b"segments"][0]
    return segment


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.__setitem__(b"chunker", [1]), "chunker must be a dictionary"),
        (lambda d: d.__setitem__(b"files", {b"f": 1}), "files must be a list"),
        (
            lambda d: d[b"files"][0].__setitem__(b"path", [b"p"] * 65),
            "path deeper than 64",
        ),
        (lambda d: d[b"files"][0].__setitem__(b"segments", b"s"), "segments must be a list"),
        (
            lambda d: d[b"files"][0].__setitem__(b"segments", [0] * (MAX_SEGMENTS + 1)),
            f"more than {MAX_SEGMENTS} segments",
        ),
        (lambda d: first_segment(d).__setitem__(b"offset", b"0"), "offset must be an integer"),
        (lambda d: first_segment(d).__setitem__(b"chunks", 0), "chunks must be a byte string"),
        (lambda d: first_segment(d).__setitem__(b"recipe", [b"x"]), "recipe must be a dict"),
    ],
)
def test_wrongly_typed_fields_are_refused(change: Any, message: str) -> None:
    doc = document()
    assert DeltaIndex.decode(bencode.encode(doc)).files[0].path == ("f",)
    change(doc)
    with pytest.raises(DeltaIndexError, match=message):
        DeltaIndex.decode(bencode.encode(doc))


def test_only_bytes_can_be_decoded() -> None:
    with pytest.raises(DeltaIndexError, match="must be bytes"):
        DeltaIndex.decode("d7:versioni1ee")  # type: ignore[arg-type]


# -- reading release files ------------------------------------------------------------------


def test_unreadable_files_raise_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        whole_file_segments(tmp_path / "missing")
    with pytest.raises(StorageError, match="cannot read"):
        list(read_raw_content(tmp_path, SimpleLayout("raw", 0, 10)))  # a folder
