"""The delta index: what every file of a release is made of, chunk by chunk.

A publisher builds it from the release files (:func:`build_index`); a client
decodes it (:meth:`DeltaIndex.decode`) to learn which chunks it can take from
the old version it already has. The format is specified in spec/delta-index.md.

Each file is a sequence of *segments* that cover its bytes exactly, in order. A
``raw`` segment is a byte range used as is; a compressed segment (``gzip``,
``deflate``, ...) is a byte range holding a compressed stream, described by the
chunks of its *uncompressed content* plus a recipe that recompresses that
content into exactly the original bytes. Chunk lists are stored packed: 4-byte
big-endian length and 16-byte hash per chunk.

An index comes from the network, so decoding is strict and bounded: canonical
bencoding only, no unknown keys, every size and count limited, and every rule
between fields checked (segments tile the file, chunk lengths add up, ...).
Even so it is only a hint: every byte rebuilt from it is checked against the
torrent's piece hashes before it is used.
"""

from __future__ import annotations

import os
import re
import struct
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from .. import bencode
from ..errors import (
    BencodeError,
    ConfigError,
    DeltaError,
    DeltaIndexError,
    IntegrityError,
    StorageError,
    UnsafePathError,
)
from ..metainfo import MAX_FILES, MAX_PATH_DEPTH, Metainfo
from ..paths import validate_component, validate_path
from .chunker import HASH_SIZE, ChunkerParams, chunk_stream
from .tarcuts import TAR, TarCuts

__all__ = [
    "COMPRESSED_KINDS",
    "CONTENT_FORMATS",
    "FORMAT_VERSION",
    "KINDS",
    "MAX_CHUNKS",
    "MAX_FILES",
    "MAX_INDEX_SIZE",
    "MAX_RECIPE_KEYS",
    "MAX_RECIPE_VALUE_SIZE",
    "MAX_SEGMENTS",
    "RAW",
    "ContentReader",
    "DeltaIndex",
    "IndexedFile",
    "Segment",
    "SegmentLayout",
    "Segmenter",
    "SimpleLayout",
    "build_index",
    "read_raw_content",
    "whole_file_segments",
]

FORMAT_VERSION = 1

RAW = "raw"
COMPRESSED_KINDS = frozenset({"deflate", "gzip", "xz", "bz2", "zstd"})
KINDS = frozenset({RAW}) | COMPRESSED_KINDS
#: Content formats whose structure adds forced chunk cuts (spec §2.7).
CONTENT_FORMATS = frozenset({TAR})

MAX_INDEX_SIZE = 64 * 1024 * 1024
MAX_CHUNKS = 10_000_000
MAX_SEGMENTS = 1_000_000
MAX_RECIPE_KEYS = 32
MAX_RECIPE_VALUE_SIZE = 64 * 1024
MAX_TEXT_SIZE = 255
SHA256_SIZE = 32

_CHUNK_ENTRY = struct.Struct(">I16s")
_MAX_CHUNK_LENGTH = 2**32 - 1
_INT_RANGE = range(-(2**63), 2**63)
_RECIPE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# index dict > files list > file dict > segments list > segment dict > recipe dict.
_MAX_DEPTH = 8
_READ_SIZE = 4 * 1024 * 1024

# -- checks shared by the model and the decoder -----------------------------------------


def _fail(message: str) -> DeltaIndexError:
    return DeltaIndexError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(value: object, what: str) -> str:
    """A short human-readable string: 1 to 255 bytes of UTF-8, no control characters."""
    if not isinstance(value, str):
        raise _fail(f"{what} must be text")
    if not 1 <= len(value.encode("utf-8", errors="surrogatepass")) <= MAX_TEXT_SIZE:
        raise _fail(f"{what} must be 1 to {MAX_TEXT_SIZE} bytes of UTF-8")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise _fail(f"{what} contains a control character")
    return value


def _check_recipe(recipe: Mapping[str, int | bytes]) -> dict[str, int | bytes]:
    if not isinstance(recipe, Mapping):
        raise _fail("recipe must be a mapping")
    if len(recipe) > MAX_RECIPE_KEYS:
        raise _fail(f"recipe has more than {MAX_RECIPE_KEYS} keys")
    checked: dict[str, int | bytes] = {}
    for key in sorted(recipe):
        value = recipe[key]
        if not isinstance(key, str) or not _RECIPE_KEY.fullmatch(key):
            raise _fail(f"recipe key {key!r} is not allowed")
        if _is_int(value):
            assert isinstance(value, int)
            if value not in _INT_RANGE:
                raise _fail(f"recipe value {key!r} is not a 64-bit integer")
        elif isinstance(value, bytes):
            if len(value) > MAX_RECIPE_VALUE_SIZE:
                raise _fail(f"recipe value {key!r} is longer than {MAX_RECIPE_VALUE_SIZE} bytes")
        else:
            raise _fail(f"recipe value {key!r} must be an integer or a byte string")
        checked[key] = value
    return checked


# -- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A byte range of a file and the chunks of its content.

    ``offset`` and ``length`` locate the range in the file. For ``raw`` the
    content is the range itself; for a compressed kind it is the decompressed
    stream, ``content_length`` bytes long, which ``recipe`` turns back into
    exactly the ``length`` original bytes whose SHA-256 is
    ``compressed_sha256``. ``chunks`` is the content's chunk list of
    ``(length, 16-byte hash)``. ``fallback_reason`` says why a range that looks
    compressed is described as raw (no recipe reproduced it).
    ``content_format`` is ``"tar"`` when the content is a tar archive and was
    cut at its members' edges too (spec §2.7), which allows short chunks.
    """

    kind: str
    offset: int
    length: int
    content_length: int
    chunks: tuple[tuple[int, bytes], ...]
    recipe: Mapping[str, int | bytes] | None = field(default=None, hash=False)
    compressed_sha256: bytes | None = None
    fallback_reason: str | None = None
    content_format: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise _fail(f"unknown segment kind {self.kind!r}")
        if self.content_format is not None and self.content_format not in CONTENT_FORMATS:
            raise _fail(f"unknown content format {self.content_format!r}")
        if not _is_int(self.offset) or self.offset < 0:
            raise _fail("segment offset must be a non-negative integer")
        if not _is_int(self.length) or self.length < 1:
            raise _fail("segment length must be a positive integer")
        if not _is_int(self.content_length) or self.content_length < 0:
            raise _fail("segment content length must be a non-negative integer")
        if not isinstance(self.chunks, tuple):
            raise _fail("segment chunks must be a tuple")
        total = 0
        for entry in self.chunks:
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise _fail("a chunk must be a (length, hash) pair")
            length, digest = entry
            if not _is_int(length) or not 1 <= length <= _MAX_CHUNK_LENGTH:
                raise _fail(f"chunk length {length!r} is out of range")
            if not isinstance(digest, bytes) or len(digest) != HASH_SIZE:
                raise _fail(f"a chunk hash must be {HASH_SIZE} bytes")
            total += length
        if total != self.content_length:
            raise _fail(
                f"chunk lengths add up to {total}, not the content length {self.content_length}"
            )
        if self.kind == RAW:
            if self.content_length != self.length:
                raise _fail("a raw segment's content length must equal its length")
            if self.recipe is not None or self.compressed_sha256 is not None:
                raise _fail("a raw segment has no recipe and no compressed SHA-256")
            if self.fallback_reason is not None:
                _check_text(self.fallback_reason, "fallback reason")
            return
        if self.fallback_reason is not None:
            raise _fail("only a raw segment can carry a fallback reason")
        if self.recipe is None:
            raise _fail(f"a {self.kind} segment needs a recipe")
        object.__setattr__(self, "recipe", _check_recipe(self.recipe))
        compressed = self.compressed_sha256
        if not isinstance(compressed, bytes) or len(compressed) != SHA256_SIZE:
            raise _fail(f"a {self.kind} segment needs the {SHA256_SIZE}-byte SHA-256 of its bytes")

    @property
    def end(self) -> int:
        """Offset just past the segment's last byte in the file."""
        return self.offset + self.length


@dataclass(frozen=True)
class IndexedFile:
    """One data file of the release: its path as in the torrent, its length, its segments."""

    path: tuple[str, ...]
    length: int
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.path, tuple):
            raise _fail("a file path must be a tuple of components")
        if len(self.path) > MAX_PATH_DEPTH:
            raise _fail(f"file path deeper than {MAX_PATH_DEPTH}")
        try:
            validate_path(self.path)
        except UnsafePathError as exc:
            raise _fail(f"unsafe file path: {exc}") from None
        shown = "/".join(self.path)
        if not _is_int(self.length) or self.length < 0:
            raise _fail(f"{shown}: length must be a non-negative integer")
        if not isinstance(self.segments, tuple):
            raise _fail(f"{shown}: segments must be a tuple")
        position = 0
        for number, segment in enumerate(self.segments):
            if not isinstance(segment, Segment):
                raise _fail(f"{shown}: segment {number} is not a Segment")
            if segment.offset != position:
                raise _fail(
                    f"{shown}: segment {number} starts at {segment.offset}, not at {position}"
                    " where the previous one ended"
                )
            position = segment.end
        if position != self.length:
            raise _fail(f"{shown}: segments cover {position} bytes of {self.length}")


@dataclass(frozen=True)
class DeltaIndex:
    """The delta index of one release (one torrent): see the module docstring."""

    version: int
    params: ChunkerParams
    info_hash_v1: bytes | None
    info_hash_v2: bytes | None
    name: str
    files: tuple[IndexedFile, ...]

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION or not _is_int(self.version):
            raise _fail(f"unsupported delta index version {self.version!r}")
        if not isinstance(self.params, ChunkerParams):
            raise _fail("params must be ChunkerParams")
        if self.info_hash_v1 is None and self.info_hash_v2 is None:
            raise _fail("a delta index names at least one info-hash")
        for digest, size, label in ((self.info_hash_v1, 20, "v1"), (self.info_hash_v2, 32, "v2")):
            if digest is not None and (not isinstance(digest, bytes) or len(digest) != size):
                raise _fail(f"info-hash {label} must be {size} bytes")
        _check_text(self.name, "release name")
        try:
            validate_component(self.name)
        except UnsafePathError as exc:
            raise _fail(f"unsafe release name: {exc}") from None
        if not isinstance(self.files, tuple) or not self.files:
            raise _fail("a delta index lists at least one file")
        if len(self.files) > MAX_FILES:
            raise _fail(f"more than {MAX_FILES} files")
        self._check_paths()
        self._check_chunks()

    def _check_paths(self) -> None:
        paths: set[tuple[str, ...]] = set()
        folders: set[tuple[str, ...]] = set()
        for entry in self.files:
            if not isinstance(entry, IndexedFile):
                raise _fail("files must be IndexedFile entries")
            path = entry.path
            if path in paths or path in folders:
                raise _fail(f"{'/'.join(path)} is listed twice or is also a folder")
            parents = {path[:depth] for depth in range(1, len(path))}
            if parents & paths:
                raise _fail(f"{'/'.join(path)} is inside a path that is listed as a file")
            paths.add(path)
            folders |= parents

    def _check_chunks(self) -> None:
        """Counts and the size rules of the chunker (only a last chunk may be short)."""
        min_size, max_size = self.params.min_size, self.params.max_size
        segments = chunks = 0
        for entry in self.files:
            segments += len(entry.segments)
            if segments > MAX_SEGMENTS:
                raise _fail(f"more than {MAX_SEGMENTS} segments")
            for segment in entry.segments:
                chunks += len(segment.chunks)
                if chunks > MAX_CHUNKS:
                    raise _fail(f"more than {MAX_CHUNKS} chunks")
                if not segment.chunks:
                    continue
                lengths = [length for length, _ in segment.chunks]
                if max(lengths) > max_size:
                    raise _fail(f"{'/'.join(entry.path)}: a chunk is longer than {max_size}")
                # Tar-format content also ends chunks at member edges (spec §2.7).
                short = min(lengths[:-1], default=min_size) < min_size
                if short and segment.content_format is None:
                    raise _fail(
                        f"{'/'.join(entry.path)}: a chunk other than the last of its segment"
                        f" is shorter than {min_size}"
                    )

    # -- wire format --------------------------------------------------------------------

    def encode(self) -> bytes:
        """The canonical bencoding (spec/delta-index.md)."""
        document: dict[bytes, Any] = {
            b"chunker": {
                b"algorithm": self.params.algorithm.encode(),
                b"avg-size": self.params.avg_size,
                b"max-size": self.params.max_size,
                b"min-size": self.params.min_size,
                b"seed": self.params.seed,
            },
            b"files": [_encode_file(entry) for entry in self.files],
            b"name": self.name.encode(),
            b"version": self.version,
        }
        if self.info_hash_v1 is not None:
            document[b"info-hash-v1"] = self.info_hash_v1
        if self.info_hash_v2 is not None:
            document[b"info-hash-v2"] = self.info_hash_v2
        data = bencode.encode(document)
        if len(data) > MAX_INDEX_SIZE:
            raise _fail(f"the encoded index would be larger than {MAX_INDEX_SIZE} bytes")
        return data

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> DeltaIndex:
        """Parse and check an index; anything malformed raises DeltaIndexError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _fail("a delta index must be bytes")
        if len(data) > MAX_INDEX_SIZE:
            raise _fail(f"delta index larger than {MAX_INDEX_SIZE} bytes")
        try:
            raw = bencode.decode(bytes(data), max_depth=_MAX_DEPTH)
        except BencodeError as exc:
            raise _fail(f"not a canonical bencoded index: {exc}") from None
        return _Decoder().index(raw)


def _encode_file(entry: IndexedFile) -> dict[bytes, Any]:
    return {
        b"length": entry.length,
        b"path": [component.encode() for component in entry.path],
        b"segments": [_encode_segment(segment) for segment in entry.segments],
    }


def _encode_segment(segment: Segment) -> dict[bytes, Any]:
    pack = _CHUNK_ENTRY.pack
    result: dict[bytes, Any] = {
        b"chunks": b"".join([pack(length, digest) for length, digest in segment.chunks]),
        b"content-length": segment.content_length,
        b"kind": segment.kind.encode(),
        b"length": segment.length,
        b"offset": segment.offset,
    }
    if segment.content_format is not None:
        result[b"content-format"] = segment.content_format.encode()
    if segment.fallback_reason is not None:
        result[b"fallback"] = segment.fallback_reason.encode()
    if segment.recipe is not None:
        result[b"recipe"] = {key.encode(): value for key, value in segment.recipe.items()}
    if segment.compressed_sha256 is not None:
        result[b"sha256"] = segment.compressed_sha256
    return result


# -- decoding ----------------------------------------------------------------------------


def _fields(
    value: Any, what: str, required: frozenset[bytes], optional: frozenset[bytes] = frozenset()
) -> dict[bytes, Any]:
    """A dictionary with exactly the allowed keys, in canonical (sorted) order."""
    if not isinstance(value, dict):
        raise _fail(f"{what} must be a dictionary")
    keys = list(value)
    if keys != sorted(keys):
        raise _fail(f"{what}: keys are not in canonical (sorted) order")
    unknown = set(keys) - required - optional
    if unknown:
        raise _fail(f"{what}: unknown key {min(unknown)!r}")
    missing = required - set(keys)
    if missing:
        raise _fail(f"{what}: missing key {min(missing)!r}")
    return value


def _int(value: Any, what: str) -> int:
    if not _is_int(value):
        raise _fail(f"{what} must be an integer")
    result: int = value
    return result


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(f"{what} must be a byte string")
    return value


def _utf8(value: Any, what: str) -> str:
    try:
        return _bytes(value, what).decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(f"{what} is not valid UTF-8") from None


_INDEX_KEYS = frozenset({b"chunker", b"files", b"name", b"version"})
_INDEX_OPTIONAL = frozenset({b"info-hash-v1", b"info-hash-v2"})
_CHUNKER_KEYS = frozenset({b"algorithm", b"avg-size", b"max-size", b"min-size", b"seed"})
_FILE_KEYS = frozenset({b"length", b"path", b"segments"})
_SEGMENT_KEYS = frozenset({b"chunks", b"content-length", b"kind", b"length", b"offset"})
_SEGMENT_OPTIONAL = frozenset({b"content-format", b"fallback", b"recipe", b"sha256"})


class _Decoder:
    """Turns the decoded bencoding into the model, keeping running totals bounded."""

    def __init__(self) -> None:
        self.chunks = 0
        self.segments = 0

    def index(self, raw: Any) -> DeltaIndex:
        if not isinstance(raw, dict):
            raise _fail("a delta index must be a dictionary")
        # The version decides which keys exist, so it is checked before them.
        version = raw.get(b"version")
        if version != FORMAT_VERSION or not _is_int(version):
            raise _fail(f"unsupported delta index version {version!r}")
        top = _fields(raw, "index", _INDEX_KEYS, _INDEX_OPTIONAL)
        params = self.params(top[b"chunker"])
        v1 = top.get(b"info-hash-v1")
        v2 = top.get(b"info-hash-v2")
        files = top[b"files"]
        if not isinstance(files, list):
            raise _fail("files must be a list")
        if len(files) > MAX_FILES:
            raise _fail(f"more than {MAX_FILES} files")
        return DeltaIndex(
            version=FORMAT_VERSION,
            params=params,
            info_hash_v1=None if v1 is None else _bytes(v1, "info-hash-v1"),
            info_hash_v2=None if v2 is None else _bytes(v2, "info-hash-v2"),
            name=_utf8(top[b"name"], "name"),
            files=tuple(self.file(entry, number) for number, entry in enumerate(files)),
        )

    def params(self, raw: Any) -> ChunkerParams:
        fields = _fields(raw, "chunker", _CHUNKER_KEYS)
        try:
            return ChunkerParams(
                algorithm=_utf8(fields[b"algorithm"], "chunker algorithm"),
                min_size=_int(fields[b"min-size"], "chunker min-size"),
                avg_size=_int(fields[b"avg-size"], "chunker avg-size"),
                max_size=_int(fields[b"max-size"], "chunker max-size"),
                seed=_bytes(fields[b"seed"], "chunker seed"),
            )
        except ConfigError as exc:
            raise _fail(str(exc)) from None

    def file(self, raw: Any, number: int) -> IndexedFile:
        what = f"file {number}"
        fields = _fields(raw, what, _FILE_KEYS)
        raw_path = fields[b"path"]
        if not isinstance(raw_path, list) or not raw_path:
            raise _fail(f"{what}: path must be a non-empty list")
        if len(raw_path) > MAX_PATH_DEPTH:
            raise _fail(f"{what}: path deeper than {MAX_PATH_DEPTH}")
        path = tuple(_utf8(part, f"{what}: path component") for part in raw_path)
        raw_segments = fields[b"segments"]
        if not isinstance(raw_segments, list):
            raise _fail(f"{what}: segments must be a list")
        self.segments += len(raw_segments)
        if self.segments > MAX_SEGMENTS:
            raise _fail(f"more than {MAX_SEGMENTS} segments")
        what = f"file {number} ({'/'.join(path)})"
        segments = tuple(
            self.segment(segment, f"{what} segment {index}")
            for index, segment in enumerate(raw_segments)
        )
        return IndexedFile(path, _int(fields[b"length"], f"{what}: length"), segments)

    def segment(self, raw: Any, what: str) -> Segment:
        fields = _fields(raw, what, _SEGMENT_KEYS, _SEGMENT_OPTIONAL)
        packed = _bytes(fields[b"chunks"], f"{what}: chunks")
        if len(packed) % _CHUNK_ENTRY.size:
            raise _fail(f"{what}: chunks is not a whole number of {_CHUNK_ENTRY.size}-byte entries")
        self.chunks += len(packed) // _CHUNK_ENTRY.size
        if self.chunks > MAX_CHUNKS:  # pragma: no cover - needs more than MAX_INDEX_SIZE bytes
            raise _fail(f"more than {MAX_CHUNKS} chunks")
        recipe = fields.get(b"recipe")
        if recipe is not None:
            if not isinstance(recipe, dict):
                raise _fail(f"{what}: recipe must be a dictionary")
            if len(recipe) > MAX_RECIPE_KEYS:
                raise _fail(f"{what}: recipe has more than {MAX_RECIPE_KEYS} keys")
            recipe = _fields(recipe, f"{what}: recipe", frozenset(), frozenset(recipe))
            recipe = {_utf8(key, f"{what}: recipe key"): value for key, value in recipe.items()}
        fallback = fields.get(b"fallback")
        content_format = fields.get(b"content-format")
        digest = fields.get(b"sha256")
        kind = _utf8(fields[b"kind"], f"{what}: kind")
        offset = _int(fields[b"offset"], f"{what}: offset")
        length = _int(fields[b"length"], f"{what}: length")
        content_length = _int(fields[b"content-length"], f"{what}: content-length")
        compressed_sha256 = None if digest is None else _bytes(digest, f"{what}: sha256")
        fallback_reason = None if fallback is None else _utf8(fallback, f"{what}: fallback")
        try:
            return Segment(
                kind=kind,
                offset=offset,
                length=length,
                content_length=content_length,
                chunks=tuple(_CHUNK_ENTRY.iter_unpack(packed)),
                recipe=recipe,
                compressed_sha256=compressed_sha256,
                fallback_reason=fallback_reason,
                content_format=None
                if content_format is None
                else _utf8(content_format, f"{what}: content-format"),
            )
        except DeltaIndexError as exc:
            raise _fail(f"{what}: {exc}") from None


# -- building an index from release files -----------------------------------------------


class SegmentLayout(Protocol):
    """Where a segment lies in a file and how to rebuild it: a segment without chunks.

    Anything with these attributes will do: :class:`SimpleLayout`, the layouts
    of :mod:`opendistro.delta.archives`, or a :class:`Segment` itself.
    """

    @property
    def kind(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def recipe(self) -> Mapping[str, int | bytes] | None: ...
    @property
    def compressed_sha256(self) -> bytes | None: ...
    @property
    def fallback_reason(self) -> str | None: ...


@dataclass(frozen=True)
class SimpleLayout:
    """A plain :class:`SegmentLayout` (what the default segmenter returns)."""

    kind: str
    offset: int
    length: int
    recipe: Mapping[str, int | bytes] | None = field(default=None, hash=False)
    compressed_sha256: bytes | None = None
    fallback_reason: str | None = None


_Layout = TypeVar("_Layout", bound=SegmentLayout)

#: Splits the file at a path into segments that cover it exactly, in order.
Segmenter = Callable[[Path], Sequence[_Layout]]
#: Yields the content of one segment of the file at a path (decompressed for a
#: compressed kind), in pieces of bounded size.
ContentReader = Callable[[Path, _Layout], Iterable[bytes]]


def whole_file_segments(path: Path) -> list[SimpleLayout]:
    """The default segmenter: one raw segment for the whole file (none if it is empty)."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    return [SimpleLayout(RAW, 0, size)] if size else []


def read_raw_content(path: Path, layout: SegmentLayout) -> Iterator[bytes]:
    """The default content reader: the segment's byte range, in 4 MiB pieces."""
    if layout.kind != RAW:
        raise DeltaError(f"no content reader was given for {layout.kind} segments")
    try:
        with open(path, "rb") as handle:
            handle.seek(layout.offset)
            remaining = layout.length
            while remaining:
                piece = handle.read(min(remaining, _READ_SIZE))
                if not piece:
                    raise StorageError(f"{path} ended {remaining} bytes early")
                remaining -= len(piece)
                yield piece
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def _segment(
    path: Path,
    layout: SegmentLayout,
    params: ChunkerParams,
    read_content: Callable[[Path, SegmentLayout], Iterable[bytes]],
) -> Segment:
    tar = TarCuts()
    chunks = tuple(
        (chunk.length, chunk.hash)
        for chunk in chunk_stream(read_content(path, layout), params, forced=tar)
    )
    return Segment(
        kind=layout.kind,
        offset=layout.offset,
        length=layout.length,
        content_length=sum(length for length, _ in chunks),
        chunks=chunks,
        recipe=layout.recipe,
        compressed_sha256=layout.compressed_sha256,
        fallback_reason=layout.fallback_reason,
        content_format=TAR if tar.is_tar else None,
    )


def build_index(
    root: str | os.PathLike[str],
    metainfo: Metainfo,
    params: ChunkerParams | None = None,
    segmenter: Segmenter[_Layout] | None = None,
    read_content: ContentReader[_Layout] | None = None,
) -> DeltaIndex:
    """Index the release ``metainfo`` whose files sit in ``root``.

    ``root`` is laid out as for seeding: ``root/NAME`` is the file of a
    single-file torrent or the folder of a multi-file one. Files are read as
    they are (only their sizes are checked against the torrent), one bounded
    piece at a time. ``segmenter`` and ``read_content`` default to one raw
    segment per file; :mod:`opendistro.delta.archives` provides ones that look
    inside compressed files (``segment_file`` and ``read_content``).
    """
    params = params if params is not None else ChunkerParams()
    split: Callable[[Path], Sequence[SegmentLayout]] = (
        segmenter if segmenter is not None else whole_file_segments
    )
    # The reader is only ever handed layouts that the segmenter made.
    read = cast(
        Callable[[Path, SegmentLayout], Iterable[bytes]],
        read_content if read_content is not None else read_raw_content,
    )
    base = Path(root)
    files = []
    for entry in metainfo.data_files():
        parts = (metainfo.name, *entry.path) if metainfo.is_multi_file else entry.path
        source = base.joinpath(*parts)
        try:
            size = os.stat(source).st_size
        except OSError as exc:
            raise StorageError(f"cannot read {source}: {exc}") from exc
        if size != entry.length:
            raise IntegrityError(f"{source} is {size} bytes; the torrent says {entry.length}")
        layouts = split(source) if entry.length else []
        try:
            segments = tuple(_segment(source, layout, params, read) for layout in layouts)
            files.append(IndexedFile(entry.path, entry.length, segments))
        except DeltaIndexError as exc:
            raise _fail(f"{source}: {exc}") from None
    return DeltaIndex(
        version=FORMAT_VERSION,
        params=params,
        info_hash_v1=metainfo.info_hash_v1,
        info_hash_v2=metainfo.info_hash_v2,
        name=metainfo.name,
        files=tuple(files),
    )
