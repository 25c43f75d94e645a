"""Tar-aware chunk boundaries (spec/delta-index.md §2.7) on real tar archives."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.delta.chunker import Chunk, ChunkerParams, chunk_bytes, chunk_stream
from opendistro.delta.index import DeltaIndex, IndexedFile, Segment, build_index
from opendistro.delta.tarcuts import TarCuts, parse_header
from opendistro.errors import DeltaIndexError

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")


def make_tar(
    members: list[tuple[str, bytes]], *, mtime: int = 1000, fmt: int = tarfile.GNU_FORMAT
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def release(version: str, count: int = 40, seed: int = 1) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    members = []
    for number in range(count):
        # Every fifth path is long enough to need a GNU long-name or pax header.
        name = f"pkg-{version}/src/module_{number}" + ("_long" * 30 if number % 5 == 0 else "")
        members.append((name, rng.randbytes(rng.choice((0, 10, 300, 700, 5000, 20000)))))
    return members


def tar_chunks(data: bytes, params: ChunkerParams = SMALL) -> list[Chunk]:
    return chunk_bytes(data, params, TarCuts())


def member_data_spans(data: bytes) -> list[tuple[int, int]]:
    """Where each member's data lies, as tarfile reads it."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [(m.offset_data, m.size) for m in archive.getmembers() if m.size]


def test_headers_and_data_are_cut_apart() -> None:
    data = make_tar(release("1.0"))
    finder = TarCuts()
    chunks = chunk_bytes(data, SMALL, finder)
    assert finder.is_tar and finder.stopped
    starts = {chunk.offset for chunk in chunks}
    for offset, size in member_data_spans(data):
        assert offset in starts, "member data starts a chunk"
        assert offset - 512 in starts or any(  # its header sequence starts one too
            offset - 512 * blocks in starts for blocks in range(2, 8)
        )
        assert offset + -(-size // 512) * 512 in starts | {len(data)}


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_unchanged_member_data_is_reused_after_renames_reordering_and_new_mtimes(
    fmt: int,
) -> None:
    members = release("1.0", count=30)
    if fmt == tarfile.USTAR_FORMAT:
        members = [(name[:90], payload) for name, payload in members]
    old = make_tar(members, fmt=fmt, mtime=1000)
    renamed = [(name.replace("1.0", "1.1.0"), payload) for name, payload in members]
    new = make_tar(list(reversed(renamed)), fmt=fmt, mtime=2000)
    have = {chunk.hash for chunk in tar_chunks(old)}
    missing = [chunk for chunk in tar_chunks(new) if chunk.hash not in have]
    data_bytes = sum(size for _, size in member_data_spans(new))
    # Only header sequences (and the end-of-archive blocks) are missing: no member data.
    spans = member_data_spans(new)
    for chunk in missing:
        assert not any(start <= chunk.offset < start + size for start, size in spans)
    assert sum(chunk.length for chunk in missing) < len(new) - data_bytes
    # Plain CDC also loses member data to the changed headers around it.
    plain_have = {chunk.hash for chunk in chunk_bytes(old, SMALL)}
    plain_missing = sum(c.length for c in chunk_bytes(new, SMALL) if c.hash not in plain_have)
    assert plain_missing > 1.5 * sum(chunk.length for chunk in missing)


def test_an_edited_member_costs_only_its_changed_chunks() -> None:
    members = release("1.0", count=20)
    old = make_tar(members)
    number = max(range(len(members)), key=lambda n: len(members[n][1]))
    payload = bytearray(members[number][1])
    assert len(payload) >= 5000
    payload[2000:2010] = b"0123456789"
    members[number] = (members[number][0], bytes(payload))
    have = {chunk.hash for chunk in tar_chunks(old)}
    missing = [chunk for chunk in tar_chunks(make_tar(members)) if chunk.hash not in have]
    assert 1 <= len(missing) <= 4


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_streaming_gives_the_same_chunks_however_the_content_is_split(data: st.DataObject) -> None:
    content = make_tar(release("2.0", count=12, seed=data.draw(st.integers(0, 5))))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(content)), max_size=12))))
    pieces = [content[a:b] for a, b in zip([0, *cuts], [*cuts, len(content)], strict=True)]
    assert list(chunk_stream(pieces, SMALL, forced=TarCuts())) == tar_chunks(content)


def test_content_that_is_not_a_tar_is_chunked_as_usual() -> None:
    rng = random.Random(5)
    for content in (rng.randbytes(50_000), bytes(5000), b"", b"ustar" * 200):
        finder = TarCuts()
        assert chunk_bytes(content, SMALL, finder) == chunk_bytes(content, SMALL)
        assert not finder.is_tar


def header_of(data: bytes) -> bytearray:
    return bytearray(data[:512])


def with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def test_header_validation() -> None:
    data = make_tar([("a.txt", b"hello")])
    block = header_of(data)
    assert parse_header(bytes(block)) == (ord("0"), 5)
    broken = bytearray(block)
    broken[0] ^= 1  # the checksum no longer matches
    assert parse_header(bytes(broken)) is None
    assert parse_header(with_checksum(broken)) == (ord("0"), 5)
    no_magic = bytearray(block)
    no_magic[257:263] = b"nostar"
    assert parse_header(with_checksum(no_magic)) is None
    base256 = bytearray(block)
    base256[124:136] = b"\x80" + bytes(10) + b"\x05"
    assert parse_header(with_checksum(base256)) is None
    assert parse_header(bytes(512)) is None
    assert parse_header(bytes(block[:511])) is None


def test_a_lying_size_only_ends_the_cuts() -> None:
    members = [("a.txt", b"a" * 3000), ("b.txt", b"b" * 3000), ("c.txt", b"c" * 3000)]
    data = bytearray(make_tar(members))
    second = 512 + 3072
    block = bytearray(data[second : second + 512])
    block[124:136] = b"%011o\x00" % (8**11 - 1)  # about 8 GiB, far past the end
    data[second : second + 512] = with_checksum(block)
    finder = TarCuts()
    chunks = chunk_bytes(bytes(data), SMALL, finder)
    assert finder.is_tar and not finder.stopped  # still waiting for a header past the end
    starts = [chunk.offset for chunk in chunks]
    assert 512 in starts and second in starts and second + 512 in starts
    assert sum(chunk.length for chunk in chunks) == len(data)
    assert max(chunk.length for chunk in chunks) <= SMALL.max_size


def test_garbage_where_a_header_should_be_falls_back_to_plain_cdc() -> None:
    rng = random.Random(9)
    head = make_tar([("a.txt", rng.randbytes(3000))])[: 512 + 3072]
    tail = rng.randbytes(20_000)
    finder = TarCuts()
    chunks = chunk_bytes(head + tail, SMALL, finder)
    assert finder.stopped
    after = [chunk for chunk in chunks if chunk.offset >= len(head)]
    assert [(c.offset - len(head), c.length, c.hash) for c in after] == chunk_bytes(tail, SMALL)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.integers(0, 40), st.integers(0, 511))
def test_hostile_tars_never_break_the_chunk_rules(junk: bytes, at_block: int, shift: int) -> None:
    """Corrupting a real archive anywhere still yields valid, complete chunk lists."""
    good = make_tar(release("3.0", count=6))
    position = min(at_block * 512 + shift, len(good))
    content = good[:position] + junk + good[position:]
    chunks = tar_chunks(content)
    assert sum(chunk.length for chunk in chunks) == len(content)
    assert all(1 <= chunk.length <= SMALL.max_size for chunk in chunks)
    pieces = [content[i : i + 777] for i in range(0, len(content), 777)]
    assert list(chunk_stream(pieces, SMALL, forced=TarCuts())) == chunks


def test_many_extension_headers_in_a_row_stay_bounded() -> None:
    """A chain of pax headers is walked one block at a time, never buffered."""
    block = bytearray(512)
    block[0:5] = b"pax\x00\x00"
    block[124:136] = b"%011o\x00" % 0
    block[156] = ord("x")
    block[257:263] = b"ustar\x00"
    header = with_checksum(block)
    content = header * 2000 + make_tar([("a", b"x" * 100)])
    finder = TarCuts()
    chunks = chunk_bytes(content, SMALL, finder)
    assert finder.is_tar
    assert chunks[0].length <= SMALL.max_size
    assert 2000 * 512 + 512 in {chunk.offset for chunk in chunks}


# -- the index ---------------------------------------------------------------------------


def test_the_index_records_tar_content_and_allows_its_short_chunks(tmp_path: Path) -> None:
    from opendistro.create import create_torrent

    folder = tmp_path / "release"
    folder.mkdir()
    archive = make_tar(release("4.0", count=10))
    (folder / "pkg-4.0.tar").write_bytes(archive)
    (folder / "notes.txt").write_bytes(random.Random(2).randbytes(9000))
    metainfo = create_torrent(folder, piece_length=16384)
    index = build_index(tmp_path, metainfo, ChunkerParams())
    by_name = {entry.path[-1]: entry.segments for entry in index.files}
    (tar_segment,) = by_name["pkg-4.0.tar"]
    (notes,) = by_name["notes.txt"]
    assert tar_segment.content_format == "tar" and notes.content_format is None
    expected = tar_chunks(archive, ChunkerParams())
    assert [(c.length, c.hash) for c in expected] == list(tar_segment.chunks)
    assert min(length for length, _ in tar_segment.chunks[:-1]) < ChunkerParams().min_size
    decoded = DeltaIndex.decode(index.encode())
    assert decoded == index
    assert b"14:content-format3:tar" in index.encode()


def test_short_chunks_need_the_tar_format() -> None:
    chunks = ((10, bytes(16)), (100, bytes(16)))
    with pytest.raises(DeltaIndexError, match="shorter than 64"):
        DeltaIndex(
            1, SMALL, bytes(20), None, "x",
            (IndexedFile(("x",), 110, (Segment("raw", 0, 110, 110, chunks),)),),
        )
    tar = Segment("raw", 0, 110, 110, chunks, content_format="tar")
    DeltaIndex(1, SMALL, bytes(20), None, "x", (IndexedFile(("x",), 110, (tar,)),))
    with pytest.raises(DeltaIndexError, match="unknown content format 'zip'"):
        Segment("raw", 0, 110, 110, chunks, content_format="zip")
