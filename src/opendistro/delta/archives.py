"""Release files as segments, and bit-exact rebuilding of their compressed parts.

Byte-level deltas save little on compressed packages: one change early in a
.tar.gz changes every compressed byte after it. What does diff well is the
*uncompressed* content, but a client that fetched only changed content must then
recreate the original compressed bytes exactly, or the torrent's piece hashes
fail. So a release file is described as a sequence of :class:`SegmentLayout`
that cover it exactly, in order:

- ``raw``: a byte range used as is;
- ``deflate`` (one zip member's raw deflate stream), ``gzip`` (one gzip member,
  header and trailer included), ``xz`` (one .xz stream), ``bz2`` (one bzip2
  stream): a compressed stream, described by its content plus a *recipe*, the
  compressor parameters under which this Python recompresses the content into
  exactly the original bytes.

The publisher side (:func:`segment_file`) finds the streams by content, not by
file name (zip and its cousins wheel/jar/apk, gzip, xz, bzip2, Debian's ``ar``
packages whose members are compressed tarballs), and *proves* each recipe by
recompressing the whole content and comparing. A stream that nothing reproduces
(another deflate implementation made it: GNU gzip, node's zlib, Rust's
miniz_oxide...) is described as ``raw`` with a ``fallback_reason``, so it still
works, only without the content-level savings. The client side
(:func:`rebuild`) runs the very same compressor code and checks the result
against the recorded SHA-256 before anyone uses it.

Files come from strangers, so every parser here is bounded: a zip's central
directory is read only up to a size limit and must be consistent (members
in the file, in order, not overlapping), a decompressed stream may not grow
beyond a fixed multiple of its compressed size, and data always moves in pieces
of at most :data:`PIECE_SIZE` bytes. Whatever does not fit these rules becomes a
raw segment; :func:`segment_file` never fails because of what a file contains.

zstd streams are recognised but kept raw: the standard library of the Pythons
we support has no zstd module.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from os import PathLike
from typing import BinaryIO, Final, Protocol

from ..errors import DeltaError, IntegrityError, StorageError

__all__ = [
    "COMPRESSED_KINDS",
    "KINDS",
    "PIECE_SIZE",
    "Located",
    "Rebuildable",
    "Recipe",
    "SegmentLayout",
    "check_recipe",
    "content_length",
    "read_content",
    "read_range",
    "rebuild",
    "recompress",
    "segment_file",
]

Recipe = dict[str, int | bytes]
"""Compressor parameters that reproduce one stream (see :func:`check_recipe`)."""

KINDS: Final = ("raw", "deflate", "gzip", "xz", "bz2", "zstd")
COMPRESSED_KINDS: Final = frozenset(KINDS[1:])

PIECE_SIZE: Final = 1 << 20
"""The largest piece of bytes that any iterator here yields."""

# A stream's content may be at most this multiple of its compressed size (plus
# the slack below). Deflate itself cannot exceed 1032:1, so every genuine zip
# member or gzip passes; only xz and bzip2 can go beyond, and a stream that
# does is a decompression bomb as far as we are concerned.
MAX_CONTENT_RATIO: Final = 1100
_CONTENT_SLACK: Final = 16 << 20
MAX_SEGMENT_CONTENT: Final = 1 << 36

# Shorter streams stay inside raw segments: describing them would cost the
# index (recipe, SHA-256, chunk entries) about as much as they could save.
MIN_STREAM_LENGTH: Final = 256

_READ_SIZE: Final = 1 << 20
_TRIAL_PIECE: Final = 64 << 10  # feed size while proving a recipe: a wrong one fails fast
_IN_MEMORY: Final = 8 << 20  # streams this small are held in memory while searching
_MAX_ZIP_DIRECTORY: Final = 64 << 20
_MAX_ZIP_COMMENT: Final = 0xFFFF
_MAX_STREAMS: Final = 4096  # members of one multi-member gzip, or .xz streams in a row
_MAX_AR_MEMBERS: Final = 4096
_MAX_GZIP_HEADER: Final = 64 << 10
_MAX_XZ_BLOCK: Final = 256 << 20  # the xz block rebuilder holds one compressed block
_MAX_XZ_DICT: Final = 64 << 20  # preset 9's; compressing with it takes about 700 MiB
_XZ_DECODER_MEMORY: Final = 256 << 20
_FRUITLESS_LIMIT: Final = 4  # after this many full searches fail in one file, search less


@dataclass(frozen=True)
class SegmentLayout:
    """Where one segment lies in its file, and how to rebuild it if compressed.

    ``recipe`` and ``compressed_sha256`` are set for compressed kinds found with
    recipe search; ``segment_file(..., find_recipes=False)`` leaves them ``None``
    (content readable, not rebuildable). ``fallback_reason`` is set only on raw
    segments that are compressed streams nothing could reproduce.
    """

    kind: str
    offset: int
    length: int
    recipe: Recipe | None = None
    compressed_sha256: bytes | None = None
    fallback_reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DeltaError(f"unknown segment kind {self.kind!r}")
        for name in ("offset", "length"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise DeltaError(f"segment {name} must be a non-negative int, not {value!r}")
        if self.kind == "raw":
            if self.recipe is not None or self.compressed_sha256 is not None:
                raise DeltaError("a raw segment has no recipe and no compressed SHA-256")
            return
        if self.fallback_reason is not None:
            raise DeltaError("only raw segments carry a fallback reason")
        if self.compressed_sha256 is not None and (
            type(self.compressed_sha256) is not bytes or len(self.compressed_sha256) != 32
        ):
            raise DeltaError("compressed_sha256 must be 32 bytes")
        if self.recipe is not None:
            check_recipe(self.kind, self.recipe)


class Located(Protocol):
    """Anything that says where a segment lies: a SegmentLayout, an index's segment."""

    @property
    def kind(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...


class Rebuildable(Located, Protocol):
    """Anything that says how to rebuild a segment and what the result must hash to."""

    @property
    def recipe(self) -> Mapping[str, int | bytes] | None: ...
    @property
    def compressed_sha256(self) -> bytes | None: ...


# ---------------------------------------------------------------------------
# Public entry points


def segment_file(path: str | PathLike[str], *, find_recipes: bool = True) -> list[SegmentLayout]:
    """Split a file into segments that cover it exactly, in order.

    With ``find_recipes`` (the publisher), every compressed stream gets a recipe
    proven to reproduce it, or becomes raw with a ``fallback_reason``. Without
    it (a client reading its old files), compressed streams are only checked to
    decode cleanly, which is enough to read their content; note that such a
    stream may be raw in the publisher's index of a *new* file if no recipe
    reproduces it there. An empty file has no segments.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            spans = _container_spans(f, size)
            finder = _RecipeFinder(f) if find_recipes else None
            return _merge_raw([_finish(f, span, finder) for span in spans])
    except _Corrupt as exc:  # only when the file changes while we read it
        raise StorageError(f"{path} changed while being read: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def read_range(path: str | PathLike[str], offset: int, length: int) -> Iterator[bytes]:
    """The bytes ``[offset, offset + length)`` of a file, in pieces of at most PIECE_SIZE."""
    try:
        with open(path, "rb") as f:
            yield from _read_pieces(f, offset, offset + length)
    except _Corrupt as exc:
        raise DeltaError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def read_content(path: str | PathLike[str], layout: Located) -> Iterator[bytes]:
    """A segment's content in pieces of at most PIECE_SIZE bytes.

    Raw: its bytes. Compressed: its decompressed content, streamed, so memory
    stays bounded whatever the stream's size. Raises DeltaError if the file no
    longer holds exactly the stream the layout describes.
    """
    if layout.kind == "raw":
        yield from read_range(path, layout.offset, layout.length)
        return
    if layout.kind not in _DECODABLE:
        raise DeltaError(f"cannot read {layout.kind} content in this Python")
    end = layout.offset + layout.length
    try:
        with open(path, "rb") as f:
            stream = _Stream(f, layout.kind, layout.offset, end)
            yield from stream.pieces()
            if stream.end != end:
                raise _Corrupt(f"the stream ends at {stream.end}, the segment at {end}")
    except _Corrupt as exc:
        raise DeltaError(f"{path}: {layout.kind} segment at {layout.offset}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def content_length(path: str | PathLike[str], layout: Located) -> int:
    """How many bytes :func:`read_content` yields for this segment (decompresses to count)."""
    if layout.kind == "raw":
        return layout.length
    return sum(len(piece) for piece in read_content(path, layout))


def recompress(
    kind: str, recipe: Mapping[str, int | bytes], content: Iterable[bytes]
) -> Iterator[bytes]:
    """Compress ``content`` the way ``recipe`` says, streaming; no check of the result.

    Memory is bounded by the compressor's own state, except for xz streams with
    sized blocks (multi-threaded xz), which hold one compressed block.
    """
    check_recipe(kind, recipe)
    if kind == "deflate":
        yield from _deflate(recipe, content)
    elif kind == "gzip":
        yield from _gzip(recipe, content)
    elif kind == "xz":
        if _int(recipe, "block_size"):
            yield from _xz_blocks(recipe, content)
        else:
            yield from _compress_with(_xz_compressor(recipe), content)
    else:
        yield from _compress_with(bz2.BZ2Compressor(_int(recipe, "level")), content)


def rebuild(layout: Rebuildable, content: Iterable[bytes]) -> Iterator[bytes]:
    """Recreate a segment's original bytes from its content, checked.

    The output is compared, as it streams, with the recorded length and SHA-256;
    a mismatch raises IntegrityError. The last piece is held back until the
    whole output has checked out, so a consumer never receives a complete but
    wrong stream. Raw segments pass through with a length check.
    """
    if layout.kind == "raw":
        produced = _recompressed_pieces(content)
    else:
        if layout.recipe is None or layout.compressed_sha256 is None:
            raise DeltaError(f"{layout.kind} segment at {layout.offset} has no recipe")
        produced = _recompressed_pieces(recompress(layout.kind, layout.recipe, content))
    digest = hashlib.sha256()
    total = 0
    held: bytes | None = None
    for piece in produced:
        total += len(piece)
        if total > layout.length:
            raise IntegrityError(
                f"rebuilt {layout.kind} segment at {layout.offset} is longer than "
                f"{layout.length} bytes"
            )
        digest.update(piece)
        if held is not None:
            yield held
        held = piece
    if total != layout.length:
        raise IntegrityError(
            f"rebuilt {layout.kind} segment at {layout.offset} has {total} bytes, "
            f"expected {layout.length}"
        )
    if layout.compressed_sha256 is not None and digest.digest() != layout.compressed_sha256:
        raise IntegrityError(
            f"rebuilt {layout.kind} segment at {layout.offset} does not match its SHA-256"
        )
    if held is not None:
        yield held


def _recompressed_pieces(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Pieces cut to at most PIECE_SIZE (compressor flushes can be larger)."""
    for piece in pieces:
        for start in range(0, len(piece), PIECE_SIZE):
            yield piece[start : start + PIECE_SIZE]


# ---------------------------------------------------------------------------
# Recipes: what they hold, and checking one that came from the network

_ZLIB_KEYS: Final = frozenset({"level", "mem_level", "strategy", "wbits"})
_RECIPE_KEYS: Final = {
    "deflate": _ZLIB_KEYS,
    "gzip": _ZLIB_KEYS | {"header"},
    "xz": frozenset({"preset", "extreme", "check", "dict_size", "block_size", "block_header_size"}),
    "bz2": frozenset({"level"}),
}
_INT_RANGES: Final = {
    "level": (0, 9),
    "mem_level": (1, 9),
    "strategy": (0, 4),
    "wbits": (9, 15),
    "preset": (0, 9),
    "extreme": (0, 1),
    "dict_size": (4096, _MAX_XZ_DICT),
    "block_size": (0, _MAX_XZ_BLOCK),
    "block_header_size": (0, 1024),
}
_XZ_CHECK_SIZES: Final = {
    lzma.CHECK_NONE: 0,
    lzma.CHECK_CRC32: 4,
    lzma.CHECK_CRC64: 8,
    lzma.CHECK_SHA256: 32,
}


def check_recipe(kind: str, recipe: Mapping[str, int | bytes]) -> None:
    """Raise DeltaError unless ``recipe`` is a well-formed recipe for ``kind``.

    Recipes arrive inside delta indexes from the network, so nothing about them
    is trusted: exact key set, value types and ranges, and for gzip a header
    that parses as exactly one gzip member header.
    """
    expected = _RECIPE_KEYS.get(kind)
    if expected is None:
        raise DeltaError(f"no recipes exist for {kind!r} segments")
    if not isinstance(recipe, Mapping) or set(recipe) != expected:
        keys = sorted(recipe) if isinstance(recipe, Mapping) else recipe
        raise DeltaError(f"{kind} recipe must have keys {sorted(expected)}, not {keys!r}")
    for key in expected - {"header", "check"}:
        low, high = _INT_RANGES[key]
        value = recipe[key]
        if type(value) is not int or not low <= value <= high:
            raise DeltaError(f"{kind} recipe: {key} must be an int in {low}..{high}")
    if kind == "bz2" and recipe["level"] == 0:
        raise DeltaError("bz2 recipe: level must be in 1..9")
    check = recipe.get("check")
    if kind == "xz" and (type(check) is not int or check not in _XZ_CHECK_SIZES):
        raise DeltaError("xz recipe: check must be one of liblzma's check ids 0, 1, 4, 10")
    if kind == "xz" and (
        _int(recipe, "block_header_size") % 4
        or (recipe["block_header_size"] and not recipe["block_size"])
    ):
        raise DeltaError("xz recipe: block_header_size must be a multiple of 4, with block_size")
    if kind == "gzip":
        header = recipe["header"]
        if type(header) is not bytes or len(header) > _MAX_GZIP_HEADER:
            raise DeltaError("gzip recipe: header must be bytes of bounded length")
        try:
            if _gzip_header_length(header) != len(header):
                raise DeltaError("gzip recipe: header has trailing bytes")
        except _Corrupt as exc:
            raise DeltaError(f"gzip recipe: {exc}") from exc


def _int(recipe: Mapping[str, int | bytes], key: str) -> int:
    value = recipe[key]
    assert isinstance(value, int)
    return value


# ---------------------------------------------------------------------------
# Compressors (shared by the publisher's proof and the client's rebuild)


def _feed(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Content cut to at most PIECE_SIZE, so no single compressor call grows unbounded."""
    for piece in pieces:
        if len(piece) <= PIECE_SIZE:
            yield piece
        else:
            for start in range(0, len(piece), PIECE_SIZE):
                yield piece[start : start + PIECE_SIZE]


def _deflate(recipe: Mapping[str, int | bytes], content: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(
        _int(recipe, "level"),
        zlib.DEFLATED,
        -_int(recipe, "wbits"),
        _int(recipe, "mem_level"),
        _int(recipe, "strategy"),
    )
    for piece in _feed(content):
        out = compressor.compress(piece)
        if out:
            yield out
    yield compressor.flush()


def _gzip(recipe: Mapping[str, int | bytes], content: Iterable[bytes]) -> Iterator[bytes]:
    header = recipe["header"]
    assert isinstance(header, bytes)
    yield header
    crc = 0
    size = 0

    def counted() -> Iterator[bytes]:
        nonlocal crc, size
        for piece in content:
            crc = zlib.crc32(piece, crc)
            size += len(piece)
            yield piece

    yield from _deflate(recipe, counted())
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def _compress_with(
    compressor: lzma.LZMACompressor | bz2.BZ2Compressor, content: Iterable[bytes]
) -> Iterator[bytes]:
    for piece in _feed(content):
        out = compressor.compress(piece)
        if out:
            yield out
    yield compressor.flush()


def _xz_filters(recipe: Mapping[str, int | bytes]) -> list[dict[str, int]]:
    preset = _int(recipe, "preset") | (lzma.PRESET_EXTREME if _int(recipe, "extreme") else 0)
    return [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": _int(recipe, "dict_size")}]


def _xz_compressor(recipe: Mapping[str, int | bytes]) -> lzma.LZMACompressor:
    return lzma.LZMACompressor(
        format=lzma.FORMAT_XZ, check=_int(recipe, "check"), filters=_xz_filters(recipe)
    )


def _xz_blocks(recipe: Mapping[str, int | bytes], content: Iterable[bytes]) -> Iterator[bytes]:
    """An .xz stream of several blocks, the way xz lays them out.

    xz cuts the content into blocks of ``block_size`` bytes and compresses each
    on its own. Multi-threaded xz records both sizes in every block header,
    reserving room for the largest sizes a block could have, so its headers are
    padded to ``block_header_size`` whatever the actual sizes; single-threaded
    ``xz --block-size`` writes headers without sizes (``block_header_size`` 0).
    Python's lzma has only the single-threaded, single-block encoder, but a
    block's LZMA2 data and check do not depend on that: each block is
    compressed as a one-block stream, and the parts are reassembled with the
    right headers, a new index and footer.
    """
    check = _int(recipe, "check")
    block_size = _int(recipe, "block_size")
    header_size = _int(recipe, "block_header_size")
    check_size = _XZ_CHECK_SIZES[check]
    flags = bytes((0, check))
    yield _XZ_MAGIC + flags + struct.pack("<I", zlib.crc32(flags))
    records: list[tuple[int, int]] = []
    filter_flags = bytes((0x21, 1, _lzma2_dict_byte(_int(recipe, "dict_size"))))

    def emit_block(compressor: lzma.LZMACompressor, parts: list[bytes], usize: int) -> bytes:
        parts.append(compressor.flush())
        header, data, check_value = _split_one_block_xz(b"".join(parts), check_size)
        if header_size:
            body = bytes((0xC0,)) + _vli(len(data)) + _vli(usize) + filter_flags
            if 1 + len(body) + 4 > header_size:
                raise DeltaError("xz recipe: block header does not fit block_header_size")
            header = bytes((header_size // 4 - 1,)) + body
            header += bytes(header_size - 4 - len(header))
            header += struct.pack("<I", zlib.crc32(header))
        records.append((len(header) + len(data) + check_size, usize))
        return header + data + bytes(-len(data) % 4) + check_value

    compressor: lzma.LZMACompressor | None = None
    parts: list[bytes] = []
    filled = 0
    for piece in _feed(content):
        view = memoryview(piece)
        while view:
            if compressor is None:
                compressor = _xz_compressor(recipe)
                parts = []
                filled = 0
            take = view[: block_size - filled]
            view = view[len(take) :]
            filled += len(take)
            out = compressor.compress(bytes(take))
            if out:
                parts.append(out)
            if filled == block_size:
                yield emit_block(compressor, parts, filled)
                compressor = None
    if compressor is not None:
        yield emit_block(compressor, parts, filled)
    index = b"\x00" + _vli(len(records))
    for unpadded, usize in records:
        index += _vli(unpadded) + _vli(usize)
    index += bytes(-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1) + flags
    yield index + struct.pack("<I", zlib.crc32(backward)) + backward + b"YZ"


def _split_one_block_xz(stream: bytes, check_size: int) -> tuple[bytes, bytes, bytes]:
    """The block header, LZMA2 data and check of a one-block .xz stream made by liblzma."""
    header_size = (stream[12] + 1) * 4
    (backward,) = struct.unpack_from("<I", stream, len(stream) - 8)
    index = stream[len(stream) - 12 - (backward + 1) * 4 : len(stream) - 12]
    count, at = _read_vli(index, 1)
    unpadded, at = _read_vli(index, at)
    if index[0] != 0 or count != 1:  # pragma: no cover - liblzma always writes one block
        raise DeltaError("unexpected xz index from liblzma")
    data_size = unpadded - header_size - check_size
    start = 12 + header_size
    check_at = start + data_size + (-data_size % 4)
    return (
        stream[12:start],
        stream[start : start + data_size],
        stream[check_at : check_at + check_size],
    )


def _vli(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_vli(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(9):
        if at + i >= len(data):
            raise _Corrupt("truncated xz integer")  # pragma: no cover - liblzma refuses it
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                raise _Corrupt("non-minimal xz integer")  # pragma: no cover - liblzma refuses it
            return value, at + i + 1
    # Only headers and indexes of streams liblzma decoded are read here, and liblzma
    # refuses all three cases; the checks stay so that this parser is safe alone.
    raise _Corrupt("xz integer too long")  # pragma: no cover - liblzma refuses it


def _lzma2_dict_size(byte: int) -> int:
    return 0xFFFFFFFF if byte == 40 else (2 | (byte & 1)) << (byte // 2 + 11)


def _lzma2_dict_byte(dict_size: int) -> int:
    return next(b for b in range(41) if _lzma2_dict_size(b) >= dict_size)


# ---------------------------------------------------------------------------
# Reading streams: bounded pieces, exact ends


class _Corrupt(Exception):
    """A structure or stream that is not what it claims to be (becomes raw)."""


_DECODABLE: Final = frozenset({"deflate", "gzip", "xz", "bz2"})
_DECODE_ERRORS: Final = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)


def _pread(f: BinaryIO, offset: int, size: int) -> bytes:
    """Exactly ``size`` bytes at ``offset``; positionless, so readers can interleave."""
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise _Corrupt(f"file ends before byte {offset + size}")
    return data


def _read_pieces(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    while start < end:
        piece = _pread(f, start, min(_READ_SIZE, end - start))
        start += len(piece)
        yield piece


def _content_limit(compressed: int) -> int:
    return min(MAX_SEGMENT_CONTENT, compressed * MAX_CONTENT_RATIO + _CONTENT_SLACK)


class _Stream:
    """One compressed stream starting at ``start`` and ending at or before ``limit``.

    Iterating :meth:`pieces` yields the content; afterwards ``end`` is where the
    stream (for gzip: its trailer) ended and ``content_length`` is known.
    """

    def __init__(self, f: BinaryIO, kind: str, start: int, limit: int) -> None:
        self.kind = kind
        self.start = start
        self.limit = limit
        self.end = -1
        self.content_length = 0
        self.header = b""
        self._f = f

    def pieces(self) -> Iterator[bytes]:
        f, kind = self._f, self.kind
        pos = self.start
        if kind == "gzip":
            head = _pread(f, pos, min(_MAX_GZIP_HEADER, self.limit - pos))
            self.header = head[: _gzip_header_length(head)]
            pos += len(self.header)
        max_content = _content_limit(self.limit - self.start)
        decoder = _Decoder(kind)
        crc = 0
        try:
            while not decoder.eof:
                if pos >= self.limit:
                    raise _Corrupt("the stream is truncated")
                block = _pread(f, pos, min(_READ_SIZE, self.limit - pos))
                pos += len(block)
                for out in decoder.feed(block):
                    self.content_length += len(out)
                    if self.content_length > max_content:
                        raise _Corrupt(
                            f"content exceeds {max_content} bytes (a decompression bomb?)"
                        )
                    if kind == "gzip":
                        crc = zlib.crc32(out, crc)
                    yield out
        except _DECODE_ERRORS as exc:
            raise _Corrupt(f"cannot decode: {exc}") from exc
        pos -= len(decoder.unused_data)
        if kind == "gzip":
            if pos + 8 > self.limit:
                raise _Corrupt("the gzip trailer is missing")
            if _pread(f, pos, 8) != struct.pack("<II", crc, self.content_length & 0xFFFFFFFF):
                raise _Corrupt("the gzip trailer does not match the content")
            pos += 8
        self.end = pos


class _Decoder:
    """zlib, lzma and bz2 decompressors behind one interface with bounded output."""

    def __init__(self, kind: str) -> None:
        self._zlib = zlib.decompressobj(-15) if kind in ("deflate", "gzip") else None
        self._other: lzma.LZMADecompressor | bz2.BZ2Decompressor | None = None
        if kind == "xz":
            self._other = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_DECODER_MEMORY)
        elif kind == "bz2":
            self._other = bz2.BZ2Decompressor()

    @property
    def eof(self) -> bool:
        return self._zlib.eof if self._zlib is not None else bool(self._other and self._other.eof)

    @property
    def unused_data(self) -> bytes:
        if self._zlib is not None:
            return self._zlib.unused_data
        assert self._other is not None
        return self._other.unused_data

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is not None:
            z = self._zlib
            while True:
                out = z.decompress(data, PIECE_SIZE)
                if out:
                    yield out
                if z.eof:
                    return
                tail = z.unconsumed_tail
                # A tail is left only when the output filled PIECE_SIZE: always progress.
                if not tail and len(out) < PIECE_SIZE:
                    return
                data = tail
        other = self._other
        assert other is not None
        out = other.decompress(data, PIECE_SIZE)
        while out:
            yield out
            if other.eof or other.needs_input:
                return
            out = other.decompress(b"", PIECE_SIZE)


def _gzip_header_length(head: bytes) -> int:
    """Length of the gzip member header at the start of ``head``."""
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
        raise _Corrupt("not a deflate gzip header")
    flags = head[3]
    if flags & 0xE0:
        raise _Corrupt("gzip header has reserved flags set")
    pos = 10
    if flags & 0x04:  # FEXTRA
        if pos + 2 > len(head):
            raise _Corrupt("gzip header is truncated")
        pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            nul = head.find(b"\x00", pos)
            if nul < 0:
                raise _Corrupt("gzip header name or comment is unterminated or too long")
            pos = nul + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    if pos > len(head):
        raise _Corrupt("gzip header is truncated")
    return pos


# ---------------------------------------------------------------------------
# Containers: finding the streams in a file


@dataclass
class _Span:
    """A byte range before it becomes a segment; compressed spans may fail later."""

    kind: str
    start: int
    end: int
    reason: str | None = None
    hint: int | None = None  # the level a header suggests
    stream: _Scanned | None = None


@dataclass
class _Scanned:
    """A stream that decoded cleanly, with what the recipe search needs."""

    kind: str
    start: int
    end: int
    content_length: int
    content: bytes | None  # held only for small streams
    header: bytes


_ZIP_EOCD: Final = b"PK\x05\x06"
_GZIP_MAGIC: Final = b"\x1f\x8b\x08"
_XZ_MAGIC: Final = b"\xfd7zXZ\x00"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_AR_MAGIC: Final = b"!<arch>\n"


def _container_spans(f: BinaryIO, size: int) -> list[_Span]:
    if size == 0:
        return []
    head = _pread(f, 0, min(size, 16))
    if head.startswith(_AR_MAGIC):
        return _guarded(_ar_spans, f, size, "ar")
    if _stream_kind(head) is not None:
        return _stream_spans(f, 0, size)
    if head.startswith((b"PK\x03\x04", _ZIP_EOCD)):
        return _guarded(_zip_spans, f, size, "zip")
    if _has_zip_end(f, size):  # maybe a zip behind a stub, maybe a chance byte pattern
        spans = _guarded(_zip_spans, f, size, "zip")
        return spans if spans[0].reason is None else [_Span("raw", 0, size)]
    return [_Span("raw", 0, size)]


def _guarded(
    parse: Callable[[BinaryIO, int], list[_Span]], f: BinaryIO, size: int, what: str
) -> list[_Span]:
    """Run a container parser; any inconsistency makes the whole file one raw segment."""
    try:
        return parse(f, size)
    except _Corrupt as exc:
        return [_Span("raw", 0, size, reason=f"{what}: {exc}")]


def _stream_kind(head: bytes) -> str | None:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    if head.startswith(b"BZh") and len(head) > 3 and 0x31 <= head[3] <= 0x39:
        return "bz2"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return None


def _stream_spans(f: BinaryIO, start: int, end: int) -> list[_Span]:
    """Compressed streams back to back from ``start`` (multi-member gzip, pbzip2...).

    Whatever follows the last stream that decodes (padding, garbage) is raw.
    """
    spans: list[_Span] = []
    pos = start
    while pos < end and len(spans) < _MAX_STREAMS:
        kind = _stream_kind(_pread(f, pos, min(8, end - pos)))
        if kind is None:
            break
        if kind == "zstd":
            spans.append(_Span("raw", pos, end, reason="zstd: no zstd module in this Python"))
            return spans
        try:
            # Not keeping content: thousands of members may wait for their recipe.
            scanned = _scan(f, kind, pos, end, keep=False)
        except _Corrupt as exc:
            spans.append(_Span("raw", pos, end, reason=f"{kind}: {exc}"))
            return spans
        spans.append(_Span(kind, pos, scanned.end, stream=scanned))
        pos = scanned.end
    if pos < end:
        spans.append(_Span("raw", pos, end))
    return spans


def _scan(f: BinaryIO, kind: str, start: int, limit: int, *, keep: bool) -> _Scanned:
    """Decode a stream once: where it ends, how long its content is, small content kept."""
    stream = _Stream(f, kind, start, limit)
    kept: list[bytes] | None = [] if keep else None
    for piece in stream.pieces():
        if kept is not None:
            kept.append(piece)
            if stream.content_length > _IN_MEMORY:
                kept = None
    content = b"".join(kept) if kept is not None and stream.end - start <= _IN_MEMORY else None
    return _Scanned(kind, start, stream.end, stream.content_length, content, stream.header)


def _ar_spans(f: BinaryIO, size: int) -> list[_Span]:
    """A Unix ``ar`` archive (.deb): headers raw, each member's data searched for streams."""
    spans: list[_Span] = []
    pos, raw_start = len(_AR_MAGIC), 0
    members = 0
    while pos < size:
        members += 1
        if members > _MAX_AR_MEMBERS:
            raise _Corrupt("too many members")
        header = _pread(f, pos, 60)
        if header[58:60] != b"`\n":
            raise _Corrupt(f"bad member header at {pos}")
        try:
            length = int(header[48:58].decode("ascii").strip() or "-")
        except ValueError as exc:
            raise _Corrupt(f"bad member size at {pos}") from exc
        data_start = pos + 60
        data_end = data_start + length
        if length < 0 or data_end > size:
            raise _Corrupt(f"member at {pos} runs past the end of the file")
        if length and _stream_kind(_pread(f, data_start, min(8, length))) is not None:
            spans.append(_Span("raw", raw_start, data_start))  # at least this member's header
            spans.extend(_stream_spans(f, data_start, data_end))
            raw_start = data_end
        pos = data_end + (length & 1)
    if pos != size:
        raise _Corrupt("the last member runs past the end of the file")
    spans.append(_Span("raw", raw_start, size))
    return spans


def _has_zip_end(f: BinaryIO, size: int) -> bool:
    """A zip with something prepended (a self-extractor stub) still ends like a zip."""
    return size >= 22 and _ZIP_EOCD in _pread(f, size - min(size, 22 + 1024), min(size, 22 + 1024))


_EOCD: Final = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR: Final = struct.Struct("<4sIQI")
_ZIP64_EOCD: Final = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL: Final = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL: Final = struct.Struct("<4sHHHHHIIIHH")


@dataclass(frozen=True)
class _Member:
    header: int  # offset of the local header in the file
    compressed_size: int
    method: int
    flags: int


def _zip_spans(f: BinaryIO, size: int) -> list[_Span]:
    """Every deflated member's data becomes a deflate span; everything else stays raw.

    The central directory is trusted for nothing: every member's local header
    must be where it says, its data inside the file and before the directory,
    and no two members may overlap (overlap is how zip bombs multiply).
    """
    members, directory_start = _zip_directory(f, size)
    spans: list[_Span] = []
    raw_start = previous_end = 0
    for member in sorted(members, key=lambda m: m.header):
        if member.header < previous_end:
            raise _Corrupt("members overlap")
        local = _LOCAL.unpack(_pread(f, member.header, _LOCAL.size))
        if local[0] != b"PK\x03\x04":
            raise _Corrupt(f"no local header at {member.header}")
        data_start = member.header + _LOCAL.size + local[9] + local[10]
        data_end = data_start + member.compressed_size
        if data_end > directory_start:
            raise _Corrupt(f"member at {member.header} runs into the central directory")
        previous_end = data_end
        deflated = member.method == 8 and not member.flags & 1  # bit 0: encrypted
        if deflated and member.compressed_size >= MIN_STREAM_LENGTH:
            spans.append(_Span("raw", raw_start, data_start))  # at least the local header
            # Flag bits 1-2 of a deflated member: 0 normal, 1 maximum, 2 fast, 3 super fast.
            hint = (6, 9, 2, 1)[(member.flags >> 1) & 3]
            spans.append(_Span("deflate", data_start, data_end, hint=hint))
            raw_start = data_end
    spans.append(_Span("raw", raw_start, size))  # at least the central directory
    return spans


def _zip_directory(f: BinaryIO, size: int) -> tuple[list[_Member], int]:
    """The central directory's members (offsets made absolute) and where it starts."""
    tail_size = min(size, _EOCD.size + _MAX_ZIP_COMMENT)
    tail = _pread(f, size - tail_size, tail_size)
    at = tail.rfind(_ZIP_EOCD, 0, len(tail) - _EOCD.size + len(_ZIP_EOCD))
    if at < 0:
        raise _Corrupt("no end of central directory record")
    eocd_at = size - tail_size + at
    _, disk, directory_disk, _, count, directory_size, directory_offset, _ = _EOCD.unpack_from(
        tail, at
    )
    directory_end = eocd_at
    if eocd_at >= _ZIP64_LOCATOR.size:
        locator = _ZIP64_LOCATOR.unpack(_pread(f, eocd_at - _ZIP64_LOCATOR.size, 20))
        if locator[0] == b"PK\x06\x07":
            zip64_at = locator[2]
            if zip64_at + _ZIP64_EOCD.size > eocd_at - _ZIP64_LOCATOR.size:
                raise _Corrupt("zip64 end record outside the file")
            record = _ZIP64_EOCD.unpack(_pread(f, zip64_at, _ZIP64_EOCD.size))
            if record[0] != b"PK\x06\x06":
                raise _Corrupt("no zip64 end of central directory record")
            disk, directory_disk = record[4], record[5]
            count, directory_size, directory_offset = record[7], record[8], record[9]
            directory_end = zip64_at
    if disk or directory_disk:
        raise _Corrupt("multi-disk archives are not supported")
    if directory_size > _MAX_ZIP_DIRECTORY:
        raise _Corrupt("central directory too large")
    if count * _CENTRAL.size > directory_size:
        raise _Corrupt("central directory too small for its entry count")
    # Data prepended to the archive shifts every offset by the same amount.
    base = directory_end - directory_size - directory_offset
    if base < 0:
        raise _Corrupt("central directory outside the file")
    directory_start = base + directory_offset
    directory = _pread(f, directory_start, directory_size)
    members: list[_Member] = []
    pos = 0
    for _ in range(count):
        if pos + _CENTRAL.size > len(directory):
            raise _Corrupt("central directory is truncated")
        entry = _CENTRAL.unpack_from(directory, pos)
        if entry[0] != b"PK\x01\x02":
            raise _Corrupt("bad central directory entry")
        flags, method = entry[3], entry[4]
        compressed, uncompressed, header_offset = entry[8], entry[9], entry[16]
        name_length, extra_length, comment_length = entry[10], entry[11], entry[12]
        extra_at = pos + _CENTRAL.size + name_length
        extra = directory[extra_at : extra_at + extra_length]
        compressed, header_offset = _zip64_sizes(extra, uncompressed, compressed, header_offset)
        pos = extra_at + extra_length + comment_length
        if pos > len(directory):
            raise _Corrupt("central directory entry is truncated")
        members.append(_Member(base + header_offset, compressed, method, flags))
    return members, directory_start


def _zip64_sizes(
    extra: bytes, uncompressed: int, compressed: int, header_offset: int
) -> tuple[int, int]:
    """Compressed size and local header offset, from the zip64 extra field if needed."""
    if 0xFFFFFFFF not in (uncompressed, compressed, header_offset):
        return compressed, header_offset
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if tag != 1:
            continue
        values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
        wanted = [uncompressed == 0xFFFFFFFF, compressed == 0xFFFFFFFF, header_offset == 0xFFFFFFFF]
        if len(values) < sum(wanted):
            raise _Corrupt("zip64 extra field is too short")
        it = iter(values)
        if wanted[0]:
            next(it)
        if wanted[1]:
            compressed = next(it)
        if wanted[2]:
            header_offset = next(it)
        return compressed, header_offset
    raise _Corrupt("zip64 sizes without a zip64 extra field")


# ---------------------------------------------------------------------------
# From spans to segments: decode, search a recipe, fall back


def _finish(f: BinaryIO, span: _Span, finder: _RecipeFinder | None) -> SegmentLayout:
    length = span.end - span.start
    if span.kind == "raw":
        return SegmentLayout("raw", span.start, length, fallback_reason=span.reason)
    scanned = span.stream
    if scanned is None:
        try:
            scanned = _scan(f, span.kind, span.start, span.end, keep=True)
        except _Corrupt as exc:
            return SegmentLayout("raw", span.start, length, fallback_reason=f"{span.kind}: {exc}")
        if scanned.end != span.end:
            reason = f"{span.kind}: the stream ends before its recorded size"
            return SegmentLayout("raw", span.start, length, fallback_reason=reason)
    if finder is None:
        return SegmentLayout(span.kind, span.start, length)
    recipe, reason = finder.find(scanned, span.hint)
    if recipe is None:
        return SegmentLayout("raw", span.start, length, fallback_reason=f"{span.kind}: {reason}")
    digest = hashlib.sha256()
    for piece in _read_pieces(f, span.start, span.end):
        digest.update(piece)
    return SegmentLayout(span.kind, span.start, length, recipe, digest.digest())


def _merge_raw(segments: list[SegmentLayout]) -> list[SegmentLayout]:
    """Adjacent plain raw segments become one; fallbacks keep their own reason."""
    merged: list[SegmentLayout] = []
    for segment in segments:
        if segment.length == 0:
            continue
        last = merged[-1] if merged else None
        if (
            last is not None
            and segment.kind == last.kind == "raw"
            and segment.fallback_reason is None
            and last.fallback_reason is None
        ):
            merged[-1] = SegmentLayout("raw", last.offset, last.length + segment.length)
        else:
            merged.append(segment)
    return merged


_PRIMARY_LEVELS: Final = (6, 9, 1)


def _zlib_candidates(hint: int | None) -> list[dict[str, int]]:
    """zlib parameters, most likely first.

    Levels first (6 is zlib's default, 9 what gzip -9 / tarfile use), then the
    bigger memLevel, then strategies, then smaller windows. Some combinations
    are skipped because zlib ignores the difference: Huffman-only and RLE do not
    look at the level, and Z_FILTERED only changes the lazy matcher (levels 4-9).
    """
    order = list(
        dict.fromkeys([*((hint,) if hint is not None else ()), *_PRIMARY_LEVELS, *range(1, 10)])
    )
    out: list[tuple[int, int, int, int]] = []
    for mem_level in (8, 9):
        out += [(level, mem_level, zlib.Z_DEFAULT_STRATEGY, 15) for level in order]
    out.append((0, 8, zlib.Z_DEFAULT_STRATEGY, 15))
    for mem_level in (8, 9):
        out += [(level, mem_level, zlib.Z_FILTERED, 15) for level in order if level >= 4]
        out += [(6, mem_level, zlib.Z_HUFFMAN_ONLY, 15), (6, mem_level, zlib.Z_RLE, 15)]
    out += [(level, 8, zlib.Z_FIXED, 15) for level in order]
    out += [
        (level, 8, zlib.Z_DEFAULT_STRATEGY, wbits)
        for wbits in range(14, 8, -1)
        for level in order[:3]
    ]
    return [
        {"level": level, "mem_level": mem, "strategy": strategy, "wbits": wbits}
        for level, mem, strategy, wbits in dict.fromkeys(out)
    ]


_XZ_PRESET_DICTS: Final = (
    1 << 18,
    1 << 20,
    2 << 20,
    4 << 20,
    4 << 20,
    8 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
)


@dataclass(frozen=True)
class _XzLayout:
    check: int
    dict_size: int  # of the first block; preset 6's when the stream has no blocks
    block_size: int  # 0: no sizes in block headers (single-threaded xz)
    block_header_size: int
    data_start: int  # where the first block's LZMA2 data starts (0: no block)


def _xz_layout(f: BinaryIO, start: int, end: int) -> _XzLayout:
    """What the stream and first block headers say about how a stream was made."""
    head = _pread(f, start, min(end - start, 12 + 1024))
    if len(head) < 13 or head[6] != 0 or head[7] not in _XZ_CHECK_SIZES:
        raise _Corrupt("stream flags or integrity check not supported by Python's lzma")
    check = head[7]
    if head[12] == 0:  # the index follows directly: no blocks
        return _XzLayout(check, _XZ_PRESET_DICTS[6], 0, 0, 0)
    header = head[12 : 12 + (head[12] + 1) * 4]
    flags = header[1]
    if flags & 0x3C:
        raise _Corrupt("block header has reserved flags")  # pragma: no cover - liblzma refuses
    if flags & 3:
        raise _Corrupt("filter chain is not plain LZMA2 (BCJ or delta filter)")
    at = 2
    uncompressed_size = 0
    if flags & 0x40:
        _, at = _read_vli(header, at)
    if flags & 0x80:
        uncompressed_size, at = _read_vli(header, at)
    if bool(flags & 0x40) != bool(flags & 0x80):
        raise _Corrupt("block header records only one of its sizes (not liblzma)")
    filter_id, at = _read_vli(header, at)
    props_size, at = _read_vli(header, at)
    if filter_id != 0x21 or props_size != 1 or at >= len(header) or header[at] > 40:
        raise _Corrupt("filter is not LZMA2")  # pragma: no cover - liblzma refuses it in .xz
    dict_size = _lzma2_dict_size(header[at])
    if dict_size > _MAX_XZ_DICT:
        raise _Corrupt("dictionary larger than any xz preset's")
    sized = bool(flags & 0x80)
    # The index says whether there are several blocks, and the first one's size.
    footer = _pread(f, end - 12, 12)
    index_size = (struct.unpack_from("<I", footer, 4)[0] + 1) * 4
    if footer[10:] != b"YZ" or end - 12 - index_size < start + 12:
        raise _Corrupt("bad stream footer")  # pragma: no cover - liblzma refuses
    index = _pread(f, end - 12 - index_size, min(index_size, 64))
    blocks, at = _read_vli(index, 1)
    _, at = _read_vli(index, at)
    first_block, _ = _read_vli(index, at)
    if sized and uncompressed_size != first_block:
        raise _Corrupt("block header and index disagree")  # pragma: no cover - liblzma refuses
    block_size = first_block if blocks > 1 or sized else 0
    if block_size > _MAX_XZ_BLOCK:  # pragma: no cover - testing needs a 256 MiB block
        raise _Corrupt(f"blocks larger than {_MAX_XZ_BLOCK} bytes")
    return _XzLayout(
        check,
        dict_size,
        block_size,
        len(header) if sized else 0,
        start + 12 + len(header),
    )


class _RecipeFinder:
    """Proves recipes for the streams of one file, learning as it goes.

    Files are made by one tool, so a recipe that worked once is tried first on
    the next stream; and after a few streams that no parameters reproduce (the
    tool was not zlib) only a short list is tried, so such files cost little.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._wins: list[dict[str, int]] = []
        self._fruitless = 0

    def find(self, stream: _Scanned, hint: int | None) -> tuple[Recipe | None, str]:
        small = max(stream.content_length, stream.end - stream.start) <= _IN_MEMORY
        if stream.content is None and small:
            pieces = _Stream(self._f, stream.kind, stream.start, stream.end).pieces()
            stream = replace(stream, content=b"".join(pieces))
        if stream.kind == "xz":
            return self._find_xz(stream)
        if stream.kind == "bz2":
            level = _pread(self._f, stream.start + 3, 1)[0] - 0x30
            recipe: Recipe = {"level": level}
            if self._reproduces(stream, recipe):
                return recipe, ""
            return None, f"libbz2 at level {level} does not reproduce this stream"
        if stream.kind == "gzip":
            xfl = stream.header[8]
            hint = 9 if xfl == 2 else 1 if xfl == 4 else 6
        candidates = list(self._wins)
        quick = self._fruitless >= _FRUITLESS_LIMIT
        full = _zlib_candidates(hint)
        candidates += full[:3] if quick else full
        tried = 0
        for params in dict.fromkeys(tuple(sorted(c.items())) for c in candidates):
            zlib_recipe = dict(params)
            recipe = dict[str, int | bytes](zlib_recipe)
            if stream.kind == "gzip":
                recipe["header"] = stream.header
            tried += 1
            if self._reproduces(stream, recipe):
                if zlib_recipe in self._wins:
                    self._wins.remove(zlib_recipe)
                self._wins.insert(0, zlib_recipe)
                return recipe, ""
        if not quick:
            self._fruitless += 1
        scope = " (short list: earlier streams of this file matched nothing)" if quick else ""
        return None, f"no zlib parameters reproduce this stream; tried {tried}{scope}"

    def _find_xz(self, stream: _Scanned) -> tuple[Recipe | None, str]:
        try:
            layout = _xz_layout(self._f, stream.start, stream.end)
        except _Corrupt as exc:
            return None, str(exc)
        matching = [p for p, size in enumerate(_XZ_PRESET_DICTS) if size == layout.dict_size]
        # Presets whose dictionary is the block's first; otherwise xz shrank the
        # dictionary to a small input and any preset may have been used.
        presets = [*reversed(matching)] or [6, 9, 0, 1, 2, 3, 4, 5, 7, 8]
        tried = 0
        for preset in presets:
            for extreme in (0, 1):
                recipe: Recipe = {
                    "preset": preset,
                    "extreme": extreme,
                    "check": layout.check,
                    "dict_size": layout.dict_size,
                    "block_size": layout.block_size,
                    "block_header_size": layout.block_header_size,
                }
                tried += 1
                if self._xz_prefix_matches(recipe, layout, stream) and self._reproduces(
                    stream, recipe
                ):
                    return recipe, ""
        threads = " with sized blocks (multi-threaded xz)" if layout.block_size else ""
        return None, f"no liblzma preset{threads} reproduces this stream; tried {tried}"

    def _xz_prefix_matches(self, recipe: Recipe, layout: _XzLayout, stream: _Scanned) -> bool:
        """A cheap early test: the first block's raw LZMA2 data, as far as it is emitted.

        An .xz stream's first output only appears once a whole block is done
        (multi-threaded layout) or after liblzma's internal buffers fill, so a
        wrong preset would cost a full block's compression; raw LZMA2 output
        appears early and fails fast.
        """
        if not layout.data_start:
            return True
        compressor = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=_xz_filters(recipe))
        compared = _Comparison(_read_pieces(self._f, layout.data_start, stream.end))
        fed = 0
        feed_limit = min(8 << 20, layout.block_size or 8 << 20)
        for piece in self._content(stream):
            piece = piece[: feed_limit - fed]
            out = compressor.compress(piece)
            fed += len(piece)
            if out:
                if not compared.matches(out):
                    return False
                if compared.position >= 1 << 20:
                    return True
            if fed >= feed_limit:
                break
        return True

    def _content(self, stream: _Scanned) -> Iterator[bytes]:
        if stream.content is not None:
            data = stream.content
            for start in range(0, len(data), _TRIAL_PIECE):
                yield data[start : start + _TRIAL_PIECE]
            return
        for piece in _Stream(self._f, stream.kind, stream.start, stream.end).pieces():
            for start in range(0, len(piece), _TRIAL_PIECE):
                yield piece[start : start + _TRIAL_PIECE]

    def _reproduces(self, stream: _Scanned, recipe: Recipe) -> bool:
        """Does ``recipe`` recompress the content into exactly the original bytes?

        Output is compared as it is produced, so a wrong recipe costs only until
        its first differing byte, typically one deflate block.
        """
        compared = _Comparison(_read_pieces(self._f, stream.start, stream.end))
        try:
            for out in recompress(stream.kind, recipe, self._content(stream)):
                if not compared.matches(out):
                    return False
        except (DeltaError, _Corrupt):  # the recipe cannot be applied, or the file changed
            return False
        return compared.exhausted()


class _Comparison:
    """Compares produced bytes, as they come, with a stream of original bytes."""

    def __init__(self, original: Iterator[bytes]) -> None:
        self._original = original
        self._pending = memoryview(b"")
        self.position = 0

    def matches(self, produced: bytes) -> bool:
        view = memoryview(produced)
        while view:
            if not self._pending:
                self._pending = memoryview(next(self._original, b""))
                if not self._pending:  # longer than the original
                    return False  # pragma: no cover - recompressors stop where streams end
            n = min(len(view), len(self._pending))
            if view[:n] != self._pending[:n]:
                return False
            view = view[n:]
            self._pending = self._pending[n:]
            self.position += n
        return True

    def exhausted(self) -> bool:
        return not self._pending and next(self._original, b"") == b""
