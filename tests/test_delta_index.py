"""The delta index: model rules, canonical round trips, limits, and building from real files."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.delta import index as index_module
from opendistro.delta.chunker import ChunkerParams, chunk_bytes
from opendistro.delta.index import (
    MAX_FILES,
    MAX_INDEX_SIZE,
    DeltaIndex,
    IndexedFile,
    Segment,
    SegmentLayout,
    SimpleLayout,
    build_index,
    read_raw_content,
)
from opendistro.delta.tarcuts import TarCuts
from opendistro.errors import (
    DeltaError,
    DeltaIndexError,
    IntegrityError,
    OpenDistroError,
    StorageError,
)

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")
V1 = hashlib.sha1(b"torrent").digest()
V2 = hashlib.sha256(b"torrent").digest()


def raw_segment(data: bytes, offset: int = 0, params: ChunkerParams = SMALL) -> Segment:
    chunks = tuple((chunk.length, chunk.hash) for chunk in chunk_bytes(data, params))
    return Segment("raw", offset, len(data), len(data), chunks)


def small_index(*files: IndexedFile, params: ChunkerParams = SMALL) -> DeltaIndex:
    return DeltaIndex(1, params, V1, V2, "release", files)


def test_errors_are_delta_errors() -> None:
    assert issubclass(DeltaIndexError, DeltaError)
    assert issubclass(DeltaIndexError, OpenDistroError)
    assert issubclass(DeltaIndexError, ValueError)


# -- the model ----------------------------------------------------------------------------


def test_round_trip_of_a_small_index() -> None:
    data = random.Random(1).randbytes(5000)
    index = small_index(
        IndexedFile(
            ("a", "b.bin"), 5000, (raw_segment(data[:3000]), raw_segment(data[3000:], 3000))
        ),
        IndexedFile(("empty",), 0, ()),
    )
    encoded = index.encode()
    assert DeltaIndex.decode(encoded) == index
    assert DeltaIndex.decode(bytearray(encoded)) == index
    assert DeltaIndex.decode(encoded).encode() == encoded


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("raw", 0, 0, 0, ()), "length must be a positive integer"),
        (("raw", -1, 1, 1, ((1, bytes(16)),)), "offset"),
        (("raw", 0, 1, 1, ((1, bytes(15)),)), "hash must be 16 bytes"),
        (("raw", 0, 1, 1, [(1, bytes(16))]), "must be a tuple"),
        (("raw", 0, 1, 1, ((1, bytes(16), 0),)), "pair"),
        (("raw", 0, 1, 1, ((True, bytes(16)),)), "out of range"),
        (("raw", 0, 2, 2, ((1, bytes(16)),)), "add up"),
        (("gzip", 0, 10, 1, ((1, bytes(16)),), None, bytes(32)), "needs a recipe"),
        (("gzip", 0, 10, 1, ((1, bytes(16)),), {"level": 9}, None), "SHA-256"),
        (("gzip", 0, 10, 1, ((1, bytes(16)),), {"level": True}, bytes(32)), "integer or a byte"),
        (("gzip", 0, 10, 1, ((1, bytes(16)),), {"": 1}, bytes(32)), "not allowed"),
        (
            ("gzip", 0, 10, 1, ((1, bytes(16)),), {"header": bytes(65537)}, bytes(32)),
            "longer than 65536",
        ),
        ((7, 0, 1, 1, ((1, bytes(16)),)), "unknown segment kind"),
        (("raw", 0, 1, 1, ((1, bytes(16)),), None, None, "x" * 256), "1 to 255 bytes"),
        (("raw", 0, 1, 1, ((1, bytes(16)),), None, None, "a\nb"), "control character"),
    ],
)
def test_segment_rules(arguments: tuple[object, ...], message: str) -> None:
    with pytest.raises(DeltaIndexError, match=message):
        Segment(*arguments)  # type: ignore[arg-type]


def test_compressed_segment_keeps_a_private_copy_of_its_recipe() -> None:
    recipe: dict[str, int | bytes] = {"wbits": 15, "header": b"\x1f\x8b"}
    segment = Segment("gzip", 0, 10, 1, ((1, bytes(16)),), recipe, bytes(32))
    recipe["level"] = 1
    assert segment.recipe == {"header": b"\x1f\x8b", "wbits": 15}
    assert list(segment.recipe or {}) == ["header", "wbits"]


def test_a_segment_is_a_segment_layout() -> None:
    layout: SegmentLayout = raw_segment(b"x" * 100)
    assert (layout.kind, layout.offset, layout.length) == ("raw", 0, 100)


@pytest.mark.parametrize(
    "path, message",
    [
        (("..",), "unsafe"),
        (("a", "COM1"), "unsafe"),
        ((), "unsafe"),
        (["a"], "tuple"),
        (("x",) * 65, "deeper"),
    ],
)
def test_file_path_rules(path: tuple[str, ...], message: str) -> None:
    with pytest.raises(DeltaIndexError, match=message):
        IndexedFile(path, 0, ())


def test_segments_must_tile_the_file() -> None:
    data = b"y" * 200
    with pytest.raises(DeltaIndexError, match="starts at 100, not at 0"):
        IndexedFile(("f",), 300, (raw_segment(data, 100),))
    with pytest.raises(DeltaIndexError, match="cover 200 bytes of 300"):
        IndexedFile(("f",), 300, (raw_segment(data),))
    with pytest.raises(DeltaIndexError, match="starts at 150"):
        IndexedFile(("f",), 350, (raw_segment(data), raw_segment(b"z" * 200, 150)))


def test_index_rules() -> None:
    file = IndexedFile(("f",), 0, ())
    with pytest.raises(DeltaIndexError, match="version"):
        DeltaIndex(2, SMALL, V1, None, "r", (file,))
    with pytest.raises(DeltaIndexError, match="at least one info-hash"):
        DeltaIndex(1, SMALL, None, None, "r", (file,))
    with pytest.raises(DeltaIndexError, match="v2 must be 32 bytes"):
        DeltaIndex(1, SMALL, None, V1, "r", (file,))
    with pytest.raises(DeltaIndexError, match="unsafe release name"):
        DeltaIndex(1, SMALL, V1, None, "a/b", (file,))
    with pytest.raises(DeltaIndexError, match="at least one file"):
        DeltaIndex(1, SMALL, V1, None, "r", ())
    with pytest.raises(DeltaIndexError, match="listed twice"):
        DeltaIndex(1, SMALL, V1, None, "r", (file, file))
    with pytest.raises(DeltaIndexError, match="params"):
        DeltaIndex(1, None, V1, None, "r", (file,))  # type: ignore[arg-type]


def test_chunk_sizes_must_fit_the_parameters() -> None:
    # A raw segment chunked with the default parameters has chunks longer than SMALL allows.
    data = random.Random(2).randbytes(50_000)
    file = IndexedFile(("f",), len(data), (raw_segment(data, params=ChunkerParams()),))
    with pytest.raises(DeltaIndexError, match="longer than 1024"):
        small_index(file)
    assert small_index(file, params=ChunkerParams()).files == (file,)


# -- canonical form and round trips -------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_ .é", min_size=1, max_size=12)
safe_names = names.filter(lambda n: n.strip(" .") == n and n.upper() not in ("CON", "NUL", "AUX"))


@st.composite
def segments(draw: st.DrawFn, offset: int) -> Segment:
    kind = draw(st.sampled_from(["raw", "gzip", "deflate", "xz", "bz2", "zstd"]))
    content = draw(st.binary(min_size=0 if kind != "raw" else 1, max_size=3000))
    chunks = tuple((c.length, c.hash) for c in chunk_bytes(content, SMALL))
    if kind == "raw":
        reason = draw(st.none() | st.text(min_size=1, max_size=20).filter(str.isprintable))
        return Segment("raw", offset, len(content), len(content), chunks, fallback_reason=reason)
    recipe = draw(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True),
            st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=40),
            max_size=6,
        )
    )
    length = draw(st.integers(1, 5000))
    digest = draw(st.binary(min_size=32, max_size=32))
    return Segment(kind, offset, length, len(content), chunks, recipe, digest)


@st.composite
def files(draw: st.DrawFn, path: tuple[str, ...]) -> IndexedFile:
    count = draw(st.integers(0, 4))
    parts = []
    offset = 0
    for _ in range(count):
        segment = draw(segments(offset))
        parts.append(segment)
        offset = segment.end
    return IndexedFile(path, offset, tuple(parts))


@st.composite
def indexes(draw: st.DrawFn) -> DeltaIndex:
    paths = draw(
        st.lists(
            st.lists(safe_names, min_size=1, max_size=3).map(tuple),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    # Keep only paths that are not folders of other paths.
    paths = [p for p in paths if not any(q[: len(p)] == p and q != p for q in paths)]
    v1 = draw(st.none() | st.just(V1))
    v2 = draw(st.just(V2) if v1 is None else st.none() | st.just(V2))
    return DeltaIndex(
        1, SMALL, v1, v2, draw(safe_names), tuple(draw(files(path)) for path in paths)
    )


@settings(max_examples=60, deadline=None)
@given(index=indexes())
def test_any_valid_index_round_trips_canonically(index: DeltaIndex) -> None:
    encoded = index.encode()
    decoded = DeltaIndex.decode(encoded)
    assert decoded == index
    assert decoded.encode() == encoded
    # Canonical: what bencode itself writes for the same structure.
    assert bencode.encode(bencode.decode(encoded)) == encoded


@settings(max_examples=200, deadline=None)
@given(index=indexes(), position=st.integers(0, 10**6), byte=st.integers(0, 255))
def test_corrupted_indexes_fail_cleanly(index: DeltaIndex, position: int, byte: int) -> None:
    encoded = bytearray(index.encode())
    position %= len(encoded)
    encoded[position] = byte
    try:
        decoded = DeltaIndex.decode(bytes(encoded))
    except DeltaIndexError:
        return
    assert decoded.encode() == bytes(encoded)


# -- limits -------------------------------------------------------------------------------


def test_oversized_index_is_refused_before_parsing() -> None:
    with pytest.raises(DeltaIndexError, match="larger than"):
        DeltaIndex.decode(b"d" + bytes(MAX_INDEX_SIZE))


def test_too_many_files(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_FILES == 100_000  # as for torrents
    # the check itself, with a limit small enough to test quickly
    monkeypatch.setattr(index_module, "MAX_FILES", 40)
    base = bencode.decode(small_index(IndexedFile(("f",), 0, ())).encode())
    base[b"files"] = [{b"length": 0, b"path": [b"f%d" % n], b"segments": []} for n in range(41)]
    with pytest.raises(DeltaIndexError, match="more than 40 files"):
        DeltaIndex.decode(bencode.encode(base))
    base[b"files"] = base[b"files"][:40]
    assert len(DeltaIndex.decode(bencode.encode(base)).files) == 40


def test_recipe_value_size_limit() -> None:
    digest = bytes(32)
    chunks = ((1, bytes(16)),)
    ok = Segment("gzip", 0, 10, 1, chunks, {"header": bytes(65536)}, digest)
    index = small_index(IndexedFile(("f",), 10, (ok,)))
    assert DeltaIndex.decode(index.encode()) == index
    document = bencode.decode(index.encode())
    document[b"files"][0][b"segments"][0][b"recipe"][b"header"] = bytes(65537)
    with pytest.raises(DeltaIndexError, match="longer than 65536 bytes"):
        DeltaIndex.decode(bencode.encode(document))


def test_deep_nesting_is_refused() -> None:
    document = bencode.decode(small_index(IndexedFile(("f",), 0, ())).encode())
    nested: object = b"x"
    for _ in range(20):
        nested = [nested]
    document[b"name"] = nested
    with pytest.raises(DeltaIndexError, match="not a canonical bencoded index"):
        DeltaIndex.decode(bencode.encode(document))


# -- building from release files ----------------------------------------------------------


def write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def chunks_of(data: bytes, params: ChunkerParams) -> tuple[tuple[int, bytes], ...]:
    """The chunks build_index makes of content: tar content is also cut at members (§2.7)."""
    chunks = chunk_bytes(data, params, TarCuts())
    return tuple((chunk.length, chunk.hash) for chunk in chunks)


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_build_index_of_a_folder(tmp_path: Path, version: str) -> None:
    rng = random.Random(3)
    root = tmp_path / "seed"
    big = write(root / "rel" / "big.bin", rng.randbytes(300_000))
    small = write(root / "rel" / "docs" / "readme.txt", b"read me\n" * 100)
    write(root / "rel" / "empty", b"")
    metainfo = create_torrent(root / "rel", version=version, creation_date=0)
    index = build_index(root, metainfo)

    assert index.name == "rel"
    assert (index.info_hash_v1, index.info_hash_v2) == (
        metainfo.info_hash_v1,
        metainfo.info_hash_v2,
    )
    assert index.params == ChunkerParams()
    by_path = {entry.path: entry for entry in index.files}
    assert set(by_path) == {entry.path for entry in metainfo.data_files()}
    assert by_path[("big.bin",)].segments == (
        Segment("raw", 0, len(big), len(big), chunks_of(big, ChunkerParams())),
    )
    assert by_path[("docs", "readme.txt")].segments[0].chunks == chunks_of(small, ChunkerParams())
    assert by_path[("empty",)].segments == ()
    assert DeltaIndex.decode(index.encode()) == index


def test_build_index_of_a_single_file(tmp_path: Path) -> None:
    data = write(tmp_path / "image.iso", random.Random(4).randbytes(150_000))
    metainfo = create_torrent(tmp_path / "image.iso", creation_date=0)
    index = build_index(tmp_path, metainfo, SMALL)
    assert [entry.path for entry in index.files] == [("image.iso",)]
    assert index.files[0].segments[0].chunks == chunks_of(data, SMALL)
    assert index.params == SMALL


def test_build_index_checks_the_files(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    write(path, bytes(1000))
    metainfo = create_torrent(path, creation_date=0)
    write(path, bytes(999))
    with pytest.raises(IntegrityError, match="999 bytes"):
        build_index(tmp_path, metainfo)
    path.unlink()
    with pytest.raises(StorageError):
        build_index(tmp_path, metainfo)


def gzip_segments(path: Path) -> list[SimpleLayout]:
    """A test segmenter: the whole file as one gzip member (Python's gzip, level 9, mtime 0)."""
    data = path.read_bytes()
    recipe: dict[str, int | bytes] = {
        "header": data[:10],
        "level": 9,
        "mem_level": 8,
        "strategy": 0,
        "wbits": 15,
    }
    return [SimpleLayout("gzip", 0, len(data), recipe, hashlib.sha256(data).digest())]


def gunzip(path: Path, layout: SimpleLayout) -> Iterator[bytes]:
    with gzip.open(path) as handle:
        while piece := handle.read(10_000):
            yield piece


def test_build_index_chunks_the_content_of_compressed_segments(tmp_path: Path) -> None:
    content = b"".join(b"line %d of the tarball\n" % n for n in range(20_000))
    packed = write(tmp_path / "src.tar.gz", gzip.compress(content, compresslevel=9, mtime=0))
    metainfo = create_torrent(tmp_path / "src.tar.gz", creation_date=0)
    index = build_index(tmp_path, metainfo, SMALL, segmenter=gzip_segments, read_content=gunzip)
    (segment,) = index.files[0].segments
    assert (segment.kind, segment.length, segment.content_length) == (
        "gzip",
        len(packed),
        len(content),
    )
    assert segment.chunks == chunks_of(content, SMALL)
    assert segment.compressed_sha256 == hashlib.sha256(packed).digest()
    assert DeltaIndex.decode(index.encode()) == index


def test_build_index_with_the_archive_segmenter(tmp_path: Path) -> None:
    from opendistro.delta import archives

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for number in range(3):
            member = random.Random(number).randbytes(40_000)
            info = tarfile.TarInfo(f"pkg/file{number}")
            info.size = len(member)
            tar.addfile(info, io.BytesIO(member))
    tar_bytes = buffer.getvalue()
    write(tmp_path / "pkg.tar.gz", gzip.compress(tar_bytes, compresslevel=6, mtime=0))
    metainfo = create_torrent(tmp_path / "pkg.tar.gz", creation_date=0)
    index = build_index(
        tmp_path, metainfo, segmenter=archives.segment_file, read_content=archives.read_content
    )
    (segment,) = index.files[0].segments
    assert segment.kind == "gzip" and segment.recipe and segment.content_format == "tar"
    assert segment.chunks == chunks_of(tar_bytes, ChunkerParams())


def test_build_index_refuses_a_segmenter_that_leaves_gaps(tmp_path: Path) -> None:
    write(tmp_path / "f.bin", bytes(5000))
    metainfo = create_torrent(tmp_path / "f.bin", creation_date=0)

    def gappy(path: Path) -> list[SimpleLayout]:
        return [SimpleLayout("raw", 0, 1000), SimpleLayout("raw", 2000, 3000)]

    with pytest.raises(DeltaIndexError, match="starts at 2000, not at 1000"):
        build_index(tmp_path, metainfo, segmenter=gappy)


def test_the_default_reader_reads_only_raw_ranges(tmp_path: Path) -> None:
    path = write(tmp_path / "f.bin", bytes(range(256)) * 40_000)
    assert (
        b"".join(read_raw_content(tmp_path / "f.bin", SimpleLayout("raw", 300, 9_000_000)))
        == (path[300:9_000_300])
    )
    with pytest.raises(StorageError, match="early"):
        list(read_raw_content(tmp_path / "f.bin", SimpleLayout("raw", 10_000_000, 300_000)))
    with pytest.raises(DeltaError, match="no content reader"):
        list(read_raw_content(tmp_path / "f.bin", SimpleLayout("gzip", 0, 10)))
