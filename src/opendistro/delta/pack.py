"""The delta *pack*: a release's new chunks, compressed, for mirrors that cannot compress.

A mirror is a static HTTP server: content a client lacks travels as plain
``Range`` answers, uncompressed. For packages that is the worst case: the
missing content of a .tar.gz update is mostly tar headers and changed
members, which compress well, yet fetched raw they often cost more than the
whole compressed segment. The publisher therefore writes, beside the index,
the chunks of the new release that the *previous* release's index does not
list (each once), in index order, compressed in blocks of about 1 MiB
(``spec/delta-index.md``, §5.2):

- ``NAME.odpack``: a small bencoded header: which chunk lies in which block
  at which offset, and every block's compressed and content length;
- ``NAME.odblocks``: the compressed blocks one after another, then the
  binary patches the header lists, if any (version 2).

A segment whose content changed throughout (recompiled native code) has few
chunks in common with its old version, yet most of its bytes: the publisher
then adds a *binary patch* (:mod:`opendistro.delta.binpatch`) against the old
content, bound to that content's SHA-256 and to the SHA-256 of the result,
when it is smaller than the segment's chunks in the blocks. Those chunks go
into blocks of their own after all others, so a client that applies the
patch does not fetch them, and a client whose old content differs still
finds them there.

A client updating from the previous release needs nearly every chunk of the
pack, so fetching whole blocks wastes little, and it fetches each run of
needed blocks with one ``Range`` request. Decoding is strict and bounded: the
header is checked entry by entry, and a block never decompresses to more
than the length its header gives.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import struct
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import bencode
from ..errors import BencodeError, DeltaError
from .chunker import HASH_SIZE, ChunkerParams
from .index import DeltaIndex
from .previous import files_below, old_chunks, old_layouts

__all__ = [
    "BLOCK_SIZE",
    "CODECS",
    "MAX_BLOCK_CONTENT",
    "MAX_HEADER_SIZE",
    "PACK_VERSION",
    "PackHeader",
    "PackedChunk",
    "PackedPatch",
    "SegmentPatch",
    "decompress_block",
    "write_pack",
]

PACK_VERSION = 1
PATCH_PACK_VERSION = 2
"""The version of a pack that lists binary patches (one without any stays version 1)."""
CODECS = ("xz", "zlib")
BLOCK_SIZE = 1 << 20
"""Content per block the publisher aims for (a block ends after the chunk that reaches it)."""
MAX_BLOCK_CONTENT = 4 << 20
"""The most content one block may hold; what a client holds in memory per block."""
MAX_BLOCK_COMPRESSED = MAX_BLOCK_CONTENT + (64 << 10)
MAX_HEADER_SIZE = 64 << 20
MAX_BLOCKS = 1_000_000
MAX_PACKED_CHUNKS = 2_000_000
MAX_PATCHES = 100_000
MAX_PATCH_LENGTH = 1 << 32

_BLOCK_ENTRY = struct.Struct(">II")
_CHUNK_ENTRY = struct.Struct(f">{HASH_SIZE}sIII")
_XZ_FILTERS: list[dict[str, int]] = [
    {"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": MAX_BLOCK_CONTENT}
]
_XZ_MEMLIMIT = 64 << 20
_ZLIB_LEVEL = 6


@dataclass(frozen=True, slots=True)
class PackedChunk:
    """Where one chunk's bytes are: ``length`` bytes at ``offset`` of block ``block``'s content."""

    block: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class PackedPatch:
    """A binary patch that turns old content into the content of segment ``segment`` of file
    ``file`` (numbers as in the index), ``length`` bytes at ``offset`` of ``NAME.odblocks``."""

    file: int
    segment: int
    base_length: int
    base_sha256: bytes
    """SHA-256 of the exact old content the patch applies to."""
    result_sha256: bytes
    """SHA-256 of the segment's content the patch produces."""
    offset: int
    length: int


@dataclass(frozen=True)
class SegmentPatch:
    """A patch the publisher made (:mod:`opendistro.delta.patching`), before it is packed."""

    file: int
    segment: int
    base_length: int
    base_sha256: bytes
    result_sha256: bytes
    data: bytes


_PATCH_KEYS = frozenset({
    b"base-length", b"base-sha256", b"file", b"length", b"result-sha256", b"segment"
})


@dataclass(frozen=True)
class PackHeader:
    """The decoded ``NAME.odpack``: see the module docstring."""

    codec: str
    index_sha256: bytes
    """SHA-256 of the encoded delta index the pack belongs to."""
    blocks: tuple[tuple[int, int], ...]
    """Per block ``(compressed length, content length)``, in ``.odblocks`` order."""
    chunks: dict[bytes, PackedChunk]
    patches: tuple[PackedPatch, ...] = ()
    """Binary patches, in ``NAME.odblocks`` order after the blocks (version 2)."""

    offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """Where each block starts in ``NAME.odblocks``, and (last) where the blocks end."""

    def __post_init__(self) -> None:
        offsets = [0]
        for compressed, _ in self.blocks:
            offsets.append(offsets[-1] + compressed)
        object.__setattr__(self, "offsets", tuple(offsets))

    @property
    def blocks_size(self) -> int:
        """The size of ``NAME.odblocks``: the blocks and the patches after them."""
        return self.offsets[-1] + sum(patch.length for patch in self.patches)

    def encode(self) -> bytes:
        fields: dict[bytes, Any] = {
            b"blocks": b"".join(_BLOCK_ENTRY.pack(*block) for block in self.blocks),
            b"chunks": b"".join(
                _CHUNK_ENTRY.pack(digest, where.block, where.offset, where.length)
                for digest, where in self.chunks.items()
            ),
            b"codec": self.codec.encode(),
            b"index-sha256": self.index_sha256,
            b"version": PACK_VERSION,
        }
        if self.patches:
            fields[b"version"] = PATCH_PACK_VERSION
            fields[b"patches"] = [
                {
                    b"base-length": patch.base_length,
                    b"base-sha256": patch.base_sha256,
                    b"file": patch.file,
                    b"length": patch.length,
                    b"result-sha256": patch.result_sha256,
                    b"segment": patch.segment,
                }
                for patch in self.patches
            ]
        return bencode.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> PackHeader:
        """Parse and check a pack header; DeltaError when anything is off."""
        if len(data) > MAX_HEADER_SIZE:
            raise DeltaError(f"a pack header is at most {MAX_HEADER_SIZE} bytes")
        try:
            raw = bencode.decode(bytes(data))
        except BencodeError as exc:
            raise DeltaError(f"the pack header is not bencoded: {exc}") from exc
        if not isinstance(raw, dict) or bencode.encode(raw) != bytes(data):
            raise DeltaError("the pack header is not a canonical bencoded dictionary")
        version = raw.get(b"version")
        if version not in (PACK_VERSION, PATCH_PACK_VERSION):
            raise DeltaError(f"unsupported pack version {version!r}")
        keys = {b"blocks", b"chunks", b"codec", b"index-sha256", b"version"}
        if version == PATCH_PACK_VERSION:
            keys.add(b"patches")
        if set(raw) != keys:
            raise DeltaError("the pack header has missing or unknown keys")
        codec, digest = raw[b"codec"], raw[b"index-sha256"]
        blocks_raw, chunks_raw = raw[b"blocks"], raw[b"chunks"]
        if not isinstance(codec, bytes) or codec.decode("ascii", "replace") not in CODECS:
            raise DeltaError(f"unknown pack codec {codec!r}")
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise DeltaError("the pack's index-sha256 must be 32 bytes")
        blocks = _decode_blocks(blocks_raw)
        chunks = _decode_chunks(chunks_raw, blocks)
        end = sum(compressed for compressed, _ in blocks)
        patches = _decode_patches(raw[b"patches"], end) if b"patches" in raw else ()
        return cls(codec.decode(), digest, blocks, chunks, patches)


def _decode_blocks(raw: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, bytes) or len(raw) % _BLOCK_ENTRY.size:
        raise DeltaError("pack blocks must be a string of 8-byte entries")
    if len(raw) // _BLOCK_ENTRY.size > MAX_BLOCKS:
        raise DeltaError(f"a pack has at most {MAX_BLOCKS} blocks")
    blocks = tuple(_BLOCK_ENTRY.iter_unpack(raw))
    for compressed, content in blocks:
        if not 0 < compressed <= MAX_BLOCK_COMPRESSED or not 0 < content <= MAX_BLOCK_CONTENT:
            raise DeltaError("a pack block's lengths are out of range")
    return blocks


def _decode_chunks(raw: Any, blocks: tuple[tuple[int, int], ...]) -> dict[bytes, PackedChunk]:
    if not isinstance(raw, bytes) or len(raw) % _CHUNK_ENTRY.size:
        raise DeltaError(f"pack chunks must be a string of {_CHUNK_ENTRY.size}-byte entries")
    if len(raw) // _CHUNK_ENTRY.size > MAX_PACKED_CHUNKS:
        raise DeltaError(f"a pack lists at most {MAX_PACKED_CHUNKS} chunks")
    chunks: dict[bytes, PackedChunk] = {}
    for digest, block, offset, length in _CHUNK_ENTRY.iter_unpack(raw):
        if block >= len(blocks) or length == 0 or offset + length > blocks[block][1]:
            raise DeltaError("a pack chunk lies outside its block")
        if digest in chunks:
            raise DeltaError("a pack lists a chunk twice")
        chunks[digest] = PackedChunk(block, offset, length)
    return chunks


def _decode_patches(raw: Any, start: int) -> tuple[PackedPatch, ...]:
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_PATCHES:
        raise DeltaError(f"pack patches must be a list of 1 to {MAX_PATCHES} dictionaries")
    patches: list[PackedPatch] = []
    targets: set[tuple[int, int]] = set()
    offset = start
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != _PATCH_KEYS:
            raise DeltaError("a pack patch has missing or unknown keys")
        numbers = [entry[key] for key in (b"file", b"segment", b"base-length", b"length")]
        if not all(type(value) is int and value >= 0 for value in numbers):
            raise DeltaError("a pack patch's numbers must be non-negative integers")
        file, segment, base_length, length = numbers
        if not 0 < length <= MAX_PATCH_LENGTH or base_length > MAX_PATCH_LENGTH:
            raise DeltaError("a pack patch's lengths are out of range")
        digests = [entry[b"base-sha256"], entry[b"result-sha256"]]
        if not all(isinstance(value, bytes) and len(value) == 32 for value in digests):
            raise DeltaError("a pack patch's SHA-256 values must be 32 bytes")
        if (file, segment) in targets:
            raise DeltaError("a pack lists two patches for one segment")
        targets.add((file, segment))
        patches.append(PackedPatch(file, segment, base_length, digests[0], digests[1],
                                   offset, length))
        offset += length
    return tuple(patches)


def compress_block(codec: str, content: bytes) -> bytes:
    if codec == "xz":
        return lzma.compress(content, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE,
                             filters=_XZ_FILTERS)
    return zlib.compress(content, _ZLIB_LEVEL)


def decompress_block(codec: str, data: bytes, length: int) -> bytes:
    """Block content of exactly ``length`` bytes, never more (DeltaError otherwise)."""
    try:
        if codec == "xz":
            xz = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
            content = xz.decompress(data, length)
            if len(content) == length and not xz.eof:
                content += xz.decompress(b"", 1)  # the stream must end right there
            done = xz.eof and not xz.unused_data
        elif codec == "zlib":
            inflater = zlib.decompressobj()
            content = inflater.decompress(data, length)
            if len(content) == length and not inflater.eof:
                content += inflater.decompress(inflater.unconsumed_tail, 1)
            done = inflater.eof and not inflater.unused_data and not inflater.unconsumed_tail
        else:
            raise DeltaError(f"unknown pack codec {codec!r}")
    except (lzma.LZMAError, zlib.error) as exc:
        raise DeltaError(f"a pack block does not decompress: {exc}") from exc
    if len(content) != length or not done:
        raise DeltaError("a pack block does not decompress to its stated length")
    return content


def _chunk_bytes(root: Path, index: DeltaIndex, name: str, multi_file: bool,
                 wanted: Callable[[int, int], bool]) -> Iterator[tuple[bytes, bytes]]:
    """Every chunk of the ``wanted`` segments in index order, as ``(hash, bytes)``."""
    from .archives import read_content

    for file_number, indexed in enumerate(index.files):
        parts = (name, *indexed.path) if multi_file else (name,)
        source = root.joinpath(*parts)
        for segment_number, segment in enumerate(indexed.segments):
            if not segment.chunks or not wanted(file_number, segment_number):
                continue
            lengths = iter(segment.chunks)
            length, digest = next(lengths)
            pending = bytearray()
            for data in read_content(source, segment):
                pending += data
                while len(pending) >= length > 0:
                    yield digest, bytes(pending[:length])
                    del pending[:length]
                    length, digest = next(lengths, (0, b""))
            if length or pending:
                raise DeltaError(f"{source} no longer holds the content its index describes")


def write_pack(
    root: Path,
    index: DeltaIndex,
    index_bytes: bytes,
    known: Collection[bytes],
    *,
    multi_file: bool,
    header_path: Path,
    blocks_path: Path,
    codec: str = "xz",
    patches: Sequence[SegmentPatch] = (),
) -> PackHeader:
    """Write the pack of ``index``'s release (in ``root``): its chunks not ``known`` (blocking).

    ``known`` is what users of the previous release have: the chunk hashes of
    its index (:func:`index_chunk_hashes`), or better, of its files chunked as
    a client chunks them (:func:`file_chunk_hashes`). Of ``patches``, those
    smaller than what their segment's chunks cost in the blocks are kept.
    """
    if codec not in CODECS:
        raise DeltaError(f"unknown pack codec {codec!r}")
    patched = {(patch.file, patch.segment) for patch in patches}
    chunks: dict[bytes, PackedChunk] = {}
    blocks: list[tuple[int, int]] = []
    content = bytearray()
    partial = blocks_path.with_name(blocks_path.name + ".partial")
    with open(partial, "wb") as out:

        def flush() -> None:
            compressed = compress_block(codec, bytes(content))
            out.write(compressed)
            blocks.append((len(compressed), len(content)))
            content.clear()

        # Chunks of segments with a patch last, in blocks of their own: a client applying
        # the patch fetches none of them.
        for late in (False, True):

            def wanted(file: int, segment: int, late: bool = late) -> bool:
                return ((file, segment) in patched) == late

            for digest, data in _chunk_bytes(root, index, index.name, multi_file, wanted):
                if digest in known or digest in chunks or len(data) > MAX_BLOCK_CONTENT:
                    continue
                if len(content) + len(data) > MAX_BLOCK_CONTENT:
                    flush()
                chunks[digest] = PackedChunk(len(blocks), len(content), len(data))
                content += data
                if len(content) >= BLOCK_SIZE:
                    flush()
            if content:
                flush()
        kept = _worthwhile(patches, index, chunks, blocks)
        packed: list[PackedPatch] = []
        offset = out.tell()
        for patch in kept:
            out.write(patch.data)
            packed.append(PackedPatch(patch.file, patch.segment, patch.base_length,
                                      patch.base_sha256, patch.result_sha256, offset,
                                      len(patch.data)))
            offset += len(patch.data)
    header = PackHeader(codec, hashlib.sha256(index_bytes).digest(), tuple(blocks), chunks,
                        tuple(packed))
    encoded = header.encode()
    # Over 2 million new chunks or a terabyte of blocks: too large to build in a test.
    if len(encoded) > MAX_HEADER_SIZE or len(blocks) > MAX_BLOCKS:  # pragma: no cover
        os.unlink(partial)
        raise DeltaError("the release has too many new chunks for a pack")
    os.replace(partial, blocks_path)
    header_partial = header_path.with_name(header_path.name + ".partial")
    header_partial.write_bytes(encoded)
    os.replace(header_partial, header_path)
    return header


def _worthwhile(
    patches: Sequence[SegmentPatch],
    index: DeltaIndex,
    chunks: dict[bytes, PackedChunk],
    blocks: list[tuple[int, int]],
) -> list[SegmentPatch]:
    """The patches smaller than their segment's new chunks (priced at their blocks' ratio)
    and, for a compressed segment, than the segment itself."""
    kept = []
    for patch in patches:
        segment = index.files[patch.file].segments[patch.segment]
        cost = 0
        for length, digest in segment.chunks:
            where = chunks.get(digest)
            if where is not None:
                compressed, content = blocks[where.block]
                cost += length * compressed // content
        if segment.kind != "raw":
            cost = min(cost, segment.length)
        if len(patch.data) < cost and len(patch.data) <= MAX_PATCH_LENGTH:
            kept.append(patch)
    return kept


def index_chunk_hashes(index: DeltaIndex) -> set[bytes]:
    """Every chunk hash a delta index lists."""
    return {
        digest
        for entry in index.files
        for segment in entry.segments
        for _, digest in segment.chunks
    }


def file_chunk_hashes(paths: Sequence[Path], params: ChunkerParams) -> set[bytes]:
    """The chunks a client holding ``paths`` (files or folders) finds in them (blocking).

    Chunked as :mod:`opendistro.io.delta_update` chunks old files
    (:func:`~opendistro.delta.previous.old_chunks`): also the content of
    compressed streams the previous release's index could only list as raw bytes.
    """
    known: set[bytes] = set()
    for path in files_below(paths):
        layouts = old_layouts(path)
        if layouts is not None:
            known.update(chunk.hash for _, _, chunk in old_chunks(path, layouts, params))
    return known
