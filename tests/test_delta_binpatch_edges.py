"""Edge cases of binary patches: hand-made patches whose streams lie, bases that moved on.

A patch comes from a mirror, so every length in it may be a lie: each of them
must end in DeltaError (never a crash, an over-read or a wrong result). On the
publisher's side, patches are only made and packed where they pay off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
import random
import struct
from pathlib import Path

import pytest

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.delta.archives import read_content, segment_file
from opendistro.delta.binpatch import MAGIC, apply_patch, make_patch
from opendistro.delta.chunker import ChunkerParams
from opendistro.delta.index import DeltaIndex, build_index
from opendistro.delta.pack import PackedPatch, SegmentPatch, write_pack
from opendistro.delta.patchapply import OldContent, apply_checked, find_bases
from opendistro.delta.patching import MIN_BASE, find_patches
from opendistro.errors import DeltaError

from .test_delta_binpatch import chunks_of, program

_ADD, _INSERT = 0, 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE)


def _assemble(
    base_length: int,
    result_length: int,
    lengths: tuple[int, int, int],
    streams: tuple[bytes, bytes, bytes],
) -> bytes:
    """A patch as spec/delta-index.md §5.3 lays it out, with whatever lengths it is told."""
    numbers = (base_length, result_length, *lengths, *map(len, streams))
    return MAGIC + b"".join(map(_varint, numbers)) + b"".join(streams)


def _insert_only(literal: bytes, *, stated: int | None = None,
                 stream: bytes | None = None) -> bytes:
    """A patch of one operation inserting ``literal`` (its stream may be replaced or misstated)."""
    control = _varint(len(literal) << 1 | _INSERT)
    literal_length = len(literal) if stated is None else stated
    return _assemble(
        0, len(literal), (len(control), len(literal) - literal_length, literal_length),
        (_xz(control), _xz(bytes(len(literal) - literal_length)),
         _xz(literal) if stream is None else stream),
    )


def _xz_index_start(stream: bytes) -> int:
    """Where an xz stream's index starts: its 12-byte footer states the index's size."""
    (backward,) = struct.unpack("<I", stream[-8:-4])
    return len(stream) - 12 - (backward + 1) * 4


# -- the patch format ---------------------------------------------------------------------


def test_a_hand_made_patch_applies() -> None:
    """The helpers below make valid patches: each test changes one thing."""
    assert b"".join(apply_patch(_insert_only(b"hello, patch"), b"")) == b"hello, patch"
    old = bytes(range(200))
    control = _varint(100 << 1 | _ADD) + _varint(2 * 50)  # add to old[50:150]
    difference = bytes([1]) * 100
    patch = _assemble(200, 100, (len(control), 100, 0),
                      (_xz(control), _xz(difference), _xz(b"")))
    assert b"".join(apply_patch(patch, old)) == bytes(range(51, 151))


def test_a_header_length_beyond_a_terabyte_is_refused() -> None:
    patch = _assemble(1 << 41, 5, (2, 0, 5), (_xz(b"\x0b"), _xz(b""), _xz(b"abcde")))
    with pytest.raises(DeltaError, match="out of range"):
        next(apply_patch(patch, b""))


def test_an_operation_needing_more_than_the_stated_stream_is_refused() -> None:
    # The header states 4 literal bytes (and 6 differences, which nothing uses).
    patch = _insert_only(b"0123456789", stated=4, stream=_xz(b"0123"))
    with pytest.raises(DeltaError, match="shorter than its operations need"):
        b"".join(apply_patch(patch, b""))


@pytest.mark.parametrize(
    "stream",
    [
        _xz(b"01234"),  # a complete stream with less than the header states
        _xz(random.Random(1).randbytes(5000))[:-40],  # a stream cut short
    ],
    ids=["short-content", "truncated"],
)
def test_a_stream_ending_before_its_stated_length_is_refused(stream: bytes) -> None:
    patch = _insert_only(random.Random(1).randbytes(5000), stream=stream)
    with pytest.raises(DeltaError, match="ends before its stated length"):
        b"".join(apply_patch(patch, b""))


def test_bytes_after_a_stream_inside_its_stated_size_are_refused() -> None:
    literal = b"the literal bytes" * 10
    patch = _insert_only(literal, stream=_xz(literal) + b"junk")
    with pytest.raises(DeltaError, match="does not end where its header says"):
        b"".join(apply_patch(patch, b""))


def test_every_corrupted_byte_of_a_streams_index_and_footer_is_refused() -> None:
    literal = b"literal content, then the end of the xz stream" * 3
    stream = _xz(literal)
    for position in range(_xz_index_start(stream), len(stream)):
        corrupt = bytearray(stream)
        corrupt[position] ^= 0x01
        with pytest.raises(DeltaError):
            b"".join(apply_patch(_insert_only(literal, stream=bytes(corrupt)), b""))


def test_a_garbage_chunk_after_the_stated_content_is_refused() -> None:
    literal = random.Random(3).randbytes(1000)  # incompressible: stored as is in the stream
    stream = bytearray(_xz(literal))
    end = stream.find(literal) + len(literal)
    assert stream[end] == 0x00, "LZMA2's end marker follows the stored bytes"
    stream[end] = 0xFF  # instead, a compressed chunk starts, made of the index's bytes
    with pytest.raises(DeltaError, match="does not decompress"):
        b"".join(apply_patch(_insert_only(literal, stream=bytes(stream)), b""))


# -- applying on the client ---------------------------------------------------------------


def test_a_shortened_old_file_is_no_base(tmp_path: Path) -> None:
    old = program(20, 3000)
    holder = tmp_path / "old.bin"
    holder.write_bytes(old)
    index = DeltaIndex.decode(_tiny_index_bytes())
    patch = PackedPatch(0, 0, len(old), hashlib.sha256(old).digest(), bytes(32), 0, 10)
    base = OldContent(holder, 0, len(old))
    assert find_bases([patch], index, [base]) == {(0, 0): (patch, base)}
    holder.write_bytes(old[:-1])
    with pytest.raises(DeltaError, match="shorter than it was"):
        base.sha256()
    assert find_bases([patch], index, [base]) == {}
    gone = OldContent(tmp_path / "deleted.bin", 0, len(old))
    assert find_bases([patch], index, [gone]) == {}, "an unreadable file is no base either"


def test_an_empty_old_content_is_never_a_base(tmp_path: Path) -> None:
    holder = tmp_path / "empty.bin"
    holder.write_bytes(b"")
    index = DeltaIndex.decode(_tiny_index_bytes())
    patch = PackedPatch(0, 0, 0, hashlib.sha256(b"").digest(), bytes(32), 0, 10)
    assert find_bases([patch], index, [OldContent(holder, 0, 0)]) == {}


def test_two_patches_may_share_one_base(tmp_path: Path) -> None:
    old = program(21, 3000)
    holder = tmp_path / "old.bin"
    holder.write_bytes(old)
    index = DeltaIndex.decode(_tiny_index_bytes(segments=2))
    first = PackedPatch(0, 0, len(old), hashlib.sha256(old).digest(), bytes(32), 0, 10)
    second = dataclasses.replace(first, segment=1, offset=10)
    base = OldContent(holder, 0, len(old))
    assert find_bases([first, second], index, [base]) == {
        (0, 0): (first, base), (0, 1): (second, base)
    }


def _tiny_index_bytes(segments: int = 1) -> bytes:
    data = b"x" * 100
    segment = {
        b"chunks": struct.pack(">I", 100) + hashlib.sha256(data).digest()[:16],
        b"content-length": 100, b"kind": b"raw", b"length": 100,
    }
    return bencode.encode({
        b"chunker": {b"algorithm": b"od-cdc-1", b"avg-size": 8192, b"max-size": 65536,
                     b"min-size": 2048, b"seed": b"opendistro"},
        b"files": [{b"length": 100 * segments, b"path": [b"a"], b"segments": [
            {**segment, b"offset": 100 * number} for number in range(segments)
        ]}],
        b"info-hash-v1": bytes(20),
        b"name": b"a",
        b"version": 1,
    })


@pytest.fixture
def rebuilt(tmp_path: Path) -> tuple[Path, bytes, bytes, bytes]:
    """An old file, the new content, its patch, and the path of the old file."""
    old, new = program(22, 20_000), program(22, 20_000, inserted=25)
    base = tmp_path / "old.bin"
    base.write_bytes(old)
    return base, old, new, make_patch(old, new)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("fewer-chunks", "more content than the delta index lists"),
        ("more-chunks", "less content than the delta index lists"),
        ("other-sha256", "not the content its pack names"),
        ("short-base", "shorter than it was"),
    ],
)
def test_a_patch_result_must_match_the_index_and_the_pack(
    tmp_path: Path, rebuilt: tuple[Path, bytes, bytes, bytes], change: str, message: str
) -> None:
    base, old, new, patch = rebuilt
    chunks = chunks_of(new)
    result_sha256 = hashlib.sha256(new).digest()
    target = tmp_path / "result"
    content = OldContent(base, 0, len(old))
    if change == "fewer-chunks":
        chunks = chunks[:-1]
    elif change == "more-chunks":
        chunks = [*chunks, (100, bytes(16))]
    elif change == "other-sha256":
        result_sha256 = hashlib.sha256(old).digest()
    else:
        base.write_bytes(old[:-10])
    with pytest.raises(DeltaError, match=message):
        apply_checked(patch, content, chunks, result_sha256, target)
    assert not target.exists(), "nothing is left of a failed result"


# -- making and packing patches on the publisher --------------------------------------------


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, DeltaIndex, Path]:
    """A one-file release rebuilt from ``old/tool.bin``: its folder, index and the old file."""
    old = tmp_path / "old" / "tool.bin"
    old.parent.mkdir()
    old.write_bytes(program(23, 40_000))
    new = tmp_path / "new" / "tool.bin"
    new.parent.mkdir()
    new.write_bytes(program(23, 40_000, inserted=30))
    index = build_index(new.parent, create_torrent(new, version="hybrid"), ChunkerParams(),
                        segment_file, read_content)
    return new.parent, index, old


def test_a_segment_without_a_recipe_gets_no_patch(release: tuple[Path, DeltaIndex, Path]) -> None:
    root, index, old = release
    (patch,) = find_patches(root, index, set(), [old], multi_file=False)
    assert (patch.file, patch.segment) == (0, 0)
    (segment,) = index.files[0].segments
    unrebuildable = dataclasses.replace(index, files=(dataclasses.replace(
        index.files[0],
        segments=(dataclasses.replace(segment, fallback_reason="no recipe reproduces it"),),
    ),))
    assert find_patches(root, unrebuildable, set(), [old], multi_file=False) == []


def test_no_patch_without_missing_content_or_old_content(
    tmp_path: Path, release: tuple[Path, DeltaIndex, Path]
) -> None:
    root, index, old = release
    every_chunk = {digest for _, digest in index.files[0].segments[0].chunks}
    assert find_patches(root, index, every_chunk, [old], multi_file=False) == []
    small = tmp_path / "small.bin"
    small.write_bytes(old.read_bytes()[: MIN_BASE - 1])
    assert find_patches(root, index, set(), [small], multi_file=False) == [], "too small a base"
    assert find_patches(root, index, set(), [tmp_path / "absent"], multi_file=False) == []


def test_old_files_that_cannot_be_read_are_passed_over(
    release: tuple[Path, DeltaIndex, Path],
) -> None:
    sysfs = Path("/sys/devices/system/cpu/online")  # reports 4096 bytes, holds fewer
    if not sysfs.is_file() or sysfs.stat().st_size < MIN_BASE:
        pytest.skip("needs Linux sysfs, whose files report a size larger than their content")
    root, index, old = release
    assert find_patches(root, index, set(), [sysfs], multi_file=False) == []
    (patch,) = find_patches(root, index, set(), [sysfs, old], multi_file=False)
    assert patch.base_sha256 == hashlib.sha256(old.read_bytes()).digest()


def test_only_patches_cheaper_than_their_chunks_are_packed(
    tmp_path: Path, release: tuple[Path, DeltaIndex, Path]
) -> None:
    root, index, old = release
    (patch,) = find_patches(root, index, set(), [old], multi_file=False)
    new_content = (root / "tool.bin").read_bytes()
    dear = dataclasses.replace(patch, data=random.Random(5).randbytes(len(new_content)))
    paths = {"header_path": tmp_path / "x.odpack", "blocks_path": tmp_path / "x.odblocks"}

    def pack(patches: list[SegmentPatch]) -> tuple[PackedPatch, ...]:
        header = write_pack(root, index, index.encode(), set(), multi_file=False,
                            patches=patches, **paths)
        return header.patches

    (packed,) = pack([patch])
    assert packed.length == len(patch.data)
    assert pack([dear]) == (), "a patch as large as the content costs more than its chunks"
