"""Segments of real archive files, and rebuilding their compressed streams bit-exactly.

Archives are made by the same tools that make releases (zipfile, tarfile, gzip,
lzma, bz2, and the gzip/xz/bzip2/zstd/node command-line tools when present);
every test checks the round trip: for each segment, rebuilding its content with
its recipe gives back exactly the file's bytes.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import itertools
import lzma
import random
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro.delta.archives import (
    MIN_STREAM_LENGTH,
    PIECE_SIZE,
    SegmentLayout,
    check_recipe,
    content_length,
    read_content,
    rebuild,
    recompress,
    segment_file,
)
from opendistro.errors import DeltaError, IntegrityError

WORDS = [
    "release", "torrent", "piece", "chunk", "delta", "mirror", "tracker", "index", "wheel",
    "archive", "def", "return", "import", "class", "self", "None", "=", "(", ")", ":", "\n",
    "    ", "version", "package", "data", "if", "else", "for", "in", "raise",
]  # fmt: skip


def text(size: int, seed: int) -> bytes:
    """Compressible, source-code-like bytes, reproducible from ``seed``."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += (rng.choice(WORDS) + " ").encode()
    return bytes(out[:size])


def binary(size: int, seed: int) -> bytes:
    """Half random, half repetitive: compresses somewhat, like a shared library."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(rng.randrange(16, 512))
        out += bytes(rng.randrange(4)) * rng.randrange(16, 512)
    return bytes(out[:size])


def assert_round_trip(path: Path, *, find_recipes: bool = True) -> list[SegmentLayout]:
    """Segments cover the file in order, and every one rebuilds to the file's bytes."""
    data = path.read_bytes()
    segments = segment_file(path, find_recipes=find_recipes)
    position = 0
    for segment in segments:
        assert segment.offset == position
        assert segment.length > 0
        position += segment.length
        original = data[segment.offset : segment.offset + segment.length]
        pieces = list(read_content(path, segment))
        assert all(0 < len(piece) <= PIECE_SIZE for piece in pieces)
        assert content_length(path, segment) == sum(map(len, pieces))
        if segment.kind == "raw":
            assert segment.recipe is None
            assert b"".join(pieces) == original
        elif find_recipes:
            assert segment.compressed_sha256 == hashlib.sha256(original).digest()
            assert segment.recipe is not None
            rebuilt = list(rebuild(segment, pieces))
            assert all(len(piece) <= PIECE_SIZE for piece in rebuilt)
            assert b"".join(rebuilt) == original
    assert position == len(data)
    return segments


def kinds(segments: list[SegmentLayout]) -> list[str]:
    return [segment.kind for segment in segments]


def write_zip(path: Path, members: dict[str, bytes], **options: object) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, **options) as archive:  # type: ignore[arg-type]
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def deflated_members(path: Path) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as archive:
        return [
            info
            for info in archive.infolist()
            if info.compress_type == zipfile.ZIP_DEFLATED
            and info.compress_size >= MIN_STREAM_LENGTH
        ]


def contents(path: Path, segments: list[SegmentLayout], kind: str) -> list[bytes]:
    return [b"".join(read_content(path, s)) for s in segments if s.kind == kind]


# ---------------------------------------------------------------------------
# zip


@pytest.mark.parametrize("level", [None, 1, 3, 6, 9])
def test_zipfile_members_become_reproducible_deflate_segments(
    tmp_path: Path, level: int | None
) -> None:
    members = {f"pkg/module{i}.py": text(3000 + 7000 * i, seed=i) for i in range(6)}
    members["pkg/lib.so"] = binary(300_000, seed=99)
    members["tiny.txt"] = b"tiny"
    path = write_zip(tmp_path / "a.zip", members, compresslevel=level)
    segments = assert_round_trip(path)
    deflates = [s for s in segments if s.kind == "deflate"]
    assert len(deflates) == len(deflated_members(path)) == 7
    assert not [s for s in segments if s.fallback_reason]
    # Content is the members' uncompressed bytes, in archive order.
    assert contents(path, segments, "deflate") == list(members.values())[:7]
    # Raw segments between streams are merged: never two raw segments in a row.
    assert all(not (a.kind == b.kind == "raw") for a, b in itertools.pairwise(segments))


class Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors after members."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def test_stored_members_and_data_descriptors(tmp_path: Path) -> None:
    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("stored.bin"), binary(20_000, 1))  # ZIP_STORED
        with archive.open("streamed.txt", "w") as member:  # unknown size: data descriptor
            member.write(text(50_000, 2))
        info = zipfile.ZipInfo("deflated.txt")
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, text(40_000, 3))
    path = tmp_path / "descriptors.zip"
    path.write_bytes(bytes(sink.data))
    with zipfile.ZipFile(path) as archive:
        assert any(info.flag_bits & 0x08 for info in archive.infolist())
        stored = archive.getinfo("stored.bin")
    segments = assert_round_trip(path)
    assert kinds(segments) == ["raw", "deflate", "raw", "deflate", "raw"]
    # The stored member lies inside the first raw segment.
    assert segments[0].offset <= stored.header_offset < segments[0].length
    assert contents(path, segments, "deflate") == [text(50_000, 2), text(40_000, 3)]


def test_changed_and_appended_members_keep_unchanged_content(tmp_path: Path) -> None:
    members = {f"m{i}.txt": text(20_000, seed=i) for i in range(5)}
    old = write_zip(tmp_path / "old.zip", members)
    members["m2.txt"] = text(20_000, seed=1000)
    new = write_zip(tmp_path / "new.zip", members)
    with zipfile.ZipFile(new, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("appended.txt", text(30_000, seed=2000))
    old_content = contents(old, assert_round_trip(old), "deflate")
    new_content = contents(new, assert_round_trip(new), "deflate")
    assert len(new_content) == 6
    shared = set(old_content) & set(new_content)
    assert len(shared) == 4
    assert text(20_000, seed=1000) in new_content and text(30_000, 2000) in new_content


def test_wheel_like_archive(tmp_path: Path) -> None:
    members = {
        "demo/__init__.py": text(12_000, 1),
        "demo/_native.cpython-311-x86_64-linux-gnu.so": binary(600_000, 2),
        "demo-1.0.dist-info/METADATA": text(3_000, 3),
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n",
    }
    record = "".join(
        f"{name},sha256={hashlib.sha256(data).hexdigest()},{len(data)}\n"
        for name, data in members.items()
    )
    members["demo-1.0.dist-info/RECORD"] = record.encode()
    path = write_zip(tmp_path / "demo-1.0-py3-none-any.whl", members)
    segments = assert_round_trip(path)
    compressed = sum(s.length for s in segments if s.kind == "deflate")
    assert compressed / path.stat().st_size > 0.9


def test_zip_with_prepended_stub(tmp_path: Path) -> None:
    inner = write_zip(tmp_path / "inner.zip", {"a.txt": text(30_000, 1)}).read_bytes()
    path = tmp_path / "selfextract.bin"
    path.write_bytes(b"#!/bin/sh\necho stub\n" * 10 + inner)
    assert kinds(assert_round_trip(path)) == ["raw", "deflate", "raw"]


# ---------------------------------------------------------------------------
# gzip


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TAR = tar_bytes({f"pkg-1.0/src/f{i}.py": text(25_000, i) for i in range(8)})


@pytest.mark.parametrize("level", [1, 6, 9])
def test_tar_gz_with_name_and_mtime_in_header(tmp_path: Path, level: int) -> None:
    path = tmp_path / "pkg-1.0.tar.gz"
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(
            "pkg-1.0.tar", "wb", compresslevel=level, fileobj=raw, mtime=1_700_000_123
        ) as stream,
    ):
        stream.write(TAR)
    segments = assert_round_trip(path)
    assert kinds(segments) == ["gzip"]
    recipe = segments[0].recipe
    assert recipe is not None
    header = recipe["header"]
    assert isinstance(header, bytes) and b"pkg-1.0.tar\x00" in header
    assert path.read_bytes().startswith(header)
    assert recipe["level"] == level
    assert b"".join(read_content(path, segments[0])) == TAR


def test_tarfile_gzip_mode(tmp_path: Path) -> None:
    path = tmp_path / "sdist.tar.gz"
    with tarfile.open(path, "w:gz") as archive:  # compresslevel 9, like setuptools sdists
        info = tarfile.TarInfo("sdist/README")
        data = text(200_000, 5)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    assert kinds(assert_round_trip(path)) == ["gzip"]


def test_multi_member_gzip_and_trailing_padding(tmp_path: Path) -> None:
    path = tmp_path / "multi.gz"
    path.write_bytes(
        gzip.compress(text(50_000, 1), 9) + gzip.compress(text(60_000, 2), 9) + bytes(512)
    )
    segments = assert_round_trip(path)
    assert kinds(segments) == ["gzip", "gzip", "raw"]
    assert contents(path, segments, "gzip") == [text(50_000, 1), text(60_000, 2)]


def test_gzip_with_bad_trailer_falls_back(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(text(50_000, 1)))
    data[-6] ^= 0xFF  # the CRC32
    path = tmp_path / "badcrc.gz"
    path.write_bytes(bytes(data))
    segments = assert_round_trip(path)
    assert kinds(segments) == ["raw"]
    assert segments[0].fallback_reason is not None
    assert "trailer" in segments[0].fallback_reason


def test_gzip_header_with_extra_comment_and_header_crc(tmp_path: Path) -> None:
    """Every optional header field is kept verbatim, whatever wrote it."""
    head = b"\x1f\x8b\x08" + bytes([0x04 | 0x08 | 0x10 | 0x02]) + struct.pack("<I", 12345)
    head += b"\x00\x03" + struct.pack("<H", 6) + b"AB\x02\x00xy" + b"name\x00" + b"comment\x00"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(TAR) + deflate.flush()
    path = tmp_path / "fields.gz"
    path.write_bytes(head + body + struct.pack("<II", zlib.crc32(TAR), len(TAR)))
    assert gzip.decompress(path.read_bytes()) == TAR
    (segment,) = assert_round_trip(path)
    assert segment.kind == "gzip" and segment.recipe is not None
    assert segment.recipe["header"] == head


def run_tool(*command: str, stdin: bytes) -> bytes:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    return subprocess.run(command, input=stdin, capture_output=True, check=True).stdout


@pytest.mark.parametrize("flags", [["-1"], ["-6"], ["-9"], ["-9", "-n"]])
def test_gzip_command_line_tool(tmp_path: Path, flags: list[str]) -> None:
    """GNU gzip has its own deflate: reproduced when zlib agrees, else a stated fallback."""
    source = tmp_path / "pkg.tar"
    source.write_bytes(TAR)
    subprocess_output = run_tool("gzip", "-c", *flags, str(source), stdin=b"")
    path = tmp_path / "pkg.tar.gz"
    path.write_bytes(subprocess_output)
    (segment,) = assert_round_trip(path)
    if segment.kind == "raw":
        assert segment.fallback_reason is not None
        assert segment.fallback_reason.startswith("gzip: no zlib parameters")
    else:
        assert segment.kind == "gzip"
        assert b"".join(read_content(path, segment)) == TAR


@pytest.mark.parametrize("level", [6, 9])
def test_node_zlib_gzip(tmp_path: Path, level: int) -> None:
    """npm packs with node's zlib, which is not always the zlib Python links."""
    script = (
        "const z=require('zlib');const c=[];process.stdin.on('data',d=>c.push(d));"
        f"process.stdin.on('end',()=>process.stdout.write(z.gzipSync(Buffer.concat(c),{{level:{level}}})))"
    )
    path = tmp_path / "pkg.tgz"
    path.write_bytes(run_tool("node", "-e", script, stdin=TAR))
    (segment,) = assert_round_trip(path)
    assert segment.kind == "gzip" or (segment.fallback_reason or "").startswith("gzip:")
    if segment.kind == "raw":
        # Still readable content for the client's old files.
        (old_view,) = segment_file(path, find_recipes=False)
        assert b"".join(read_content(path, old_view)) == TAR


# ---------------------------------------------------------------------------
# xz, bz2, zstd


@pytest.mark.parametrize(
    ("preset", "check"),
    [
        (0, lzma.CHECK_CRC64),
        (3 | lzma.PRESET_EXTREME, lzma.CHECK_CRC32),
        (6, lzma.CHECK_SHA256),
        (1, lzma.CHECK_NONE),
    ],
)
def test_xz_presets_and_checks(tmp_path: Path, preset: int, check: int) -> None:
    path = tmp_path / "pkg.tar.xz"
    path.write_bytes(lzma.compress(TAR, preset=preset, check=check))
    segments = assert_round_trip(path)
    assert kinds(segments) == ["xz"]
    recipe = segments[0].recipe
    assert recipe is not None
    assert recipe["check"] == check and recipe["block_size"] == 0


def test_tarfile_xz_mode(tmp_path: Path) -> None:
    path = tmp_path / "pkg.tar.xz"
    with tarfile.open(path, "w:xz") as archive:
        data = text(300_000, 7)
        info = tarfile.TarInfo("pkg/data.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    assert kinds(assert_round_trip(path)) == ["xz"]


@pytest.mark.parametrize("threads", ["-T1", "-T2"])
def test_xz_command_line_tool(tmp_path: Path, threads: str) -> None:
    """Multi-threaded xz writes sized blocks; those are rebuilt block by block."""
    data = TAR * 3
    output = run_tool("xz", "-c", "-3", threads, "--block-size=200000", stdin=data)
    path = tmp_path / "pkg.tar.xz"
    path.write_bytes(output)
    segments = assert_round_trip(path)
    assert kinds(segments) == ["xz"]
    recipe = segments[0].recipe
    assert recipe is not None
    if threads == "-T2":
        assert recipe["block_size"] == 200_000
    assert b"".join(read_content(path, segments[0])) == data


def test_empty_xz_stream(tmp_path: Path) -> None:
    path = tmp_path / "empty.xz"
    path.write_bytes(lzma.compress(b""))
    assert all(s.kind in ("xz", "raw") for s in assert_round_trip(path))


def test_xz_asking_for_a_huge_dictionary_is_not_decoded(tmp_path: Path) -> None:
    data = bytearray(lzma.compress(text(20_000, 1), preset=0))
    header_size = (data[12] + 1) * 4
    header = data[12 : 12 + header_size]
    assert header[2:4] == b"\x21\x01"  # LZMA2 and its one property byte: the dictionary
    header[4] = 40  # 4 GiB
    struct.pack_into("<I", header, header_size - 4, zlib.crc32(bytes(header[:-4])))
    data[12 : 12 + header_size] = header
    path = tmp_path / "huge-dict.xz"
    path.write_bytes(bytes(data))
    (segment,) = assert_round_trip(path)
    assert segment.kind == "raw" and (segment.fallback_reason or "").startswith("xz:")


@pytest.mark.parametrize("level", [1, 9])
def test_bz2_levels_and_concatenated_streams(tmp_path: Path, level: int) -> None:
    path = tmp_path / "pkg.tar.bz2"
    path.write_bytes(bz2.compress(TAR, level) + bz2.compress(TAR[:100_000], level))
    segments = assert_round_trip(path)
    assert kinds(segments) == ["bz2", "bz2"]
    assert [s.recipe for s in segments] == [{"level": level}] * 2


def test_bzip2_command_line_tool(tmp_path: Path) -> None:
    path = tmp_path / "pkg.tar.bz2"
    path.write_bytes(run_tool("bzip2", "-c", "-9", stdin=TAR))
    assert kinds(assert_round_trip(path)) == ["bz2"]


def test_zstd_stays_raw_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "pkg.tar.zst"
    path.write_bytes(run_tool("zstd", "-c", "-q", stdin=TAR))
    (segment,) = assert_round_trip(path)
    assert segment.kind == "raw"
    assert segment.fallback_reason is not None and "zstd" in segment.fallback_reason


# ---------------------------------------------------------------------------
# Debian packages (ar archives of compressed tarballs) and other files


def ar_archive(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + b"\n" * (len(data) % 2)
    return bytes(out)


def test_deb_like_ar_archive(tmp_path: Path) -> None:
    path = tmp_path / "pkg_1.0_amd64.deb"
    path.write_bytes(
        ar_archive(
            {
                "debian-binary": b"2.0\n",
                "control.tar.gz": gzip.compress(TAR[:30_001], 9, mtime=0),
                "data.tar.xz": lzma.compress(TAR),
            }
        )
    )
    segments = assert_round_trip(path)
    assert kinds(segments) == ["raw", "gzip", "raw", "xz"]


def test_empty_unknown_and_plain_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert segment_file(empty) == []
    for name, data in [("random.bin", binary(100_000, 1)), ("pkg.tar", TAR)]:
        path = tmp_path / name
        path.write_bytes(data)
        assert assert_round_trip(path) == [SegmentLayout("raw", 0, len(data))]


def test_old_files_without_recipe_search(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "old.zip", {"a.txt": text(40_000, 1)})
    segments = assert_round_trip(path, find_recipes=False)
    (stream,) = [s for s in segments if s.kind == "deflate"]
    assert stream.recipe is None and stream.compressed_sha256 is None
    with pytest.raises(DeltaError):
        list(rebuild(stream, read_content(path, stream)))


# ---------------------------------------------------------------------------
# Hostile and broken archives


def test_truncated_zip_never_crashes(tmp_path: Path) -> None:
    data = write_zip(tmp_path / "a.zip", {f"f{i}": text(9_000, i) for i in range(5)}).read_bytes()
    for cut in range(0, len(data), len(data) // 23):
        path = tmp_path / f"cut{cut}.zip"
        path.write_bytes(data[:cut])
        segments = assert_round_trip(path)
        if cut:
            assert segments[0].kind == "raw" and segments[0].fallback_reason is not None


def central_directory(data: bytes) -> tuple[int, int, int]:
    """(end record offset, directory offset, directory size) of a simple zip."""
    end = data.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<II", data, end + 12)
    return end, offset, size


def test_lying_central_directory_falls_back_to_raw(tmp_path: Path) -> None:
    data = bytearray(
        write_zip(tmp_path / "a.zip", {"a": text(9_000, 1), "b": text(9_000, 2)}).read_bytes()
    )
    _, offset, _ = central_directory(bytes(data))
    struct.pack_into("<I", data, offset + 20, 10**8)  # first entry's compressed size
    path = tmp_path / "lying.zip"
    path.write_bytes(bytes(data))
    (segment,) = assert_round_trip(path)
    assert segment.kind == "raw" and (segment.fallback_reason or "").startswith("zip:")


def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    """The non-recursive zip bomb: many directory entries naming the same data."""
    data = write_zip(tmp_path / "a.zip", {"a": text(9_000, 1)}).read_bytes()
    end, offset, size = central_directory(data)
    entry = data[offset : offset + size]
    copies = 50
    bomb = bytearray(data[:offset] + entry * copies + data[end:])
    struct.pack_into(
        "<HHII", bomb, offset + size * copies + 8, copies, copies, size * copies, offset
    )
    path = tmp_path / "overlap.zip"
    path.write_bytes(bytes(bomb))
    assert len(zipfile.ZipFile(path).infolist()) == copies
    (segment,) = assert_round_trip(path)
    assert segment.kind == "raw" and "overlap" in (segment.fallback_reason or "")


def test_entry_count_beyond_directory_size(tmp_path: Path) -> None:
    data = bytearray(write_zip(tmp_path / "a.zip", {"a": text(9_000, 1)}).read_bytes())
    end, _, _ = central_directory(bytes(data))
    struct.pack_into("<HH", data, end + 8, 0xFFFE, 0xFFFE)
    path = tmp_path / "count.zip"
    path.write_bytes(bytes(data))
    (segment,) = assert_round_trip(path)
    assert segment.fallback_reason is not None


def test_corrupt_member_only_affects_itself(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", {"a": text(20_000, 1), "b": text(20_000, 2)})
    data = bytearray(path.read_bytes())
    second = deflated_members(path)[1]
    start = second.header_offset + 30 + len(second.filename)
    data[start + 100 : start + 140] = bytes(40)
    path.write_bytes(bytes(data))
    segments = assert_round_trip(path)
    assert kinds(segments)[:2] == ["raw", "deflate"]
    assert [s.kind for s in segments if s.fallback_reason] == ["raw"]


def test_decompression_bomb_is_not_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.bz2"
    path.write_bytes(bz2.compress(bytes(40 << 20), 9))  # 40 MiB of zeros in ~100 bytes
    assert path.stat().st_size < 1000
    (segment,) = assert_round_trip(path)
    assert segment.kind == "raw" and "bomb" in (segment.fallback_reason or "")


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out[: max(1, len(out) - cut)])


SAMPLES = {
    "zip": lambda: write_zip_bytes({"a.txt": text(3_000, 1), "b.txt": text(2_000, 2)}),
    "gzip": lambda: gzip.compress(text(4_000, 3)) + gzip.compress(text(1_000, 4)),
    "xz": lambda: lzma.compress(text(4_000, 5), preset=0),
    "bz2": lambda: bz2.compress(text(4_000, 6), 1),
}


def write_zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 200) | st.just(0),
)
def test_mutated_archives_segment_and_round_trip(
    sample: str, edits: list[tuple[int, int]], cut: int
) -> None:
    data = mutate(SAMPLES[sample](), edits, cut)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed"
        path.write_bytes(data)
        assert_round_trip(path)


# ---------------------------------------------------------------------------
# The client side: rebuilding checks what it makes


@pytest.fixture
def gz(tmp_path: Path) -> tuple[Path, SegmentLayout]:
    path = tmp_path / "pkg.tar.gz"
    path.write_bytes(gzip.compress(TAR, 9))
    (segment,) = segment_file(path)
    assert segment.kind == "gzip"
    return path, segment


def test_rebuild_is_independent_of_how_content_is_cut(gz: tuple[Path, SegmentLayout]) -> None:
    path, segment = gz
    content = b"".join(read_content(path, segment))
    rng = random.Random(3)
    pieces = []
    at = 0
    while at < len(content):
        step = rng.randrange(1, 70_000)
        pieces.append(content[at : at + step])
        at += step
    assert b"".join(rebuild(segment, pieces)) == path.read_bytes()


@pytest.mark.parametrize(
    "content",
    [
        [TAR[:-1] + b"X"],  # one byte changed at the end
        [TAR[:-1]],  # one byte short
        [TAR, b"extra"],  # too long
    ],
)
def test_rebuild_refuses_wrong_content(
    gz: tuple[Path, SegmentLayout], content: list[bytes]
) -> None:
    _, segment = gz
    received = bytearray()
    with pytest.raises(IntegrityError):
        for piece in rebuild(segment, content):
            received += piece
    assert len(received) < segment.length  # never a complete, unverified stream


def test_rebuild_refuses_a_recipe_that_does_not_reproduce(gz: tuple[Path, SegmentLayout]) -> None:
    path, segment = gz
    assert segment.recipe is not None
    wrong = SegmentLayout(
        "gzip",
        segment.offset,
        segment.length,
        {**segment.recipe, "level": 1},
        segment.compressed_sha256,
    )
    with pytest.raises(IntegrityError):
        list(rebuild(wrong, read_content(path, segment)))


def test_read_content_notices_a_changed_file(gz: tuple[Path, SegmentLayout]) -> None:
    path, segment = gz
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(DeltaError):
        list(read_content(path, segment))


GOOD_ZLIB = {"level": 6, "mem_level": 8, "strategy": 0, "wbits": 15}


@pytest.mark.parametrize(
    ("kind", "recipe"),
    [
        ("deflate", {"level": 6, "mem_level": 8, "strategy": 0}),
        ("deflate", {**GOOD_ZLIB, "extra": 1}),
        ("deflate", {**GOOD_ZLIB, "level": 10}),
        ("deflate", {**GOOD_ZLIB, "wbits": 8}),
        ("deflate", {**GOOD_ZLIB, "level": True}),
        ("deflate", {**GOOD_ZLIB, "level": b"6"}),
        ("gzip", {**GOOD_ZLIB, "header": b"not a gzip header"}),
        ("gzip", {**GOOD_ZLIB, "header": b"\x1f\x8b\x08\x08" + bytes(6) + b"unterminated"}),
        ("gzip", {**GOOD_ZLIB, "header": b"\x1f\x8b\x08\x00" + bytes(6) + b"trailing"}),
        ("bz2", {"level": 0}),
        ("raw", {}),
        ("zstd", {"level": 3}),
        ("xz", {"preset": 6, "extreme": 0, "check": 2, "dict_size": 1 << 23,
                "block_size": 0, "block_header_size": 0}),
        ("xz", {"preset": 6, "extreme": 0, "check": 4, "dict_size": 1 << 23,
                "block_size": 0, "block_header_size": 12}),
        ("xz", {"preset": 6, "extreme": 0, "check": 4, "dict_size": 1 << 23,
                "block_size": 1 << 20, "block_header_size": 14}),
        ("xz", {"preset": 6, "extreme": 0, "check": 4, "dict_size": 1 << 23,
                "block_size": 1 << 30, "block_header_size": 12}),
    ],
)  # fmt: skip
def test_malformed_recipes_are_refused(kind: str, recipe: dict[str, int | bytes]) -> None:
    with pytest.raises(DeltaError):
        check_recipe(kind, recipe)
    with pytest.raises(DeltaError):
        list(recompress(kind, recipe, [b"content"]))


def test_well_formed_recipes_pass() -> None:
    check_recipe("deflate", GOOD_ZLIB)
    check_recipe("gzip", {**GOOD_ZLIB, "header": gzip.compress(b"", mtime=0)[:10]})
    check_recipe("bz2", {"level": 9})


@pytest.mark.parametrize(
    "fields",
    [
        ("tar", 0, 10, None, None, None),
        ("raw", -1, 10, None, None, None),
        ("raw", 0, 10, GOOD_ZLIB, None, None),
        ("deflate", 0, 10, GOOD_ZLIB, b"short", None),
        ("deflate", 0, 10, None, None, "a reason"),
        ("deflate", 0, 10, {"level": 99}, None, None),
    ],
)
def test_invalid_layouts_are_refused(fields: tuple[object, ...]) -> None:
    with pytest.raises(DeltaError):
        SegmentLayout(*fields)  # type: ignore[arg-type]


def test_a_directory_entry_pointing_at_no_local_header_falls_back_to_raw(tmp_path: Path) -> None:
    members = {"a": text(9_000, 2), "b": text(9_000, 3)}
    data = bytearray(write_zip(tmp_path / "a.zip", members).read_bytes())
    second = data.index(b"PK\x03\x04", 4)
    data[second : second + 4] = b"XX\x03\x04"  # the second member's local header, broken
    path = tmp_path / "headless.zip"
    path.write_bytes(bytes(data))
    (segment,) = assert_round_trip(path)
    assert segment.kind == "raw" and "no local header" in (segment.fallback_reason or "")
