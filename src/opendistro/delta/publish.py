"""What a publisher puts beside a release so that users of the previous one fetch little.

:func:`publish_delta` indexes the release (looking inside zips and compressed
tarballs, :mod:`opendistro.delta.archives`) and writes, next to the data, the
files a mirror serves (``spec/delta-index.md``):

- ``NAME.odindex``: the delta index, beside the single file or the folder;
- ``NAME.odindex.xz``: the same, compressed, when that saves a tenth or more
  (chunk hashes do not compress, the rest of a zip's index does); a client
  fetches it first and treats what it decompresses to exactly as the index;
- ``FILE.odcontent`` beside each file that has compressed segments: their
  uncompressed content one after another, so that a client fetches changed
  content with ``Range`` requests. Files without compressed segments get none.

Both are derived from the data and can be made again at any time; seeders
serve the same to peers over ``od_delta`` from their own copy.
"""

from __future__ import annotations

import lzma
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..metainfo import Metainfo
from ..mirrors.webseed import CONTENT_SUFFIX, DELTA_INDEX_SUFFIX
from .archives import read_content, segment_file
from .chunker import ChunkerParams
from .index import DeltaIndex, IndexedFile, build_index
from .pack import PackHeader, file_chunk_hashes, index_chunk_hashes, write_pack
from .patching import find_patches

__all__ = [
    "COMPRESSED_INDEX_SUFFIX",
    "PACK_BLOCKS_SUFFIX",
    "PACK_SUFFIX",
    "PublishedDelta",
    "compress_index",
    "content_path",
    "decompress_index",
    "index_path",
    "pack_paths",
    "publish_delta",
]

PACK_SUFFIX = ".odpack"
PACK_BLOCKS_SUFFIX = ".odblocks"
COMPRESSED_INDEX_SUFFIX = ".xz"
"""Appended to ``NAME.odindex`` for the compressed copy."""
_INDEX_XZ_FILTERS: list[dict[str, int]] = [
    {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 8 << 20}
]
_INDEX_XZ_MEMLIMIT = 64 << 20


def compress_index(data: bytes) -> bytes:
    """The encoded index as one .xz stream (no check: the index's SHA-256 is checked)."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE,
                         filters=_INDEX_XZ_FILTERS)


def decompress_index(data: bytes, limit: int) -> bytes | None:
    """What a ``NAME.odindex.xz`` holds, at most ``limit`` bytes; None when it is broken."""
    try:
        inflater = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_INDEX_XZ_MEMLIMIT)
        content = inflater.decompress(data, limit)
        if not inflater.eof:
            content += inflater.decompress(b"", 1)
    except (lzma.LZMAError, EOFError):
        return None
    if not inflater.eof or inflater.unused_data or len(content) > limit:
        return None
    return content


@dataclass(frozen=True)
class PublishedDelta:
    """The index and where its files were written."""

    index: DeltaIndex
    index_path: Path
    index_size: int
    content_paths: tuple[Path, ...]
    pack: PackHeader | None = None
    """The pack's header, when one was written (against a previous release's index)."""


def _data_path(root: Path, metainfo: Metainfo, indexed: IndexedFile) -> Path:
    parts = (metainfo.name, *indexed.path) if metainfo.is_multi_file else (metainfo.name,)
    return root.joinpath(*parts)


def index_path(root: Path, metainfo: Metainfo) -> Path:
    """``root/NAME.odindex``: where the index of the release in ``root`` goes."""
    return root / (metainfo.name + DELTA_INDEX_SUFFIX)


def pack_paths(root: Path, metainfo: Metainfo) -> tuple[Path, Path]:
    """``root/NAME.odpack`` and ``root/NAME.odblocks``: the pack's header and blocks."""
    return root / (metainfo.name + PACK_SUFFIX), root / (metainfo.name + PACK_BLOCKS_SUFFIX)


def content_path(data_file: Path) -> Path:
    """``FILE.odcontent`` beside a data file."""
    return data_file.with_name(data_file.name + CONTENT_SUFFIX)


def publish_delta(
    metainfo: Metainfo,
    root: str | os.PathLike[str],
    params: ChunkerParams | None = None,
    previous_index: DeltaIndex | None = None,
    previous_files: Sequence[Path] = (),
    *,
    patches: bool = True,
) -> PublishedDelta:
    """Index the release in ``root`` (laid out as for seeding) and write its delta files.

    With ``previous_index`` (the index of the release users update from), also
    write the pack of the chunks that release lacks. Pass the same chunker
    parameters the previous index used (``params`` defaults to them then), or
    no chunk will match. With ``previous_files`` (that release's files or folders) the
    pack holds exactly what a client with them lacks, also inside compressed
    streams the previous index could only describe as raw bytes, and (unless
    ``patches`` is false) binary patches for contents that changed throughout
    (:mod:`opendistro.delta.patching`).
    """
    if params is None and previous_index is not None:
        params = previous_index.params
    base = Path(root)
    index = build_index(base, metainfo, params, segment_file, read_content)
    written = []
    for indexed in index.files:
        compressed = [segment for segment in indexed.segments if segment.kind != "raw"]
        if not compressed:
            continue
        source = _data_path(base, metainfo, indexed)
        target = content_path(source)
        partial = target.with_name(target.name + ".partial")
        with open(partial, "wb") as out:
            for segment in compressed:
                for data in read_content(source, segment):
                    out.write(data)
        os.replace(partial, target)
        written.append(target)
    data = index.encode()
    path = index_path(base, metainfo)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    small = compress_index(data)
    compressed_path = path.with_name(path.name + COMPRESSED_INDEX_SUFFIX)
    if len(small) * 10 <= len(data) * 9:
        partial.write_bytes(small)
        os.replace(partial, compressed_path)
    else:
        compressed_path.unlink(missing_ok=True)  # a stale one would name another index
    pack = None
    if previous_index is not None or previous_files:
        known = index_chunk_hashes(previous_index) if previous_index is not None else set()
        known |= file_chunk_hashes(previous_files, index.params)
        header_path, blocks_path = pack_paths(base, metainfo)
        found = (
            find_patches(base, index, known, previous_files, multi_file=metainfo.is_multi_file)
            if patches and previous_files else []
        )
        pack = write_pack(base, index, data, known, multi_file=metainfo.is_multi_file,
                          header_path=header_path, blocks_path=blocks_path, patches=found)
    return PublishedDelta(index, path, len(data), tuple(written), pack)
