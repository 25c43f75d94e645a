"""Turning a Metalink document into downloads: which torrents, which mirrors, which checks.

``opendistro get FILE.meta4`` downloads through the same engine as a torrent,
so every byte is checked piece by piece before it reaches the final path.
The Metalink supplies what that needs in one of two ways:

- a ``metaurl`` of type ``torrent``: the release's own .torrent (fetched by
  the caller), with the Metalink's mirrors turned into BEP 19 base URLs. Its
  SHA-1 piece hashes and sizes, where given, must agree with the torrent, so a
  Metalink cannot pair one release's mirrors with another's torrent unnoticed;
- otherwise SHA-1 piece hashes of each file: each file becomes a small v1
  single-file torrent, downloaded from its own URLs (the swarm has no part).

Whole-file hashes (the strongest listed) and OpenPGP signatures are checked
afterwards by :func:`check_whole_file`, before the caller moves the file into
place. A file without piece hashes and without a torrent cannot be checked as
it arrives, and is refused rather than fetched unchecked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .. import bencode
from ..errors import IntegrityError, MetainfoError, MetalinkError
from ..metainfo import FileEntry, Metainfo
from .metalink import Metalink, MetalinkFile

__all__ = ["MetalinkDownload", "check_whole_file", "plan_downloads", "torrent_metaurl"]

#: Whole-file hashes we check, strongest first (Metalink names, hashlib names).
_STRENGTH = (("sha-512", "sha512"), ("sha-384", "sha384"), ("sha-256", "sha256"), ("sha-1", "sha1"))


@dataclass(frozen=True)
class MetalinkDownload:
    """One torrent to download (into ``subdirectory`` of the output folder) and its mirrors."""

    metainfo: Metainfo
    mirrors: tuple[str, ...]
    subdirectory: tuple[str, ...]
    files: tuple[tuple[MetalinkFile, FileEntry], ...]
    """Each Metalink file with the torrent file it became, for the checks afterwards."""


def torrent_metaurl(metalink: Metalink) -> str | None:
    """The most preferred ``torrent`` metaurl of the document (all files must share it)."""
    urls = {
        meta.url
        for entry in metalink.files
        for meta in entry.metaurls
        if meta.mediatype == "torrent"
    }
    if not urls:
        return None
    if len(urls) > 1:
        raise MetalinkError("the files point at different torrents; one release per Metalink")
    return urls.pop()


def plan_downloads(metalink: Metalink, torrent: Metainfo | None) -> list[MetalinkDownload]:
    """What to download for ``metalink``; ``torrent`` is what its metaurl pointed at, if any."""
    if torrent is not None:
        return [_with_torrent(metalink, torrent)]
    return [_from_pieces(entry) for entry in metalink.files]


def _with_torrent(metalink: Metalink, torrent: Metainfo) -> MetalinkDownload:
    by_path = {_metalink_path(torrent, entry): entry for entry in torrent.data_files()}
    bases: list[tuple[int, str]] = []
    pairs: list[tuple[MetalinkFile, FileEntry]] = []
    for item in metalink.files:
        entry = by_path.get(item.path)
        if entry is None:
            raise MetalinkError(f"{item.name!r} is not a file of the torrent the metaurl names")
        _check_agrees(item, entry, torrent)
        pairs.append((item, entry))
        suffix = "/".join(quote(part, safe="") for part in item.path)
        for mirror in item.urls:
            if not torrent.is_multi_file:
                bases.append((mirror.priority, mirror.url))
            elif mirror.url.endswith("/" + suffix):
                bases.append((mirror.priority, mirror.url[: -len(suffix)]))
    ordered = [url for _, url in sorted(bases, key=lambda pair: pair[0])]
    return MetalinkDownload(torrent, tuple(dict.fromkeys(ordered)), (), tuple(pairs))


def _metalink_path(torrent: Metainfo, entry: FileEntry) -> tuple[str, ...]:
    """How a Metalink names a torrent's file: the torrent's name, then the file's path."""
    return (torrent.name,) if not torrent.is_multi_file else (torrent.name, *entry.path)


def _check_agrees(item: MetalinkFile, entry: FileEntry, torrent: Metainfo) -> None:
    if item.size is not None and item.size != entry.length:
        raise MetalinkError(
            f"{item.name!r} is {item.size} bytes in the Metalink but {entry.length} in the torrent"
        )
    if torrent.is_multi_file or not torrent.has_v1:
        return
    ours = [torrent.piece_hash_v1(index) for index in range(torrent.num_pieces)]
    for pieces in item.pieces:
        comparable = pieces.algorithm == "sha-1" and pieces.length == torrent.piece_length
        if comparable and list(pieces.hashes) != ours:
            raise MetalinkError(
                f"the piece hashes of {item.name!r} differ from the torrent's: "
                "the metaurl names another release"
            )


def _from_pieces(item: MetalinkFile) -> MetalinkDownload:
    pieces = next((p for p in item.pieces if p.algorithm == "sha-1"), None)
    if pieces is None or item.size is None:
        raise MetalinkError(
            f"{item.name!r} has no SHA-1 piece hashes and no torrent: "
            "it could not be checked as it arrives"
        )
    if not item.urls:
        raise MetalinkError(f"{item.name!r} lists no http(s) mirror")
    info = {
        b"name": item.path[-1].encode(),
        b"length": item.size,
        b"piece length": pieces.length,
        b"pieces": b"".join(pieces.hashes),
    }
    try:
        metainfo = Metainfo.from_bytes(bencode.encode({b"info": info}))
    except MetainfoError as exc:
        raise MetalinkError(f"the piece hashes of {item.name!r} do not describe it: {exc}") from exc
    entry = metainfo.data_files()[0]
    mirrors = tuple(dict.fromkeys(mirror.url for mirror in item.urls))
    return MetalinkDownload(metainfo, mirrors, item.path[:-1], ((item, entry),))


def check_whole_file(item: MetalinkFile, path: Path) -> str | None:
    """Check ``path`` against the strongest whole-file hash listed; returns its name.

    None when the Metalink lists none we know. A mismatch raises
    :class:`~opendistro.errors.IntegrityError`.
    """
    for name, algorithm in _STRENGTH:
        expected = item.digest(name)
        if expected is None:
            continue
        with open(path, "rb") as handle:
            actual = hashlib.file_digest(handle, algorithm).digest()
        if actual != expected:
            raise IntegrityError(
                f"{os.fspath(path)!r} does not match the Metalink's {name} hash"
            )
        return name
    return None
