"""Parsing and producing .torrent metainfo: v1 (BEP 3), v2 (BEP 52) and hybrid.

The info dictionary is kept as the exact bytes found in the file, because the
info-hash is defined over those bytes and a re-encoding may differ (unsorted
keys, odd but legal layouts). Everything else is parsed into plain values.

All three versions are presented as one *piece space*: files laid end to end,
with padding entries where the torrent aligns files to piece boundaries
(BEP 47 pad files in v1/hybrid, and the implicit gaps of v2, which we
synthesise with the same ``.pad/N`` convention libtorrent uses). Storage and the
piece picker can then treat every torrent alike; padding reads as zeros and is
never written to disk.

Untrusted input is bounded (file count, path depth, info size) and every defect
surfaces as :class:`~opendistro.errors.MetainfoError`, or
:class:`~opendistro.errors.UnsafePathError` for file names that are not safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from . import bencode
from .errors import BencodeError, IntegrityError, MetainfoError
from .integrity import merkle
from .paths import validate_path

if TYPE_CHECKING:
    from .limits import Limits
    from .magnet import MagnetLink

__all__ = [
    "MAX_FILES",
    "MAX_INFO_SIZE",
    "MAX_PATH_DEPTH",
    "MAX_PIECES",
    "MAX_PIECE_LENGTH",
    "MAX_SIGNATURES",
    "MAX_TORRENT_SIZE",
    "MIN_V2_PIECE_LENGTH",
    "FileEntry",
    "Metainfo",
    "Version",
]

MAX_FILES = 100_000
MAX_PATH_DEPTH = 64
MAX_INFO_SIZE = 16 * 1024 * 1024
#: Whole .torrent, including v2 piece layers that live outside the info dict.
MAX_TORRENT_SIZE = 64 * 1024 * 1024
#: Pieces are held in memory whole while they are hashed; refuse absurd sizes.
MAX_PIECE_LENGTH = 64 * 1024 * 1024
MIN_V2_PIECE_LENGTH = merkle.BLOCK_SIZE
#: Bitfields, have-sets and piece tables grow with the piece count; a lying
#: length must not make every other component allocate gigabytes. Same bound
#: as libtorrent's default ``max_pieces``.
MAX_PIECES = 2 * 1024 * 1024

#: Release signature envelopes (spec/signed-releases.md) carried in one torrent.
MAX_SIGNATURES = 16

#: Nesting allowed when decoding: a path of MAX_PATH_DEPTH directories plus the
#: torrent dict, info dict, file tree, file node and its leaf dict.
_MAX_BENCODE_DEPTH = MAX_PATH_DEPTH + 8


@dataclass(frozen=True)
class _FileLimits:
    """The parts of :class:`~opendistro.limits.Limits` that bound a torrent's file list."""

    max_files: int = MAX_FILES
    max_path_depth: int = MAX_PATH_DEPTH

    @classmethod
    def of(cls, limits: Limits | None) -> _FileLimits:
        if limits is None:
            return _DEFAULT_FILE_LIMITS
        return cls(limits.max_files, limits.max_path_depth)

    @property
    def bencode_depth(self) -> int:
        return max(_MAX_BENCODE_DEPTH, self.max_path_depth + 8)


_DEFAULT_FILE_LIMITS = _FileLimits()

Version = Literal["v1", "v2", "hybrid"]
_LEGACY_PAD_PREFIX = "_____padding_file_"


@dataclass(frozen=True)
class FileEntry:
    """One file of the piece space (a real file or padding that reads as zeros)."""

    path: tuple[str, ...]
    length: int
    offset: int
    is_padding: bool
    pieces_root: bytes | None
    attr: str = ""

    @property
    def end(self) -> int:
        """Offset just past the file's last byte in the piece space."""
        return self.offset + self.length


@dataclass(frozen=True)
class _RawFile:
    path: tuple[str, ...]
    length: int
    pieces_root: bytes | None = None
    attr: str = ""

    @property
    def is_padding(self) -> bool:
        # BEP 47 attr "p"; BitComet's older convention marks pad files by name only.
        return "p" in self.attr or self.path[-1].startswith(_LEGACY_PAD_PREFIX)


def _pad_entry(offset: int, length: int) -> FileEntry:
    return FileEntry((".pad", str(length)), length, offset, True, None, "p")


def _layout_files(
    files: Sequence[_RawFile], piece_length: int, *, align: bool
) -> tuple[FileEntry, ...]:
    """Lay files end to end; with ``align`` pad every file to a piece boundary.

    ``align`` is the v2 rule: each file starts on a piece boundary. The last file
    is padded too, as libtorrent does for v2-only torrents, so the last piece has
    the full piece length in both implementations and block requests agree.
    """
    entries: list[FileEntry] = []
    offset = 0
    for raw in files:
        entries.append(
            FileEntry(raw.path, raw.length, offset, raw.is_padding, raw.pieces_root, raw.attr)
        )
        offset += raw.length
        gap = -offset % piece_length
        if align and gap:
            entries.append(_pad_entry(offset, gap))
            offset += gap
    return tuple(entries)


# -- small typed accessors --------------------------------------------------------------


def _get(d: Mapping[bytes, Any], key: bytes, kind: type, what: str) -> Any:
    if key not in d:
        raise MetainfoError(f"{what}: missing {key.decode()!r}")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MetainfoError(f"{what}: {key.decode()!r} has the wrong type")
    return value


def _text(raw: bytes) -> str:
    # Old torrents carry names in legacy code pages; a replacement character is
    # better than refusing them, and names are validated afterwards anyway.
    return raw.decode("utf-8", errors="replace")


def _length(d: Mapping[bytes, Any], what: str) -> int:
    value: int = _get(d, b"length", int, what)
    if value < 0:
        raise MetainfoError(f"{what}: negative length")
    return value


def _attr(d: Mapping[bytes, Any]) -> str:
    value = d.get(b"attr", b"")
    if not isinstance(value, bytes):
        raise MetainfoError("attr must be a string")
    return value.decode("ascii", errors="replace")


def _optional_text(d: Mapping[bytes, Any], key: bytes) -> str | None:
    value = d.get(key)
    return _text(value) if isinstance(value, bytes) else None


# -- info dict parsing ------------------------------------------------------------------


def _parse_name(info: Mapping[bytes, Any]) -> str:
    raw = info.get(b"name.utf-8", info.get(b"name"))
    if not isinstance(raw, bytes):
        raise MetainfoError("info: missing or invalid 'name'")
    name = _text(raw)
    validate_path((name,))
    return name


def _parse_v1_files(
    info: Mapping[bytes, Any], name: str, limits: _FileLimits
) -> tuple[list[_RawFile], bool]:
    if b"length" in info and b"files" in info:
        raise MetainfoError("info has both 'length' and 'files'")
    if b"length" in info:
        return [_RawFile((name,), _length(info, "info"), None, _attr(info))], False
    files = _get(info, b"files", list, "info")
    if not files:
        raise MetainfoError("info: 'files' is empty")
    if len(files) > limits.max_files:
        raise MetainfoError(f"more than {limits.max_files} files")
    result: list[_RawFile] = []
    for entry in files:
        if not isinstance(entry, dict):
            raise MetainfoError("files: entry is not a dictionary")
        raw_path = entry.get(b"path.utf-8", entry.get(b"path"))
        if not isinstance(raw_path, list) or not raw_path:
            raise MetainfoError("files: missing or empty 'path'")
        if len(raw_path) > limits.max_path_depth:
            raise MetainfoError(f"files: path deeper than {limits.max_path_depth}")
        if not all(isinstance(part, bytes) for part in raw_path):
            raise MetainfoError("files: path component is not a string")
        path = validate_path([_text(part) for part in raw_path])
        result.append(_RawFile(path, _length(entry, "files"), None, _attr(entry)))
    return result, True


def _walk_file_tree(
    node: Any, prefix: tuple[str, ...], out: list[_RawFile], limits: _FileLimits
) -> None:
    if not isinstance(node, dict) or not node:
        raise MetainfoError("file tree: directory is not a non-empty dictionary")
    if len(prefix) >= limits.max_path_depth:
        raise MetainfoError(f"file tree deeper than {limits.max_path_depth}")
    for key, child in node.items():
        if key == b"":
            raise MetainfoError("file tree: file entry where a directory was expected")
        path = (*prefix, _text(key))
        validate_path(path[-1:])
        if not isinstance(child, dict):
            raise MetainfoError("file tree: entry is not a dictionary")
        if b"" not in child:
            _walk_file_tree(child, path, out, limits)
            continue
        if len(child) != 1:
            raise MetainfoError("file tree: a file node has other keys besides ''")
        leaf = child[b""]
        if not isinstance(leaf, dict):
            raise MetainfoError("file tree: file leaf is not a dictionary")
        length = _length(leaf, "file tree")
        root: bytes | None = None
        if length:
            root = _get(leaf, b"pieces root", bytes, "file tree")
            if len(root) != merkle.HASH_SIZE:
                raise MetainfoError("file tree: 'pieces root' is not 32 bytes")
        out.append(_RawFile(path, length, root, _attr(leaf)))
        if len(out) > limits.max_files:
            raise MetainfoError(f"more than {limits.max_files} files")


def _parse_v2_files(info: Mapping[bytes, Any], limits: _FileLimits) -> tuple[list[_RawFile], bool]:
    tree = _get(info, b"file tree", dict, "info")
    files: list[_RawFile] = []
    _walk_file_tree(tree, (), files, limits)
    # One file at the top of the tree is a single-file torrent named after it.
    is_multi = not (len(files) == 1 and len(files[0].path) == 1)
    return files, is_multi


def _check_conflicts(entries: Sequence[FileEntry]) -> None:
    """Refuse duplicate files and files that are also used as directories."""
    seen: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for entry in entries:
        if entry.is_padding:
            continue
        if entry.path in seen or entry.path in dirs:
            raise MetainfoError(f"file {'/'.join(entry.path)!r} appears twice")
        seen.add(entry.path)
        for depth in range(1, len(entry.path)):
            dirs.add(entry.path[:depth])
    if seen & dirs:
        raise MetainfoError("a file name is also used as a directory")


def _merge_hybrid(
    v1_files: list[_RawFile], v2_files: list[_RawFile], piece_length: int
) -> tuple[FileEntry, ...]:
    """Use the v1 layout (explicit pad files) and attach the v2 roots, checking they agree."""
    v1_layout = _layout_files(v1_files, piece_length, align=False)
    v2_layout = _layout_files(v2_files, piece_length, align=True)
    v1_data = [entry for entry in v1_layout if not entry.is_padding]
    v2_data = [entry for entry in v2_layout if not entry.is_padding]
    if len(v1_data) != len(v2_data):
        raise MetainfoError("hybrid torrent: v1 and v2 file lists differ")
    remaining = iter(v2_data)
    result = []
    for entry in v1_layout:
        if not entry.is_padding:
            two = next(remaining)
            if entry.path != two.path or entry.length != two.length:
                raise MetainfoError(
                    f"hybrid torrent: v1 and v2 disagree on {'/'.join(entry.path)!r}"
                )
            if entry.length and entry.offset != two.offset:
                raise MetainfoError(
                    f"hybrid torrent: {'/'.join(entry.path)!r} is not piece-aligned"
                )
            entry = dataclasses.replace(entry, pieces_root=two.pieces_root)
        result.append(entry)
    return tuple(result)


def _check_piece_layers(
    files: Sequence[FileEntry], raw_layers: Any, piece_length: int
) -> dict[bytes, bytes]:
    """Keep the piece layers of our files, after checking each hashes up to its root."""
    if raw_layers is None:
        return {}
    if not isinstance(raw_layers, dict):
        raise MetainfoError("'piece layers' is not a dictionary")
    layers: dict[bytes, bytes] = {}
    for entry in files:
        root = entry.pieces_root
        if root is None or entry.length <= piece_length or root in layers:
            continue
        layer = raw_layers.get(root)
        if layer is None:
            continue
        if not isinstance(layer, bytes):
            raise MetainfoError("piece layer is not a string")
        pieces = -(-entry.length // piece_length)
        if len(layer) != pieces * merkle.HASH_SIZE:
            raise MetainfoError(f"piece layer of {'/'.join(entry.path)!r} has the wrong size")
        try:
            computed = merkle.root_from_piece_layer(merkle.split_layer(layer), piece_length)
        except IntegrityError as exc:
            raise MetainfoError(str(exc)) from exc
        if computed != root:
            raise MetainfoError(f"piece layer of {'/'.join(entry.path)!r} does not match its root")
        layers[root] = layer
    return layers


@dataclass(frozen=True, eq=False)
class Metainfo:
    """A parsed torrent: the info dict (as exact bytes) plus the metadata around it."""

    info_bytes: bytes = dataclasses.field(repr=False)
    info: dict[bytes, Any] = dataclasses.field(repr=False)
    version: Version
    info_hash_v1: bytes | None
    info_hash_v2: bytes | None
    name: str
    piece_length: int
    total_length: int
    num_pieces: int
    files: tuple[FileEntry, ...] = dataclasses.field(repr=False)
    is_multi_file: bool
    announce_tiers: list[list[str]]
    url_list: list[str]
    private: bool
    comment: str | None
    created_by: str | None
    creation_date: int | None
    piece_layers: dict[bytes, bytes] = dataclasses.field(repr=False)
    #: Bencoded release signature envelopes from the top-level ``signatures``
    #: list, byte for byte; outside the info dict, so they never change the
    #: info-hash. ``opendistro.signing`` checks what is inside them.
    signatures: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)

    # -- derived views ----------------------------------------------------------------

    @property
    def wire_info_hash(self) -> bytes:
        """The 20 bytes used in handshakes and announces (BEP 52 truncates the v2 hash)."""
        if self.info_hash_v1 is not None:
            return self.info_hash_v1
        assert self.info_hash_v2 is not None
        return self.info_hash_v2[:20]

    @property
    def has_v1(self) -> bool:
        return self.info_hash_v1 is not None

    @property
    def has_v2(self) -> bool:
        return self.info_hash_v2 is not None

    def piece_size(self, index: int) -> int:
        """Length of piece ``index`` in the piece space (only the last may be short)."""
        if not 0 <= index < self.num_pieces:
            raise MetainfoError(f"piece index {index} out of range")
        return min(self.piece_length, self.total_length - index * self.piece_length)

    def piece_hash_v1(self, index: int) -> bytes:
        """SHA-1 of piece ``index`` from the v1 ``pieces`` string."""
        if not self.has_v1:
            raise MetainfoError("a v2-only torrent has no v1 piece hashes")
        if not 0 <= index < self.num_pieces:
            raise MetainfoError(f"piece index {index} out of range")
        pieces: bytes = self.info[b"pieces"]
        return pieces[index * 20 : index * 20 + 20]

    def data_files(self) -> tuple[FileEntry, ...]:
        """Files that exist on disk (everything but padding)."""
        return tuple(entry for entry in self.files if not entry.is_padding)

    def has_piece_layer(self, entry: FileEntry) -> bool:
        """Whether single pieces of ``entry`` can be checked with SHA-256 right now."""
        if entry.pieces_root is None:
            return False
        return entry.length <= self.piece_length or entry.pieces_root in self.piece_layers

    def with_piece_layers(self, layers: Mapping[bytes, bytes]) -> Metainfo:
        """A copy with extra v2 piece layers (e.g. fetched from peers), each checked."""
        merged: dict[bytes, Any] = {**self.piece_layers, **layers}
        checked = _check_piece_layers(self.files, merged, self.piece_length)
        return dataclasses.replace(self, piece_layers=checked)

    # -- producing ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Encode the whole .torrent with the info dict embedded byte for byte.

        Only the top-level keys modelled here are written; others found in the
        input (``nodes``, ``httpseeds``, ...) are not carried over.
        """
        top: dict[bytes, Any] = {}
        trackers = [url for tier in self.announce_tiers for url in tier]
        if trackers:
            top[b"announce"] = trackers[0]
            top[b"announce-list"] = [list(tier) for tier in self.announce_tiers if tier]
        if self.comment is not None:
            top[b"comment"] = self.comment
        if self.created_by is not None:
            top[b"created by"] = self.created_by
        if self.creation_date is not None:
            top[b"creation date"] = self.creation_date
        if self.piece_layers:
            top[b"piece layers"] = self.piece_layers
        if self.url_list:
            top[b"url-list"] = list(self.url_list)
        verbatim = {b"info": self.info_bytes}
        if self.signatures:
            verbatim[b"signatures"] = b"l" + b"".join(self.signatures) + b"e"
        parts = [b"d"]
        for key in sorted([*top, *verbatim]):
            parts.append(bencode.encode(key))
            parts.append(verbatim[key] if key in verbatim else bencode.encode(top[key]))
        parts.append(b"e")
        return b"".join(parts)

    def magnet_link(self) -> MagnetLink:
        """A magnet URI naming this torrent's info-hash(es), trackers and web seeds."""
        from .magnet import MagnetLink

        return MagnetLink(
            info_hash_v1=self.info_hash_v1,
            info_hash_v2=self.info_hash_v2,
            display_name=self.name,
            trackers=tuple(url for tier in self.announce_tiers for url in tier),
            webseeds=tuple(self.url_list),
            peers=(),
        )

    # -- parsing ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, limits: Limits | None = None) -> Metainfo:
        """Read and parse a .torrent file (refusing files over MAX_TORRENT_SIZE)."""
        with open(path, "rb") as handle:
            data = handle.read(MAX_TORRENT_SIZE + 1)
        return cls.from_bytes(data, limits=limits)

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: Limits | None = None) -> Metainfo:
        """Parse a whole .torrent file.

        ``limits`` bounds its files and path depth (default: :data:`MAX_FILES`,
        :data:`MAX_PATH_DEPTH`).
        """
        file_limits = _FileLimits.of(limits)
        if len(data) > MAX_TORRENT_SIZE:
            raise MetainfoError(f"torrent larger than {MAX_TORRENT_SIZE} bytes")
        try:
            top = bencode.decode(bytes(data), max_depth=file_limits.bencode_depth)
            if not isinstance(top, dict):
                raise MetainfoError("a torrent must be a dictionary")
            span = _info_span(bytes(data), file_limits.bencode_depth)
        except BencodeError as exc:
            raise MetainfoError(f"not valid bencoding: {exc}") from exc
        if span is None:
            raise MetainfoError("torrent has no 'info' dictionary")
        info_bytes = bytes(data[span[0] : span[1]])
        metainfo = cls._build(
            info_bytes,
            top.get(b"info"),
            announce_tiers=_parse_tiers(top),
            url_list=_parse_url_list(top.get(b"url-list")),
            comment=_optional_text(top, b"comment"),
            created_by=_optional_text(top, b"created by"),
            creation_date=_parse_date(top.get(b"creation date")),
            raw_layers=top.get(b"piece layers"),
            limits=file_limits,
        )
        signatures = _parse_signatures(bytes(data), top.get(b"signatures"))
        return dataclasses.replace(metainfo, signatures=signatures) if signatures else metainfo

    @classmethod
    def from_info_bytes(
        cls,
        info_bytes: bytes,
        *,
        announce_tiers: Sequence[Sequence[str]] = (),
        url_list: Sequence[str] = (),
        expected_v1: bytes | None = None,
        expected_v2: bytes | None = None,
        limits: Limits | None = None,
    ) -> Metainfo:
        """Build a torrent from an info dict fetched from peers (BEP 9).

        ``expected_v1`` is the 20-byte hash the magnet named (SHA-1, or a truncated
        SHA-256 for a v2-only torrent); ``expected_v2`` the full SHA-256. Either one
        that does not match raises MetainfoError. There are no piece layers yet.
        ``limits`` bounds the files and path depth, as in :meth:`from_bytes`.
        """
        file_limits = _FileLimits.of(limits)
        info_bytes = bytes(info_bytes)
        if len(info_bytes) > MAX_INFO_SIZE:
            raise MetainfoError(f"info dict larger than {MAX_INFO_SIZE} bytes")
        if expected_v1 is not None:
            candidates = {
                hashlib.sha1(info_bytes).digest(),
                hashlib.sha256(info_bytes).digest()[:20],
            }
            if expected_v1 not in candidates:
                raise MetainfoError("info dict does not match the expected info-hash")
        if expected_v2 is not None and hashlib.sha256(info_bytes).digest() != expected_v2:
            raise MetainfoError("info dict does not match the expected v2 info-hash")
        try:
            info = bencode.decode(info_bytes, max_depth=file_limits.bencode_depth)
        except BencodeError as exc:
            raise MetainfoError(f"info dict is not valid bencoding: {exc}") from exc
        metainfo = cls._build(
            info_bytes,
            info,
            announce_tiers=[list(tier) for tier in announce_tiers if tier],
            url_list=list(url_list),
            comment=None,
            created_by=None,
            creation_date=None,
            raw_layers=None,
            limits=file_limits,
        )
        if expected_v1 is not None and expected_v1 not in (
            metainfo.info_hash_v1,
            metainfo.wire_info_hash,
        ):
            raise MetainfoError("info dict does not match the expected info-hash")
        return metainfo

    @classmethod
    def _build(
        cls,
        info_bytes: bytes,
        info: Any,
        *,
        announce_tiers: list[list[str]],
        url_list: list[str],
        comment: str | None,
        created_by: str | None,
        creation_date: int | None,
        raw_layers: Any,
        limits: _FileLimits = _DEFAULT_FILE_LIMITS,
    ) -> Metainfo:
        if len(info_bytes) > MAX_INFO_SIZE:
            raise MetainfoError(f"info dict larger than {MAX_INFO_SIZE} bytes")
        if not isinstance(info, dict):
            raise MetainfoError("'info' is not a dictionary")
        # BEP 52: look at the meta version first, so a torrent from a future
        # revision is reported as such rather than as some other defect.
        meta_version = info.get(b"meta version")
        if meta_version is None:
            if b"file tree" in info:
                raise MetainfoError("'file tree' without 'meta version'")
            version: Version = "v1"
        elif meta_version != 2 or isinstance(meta_version, bool):
            raise MetainfoError(f"unsupported meta version {meta_version!r}")
        else:
            version = "hybrid" if b"pieces" in info else "v2"
        name = _parse_name(info)
        piece_length: int = _get(info, b"piece length", int, "info")
        if not 0 < piece_length <= MAX_PIECE_LENGTH:
            raise MetainfoError(f"piece length {piece_length} out of range")
        if version != "v1" and (
            piece_length < MIN_V2_PIECE_LENGTH or piece_length & (piece_length - 1)
        ):
            raise MetainfoError("v2 piece length must be a power of two of at least 16 KiB")

        if version == "v1":
            v1_files, is_multi = _parse_v1_files(info, name, limits)
            files = _layout_files(v1_files, piece_length, align=False)
        elif version == "v2":
            if b"files" in info or b"length" in info:
                raise MetainfoError("v2 torrent has v1 file fields but no 'pieces'")
            v2_files, is_multi = _parse_v2_files(info, limits)
            files = _layout_files(v2_files, piece_length, align=True)
        else:
            v1_files, is_multi = _parse_v1_files(info, name, limits)
            v2_files, v2_multi = _parse_v2_files(info, limits)
            if is_multi != v2_multi:
                raise MetainfoError("hybrid torrent: v1 and v2 disagree on single/multi-file")
            files = _merge_hybrid(v1_files, v2_files, piece_length)
        _check_conflicts(files)

        total_length = files[-1].end if files else 0
        if total_length <= 0:
            raise MetainfoError("torrent holds no data")
        num_pieces = -(-total_length // piece_length)
        if num_pieces > MAX_PIECES:
            raise MetainfoError(f"{num_pieces} pieces is more than the limit of {MAX_PIECES}")
        if version != "v1" and not is_multi and files[0].path[0] != name:
            # libtorrent names a single-file v2 torrent's file after the tree key.
            name = files[0].path[0]
        if version != "v2":
            pieces = _get(info, b"pieces", bytes, "info")
            if len(pieces) != 20 * num_pieces:
                raise MetainfoError(
                    f"'pieces' holds {len(pieces)} bytes, expected {20 * num_pieces}"
                )
        private_flag = info.get(b"private", 0)
        layers = _check_piece_layers(files, raw_layers, piece_length) if version != "v1" else {}
        return cls(
            info_bytes=info_bytes,
            info=info,
            version=version,
            info_hash_v1=hashlib.sha1(info_bytes).digest() if version != "v2" else None,
            info_hash_v2=hashlib.sha256(info_bytes).digest() if version != "v1" else None,
            name=name,
            piece_length=piece_length,
            total_length=total_length,
            num_pieces=num_pieces,
            files=files,
            is_multi_file=is_multi,
            announce_tiers=announce_tiers,
            url_list=url_list,
            private=private_flag == 1 and not isinstance(private_flag, bool),
            comment=comment,
            created_by=created_by,
            creation_date=creation_date,
            piece_layers=layers,
        )


def _info_span(data: bytes, max_depth: int) -> tuple[int, int] | None:
    """The byte span of the top-level ``info`` value (the info-hash covers those bytes).

    As :func:`bencode.dict_value_span`, but as deep as the file limits allow:
    a deeper ``max_path_depth`` means a deeper file tree.
    """
    pos = 1  # the caller decoded ``data`` as a dictionary already
    while data[pos] != ord("e"):
        key, pos = bencode.decode_prefix(data, pos, max_depth=max_depth)
        start = pos
        _, pos = bencode.decode_prefix(data, pos, max_depth=max_depth)
        if key == b"info":
            return start, pos
    return None


# -- optional top-level fields: lenient, because they never affect the data ------------


def _parse_tiers(top: Mapping[bytes, Any]) -> list[list[str]]:
    tiers: list[list[str]] = []
    raw = top.get(b"announce-list")
    if isinstance(raw, list):
        for raw_tier in raw:
            if not isinstance(raw_tier, list):
                continue
            tier = [_text(url) for url in raw_tier if isinstance(url, bytes) and url]
            if tier:
                tiers.append(tier)
    if not tiers:
        announce = top.get(b"announce")
        if isinstance(announce, bytes) and announce:
            tiers.append([_text(announce)])
    return tiers


def _parse_url_list(raw: Any) -> list[str]:
    if isinstance(raw, bytes):
        raw = [raw]
    if not isinstance(raw, list):
        return []
    return [_text(url) for url in raw if isinstance(url, bytes) and url]


def _parse_signatures(data: bytes, raw: Any) -> tuple[bytes, ...]:
    """Each entry of the top-level ``signatures`` list, as the exact bytes found.

    Unlike the fields above this one is not lenient: a torrent that carries
    signatures in a shape we cannot read must not pass for an unsigned one.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise MetainfoError("'signatures' must be a list of dictionaries")
    if len(raw) > MAX_SIGNATURES:
        raise MetainfoError(f"more than {MAX_SIGNATURES} signatures")
    span = bencode.dict_value_span(data, b"signatures")
    assert span is not None
    entries: list[bytes] = []
    pos = span[0] + 1  # past the list's "l"
    for _ in raw:
        _, end = bencode.decode_prefix(data, pos)
        entries.append(data[pos:end])
        pos = end
    return tuple(entries)


def _parse_date(raw: Any) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    return None
