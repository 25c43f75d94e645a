"""Making .torrent files from a file or folder (the publisher's side).

This module reads files, so it is not part of the sans-I/O core; it is meant
for the CLI and for tests, and blocking reads are fine here. Memory stays
bounded by one piece whatever the size of the release: files are read piece
by piece into one reusable buffer and only hashes are kept.

v2 and hybrid torrents align every file to a piece boundary. In a hybrid
torrent the gaps are explicit BEP 47 pad files (``.pad/N``, attr ``p``) after
every unaligned file but the last, which is how libtorrent lays them out, so
both produce the same piece space for the same files.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import bencode
from .errors import ConfigError, MetainfoError, StorageError
from .integrity import merkle
from .metainfo import MAX_PIECE_LENGTH, MIN_V2_PIECE_LENGTH, Metainfo
from .paths import validate_path

__all__ = ["DEFAULT_CREATED_BY", "auto_piece_length", "create_torrent"]

DEFAULT_CREATED_BY = "opendistro/0.1"
_MIN_AUTO = 16 * 1024
_MAX_AUTO = 16 * 1024 * 1024
_TARGET_MAX_PIECES = 2000

Progress = Callable[[int, int], None]


def auto_piece_length(total_size: int) -> int:
    """Smallest power of two in 16 KiB..16 MiB giving at most ~2000 pieces.

    That lands between 1000 and 2000 pieces unless a bound is hit: few enough
    that the .torrent stays small, many enough that a swarm can spread pieces.
    """
    if total_size < 0:
        raise ConfigError("total size cannot be negative")
    length = _MIN_AUTO
    while length < _MAX_AUTO and length * _TARGET_MAX_PIECES < total_size:
        length *= 2
    return length


@dataclass(frozen=True)
class _SourceFile:
    path: tuple[str, ...]  # inside the torrent, relative to its root
    source: Path
    length: int


def _sort_key(item: _SourceFile) -> tuple[bytes, ...]:
    # The v2 file tree is a bencoded dict, ordered by the raw bytes of each name.
    return tuple(part.encode("utf-8") for part in item.path)


def _collect(root: Path) -> list[_SourceFile]:
    """Regular files under ``root``; symlinks are skipped, never followed."""
    found: list[_SourceFile] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(directory)
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        for filename in filenames:
            source = base / filename
            if source.is_symlink() or not source.is_file():
                continue
            relative = source.relative_to(root).parts
            found.append(_SourceFile(validate_path(relative), source, source.stat().st_size))
    found.sort(key=_sort_key)
    return found


def _normalise_tiers(trackers: Sequence[str | Sequence[str]]) -> list[list[str]]:
    tiers: list[list[str]] = []
    for entry in trackers:
        tier = [entry] if isinstance(entry, str) else [str(url) for url in entry]
        tier = [url for url in tier if url]
        if tier:
            tiers.append(tier)
    return tiers


class _V1Hasher:
    """SHA-1 over a stream that pieces cut at fixed offsets, across file ends."""

    def __init__(self, piece_length: int) -> None:
        self.piece_length = piece_length
        self.pieces: list[bytes] = []
        self._hash = hashlib.sha1()
        self._filled = 0

    def feed(self, data: memoryview) -> None:
        while len(data):
            take = min(len(data), self.piece_length - self._filled)
            self._hash.update(data[:take])
            self._filled += take
            data = data[take:]
            if self._filled == self.piece_length:
                self._finish_piece()

    def _finish_piece(self) -> None:
        self.pieces.append(self._hash.digest())
        self._hash = hashlib.sha1()
        self._filled = 0

    def close(self) -> bytes:
        if self._filled:
            self._finish_piece()
        return b"".join(self.pieces)


def _read_exactly(handle: Any, buffer: bytearray, wanted: int, source: Path) -> memoryview:
    view = memoryview(buffer)[:wanted]
    got = 0
    while got < wanted:
        count = handle.readinto(view[got:])
        if not count:
            raise StorageError(f"{source} shrank while it was being hashed")
        got += count
    return view


def create_torrent(
    path: str | os.PathLike[str],
    *,
    version: Literal["v1", "v2", "hybrid"] = "hybrid",
    piece_length: int | None = None,
    trackers: Sequence[str | Sequence[str]] = (),
    webseeds: Sequence[str] = (),
    private: bool = False,
    comment: str | None = None,
    created_by: str | None = DEFAULT_CREATED_BY,
    creation_date: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> Metainfo:
    """Hash a file or a folder and return its torrent.

    ``trackers`` entries that are lists form one BEP 12 tier each; plain strings
    are a tier of their own. ``creation_date`` None means now; 0 leaves it out,
    which makes the output depend on the data and arguments only.
    """
    if version not in ("v1", "v2", "hybrid"):
        raise ConfigError(f"unknown torrent version {version!r}")
    root = Path(path)
    if root.is_dir():
        sources = _collect(root)
        is_multi = True
    elif root.is_file():
        sources = [_SourceFile((root.name,), root, root.stat().st_size)]
        is_multi = False
    else:
        raise ConfigError(f"{root} is neither a file nor a folder")
    torrent_name = name if name is not None else root.resolve().name
    validate_path((torrent_name,))
    if not is_multi:
        sources = [_SourceFile((torrent_name,), root, sources[0].length)]
    total = sum(item.length for item in sources)
    if total == 0:
        raise MetainfoError("nothing to share: the release holds no data")

    if piece_length is None:
        piece_length = auto_piece_length(total)
    if not 0 < piece_length <= MAX_PIECE_LENGTH:
        raise ConfigError(f"piece length {piece_length} out of range")
    if version != "v1" and (
        piece_length < MIN_V2_PIECE_LENGTH or piece_length & (piece_length - 1)
    ):
        raise ConfigError("v2 and hybrid need a power-of-two piece length of at least 16 KiB")

    want_v1 = version != "v2"
    want_v2 = version != "v1"
    v1 = _V1Hasher(piece_length)
    roots: list[bytes | None] = []
    layers: dict[bytes, bytes] = {}
    v1_files: list[dict[bytes, Any]] = []
    buffer = bytearray(piece_length)
    done = 0
    for position, item in enumerate(sources):
        v1_files.append({b"length": item.length, b"path": list(item.path)})
        piece_hashes: list[bytes] = []
        with open(item.source, "rb") as handle:
            remaining = item.length
            while remaining:
                chunk = _read_exactly(handle, buffer, min(piece_length, remaining), item.source)
                remaining -= len(chunk)
                if want_v1:
                    v1.feed(chunk)
                if want_v2:
                    if item.length <= piece_length:
                        piece_hashes.append(merkle.single_piece_root(chunk))
                    else:
                        piece_hashes.append(merkle.piece_hash(chunk, piece_length))
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if handle.read(1):
                raise StorageError(f"{item.source} grew while it was being hashed")
        if want_v2:
            if not piece_hashes:
                roots.append(None)
            elif item.length <= piece_length:
                roots.append(piece_hashes[0])
            else:
                file_root = merkle.root_from_piece_layer(piece_hashes, piece_length)
                roots.append(file_root)
                layers[file_root] = b"".join(piece_hashes)
        gap = -item.length % piece_length
        if version == "hybrid" and gap and position != len(sources) - 1:
            # BEP 47 pad file so the next file starts on a piece boundary.
            v1.feed(memoryview(bytes(gap)))
            v1_files.append({b"attr": b"p", b"length": gap, b"path": [".pad", str(gap)]})

    info: dict[bytes, Any] = {b"name": torrent_name, b"piece length": piece_length}
    if private:
        info[b"private"] = 1
    if want_v1:
        info[b"pieces"] = v1.close()
        if is_multi:
            info[b"files"] = v1_files
        else:
            info[b"length"] = sources[0].length
    if want_v2:
        info[b"meta version"] = 2
        info[b"file tree"] = _file_tree(sources, roots)

    top: dict[bytes, Any] = {b"info": info}
    tiers = _normalise_tiers(trackers)
    if tiers:
        top[b"announce"] = tiers[0][0]
        top[b"announce-list"] = tiers
    if webseeds:
        top[b"url-list"] = list(webseeds)
    if comment is not None:
        top[b"comment"] = comment
    if created_by is not None:
        top[b"created by"] = created_by
    date = int(time.time()) if creation_date is None else creation_date
    if date:
        top[b"creation date"] = date
    if layers:
        top[b"piece layers"] = layers
    return Metainfo.from_bytes(bencode.encode(top))


def _file_tree(sources: Sequence[_SourceFile], roots: Sequence[bytes | None]) -> dict[bytes, Any]:
    tree: dict[bytes, Any] = {}
    for item, file_root in zip(sources, roots, strict=True):
        node = tree
        for part in item.path:
            node = node.setdefault(part.encode("utf-8"), {})
        leaf: dict[bytes, Any] = {b"length": item.length}
        if file_root is not None:
            leaf[b"pieces root"] = file_root
        node[b""] = leaf
    return tree
