"""Edge cases of delta.archives: hand-made containers, odd streams, and errors on reading.

The main round-trip tests live in test_delta_archives.py; this file builds the
rarer shapes by hand (zip64 records, lying directories, odd ``ar`` members,
xz streams with filters or checks Python cannot reproduce) and checks that each
becomes what the module promises: a reproducible segment, or a raw one with a
stated reason, never an exception.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import struct
import zlib
from pathlib import Path

import pytest

from opendistro.delta.archives import (
    PIECE_SIZE,
    SegmentLayout,
    check_recipe,
    content_length,
    read_content,
    read_range,
    rebuild,
    recompress,
    segment_file,
)
from opendistro.errors import DeltaError, IntegrityError, StorageError
from tests.test_delta_archives import (
    TAR,
    ar_archive,
    assert_round_trip,
    binary,
    kinds,
    text,
    write_zip_bytes,
)

GOOD_ZLIB = {"level": 6, "mem_level": 8, "strategy": 0, "wbits": 15}
XZ_BLOCKS = {"preset": 0, "extreme": 0, "check": lzma.CHECK_CRC32, "dict_size": 1 << 18}


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def only_raw(path: Path) -> SegmentLayout:
    (segment,) = assert_round_trip(path)
    assert segment.kind == "raw"
    return segment


# ---------------------------------------------------------------------------
# Reading: errors are typed, and what can be read is exact


def test_unreadable_paths_raise_storage_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gz"
    with pytest.raises(StorageError):
        segment_file(missing)
    with pytest.raises(StorageError):
        list(read_range(missing, 0, 10))
    with pytest.raises(StorageError):
        list(read_content(missing, SegmentLayout("gzip", 0, 100)))


def test_a_file_shorter_than_its_reported_size_is_a_storage_error() -> None:
    """sysfs files report 4096 bytes and hold fewer: like a file shrinking while read."""
    path = Path("/sys/devices/system/cpu/online")
    if not path.exists():
        pytest.skip("needs Linux sysfs, whose files report a size larger than their content")
    with pytest.raises(StorageError, match="changed while being read"):
        segment_file(path)


def test_read_range_past_the_end_is_a_delta_error(tmp_path: Path) -> None:
    path = write(tmp_path, "short", b"0123456789")
    assert b"".join(read_range(path, 2, 5)) == b"23456"
    with pytest.raises(DeltaError, match="file ends before byte"):
        list(read_range(path, 5, 10))


def test_zstd_content_cannot_be_read(tmp_path: Path) -> None:
    path = write(tmp_path, "x.zst", b"\x28\xb5\x2f\xfd" + bytes(100))
    with pytest.raises(DeltaError, match="cannot read zstd"):
        list(read_content(path, SegmentLayout("zstd", 0, 104)))


def test_a_segment_longer_than_its_stream_is_refused(tmp_path: Path) -> None:
    stream = gzip.compress(text(5_000, 1))
    path = write(tmp_path, "padded.gz", stream + bytes(64))
    with pytest.raises(DeltaError, match="the stream ends at"):
        list(read_content(path, SegmentLayout("gzip", 0, len(stream) + 64)))


def test_large_pieces_are_cut_when_compressing_and_rebuilding() -> None:
    content = binary(2 * PIECE_SIZE + 12345, seed=4)
    out = b"".join(recompress("deflate", GOOD_ZLIB, [content]))
    assert zlib.decompress(out, -15) == content
    assert out == b"".join(recompress("deflate", GOOD_ZLIB, [content[:1000], content[1000:]]))
    # A raw segment passes through, cut to PIECE_SIZE, and must have its exact length.
    layout = SegmentLayout("raw", 0, len(content))
    pieces = list(rebuild(layout, [content]))
    assert b"".join(pieces) == content and max(map(len, pieces)) == PIECE_SIZE
    with pytest.raises(IntegrityError, match="has 9 bytes, expected"):
        list(rebuild(layout, [content[:9]]))
    assert list(rebuild(SegmentLayout("raw", 5, 0), [])) == []


# ---------------------------------------------------------------------------
# Recipes


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (1234, "header must be bytes"),
        (b"\x1f\x8b\x08\xe0" + bytes(6), "reserved flags"),
        (b"\x1f\x8b\x08\x04" + bytes(6), "truncated"),  # FEXTRA without its length
        (b"\x1f\x8b\x08\x02" + bytes(6), "truncated"),  # FHCRC without the CRC
        (b"\x1f\x8b\x08\x04" + bytes(6) + b"\x09\x00abc", "truncated"),  # short extra field
    ],
)
def test_malformed_gzip_headers_in_recipes(header: object, message: str) -> None:
    with pytest.raises(DeltaError, match=message):
        check_recipe("gzip", {**GOOD_ZLIB, "header": header})  # type: ignore[dict-item]


def test_xz_block_header_too_small_for_the_sizes_is_refused() -> None:
    recipe = {**XZ_BLOCKS, "block_size": 1000, "block_header_size": 8}
    check_recipe("xz", recipe)  # well-formed, but no block header fits in 8 bytes
    with pytest.raises(DeltaError, match="does not fit"):
        list(recompress("xz", recipe, [text(3000, 1)]))


@pytest.mark.parametrize("size", [0, 2000, 2500])
def test_xz_blocks_of_whole_and_partial_sizes_decode(size: int) -> None:
    """Content that ends on a block boundary, or is empty, still makes a valid .xz."""
    content = text(size, 2)
    for header_size in (0, 16):
        recipe = {**XZ_BLOCKS, "block_size": 1000, "block_header_size": header_size}
        assert lzma.decompress(b"".join(recompress("xz", recipe, [content]))) == content


# ---------------------------------------------------------------------------
# gzip and bzip2


def test_an_empty_gzip_member_between_others(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "members.gz",
        gzip.compress(text(3000, 1), mtime=0)
        + gzip.compress(b"", mtime=0)
        + gzip.compress(text(3000, 2), mtime=0),
    )
    segments = assert_round_trip(path)
    assert kinds(segments) == ["gzip", "gzip", "gzip"]
    assert content_length(path, segments[1]) == 0


def test_gzip_cut_inside_its_trailer_stays_raw(tmp_path: Path) -> None:
    segment = only_raw(write(tmp_path, "cut.gz", gzip.compress(text(3000, 1))[:-4]))
    assert "the gzip trailer is missing" in (segment.fallback_reason or "")


def test_gzip_with_reserved_header_flags_stays_raw(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(text(3000, 1)))
    data[3] |= 0x20
    segment = only_raw(write(tmp_path, "reserved.gz", bytes(data)))
    assert "reserved flags" in (segment.fallback_reason or "")


def test_streams_from_other_compressors_fall_back_and_later_searches_are_short(
    tmp_path: Path,
) -> None:
    """After a few streams nothing reproduces, the search shrinks to a short list."""

    def unusual(data: bytes) -> bytes:  # a memLevel no candidate uses: "another deflate"
        compressor = zlib.compressobj(5, zlib.DEFLATED, -15, 1)
        body = compressor.compress(data) + compressor.flush()
        head = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff"
        return head + body + struct.pack("<II", zlib.crc32(data), len(data))

    members = [text(3000, seed) for seed in range(6)]
    path = write(tmp_path, "other.gz", b"".join(unusual(m) for m in members))
    assert gzip.decompress(path.read_bytes()) == b"".join(members)
    segments = assert_round_trip(path)
    assert len(segments) == 6 and all(s.kind == "raw" for s in segments)
    reasons = [s.fallback_reason or "" for s in segments]
    assert all(r.startswith("gzip: no zlib parameters reproduce") for r in reasons)
    assert ["short list" in r for r in reasons] == [False] * 4 + [True] * 2
    assert b"".join(b"".join(read_content(path, s)) for s in segments) == path.read_bytes()


def test_bzip2_whose_header_level_is_not_its_block_size(tmp_path: Path) -> None:
    """Blocks of 100k under a header that says 900k: libbz2 at level 9 cannot remake it."""
    data = bytearray(bz2.compress(TAR, 1))
    data[3] = ord("9")
    path = write(tmp_path, "relabelled.bz2", bytes(data))
    assert bz2.decompress(path.read_bytes()) == TAR
    segment = only_raw(path)
    assert segment.fallback_reason == "bz2: libbz2 at level 9 does not reproduce this stream"


# ---------------------------------------------------------------------------
# xz


def xz_with_stream_flags(data: bytes, check_id: int) -> bytes:
    """Rewrite an .xz stream's check id in its header and footer (the check field is kept)."""
    out = bytearray(data)
    flags = bytes((0, check_id))
    out[6:12] = flags + struct.pack("<I", zlib.crc32(flags))
    backward = bytes(out[-8:-4]) + flags
    out[-12:-2] = struct.pack("<I", zlib.crc32(backward)) + backward
    return bytes(out)


def rewrite_first_block_header(data: bytes, flags: int, fields: bytes) -> bytes:
    """Replace the first block header's flags and fields, keeping its size."""
    out = bytearray(data)
    size = (out[12] + 1) * 4
    header = bytes((out[12], flags)) + fields
    header += bytes(size - 4 - len(header))
    out[12 : 12 + size] = header + struct.pack("<I", zlib.crc32(header))
    return bytes(out)


def test_xz_with_a_check_python_cannot_write_stays_raw(tmp_path: Path) -> None:
    # Check id 2 is reserved (4 bytes, like CRC32): liblzma decodes it without checking.
    data = xz_with_stream_flags(lzma.compress(text(5000, 1), check=lzma.CHECK_CRC32), 2)
    path = write(tmp_path, "check2.xz", data)
    assert lzma.decompress(data) == text(5000, 1)
    segment = only_raw(path)
    assert "integrity check not supported" in (segment.fallback_reason or "")


def test_xz_with_a_bcj_filter_stays_raw(tmp_path: Path) -> None:
    filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
    path = write(tmp_path, "x86.xz", lzma.compress(binary(20_000, 1), filters=filters))
    segment = only_raw(path)
    assert "BCJ or delta filter" in (segment.fallback_reason or "")


def test_xz_block_header_with_only_the_uncompressed_size_stays_raw(tmp_path: Path) -> None:
    content = text(5000, 3)
    recipe = {**XZ_BLOCKS, "block_size": 2000, "block_header_size": 16}
    data = b"".join(recompress("xz", recipe, [content]))
    # Flag 0x80 alone: uncompressed size (2000) present, compressed size absent.
    data = rewrite_first_block_header(data, 0x80, bytes((0xD0, 0x0F, 0x21, 0x01, 0x00)))
    assert lzma.decompress(data) == content
    segment = only_raw(write(tmp_path, "one-size.xz", data))
    assert "only one of its sizes" in (segment.fallback_reason or "")


def test_xz_with_a_dictionary_larger_than_any_preset_stays_raw(tmp_path: Path) -> None:
    data = lzma.compress(text(5000, 4), preset=0)
    # LZMA2 dictionary byte 30: 128 MiB, decodable within the memory limit.
    data = rewrite_first_block_header(data, 0x00, bytes((0x21, 0x01, 30)))
    assert lzma.decompress(data) == text(5000, 4)
    segment = only_raw(write(tmp_path, "big-dict.xz", data))
    assert "dictionary larger than any xz preset" in (segment.fallback_reason or "")


def test_xz_with_unusual_encoder_options_stays_raw(tmp_path: Path) -> None:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 6, "nice_len": 17, "lc": 1}]
    path = write(tmp_path, "tuned.xz", lzma.compress(TAR, filters=filters))
    segment = only_raw(path)
    assert (segment.fallback_reason or "").startswith("xz: no liblzma preset reproduces")


def test_xz_preset_search_skips_wrong_presets_early(tmp_path: Path) -> None:
    """Presets 3 and 4 share a dictionary size; 4 is tried first and fails on its prefix."""
    rng = random.Random(5)
    content = b"".join(rng.randbytes(3000) + text(3000, i) for i in range(300))
    path = write(tmp_path, "p3.xz", lzma.compress(content, preset=3))
    (segment,) = assert_round_trip(path)
    assert segment.kind == "xz" and segment.recipe is not None
    assert (segment.recipe["preset"], segment.recipe["extreme"]) == (3, 0)


def test_xz_with_an_empty_sized_block_stays_raw(tmp_path: Path) -> None:
    """A sized block of no content: no recipe can describe it, and none is claimed."""

    def crc(data: bytes) -> bytes:
        return struct.pack("<I", zlib.crc32(data))

    flags = bytes((0, lzma.CHECK_CRC32))
    block_header = bytes((2, 0xC0, 1, 0, 0x21, 1, 0, 0))  # sizes: 1 compressed, 0 content
    block = block_header + crc(block_header) + b"\x00" + bytes(3) + crc(b"")
    index = b"\x00\x01" + bytes((12 + 1 + 4, 0))
    index += bytes(-len(index) % 4)
    index += crc(index)
    backward = struct.pack("<I", len(index) // 4 - 1) + flags
    data = b"\xfd7zXZ\x00" + flags + crc(flags) + block + index + crc(backward) + backward
    data += b"YZ"
    assert lzma.decompress(data) == b""
    segment = only_raw(write(tmp_path, "empty-block.xz", data))
    assert (segment.fallback_reason or "").startswith("xz: no liblzma preset reproduces")


# ---------------------------------------------------------------------------
# ar archives


def ar_member_header(name: str, size: str) -> bytes:
    return f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{size:<10}`\n".encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"!<arch>\n" + ar_member_header("a", "5")[:-2] + b"XX" + b"hello\n", "bad member header"),
        (b"!<arch>\n" + ar_member_header("a", "five") + b"hello\n", "bad member size"),
        (b"!<arch>\n" + ar_member_header("a", "500") + b"hello\n", "runs past the end"),
        (b"!<arch>\n" + ar_member_header("a", "5") + b"hello", "the last member runs past"),
        (b"!<arch>\n" + ar_member_header("e", "0") * 4097, "too many members"),
    ],
)
def test_malformed_ar_archives_stay_raw(tmp_path: Path, data: bytes, reason: str) -> None:
    segment = only_raw(write(tmp_path, "bad.deb", data))
    assert (segment.fallback_reason or "").startswith("ar: ") and reason in (
        segment.fallback_reason or ""
    )


def test_plain_raw_segments_next_to_each_other_are_merged(tmp_path: Path) -> None:
    """Padding after a member's stream and the next member's header become one raw segment."""
    stream = gzip.compress(TAR[:50_000], mtime=0)
    path = write(
        tmp_path,
        "pkg.deb",
        ar_archive({"data.tar.gz": stream + bytes(100), "debian-binary": b"2.0\n"}),
    )
    segments = assert_round_trip(path)
    assert kinds(segments) == ["raw", "gzip", "raw"]
    assert segments[2].length == 100 + 60 + 4 and segments[2].fallback_reason is None


# ---------------------------------------------------------------------------
# zip: hand-made directories

_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")
MEMBER = text(20_000, 7)


def one_member_zip(
    *,
    name: bytes = b"m.txt",
    gap: bytes = b"",
    compressed: int | None = None,
    uncompressed: int | None = None,
    header_offset: int | None = None,
    extra: bytes = b"",
    zip64_end: bytes | None = None,
    count: int = 1,
    disk: int = 0,
    directory_size: int | None = None,
    directory_offset: int | None = None,
) -> bytes:
    """A zip of one deflated member whose directory fields can be set at will."""
    original = write_zip_bytes({name.decode(): MEMBER})
    eocd = _EOCD.unpack_from(original, len(original) - _EOCD.size)
    offset = eocd[6]
    fields = list(_CENTRAL.unpack_from(original, offset))
    real_compressed = fields[8]
    for index, value in ((8, compressed), (9, uncompressed), (16, header_offset)):
        if value is not None:
            fields[index] = value
    if compressed is None and gap:
        fields[8] = real_compressed + len(gap)
    fields[10], fields[11] = len(name), len(extra)
    entry = _CENTRAL.pack(*fields) + name + extra
    body = original[:offset] + gap
    tail = b""
    if zip64_end is not None:
        tail = zip64_end
    eocd_fields = [
        b"PK\x05\x06", disk, 0, count, count,
        len(entry) if directory_size is None else directory_size,
        len(body) if directory_offset is None else directory_offset, 0,
    ]  # fmt: skip
    return body + entry + tail + _EOCD.pack(*eocd_fields)


def zip64_end_records(data_before: int, entry_size: int, *, at: int | None = None) -> bytes:
    """A zip64 end record right after the directory, and its locator."""
    record_at = data_before + entry_size
    record = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, entry_size, data_before
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, record_at if at is None else at, 1)
    return record + locator


def directory_layout() -> tuple[int, int]:
    """(where the directory starts, its size) in the unmodified one-member zip."""
    data = one_member_zip()
    eocd = _EOCD.unpack_from(data, len(data) - _EOCD.size)
    return eocd[6], eocd[5]


def test_zip64_end_record_is_followed(tmp_path: Path) -> None:
    start, size = directory_layout()
    data = one_member_zip(zip64_end=zip64_end_records(start, size))
    path = write(tmp_path, "zip64.zip", data)
    segments = assert_round_trip(path)
    assert kinds(segments) == ["raw", "deflate", "raw"]
    assert b"".join(read_content(path, segments[1])) == MEMBER


@pytest.mark.parametrize(
    ("which", "values"),
    [
        ("all", (len(MEMBER), None, 0)),  # None: the real compressed size
        ("offset", (0,)),
        ("compressed", (None,)),
    ],
)
def test_zip64_extra_fields_give_sizes_and_offsets(
    tmp_path: Path, which: str, values: tuple[int | None, ...]
) -> None:
    plain = one_member_zip()
    real_compressed = _CENTRAL.unpack_from(plain, directory_layout()[0])[8]
    body = b"".join(struct.pack("<Q", real_compressed if v is None else v) for v in values)
    timestamp = struct.pack("<HHBI", 0x5455, 5, 1, 0)  # another extra field comes first
    extra = timestamp + struct.pack("<HH", 1, len(body)) + body
    big = 0xFFFFFFFF
    data = one_member_zip(
        extra=extra,
        uncompressed=big if which == "all" else None,
        compressed=big if which in ("all", "compressed") else None,
        header_offset=big if which in ("all", "offset") else None,
    )
    segments = assert_round_trip(write(tmp_path, f"{which}.zip", data))
    assert kinds(segments) == ["raw", "deflate", "raw"]


def corrupt_zips() -> list[tuple[str, bytes, str]]:
    start, size = directory_layout()
    big = 0xFFFFFFFF
    return [
        ("zip64 extra too short", one_member_zip(
            compressed=big, header_offset=big, extra=struct.pack("<HHQ", 1, 8, 5)
        ), "zip64 extra field is too short"),
        ("zip64 extra missing", one_member_zip(compressed=big), "without a zip64 extra"),
        ("zip64 record outside", one_member_zip(
            zip64_end=zip64_end_records(start, size, at=10**6)
        ), "zip64 end record outside the file"),
        ("zip64 record missing", one_member_zip(
            zip64_end=zip64_end_records(start, size, at=0)
        ), "no zip64 end of central directory record"),
        ("multi-disk", one_member_zip(disk=1), "multi-disk"),
        ("huge directory", one_member_zip(directory_size=1 << 30), "central directory too large"),
        ("directory before file", one_member_zip(directory_offset=10**7), "outside the file"),
        ("entry count", one_member_zip(name=b"n" * 60, count=2), "central directory is truncated"),
    ]  # fmt: skip


@pytest.mark.parametrize(("label", "data", "reason"), corrupt_zips(), ids=lambda v: str(v)[:20])
def test_inconsistent_zip_directories_stay_raw(
    tmp_path: Path, label: str, data: bytes, reason: str
) -> None:
    segment = only_raw(write(tmp_path, "bad.zip", data))
    assert (segment.fallback_reason or "").startswith("zip: "), label
    assert reason in (segment.fallback_reason or ""), label


def test_bad_central_directory_entries_stay_raw(tmp_path: Path) -> None:
    start, _ = directory_layout()
    data = bytearray(one_member_zip())
    data[start : start + 4] = b"PK\x09\x09"
    segment = only_raw(write(tmp_path, "sig.zip", bytes(data)))
    assert "bad central directory entry" in (segment.fallback_reason or "")
    data = bytearray(one_member_zip())
    struct.pack_into("<H", data, start + 28, 5000)  # the name runs past the directory
    segment = only_raw(write(tmp_path, "name.zip", bytes(data)))
    assert "central directory entry is truncated" in (segment.fallback_reason or "")


def test_an_empty_zip_is_one_plain_raw_segment(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.zip", write_zip_bytes({}))
    assert assert_round_trip(path) == [SegmentLayout("raw", 0, 22)]


def test_a_member_whose_stream_ends_before_its_recorded_size(tmp_path: Path) -> None:
    path = write(tmp_path, "gap.zip", one_member_zip(gap=bytes(16)))
    segments = assert_round_trip(path)
    assert [s.fallback_reason for s in segments if s.fallback_reason] == [
        "deflate: the stream ends before its recorded size"
    ]


def test_a_member_larger_than_the_in_memory_limit(tmp_path: Path) -> None:
    """Content beyond 8 MiB is streamed from the file while the recipe is proven."""
    big = text(9 << 20, 11)
    path = write(tmp_path, "big.zip", write_zip_bytes({"big.txt": big}))
    segments = assert_round_trip(path)
    (deflate,) = [s for s in segments if s.kind == "deflate"]
    assert content_length(path, deflate) == len(big)
