"""Content-defined chunking: exact cover, size bounds, streaming, and locality of edits."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro.delta.chunker import (
    Chunk,
    Chunker,
    ChunkerParams,
    chunk_bytes,
    chunk_hash,
    chunk_stream,
    symbol_table,
)
from opendistro.errors import ConfigError, LocalProtocolError

from .test_delta_index_vectors import counter_stream, reference_chunks

DEFAULT = ChunkerParams()
SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")


def text_like(size: int, seed: int) -> bytes:
    """Lines of words with a skewed vocabulary: low-entropy, ASCII, like source or logs."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    words = ["".join(rng.choices(letters, k=rng.randint(1, 9))) for _ in range(3000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    out: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(words, weights, k=rng.randint(3, 14))) + ".\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def check_cover(data: bytes, chunks: list[Chunk], params: ChunkerParams) -> None:
    """Chunks tile the data in order, respect the size bounds and carry the right hashes."""
    position = 0
    for number, chunk in enumerate(chunks):
        assert chunk.offset == position
        assert 1 <= chunk.length <= params.max_size
        if number < len(chunks) - 1:
            assert chunk.length >= params.min_size
        assert chunk.hash == hashlib.sha256(data[position : position + chunk.length]).digest()[:16]
        position += chunk.length
    assert position == len(data)


def changed_chunks(old: bytes, new: bytes, params: ChunkerParams) -> list[Chunk]:
    """Chunks of ``new`` whose hash is not among the chunks of ``old``."""
    known = {chunk.hash for chunk in chunk_bytes(old, params)}
    return [chunk for chunk in chunk_bytes(new, params) if chunk.hash not in known]


# -- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"algorithm": "fastcdc"},
        {"avg_size": 3000},
        {"avg_size": 128, "min_size": 64},
        {"avg_size": 1 << 23, "max_size": 1 << 24},
        {"min_size": 63},
        {"min_size": 16384},
        {"max_size": 4096},
        {"max_size": (16 << 20) + 1},
        {"seed": b""},
        {"seed": bytes(65)},
        {"seed": "opendistro"},
        {"min_size": 2048.0},
        {"min_size": True},
    ],
)
def test_bad_parameters_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ChunkerParams(**fields)  # type: ignore[arg-type]


def test_patterns_follow_the_average_size() -> None:
    assert DEFAULT.hard_pattern == b"\x01" * 13 + b"\x00"
    assert DEFAULT.easy_pattern == b"\x01" * 11 + b"\x00"
    assert DEFAULT.hard_pattern.endswith(DEFAULT.easy_pattern)


def test_table_bits_are_balanced_and_depend_on_the_seed() -> None:
    table = symbol_table(DEFAULT.seed)
    assert len(table) == 256 and max(table) < 16
    for bit in range(4):
        assert sum((entry >> bit) & 1 for entry in table) == 128
    assert symbol_table(b"another seed") != table


def test_other_seeds_cut_elsewhere() -> None:
    data = random.Random(3).randbytes(200_000)
    a = [chunk.length for chunk in chunk_bytes(data, DEFAULT)]
    b = [chunk.length for chunk in chunk_bytes(data, ChunkerParams(seed=b"x"))]
    assert a != b


# -- basic behaviour ----------------------------------------------------------------------


def test_empty_input_has_no_chunks() -> None:
    assert chunk_bytes(b"") == []
    assert list(chunk_stream([], DEFAULT)) == []
    assert list(chunk_stream([b"", b""], DEFAULT)) == []


@pytest.mark.parametrize("size", [1, 100, 2047, 2048, 2049, 8192])
def test_short_inputs(size: int) -> None:
    data = random.Random(size).randbytes(size)
    chunks = chunk_bytes(data)
    check_cover(data, chunks, DEFAULT)
    if size <= DEFAULT.min_size:
        assert chunks == [Chunk(0, size, chunk_hash(data))]


@pytest.mark.parametrize(
    "data",
    [
        random.Random(1).randbytes(3_000_000),
        text_like(2_000_000, 1),
        counter_stream(b"hex", 500_000).hex().encode(),
    ],
    ids=["random", "text", "hex"],
)
def test_chunks_cover_the_input_and_average_near_the_target(data: bytes) -> None:
    chunks = chunk_bytes(data)
    check_cover(data, chunks, DEFAULT)
    average = len(data) / len(chunks)
    assert 6_000 < average < 14_000, average


@pytest.mark.parametrize(
    "data",
    [
        bytes(1_000_000),
        b"\xff" * 300_000,
        b"ab" * 200_000,
        bytes(range(256)) * 2000,
        b"\x00\x01\x00\x00" * 100_000,
    ],
    ids=["zeros", "ones", "ab", "ramp", "sparse"],
)
def test_low_entropy_input_gives_no_tiny_chunks(data: bytes) -> None:
    chunks = chunk_bytes(data)
    check_cover(data, chunks, DEFAULT)
    assert len(chunks) <= len(data) // DEFAULT.min_size + 1


def test_zeros_are_cut_at_the_maximum_size() -> None:
    chunks = chunk_bytes(bytes(1_000_000))
    assert [chunk.length for chunk in chunks[:-1]] == [DEFAULT.max_size] * 15
    assert len({chunk.hash for chunk in chunks[:-1]}) == 1


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000))
def test_fast_chunker_agrees_with_the_spec_transcription(data: bytes) -> None:
    # Arbitrary short inputs (hypothesis favours repetitive ones) with small parameters.
    expected = reference_chunks(data, SMALL.min_size, SMALL.avg_size, SMALL.max_size, SMALL.seed)
    assert [(c.offset, c.length) for c in chunk_bytes(data, SMALL)] == [
        (offset, length) for offset, length, _ in expected
    ]


# -- streaming ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.integers(0, 300_000), max_size=30))
def test_any_split_of_the_stream_gives_the_same_chunks(seed: int, cuts: list[int]) -> None:
    data = random.Random(seed).randbytes(300_000)
    bounds = [0, *sorted(cuts), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(chunk_stream(pieces, SMALL)) == chunk_bytes(data, SMALL)
    assert list(chunk_stream(pieces, DEFAULT)) == chunk_bytes(data, DEFAULT)


def test_byte_at_a_time_feed() -> None:
    data = random.Random(5).randbytes(20_000)
    chunker = Chunker(SMALL)
    lengths: list[int] = []
    for byte in data:
        lengths += chunker.feed(bytes([byte]))
    lengths += chunker.finish()
    assert lengths == [chunk.length for chunk in chunk_bytes(data, SMALL)]


def test_chunker_memory_stays_bounded() -> None:
    rng = random.Random(6)
    chunker = Chunker(DEFAULT)
    piece = 65_536
    total = 0
    for _ in range(200):
        total += sum(chunker.feed(rng.randbytes(piece)))
        assert chunker.buffered < DEFAULT.max_size + piece
    total += sum(chunker.finish())
    assert total == 200 * piece
    assert chunker.buffered == 0


def test_chunker_accepts_buffers_of_any_kind() -> None:
    data = random.Random(8).randbytes(100_000)
    expected = chunk_bytes(data, SMALL)
    assert chunk_bytes(bytearray(data), SMALL) == expected
    assert chunk_bytes(memoryview(data), SMALL) == expected
    assert list(chunk_stream([memoryview(data)[:5000], bytearray(data[5000:])], SMALL)) == expected


def test_finished_chunker_refuses_more_input() -> None:
    chunker = Chunker()
    chunker.feed(b"abc")
    assert chunker.finish() == [3]
    with pytest.raises(LocalProtocolError):
        chunker.feed(b"more")
    with pytest.raises(LocalProtocolError):
        chunker.finish()
    with pytest.raises(LocalProtocolError, match="already finished"):
        chunker.cut()


class FixedCuts:
    """A CutFinder that reports the given stream offsets once the bytes reach them."""

    def __init__(self, *cuts: int) -> None:
        self.cuts = list(cuts)
        self.fed = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        self.fed += len(data)
        found = [cut for cut in self.cuts if cut <= self.fed]
        self.cuts = self.cuts[len(found) :]
        return found


def test_forced_cuts_end_chunks_and_must_lie_in_the_piece_fed() -> None:
    data = random.Random(9).randbytes(5000)
    chunks = chunk_bytes(data, forced=FixedCuts(1000, 3000))
    assert [c.offset for c in chunks][:2] == [0, 1000] and 3000 in [c.offset for c in chunks]
    assert b"".join(data[c.offset : c.offset + c.length] for c in chunks) == data
    with pytest.raises(LocalProtocolError, match="outside the piece fed"):
        chunk_bytes(data, forced=Beyond())


class Beyond:
    """A broken CutFinder: claims a cut past the end of what it was given."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        return [len(data) + 1]


# -- content-defined: edits change O(1) chunks --------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    position=st.integers(0, 4000),
    removed=st.integers(0, 300),
    inserted=st.binary(max_size=300),
)
def test_an_edit_near_the_start_changes_few_chunks(
    seed: int, position: int, removed: int, inserted: bytes
) -> None:
    old = random.Random(seed).randbytes(60_000)
    new = old[:position] + inserted + old[position + removed :]
    changed = changed_chunks(old, new, SMALL)
    # About 200 chunks of ~300 bytes. An edit costs 1.4 of them on average; more
    # than 6 happens about once in a thousand edits, and each further one is
    # less than half as likely again.
    assert len(changed) <= 12
    # Everything after the resynchronisation point is shared.
    assert chunk_bytes(new, SMALL)[-1].hash in {c.hash for c in chunk_bytes(old, SMALL)}


@pytest.fixture(scope="module", params=["random", "text"])
def big(request: pytest.FixtureRequest) -> bytes:
    if request.param == "random":
        return random.Random(11).randbytes(4_000_000)
    return text_like(4_000_000, 11)


def test_insertion(big: bytes) -> None:
    new = big[:1000] + b"inserted bytes" + big[1000:]
    changed = changed_chunks(big, new, DEFAULT)
    assert 1 <= len(changed) <= 4
    assert changed[0].offset == 0


def test_deletion(big: bytes) -> None:
    new = big[:5000] + big[5100:]
    assert 1 <= len(changed_chunks(big, new, DEFAULT)) <= 4


def test_one_byte_changed(big: bytes) -> None:
    new = big[:70_000] + bytes([big[70_000] ^ 1]) + big[70_001:]
    changed = changed_chunks(big, new, DEFAULT)
    assert 1 <= len(changed) <= 4
    assert changed[0].offset <= 70_000 < changed[-1].offset + changed[-1].length


def test_moving_a_block(big: bytes) -> None:
    block = big[100_000:300_000]
    new = big[:100_000] + big[300_000:3_000_000] + block + big[3_000_000:]
    assert len(changed_chunks(big, new, DEFAULT)) <= 10


def test_append(big: bytes) -> None:
    new = big + b"appended " * 1000
    old_chunks = chunk_bytes(big, DEFAULT)
    new_chunks = chunk_bytes(new, DEFAULT)
    # Every old chunk but the last (which the append extends) is still there, in place.
    assert new_chunks[: len(old_chunks) - 1] == old_chunks[:-1]


def test_prepend(big: bytes) -> None:
    new = b"a new header line\n" * 20 + big
    changed = changed_chunks(big, new, DEFAULT)
    assert 1 <= len(changed) <= 4
    assert changed[0].offset == 0


def test_truncation_keeps_every_whole_chunk(big: bytes) -> None:
    cut = 2_500_000
    old_chunks = chunk_bytes(big, DEFAULT)
    new_chunks = chunk_bytes(big[:cut], DEFAULT)
    whole = [chunk for chunk in old_chunks if chunk.offset + chunk.length <= cut]
    assert new_chunks[: len(whole)] == whole
