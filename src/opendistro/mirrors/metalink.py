"""Metalink 4 (RFC 5854) documents: reading them safely and writing them for a release.

A Metalink file lists, for each file of a release, its size, whole-file and
per-piece hashes, an optional signature, HTTP mirrors with a preference
(``priority``: 1 is best, a missing one counts as the lowest, 999999) and a
country (``location``), and ``metaurl`` pointers to the same data in other
systems, such as the release's .torrent. Download managers (aria2, curl, wget)
read it, so publishing one next to a torrent lets people without a BitTorrent
client use the same mirrors, checked by the same hashes.

Reading: a Metalink document comes from whoever runs a mirror or a web page,
so it is untrusted XML. We use expat directly and refuse any DOCTYPE, entity
or notation declaration outright: with no DTD there can be no entity expansion
(billion laughs) and no external entity (file or network access), and the
handful of predefined entities and character references are all XML has left.
Input size, element count and nesting depth are bounded before anything is
built. File names go through :func:`opendistro.paths.validate_path`, so ``..``
or an absolute path raises :class:`~opendistro.errors.UnsafePathError`; every
other defect raises :class:`~opendistro.errors.MetalinkError`, never an
exception of the XML library. Only ``http``/``https`` URLs are kept as
sources; ``ftp`` and a few other real but unsupported schemes are set aside in
:attr:`MetalinkFile.skipped_urls`, and any other scheme (``file:``,
``javascript:``, ...) makes the document invalid. Metalink 3
(``http://www.metalinker.org/``) documents are read into the same model.

Writing: :func:`build_metalink` describes a release from its
:class:`~opendistro.metainfo.Metainfo` and data on disk, and
:func:`render_metalink` turns any :class:`Metalink` into Metalink 4 XML that
:func:`parse_metalink` reads back equal. :func:`write_metalink` does both.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BufferedReader
from pathlib import Path
from types import MappingProxyType
from typing import TypeAlias
from urllib.parse import urlsplit
from xml.parsers import expat
from xml.sax.saxutils import escape

from .. import __version__
from ..errors import ConfigError, IntegrityError, MetalinkError, OpenDistroError, StorageError
from ..integrity import merkle
from ..metainfo import MAX_FILES, MAX_PATH_DEPTH, MAX_PIECE_LENGTH, FileEntry, Metainfo
from ..paths import validate_path
from .webseed import file_url

__all__ = [
    "HASH_SIZES",
    "LOWEST_PRIORITY",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_METALINK_SIZE",
    "METALINK3_NAMESPACE",
    "METALINK4_NAMESPACE",
    "Digest",
    "MetaUrl",
    "Metalink",
    "MetalinkFile",
    "MirrorSpec",
    "MirrorUrl",
    "Pieces",
    "Signature",
    "build_metalink",
    "parse_metalink",
    "render_metalink",
    "write_metalink",
]

METALINK4_NAMESPACE = "urn:ietf:params:xml:ns:metalink"
METALINK3_NAMESPACE = "http://www.metalinker.org/"
_NAMESPACES = frozenset({METALINK4_NAMESPACE, METALINK3_NAMESPACE})

MAX_METALINK_SIZE = 16 * 1024 * 1024
#: Room for a long file list or a quarter of a million piece hashes, while
#: keeping the stored tree to tens of megabytes, whatever the input.
MAX_ELEMENTS = 250_000
#: Metalink itself nests six deep (Metalink 3: metalink/files/file/verification/
#: pieces/hash); the rest is for extension elements we skip.
MAX_DEPTH = 32
MAX_URL_LENGTH = 8 * 1024

#: RFC 5854 priorities run from 1 (most preferred) to 999999; a url or
#: metaurl without one ranks with the least preferred.
LOWEST_PRIORITY = 999_999

#: Whole-file and piece hash types we check, named as in the IANA "Hash
#: Function Textual Names" registry that RFC 5854 uses, and their digest sizes.
#: Others (md5, ...) are ignored: they are too weak to be worth checking.
HASH_SIZES: dict[str, int] = {
    "sha-1": 20,
    "sha-224": 28,
    "sha-256": 32,
    "sha-384": 48,
    "sha-512": 64,
}

#: Schemes that do appear in real Metalink files but that we do not download
#: from: noted in ``skipped_urls`` rather than refused.
_SKIPPED_SCHEMES = frozenset({"ftp", "ftps", "sftp", "rsync", "magnet"})
_FETCHED_SCHEMES = frozenset({"http", "https"})
_GENERATOR = f"opendistro/{__version__}"
_PGP_SIGNATURE = "application/pgp-signature"

_HEX = re.compile(r"[0-9A-Fa-f]*")
_DIGITS = re.compile(r"[0-9]+")
# Characters XML 1.0 cannot carry at all, not even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


# -- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """A whole-file hash: ``algorithm`` as in :data:`HASH_SIZES`, ``value`` raw bytes."""

    algorithm: str
    value: bytes


@dataclass(frozen=True)
class Pieces:
    """Hashes of consecutive ``length``-byte pieces of one file (the last may be short)."""

    algorithm: str
    length: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class Signature:
    """A detached signature of the file, e.g. ASCII-armoured OpenPGP; kept as text."""

    mediatype: str
    text: str


@dataclass(frozen=True)
class MirrorUrl:
    """An HTTP(S) URL of the file; lower ``priority`` is preferred."""

    url: str
    priority: int = LOWEST_PRIORITY
    location: str | None = None


@dataclass(frozen=True)
class MetaUrl:
    """The file inside other metadata: ``mediatype`` ``"torrent"`` is a .torrent's URL.

    ``name`` is the file's path inside that metadata, for a multi-file torrent.
    """

    url: str
    mediatype: str
    priority: int = LOWEST_PRIORITY
    name: str | None = None


@dataclass(frozen=True)
class MetalinkFile:
    """One ``<file>``: where to get it and how to check it.

    ``urls`` and ``metaurls`` are sorted by priority (stable, so the document's
    order breaks ties). ``skipped_urls`` are sources we do not fetch from (FTP,
    ...), listed so a caller can say why a file has fewer mirrors than expected.
    """

    path: tuple[str, ...]
    size: int | None = None
    identity: str | None = None
    version: str | None = None
    description: str | None = None
    hashes: tuple[Digest, ...] = ()
    pieces: tuple[Pieces, ...] = ()
    signature: Signature | None = None
    urls: tuple[MirrorUrl, ...] = ()
    metaurls: tuple[MetaUrl, ...] = ()
    skipped_urls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The relative path as Metalink writes it, ``/``-separated."""
        return "/".join(self.path)

    def digest(self, algorithm: str) -> bytes | None:
        """The whole-file hash of type ``algorithm`` (e.g. ``"sha-256"``), if listed."""
        for entry in self.hashes:
            if entry.algorithm == algorithm:
                return entry.value
        return None


@dataclass(frozen=True)
class Metalink:
    """A Metalink document: its files and the few facts about the document itself.

    ``origin`` is where the document is published; ``dynamic`` says a client may
    fetch it again from there for updates. ``published``/``updated`` are
    timezone-aware.
    """

    files: tuple[MetalinkFile, ...]
    generator: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    origin: str | None = None
    dynamic: bool = False


# -- safe XML: a small, bounded element tree --------------------------------------------


_NO_ATTRS: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class _Element:
    """One stored element; lists are made only when needed, as most elements are leaves."""

    namespace: str
    tag: str
    attrs: Mapping[str, str]
    children: list[_Element] | None = None
    chunks: list[str] | None = None

    @property
    def elements(self) -> Sequence[_Element]:
        return self.children or ()

    @property
    def text(self) -> str:
        return "".join(self.chunks).strip() if self.chunks else ""


class _TreeBuilder:
    """expat callbacks that build an :class:`_Element` tree within the limits.

    Extension elements (other namespaces) below the root are counted and
    skipped whole rather than stored: nothing reads them, and a flood of them
    must not cost memory.
    """

    def __init__(self) -> None:
        self.root: _Element | None = None
        self._open: list[_Element] = []
        self._skipping = 0  # depth inside an extension element
        self._count = 0
        self._names: dict[str, tuple[str, str]] = {}

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self._count += 1
        if self._count > MAX_ELEMENTS:
            raise MetalinkError(f"more than {MAX_ELEMENTS} XML elements")
        if len(self._open) + self._skipping >= MAX_DEPTH:
            raise MetalinkError(f"XML elements nested deeper than {MAX_DEPTH}")
        split = self._names.get(name)
        if split is None:
            namespace, _, tag = name.rpartition(" ")
            split = self._names[name] = (namespace, tag)
        if self._skipping or (self._open and split[0] not in _NAMESPACES):
            self._skipping += 1
            return
        element = _Element(split[0], split[1], attrs or _NO_ATTRS)
        if self._open:
            parent = self._open[-1]
            if parent.children is None:
                parent.children = []
            parent.children.append(element)
        else:
            self.root = element
        self._open.append(element)

    def end(self, name: str) -> None:
        if self._skipping:
            self._skipping -= 1
        else:
            self._open.pop()

    def data(self, text: str) -> None:
        if self._open and not self._skipping:
            element = self._open[-1]
            if element.chunks is None:
                element.chunks = []
            element.chunks.append(text)


def _refuse_dtd(*_: object) -> None:
    raise MetalinkError("DOCTYPE, entity and notation declarations are not allowed")


def _refuse_external_entity(*_: object) -> int:
    raise MetalinkError("external entities are not allowed")


def _parse_xml(data: bytes) -> _Element:
    builder = _TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.UnparsedEntityDeclHandler = _refuse_dtd
    parser.NotationDeclHandler = _refuse_dtd
    parser.ExternalEntityRefHandler = _refuse_external_entity
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except OpenDistroError:
        raise
    except expat.ExpatError as exc:
        raise MetalinkError(f"not well-formed XML: {exc}") from None
    except (ValueError, LookupError) as exc:  # e.g. an encoding expat cannot read
        raise MetalinkError(f"unreadable XML: {exc}") from None
    if builder.root is None:
        raise MetalinkError("no XML element found")
    return builder.root


# -- reading values -----------------------------------------------------------------------


def _children(element: _Element, namespace: str) -> dict[str, list[_Element]]:
    """Child elements in ``namespace`` by tag; others are extensions we skip."""
    groups: dict[str, list[_Element]] = {}
    for child in element.elements:
        if child.namespace == namespace:
            groups.setdefault(child.tag, []).append(child)
    return groups


def _one(groups: dict[str, list[_Element]], tag: str, where: str) -> _Element | None:
    found = groups.get(tag, [])
    if len(found) > 1:
        raise MetalinkError(f"{where}: more than one <{tag}>")
    return found[0] if found else None


def _one_text(groups: dict[str, list[_Element]], tag: str, where: str) -> str | None:
    element = _one(groups, tag, where)
    if element is None:
        return None
    return element.text or None


def _integer(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text) or len(text) > 19:
        raise MetalinkError(f"{what} is not a whole number: {text[:40]!r}")
    return int(text)


def _priority(raw: str | None, what: str) -> int:
    if raw is None:
        return LOWEST_PRIORITY
    value = _integer(raw.strip(), f"{what} priority")
    if not 1 <= value <= LOWEST_PRIORITY:
        raise MetalinkError(f"{what} priority {value} is outside 1..{LOWEST_PRIORITY}")
    return value


def _location(raw: str | None) -> str | None:
    """A mirror's country (ISO 3166-1 alpha-2 in RFC 5854), as written; None if absent."""
    return (raw or "").strip() or None


def _hash_type(raw: str | None) -> str:
    """Lower-case IANA spelling; Metalink 3 and sloppy writers say ``sha256``."""
    name = (raw or "").strip().lower()
    if re.fullmatch(r"sha[0-9]+", name):
        name = f"sha-{name[3:]}"
    return name


def _hex_digest(text: str, algorithm: str, what: str) -> bytes:
    if not _HEX.fullmatch(text) or len(text) != 2 * HASH_SIZES[algorithm]:
        raise MetalinkError(f"{what}: not a {algorithm} digest in hex: {text[:140]!r}")
    return bytes.fromhex(text)


def _source_url(text: str, what: str) -> str | None:
    """``text`` if it is a usable http(s) URL, None for a skipped scheme, else refuse."""
    url = text.strip()
    if not url:
        raise MetalinkError(f"{what}: empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise MetalinkError(f"{what}: URL longer than {MAX_URL_LENGTH} characters")
    if any(char.isspace() or ord(char) < 0x20 or char == "\x7f" for char in url):
        raise MetalinkError(f"{what}: URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading the port is what checks it
    except ValueError as exc:
        raise MetalinkError(f"{what}: malformed URL {url[:200]!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in _SKIPPED_SCHEMES:
        return None
    if scheme not in _FETCHED_SCHEMES:
        raise MetalinkError(f"{what}: URL scheme {scheme!r} is not allowed: {url[:200]!r}")
    if not parts.hostname:
        raise MetalinkError(f"{what}: URL names no host: {url[:200]!r}")
    return url


def _file_path(name: str | None, what: str) -> tuple[str, ...]:
    if not name:
        raise MetalinkError(f"{what}: missing file name")
    parts = name.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise MetalinkError(f"{what}: path deeper than {MAX_PATH_DEPTH}")
    return validate_path(parts)


def _size(text: str | None, what: str) -> int | None:
    return None if text is None else _integer(text, f"{what}: size")


def _rfc3339(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MetalinkError(f"{what} is not an RFC 3339 date: {text[:60]!r}") from None
    if moment.tzinfo is None:
        raise MetalinkError(f"{what} has no time zone: {text[:60]!r}")
    return moment


def _rfc822(text: str | None) -> datetime | None:
    """Metalink 3 dates; many generators wrote odd ones, and they are only informative."""
    if not text:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # e.g. a 20-digit year
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _whole_hashes(pairs: Iterable[tuple[str | None, str]], where: str) -> tuple[Digest, ...]:
    found: dict[str, bytes] = {}
    for raw_type, text in pairs:
        algorithm = _hash_type(raw_type)
        if not algorithm:
            raise MetalinkError(f"{where}: <hash> without a type")
        if algorithm not in HASH_SIZES:
            continue
        value = _hex_digest(text, algorithm, f"{where}: {algorithm} hash")
        if found.setdefault(algorithm, value) != value:
            raise MetalinkError(f"{where}: two different {algorithm} hashes")
    return tuple(Digest(algorithm, value) for algorithm, value in found.items())


def _pieces(
    raw_type: str | None, raw_length: str | None, texts: Sequence[str], size: int | None, where: str
) -> Pieces | None:
    algorithm = _hash_type(raw_type)
    if not algorithm or raw_length is None:
        raise MetalinkError(f"{where}: <pieces> needs a type and a length")
    length = _integer(raw_length.strip(), f"{where}: piece length")
    if not 0 < length <= MAX_PIECE_LENGTH:
        raise MetalinkError(f"{where}: piece length {length} outside 1..{MAX_PIECE_LENGTH}")
    if algorithm not in HASH_SIZES:
        return None
    hashes = tuple(_hex_digest(text, algorithm, f"{where}: piece hash") for text in texts)
    if size is not None and len(hashes) != -(-size // length):
        raise MetalinkError(
            f"{where}: {len(hashes)} piece hashes for {size} bytes in {length}-byte pieces"
        )
    return Pieces(algorithm, length, hashes)


def _sources(
    urls: Iterable[tuple[str, int, str | None]],
    metaurls: Iterable[tuple[str, str, int, str | None]],
    where: str,
) -> tuple[tuple[MirrorUrl, ...], tuple[MetaUrl, ...], tuple[str, ...]]:
    """Sort usable sources by priority and set aside the ones we skip."""
    mirrors: list[MirrorUrl] = []
    metas: list[MetaUrl] = []
    skipped: list[str] = []
    for text, priority, location in urls:
        url = _source_url(text, f"{where}: url")
        if url is None:
            skipped.append(text.strip())
        else:
            mirrors.append(MirrorUrl(url, priority, location))
    for text, mediatype, priority, name in metaurls:
        url = _source_url(text, f"{where}: metaurl")
        if url is None:
            skipped.append(text.strip())
        else:
            metas.append(MetaUrl(url, mediatype, priority, name))
    if not (mirrors or metas or skipped):
        raise MetalinkError(f"{where}: no url or metaurl to get the file from")
    mirrors.sort(key=lambda source: source.priority)
    metas.sort(key=lambda source: source.priority)
    return tuple(mirrors), tuple(metas), tuple(skipped)


def _check_files(files: Sequence[MetalinkFile]) -> None:
    """At least one file; no name twice; no name that is also another's folder."""
    if not files:
        raise MetalinkError("the document describes no files")
    if len(files) > MAX_FILES:
        raise MetalinkError(f"more than {MAX_FILES} files")
    names: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    for entry in files:
        if entry.path in names:
            raise MetalinkError(f"file {entry.name!r} appears twice")
        names.add(entry.path)
        folders.update(entry.path[:depth] for depth in range(1, len(entry.path)))
    clash = names & folders
    if clash:
        raise MetalinkError(f"{'/'.join(min(clash))!r} is both a file and a folder")


# -- Metalink 4 ---------------------------------------------------------------------------


def _read_file_v4(element: _Element) -> MetalinkFile:
    path = _file_path(element.attrs.get("name"), "<file>")
    where = f"file {'/'.join(path)!r}"
    groups = _children(element, METALINK4_NAMESPACE)
    size = _size(_one_text(groups, "size", where), where)
    pieces = [
        _pieces(
            node.attrs.get("type"),
            node.attrs.get("length"),
            [leaf.text for leaf in _children(node, METALINK4_NAMESPACE).get("hash", [])],
            size,
            where,
        )
        for node in groups.get("pieces", [])
    ]
    signature = None
    sig = _one(groups, "signature", where)
    if sig is not None:
        mediatype = sig.attrs.get("mediatype", "").strip()
        if not mediatype:
            raise MetalinkError(f"{where}: <signature> without a mediatype")
        signature = Signature(mediatype, sig.text)
    metaurls = []
    for node in groups.get("metaurl", []):
        mediatype = node.attrs.get("mediatype", "").strip()
        if not mediatype:
            raise MetalinkError(f"{where}: <metaurl> without a mediatype")
        inner = node.attrs.get("name")
        if inner is not None:
            inner = "/".join(_file_path(inner, f"{where}: metaurl name"))
        metaurls.append((node.text, mediatype, _priority(node.attrs.get("priority"), where), inner))
    urls = [
        (
            node.text,
            _priority(node.attrs.get("priority"), where),
            _location(node.attrs.get("location")),
        )
        for node in groups.get("url", [])
    ]
    mirrors, metas, skipped = _sources(urls, metaurls, where)
    return MetalinkFile(
        path=path,
        size=size,
        identity=_one_text(groups, "identity", where),
        version=_one_text(groups, "version", where),
        description=_one_text(groups, "description", where),
        hashes=_whole_hashes(
            ((node.attrs.get("type"), node.text) for node in groups.get("hash", [])), where
        ),
        pieces=tuple(entry for entry in pieces if entry is not None),
        signature=signature,
        urls=mirrors,
        metaurls=metas,
        skipped_urls=skipped,
    )


def _read_v4(root: _Element) -> Metalink:
    groups = _children(root, METALINK4_NAMESPACE)
    files = tuple(_read_file_v4(element) for element in groups.get("file", []))
    _check_files(files)
    origin_url = None
    dynamic = False
    origin = _one(groups, "origin", "<metalink>")
    if origin is not None:
        origin_url = _source_url(origin.text, "<origin>")
        flag = origin.attrs.get("dynamic", "false").strip().lower()
        if flag not in ("true", "false"):
            raise MetalinkError(f"<origin> dynamic must be true or false, not {flag[:20]!r}")
        dynamic = flag == "true"
    return Metalink(
        files=files,
        generator=_one_text(groups, "generator", "<metalink>"),
        published=_rfc3339(_one_text(groups, "published", "<metalink>"), "<published>"),
        updated=_rfc3339(_one_text(groups, "updated", "<metalink>"), "<updated>"),
        origin=origin_url,
        dynamic=dynamic,
    )


# -- Metalink 3 (the pre-RFC format, still served by some mirrors) -----------------------


def _v3_piece_texts(node: _Element, where: str) -> list[str]:
    """Piece hashes in index order; Metalink 3 numbers each with ``piece``."""
    numbered: dict[int, str] = {}
    for leaf in _children(node, METALINK3_NAMESPACE).get("hash", []):
        index = _integer(leaf.attrs.get("piece", "").strip(), f"{where}: piece index")
        if index in numbered:
            raise MetalinkError(f"{where}: piece {index} hashed twice")
        numbered[index] = leaf.text
    if sorted(numbered) != list(range(len(numbered))):
        raise MetalinkError(f"{where}: piece hashes are not numbered 0..n-1")
    return [numbered[index] for index in range(len(numbered))]


def _v3_priority(raw: str | None, where: str) -> int:
    """Metalink 3 ``preference`` runs 0..100, higher preferred: priority ``101 - preference``."""
    if raw is None:
        return LOWEST_PRIORITY
    preference = _integer(raw.strip(), f"{where}: preference")
    if preference > 100:
        raise MetalinkError(f"{where}: preference {preference} is over 100")
    return 101 - preference


def _read_file_v3(element: _Element) -> MetalinkFile:
    path = _file_path(element.attrs.get("name"), "<file>")
    where = f"file {'/'.join(path)!r}"
    groups = _children(element, METALINK3_NAMESPACE)
    size = _size(_one_text(groups, "size", where), where)
    hashes: tuple[Digest, ...] = ()
    pieces: list[Pieces | None] = []
    signature = None
    verification = _one(groups, "verification", where)
    if verification is not None:
        checks = _children(verification, METALINK3_NAMESPACE)
        hashes = _whole_hashes(
            ((node.attrs.get("type"), node.text) for node in checks.get("hash", [])), where
        )
        for node in checks.get("pieces", []):
            texts = _v3_piece_texts(node, where)
            pieces.append(
                _pieces(node.attrs.get("type"), node.attrs.get("length"), texts, size, where)
            )
        sig = _one(checks, "signature", where)
        kind = sig.attrs.get("type", "").strip().lower() if sig is not None else ""
        if sig is not None and kind:
            signature = Signature(_PGP_SIGNATURE if kind == "pgp" else kind, sig.text)
    urls = []
    metaurls = []
    resources = _one(groups, "resources", where)
    listed = _children(resources, METALINK3_NAMESPACE) if resources is not None else {}
    for node in listed.get("url", []):
        priority = _v3_priority(node.attrs.get("preference"), where)
        if node.attrs.get("type", "").strip().lower() == "bittorrent":
            metaurls.append((node.text, "torrent", priority, None))
        else:
            urls.append((node.text, priority, _location(node.attrs.get("location"))))
    mirrors, metas, skipped = _sources(urls, metaurls, where)
    return MetalinkFile(
        path=path,
        size=size,
        identity=_one_text(groups, "identity", where),
        version=_one_text(groups, "version", where),
        description=_one_text(groups, "description", where),
        hashes=hashes,
        pieces=tuple(entry for entry in pieces if entry is not None),
        signature=signature,
        urls=mirrors,
        metaurls=metas,
        skipped_urls=skipped,
    )


def _read_v3(root: _Element) -> Metalink:
    groups = _children(root, METALINK3_NAMESPACE)
    container = _one(groups, "files", "<metalink>")
    elements = _children(container, METALINK3_NAMESPACE).get("file", []) if container else []
    files = tuple(_read_file_v3(element) for element in elements)
    _check_files(files)
    origin = root.attrs.get("origin")
    origin_url = _source_url(origin, "origin") if origin else None
    return Metalink(
        files=files,
        generator=root.attrs.get("generator", "").strip() or None,
        published=_rfc822(root.attrs.get("pubdate")),
        updated=_rfc822(root.attrs.get("refreshdate")),
        origin=origin_url,
        # "Fetch it again for updates" means nothing without a place to fetch from.
        dynamic=origin_url is not None
        and root.attrs.get("type", "").strip().lower() == "dynamic",
    )


def parse_metalink(data: bytes) -> Metalink:
    """Read a Metalink 4 (or Metalink 3) document; refuse anything unsafe or malformed."""
    data = bytes(data)
    if len(data) > MAX_METALINK_SIZE:
        raise MetalinkError(f"Metalink document larger than {MAX_METALINK_SIZE} bytes")
    root = _parse_xml(data)
    if root.tag == "metalink" and root.namespace == METALINK4_NAMESPACE:
        return _read_v4(root)
    if root.tag == "metalink" and root.namespace == METALINK3_NAMESPACE:
        return _read_v3(root)
    found = f"{{{root.namespace}}}{root.tag}" if root.namespace else root.tag
    raise MetalinkError(f"not a Metalink document: the root element is {found[:120]!r}")


# -- writing ------------------------------------------------------------------------------


def _xml_text(value: str, what: str) -> str:
    if _NOT_XML.search(value):
        raise MetalinkError(f"{what} holds characters XML cannot carry: {value[:80]!r}")
    # A raw CR would come back as LF; keep it as a character reference.
    return escape(value, {"\r": "&#13;"})


def _xml_attr(value: str, what: str) -> str:
    escaped = _xml_text(value, what)
    # Attribute values are whitespace-normalised on reading unless escaped.
    return escaped.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def _timestamp(moment: datetime, what: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise MetalinkError(f"{what} needs a time zone")
    text = moment.isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def _element(tag: str, text: str, attrs: Sequence[tuple[str, str | None]] = ()) -> str:
    rendered = "".join(
        f' {key}="{_xml_attr(value, f"{tag}@{key}")}"' for key, value in attrs if value is not None
    )
    return f"<{tag}{rendered}>{_xml_text(text, f'<{tag}>')}</{tag}>"


def _render_file(entry: MetalinkFile) -> list[str]:
    lines = [f'  <file name="{_xml_attr(entry.name, "file name")}">']
    for tag, value in (
        ("identity", entry.identity),
        ("version", entry.version),
        ("description", entry.description),
        ("size", None if entry.size is None else str(entry.size)),
    ):
        if value is not None:
            lines.append("    " + _element(tag, value))
    for digest in entry.hashes:
        lines.append("    " + _element("hash", digest.value.hex(), [("type", digest.algorithm)]))
    for pieces in entry.pieces:
        algorithm = _xml_attr(pieces.algorithm, "pieces type")
        lines.append(f'    <pieces type="{algorithm}" length="{pieces.length}">')
        lines.extend(f"      <hash>{value.hex()}</hash>" for value in pieces.hashes)
        lines.append("    </pieces>")
    if entry.signature is not None:
        mediatype = [("mediatype", entry.signature.mediatype)]
        lines.append("    " + _element("signature", entry.signature.text, mediatype))
    for mirror in entry.urls:
        priority = None if mirror.priority == LOWEST_PRIORITY else str(mirror.priority)
        attrs = [("location", mirror.location), ("priority", priority)]
        lines.append("    " + _element("url", mirror.url, attrs))
    for meta in entry.metaurls:
        priority = None if meta.priority == LOWEST_PRIORITY else str(meta.priority)
        attrs = [("mediatype", meta.mediatype), ("priority", priority), ("name", meta.name)]
        lines.append("    " + _element("metaurl", meta.url, attrs))
    lines.append("  </file>")
    return lines


def render_metalink(metalink: Metalink) -> bytes:
    """Metalink 4 XML (UTF-8) for ``metalink``; :func:`parse_metalink` reads it back equal.

    Only usable sources are written: ``skipped_urls`` are left out.
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<metalink xmlns="{METALINK4_NAMESPACE}">']
    if metalink.generator is not None:
        lines.append("  " + _element("generator", metalink.generator))
    if metalink.origin is not None:
        dynamic = "true" if metalink.dynamic else "false"
        lines.append("  " + _element("origin", metalink.origin, [("dynamic", dynamic)]))
    for tag, moment in (("published", metalink.published), ("updated", metalink.updated)):
        if moment is not None:
            lines.append("  " + _element(tag, _timestamp(moment, f"<{tag}>")))
    for entry in metalink.files:
        lines.extend(_render_file(entry))
    lines.append("</metalink>")
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- describing a release -----------------------------------------------------------------

#: A mirror for :func:`build_metalink`: a base URL (BEP 19 web seed rules), or
#: ``(base URL, location, priority)`` where either of the last two may be None.
MirrorSpec: TypeAlias = str | tuple[str, str | None, int | None]


def _checked_url(url: str, what: str) -> str:
    """A caller-supplied URL; a bad one is a bad setting, not a bad document."""
    try:
        checked = _source_url(url, what)
    except MetalinkError as exc:
        raise ConfigError(str(exc)) from None
    if checked is None:
        raise ConfigError(f"{what}: only http and https URLs can be listed: {url[:200]!r}")
    return checked


def _mirror_specs(mirrors: Sequence[MirrorSpec]) -> list[tuple[str, int, str | None]]:
    """Normalise to ``(base, priority, location)``; plain URLs rank in the order given."""
    if isinstance(mirrors, str):
        raise ConfigError("mirrors must be a sequence of URLs, not one string")
    result = []
    for position, spec in enumerate(mirrors, start=1):
        if isinstance(spec, str):
            base, location, priority = spec, None, position
        else:
            base, location, given = spec
            priority = LOWEST_PRIORITY if given is None else given
        if not 1 <= priority <= LOWEST_PRIORITY:
            raise ConfigError(f"mirror priority {priority} is outside 1..{LOWEST_PRIORITY}")
        if location is not None and not location.strip():
            raise ConfigError("a mirror location must not be empty")
        result.append((_checked_url(base, "mirror"), priority, location))
    return result


def _read_exactly(
    handle: BufferedReader, buffer: bytearray, wanted: int, source: Path
) -> memoryview:
    view = memoryview(buffer)[:wanted]
    got = 0
    while got < wanted:
        count = handle.readinto(view[got:])
        if not count:
            raise StorageError(f"{source} shrank while it was being hashed")
        got += count
    return view


def _hash_file(metainfo: Metainfo, entry: FileEntry, source: Path) -> bytes:
    """SHA-256 of the file, checking on the way that it is the data the torrent describes.

    A Metalink file is trusted for its hashes, so publishing one for data that
    differs from the torrent would poison every download. The same pass checks
    the v1 piece hashes (single-file torrents, where pieces cover only this
    file) and the v2 ``pieces root``; a v1 multi-file torrent's pieces span
    several files, so there only the size is checked.
    """
    piece_length = metainfo.piece_length
    check_v1 = metainfo.has_v1 and not metainfo.is_multi_file
    layer: list[bytes] = []
    whole = hashlib.sha256()
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StorageError(f"cannot read {source}: {exc}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size != entry.length:
            raise IntegrityError(f"{source} is {size} bytes; the torrent says {entry.length}")
        buffer = bytearray(min(piece_length, entry.length))
        remaining = entry.length
        index = 0
        while remaining:
            chunk = _read_exactly(handle, buffer, min(piece_length, remaining), source)
            whole.update(chunk)
            if check_v1 and hashlib.sha1(chunk).digest() != metainfo.piece_hash_v1(index):
                raise IntegrityError(f"{source}: piece {index} does not match the torrent")
            if entry.pieces_root is not None:
                if entry.length <= piece_length:
                    layer.append(merkle.single_piece_root(chunk))
                else:
                    layer.append(merkle.piece_hash(chunk, piece_length))
            remaining -= len(chunk)
            index += 1
    if entry.pieces_root is not None:
        root = layer[0] if len(layer) == 1 else merkle.root_from_piece_layer(layer, piece_length)
        if root != entry.pieces_root:
            raise IntegrityError(f"{source} does not match the torrent's v2 hashes")
    return whole.digest()


def build_metalink(
    metainfo: Metainfo,
    data_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[MirrorSpec] = (),
    torrent_url: str | None = None,
    published: datetime | None = None,
) -> Metalink:
    """Describe the release ``metainfo`` whose data sits in ``data_dir``.

    ``data_dir`` is the folder that holds the release under the torrent's name:
    ``data_dir/NAME`` is the file of a single-file torrent or the folder of a
    multi-file one (the folder ``opendistro seed --data`` takes). Every data
    file is read once for its SHA-256 and checked against the torrent on the
    way. Mirror URLs follow the
    BEP 19 web seed rules, so the ``--webseed`` URLs of a torrent serve here
    unchanged: for a multi-file release a base URL is a folder holding the
    release folder. File names carry the release folder too, so a Metalink
    client lays the files out as a BitTorrent client would.

    Piece hashes (``<pieces type="sha-1">``) are listed only for a single-file
    v1 or hybrid torrent: that is the only case where the torrent's pieces
    cover exactly one file. In a multi-file v1 torrent they straddle files, in
    a hybrid one the last piece of each file includes padding, and v2 piece
    hashes are merkle roots, not hashes of the piece bytes.

    ``torrent_url`` adds a ``<metaurl mediatype="torrent">`` at priority 1: the
    swarm is the preferred source. ``published`` must carry a time zone; None
    leaves the date out, so the output depends on the data and arguments only.
    """
    sources = _mirror_specs(mirrors)
    if torrent_url is not None:
        torrent_url = _checked_url(torrent_url, "torrent URL")
    if not sources and torrent_url is None:
        raise ConfigError("a Metalink file needs at least one mirror or a torrent URL")
    if published is not None and published.utcoffset() is None:
        raise ConfigError("the publication date needs a time zone")
    root = Path(data_dir)
    files = []
    for entry in metainfo.data_files():
        path = (metainfo.name, *entry.path) if metainfo.is_multi_file else entry.path
        digest = _hash_file(metainfo, entry, root.joinpath(*path))
        pieces: tuple[Pieces, ...] = ()
        if metainfo.has_v1 and not metainfo.is_multi_file:
            hashes = tuple(metainfo.piece_hash_v1(index) for index in range(metainfo.num_pieces))
            pieces = (Pieces("sha-1", metainfo.piece_length, hashes),)
        urls = sorted(
            (
                MirrorUrl(file_url(metainfo, base, entry), priority, location)
                for base, priority, location in sources
            ),
            key=lambda mirror: mirror.priority,
        )
        metaurls: tuple[MetaUrl, ...] = ()
        if torrent_url is not None:
            inner = "/".join(path) if metainfo.is_multi_file else None
            metaurls = (MetaUrl(torrent_url, "torrent", 1, inner),)
        files.append(
            MetalinkFile(
                path=path,
                size=entry.length,
                identity=metainfo.name,
                description=metainfo.comment or None,
                hashes=(Digest("sha-256", digest),),
                pieces=pieces,
                urls=tuple(urls),
                metaurls=metaurls,
            )
        )
    return Metalink(files=tuple(files), generator=_GENERATOR, published=published)


def write_metalink(
    metainfo: Metainfo,
    data_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[MirrorSpec] = (),
    torrent_url: str | None = None,
    published: datetime | None = None,
) -> bytes:
    """Metalink 4 XML for a release: :func:`build_metalink`, then :func:`render_metalink`."""
    return render_metalink(
        build_metalink(
            metainfo, data_dir, mirrors=mirrors, torrent_url=torrent_url, published=published
        )
    )
