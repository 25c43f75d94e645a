"""Checksum lists as distributions publish them (``SHA256SUMS``, ``SHA512SUMS``, ...).

Two line formats exist, and both may appear in one file:

* GNU coreutils: ``HEX  NAME`` (text mode) or ``HEX *NAME`` (binary mode; the
  marker means nothing on POSIX systems and is only recorded).
* BSD "tagged" lines, as written by OpenBSD, Fedora's ``CHECKSUM`` files and
  ``sha256sum --tag``: ``SHA256 (NAME) = HEX``.

coreutils escapes a name that contains a backslash, a newline or a carriage
return: the line then starts with a backslash and the name spells those
characters ``\\\\``, ``\\n`` and ``\\r``. Any other escape makes the line
malformed, as it does for ``sha256sum -c``.

The parser is strict where ``sha256sum -c`` is lenient, because a checksum
list is a security boundary: every line must be one of the exact forms the
tools write (a trailing ``\\r`` of a CRLF line ending and upper-case hex are
tolerated), and anything else is an :class:`IntegrityError` naming the line.
Blank lines and lines starting with ``#`` (Fedora puts file sizes there) are
skipped. MD5 lists are refused outright: an MD5 match proves nothing against
someone who can choose the file.

The algorithm of an untagged line is known from the file's name when the
caller has it (:func:`algorithm_from_filename`), else from the digest length;
all untagged lines of one file must agree, as one run of a tool writes them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, UnsafePathError

__all__ = [
    "ALGORITHMS",
    "MAX_CHECKSUM_FILE_SIZE",
    "ChecksumEntry",
    "ChecksumList",
    "algorithm_from_filename",
    "read_bounded",
    "verify_file",
    "verify_tree",
]

MAX_CHECKSUM_FILE_SIZE = 16 * 1024 * 1024
"""Larger checksum lists are refused: no distribution publishes one this big."""

_CHUNK_SIZE = 1024 * 1024

# Algorithm name -> digest size in bytes. The names are hashlib's.
ALGORITHMS: Mapping[str, int] = {
    "sha1": 20,
    "sha224": 28,
    "sha256": 32,
    "sha384": 48,
    "sha512": 64,
    "blake2b": 64,
}

_BY_DIGEST_SIZE = {20: "sha1", 28: "sha224", 32: "sha256", 48: "sha384", 64: "sha512"}

# What a BSD tag or a file name says -> our algorithm name.
_TAGS = {
    "SHA1": "sha1",
    "SHA224": "sha224",
    "SHA256": "sha256",
    "SHA384": "sha384",
    "SHA512": "sha512",
    "BLAKE2B": "blake2b",
    "BLAKE2B-512": "blake2b",
    "B2": "blake2b",
}
_REFUSED_TAGS = frozenset({"MD5", "MD4", "MD2"})

_HEX = re.compile(rb"[0-9A-Fa-f]+")
_GNU_LINE = re.compile(rb"([0-9A-Fa-f]+) ([ *])(.+)", re.DOTALL)
_BSD_LINE = re.compile(rb"([A-Za-z0-9-]+) \((.+)\) = ([0-9A-Fa-f]+)", re.DOTALL)
_FILENAME_TAG = re.compile(r"^(SHA1|SHA224|SHA256|SHA384|SHA512|B2|BLAKE2B|MD5)(?:SUMS?)?\b")


def algorithm_from_filename(name: str) -> str | None:
    """The algorithm a checksum file's name announces (``SHA256SUMS`` -> ``"sha256"``).

    Knows the names distributions use: ``SHA256SUMS``, ``SHA512SUMS.txt``,
    OpenBSD's ``SHA256``, ``B2SUMS``. Returns None when the name says nothing.
    """
    match = _FILENAME_TAG.match(os.path.basename(name).upper())
    if match is None:
        return None
    tag = match.group(1)
    if tag in _REFUSED_TAGS:
        raise IntegrityError(f"{name}: {tag} checksums are not accepted")
    return _TAGS[tag]


def _tag_algorithm(tag: str, line_number: int) -> str:
    upper = tag.upper()
    if upper in _REFUSED_TAGS:
        raise IntegrityError(f"line {line_number}: {tag} checksums are not accepted")
    algorithm = _TAGS.get(upper)
    if algorithm is None or upper == "B2":
        raise IntegrityError(f"line {line_number}: unknown checksum algorithm {tag!r}")
    return algorithm


def _unescape(raw: bytes, line_number: int) -> bytes:
    """Undo coreutils' escaping of ``\\``, newline and carriage return."""
    out = bytearray()
    index = 0
    while index < len(raw):
        byte = raw[index]
        if byte != 0x5C:  # backslash
            out.append(byte)
            index += 1
            continue
        following = raw[index + 1 : index + 2]
        if following == b"\\":
            out.append(0x5C)
        elif following == b"n":
            out.append(0x0A)
        elif following == b"r":
            out.append(0x0D)
        else:
            raise IntegrityError(f"line {line_number}: invalid escape in file name")
        index += 2
    return bytes(out)


@dataclass(frozen=True, slots=True)
class ChecksumEntry:
    """One file's expected digest, as one line of a checksum list states it."""

    name: str
    algorithm: str
    digest: bytes
    binary: bool = False
    line: int = 0

    @property
    def hexdigest(self) -> str:
        return self.digest.hex()


class ChecksumList:
    """The entries of one checksum file, looked up by file name.

    A name may carry digests of several algorithms (a BSD-style list can give
    SHA256 and SHA512 lines for the same file); :func:`verify_file` checks all
    of them. Names are decoded as UTF-8 with ``surrogateescape``, like
    :func:`os.fsdecode` on Linux, so any byte string round-trips to the file
    system.
    """

    def __init__(self, entries: Iterable[ChecksumEntry] = ()) -> None:
        self._entries: dict[str, dict[str, ChecksumEntry]] = {}
        for entry in entries:
            self._add(entry)

    def _add(self, entry: ChecksumEntry) -> None:
        if entry.algorithm not in ALGORITHMS:
            raise IntegrityError(f"unknown checksum algorithm {entry.algorithm!r}")
        if len(entry.digest) != ALGORITHMS[entry.algorithm]:
            raise IntegrityError(f"{entry.name!r}: digest has the wrong length")
        by_algorithm = self._entries.setdefault(_strip_dot(entry.name), {})
        known = by_algorithm.get(entry.algorithm)
        if known is not None and known.digest != entry.digest:
            where = f"line {entry.line}: " if entry.line else ""
            raise IntegrityError(
                f"{where}{entry.name!r} is listed twice with different {entry.algorithm} digests"
            )
        if known is None:
            by_algorithm[entry.algorithm] = entry

    @classmethod
    def parse(cls, data: bytes, algorithm: str | None = None) -> ChecksumList:
        """Parse a checksum file; ``algorithm`` (e.g. from the file name) pins every line."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise IntegrityError("a checksum list must be bytes")
        data = bytes(data)
        if len(data) > MAX_CHECKSUM_FILE_SIZE:
            raise IntegrityError(
                f"checksum list of {len(data)} bytes exceeds {MAX_CHECKSUM_FILE_SIZE} bytes"
            )
        if algorithm is not None and algorithm not in ALGORITHMS:
            raise IntegrityError(f"unknown checksum algorithm {algorithm!r}")
        result = cls()
        untagged_algorithm = algorithm
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip(b" \t") or line.startswith(b"#"):
                continue
            entry, tagged = _parse_line(line, number, algorithm, untagged_algorithm)
            if not tagged:
                untagged_algorithm = entry.algorithm
            result._add(entry)
        return result

    @classmethod
    def load(cls, path: str | os.PathLike[str], algorithm: str | None = None) -> ChecksumList:
        """Read and parse a checksum file; the algorithm defaults to what its name says."""
        path = Path(path)
        if algorithm is None:
            algorithm = algorithm_from_filename(path.name)
        return cls.parse(read_bounded(path, MAX_CHECKSUM_FILE_SIZE, "checksum list"), algorithm)

    def lookup(self, name: str) -> tuple[ChecksumEntry, ...]:
        """Every digest listed for ``name``; raise IntegrityError if it is not listed.

        ``./name`` and ``name`` are the same entry, since ``sha256sum ./*``
        writes the former.
        """
        found = self._entries.get(_strip_dot(name))
        if not found:
            raise IntegrityError(f"{name!r} is not listed in the checksum file")
        return tuple(found.values())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.lookup(name)
        except IntegrityError:
            return False
        return True

    def names(self) -> tuple[str, ...]:
        """The listed names in file order (as first written, ``./`` included)."""
        return tuple(next(iter(group.values())).name for group in self._entries.values())

    def entries(self) -> tuple[ChecksumEntry, ...]:
        return tuple(entry for group in self._entries.values() for entry in group.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<ChecksumList of {len(self)} files>"


def _strip_dot(name: str) -> str:
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    return name


def _decode_digest(hex_text: bytes, algorithm: str, line_number: int) -> bytes:
    expected = ALGORITHMS[algorithm] * 2
    if len(hex_text) != expected:
        raise IntegrityError(
            f"line {line_number}: {algorithm} digest must be {expected} hex digits,"
            f" not {len(hex_text)}"
        )
    return bytes.fromhex(hex_text.decode("ascii"))


def _parse_line(
    line: bytes, number: int, pinned: str | None, untagged: str | None
) -> tuple[ChecksumEntry, bool]:
    """One non-blank line -> its entry and whether it was a BSD (tagged) line."""
    escaped = line.startswith(b"\\")
    body = line[1:] if escaped else line
    gnu = _GNU_LINE.fullmatch(body)
    bsd = None if gnu is not None else _BSD_LINE.fullmatch(body)
    if gnu is not None:
        hex_text, marker, raw_name = gnu.groups()
        if untagged is None:
            algorithm = _BY_DIGEST_SIZE.get(len(hex_text) // 2) if len(hex_text) % 2 == 0 else None
            if algorithm is None:
                raise IntegrityError(
                    f"line {number}: a digest of {len(hex_text)} hex digits names no algorithm"
                )
        else:
            algorithm = untagged
        binary = marker == b"*"
    elif bsd is not None:
        tag, raw_name, hex_text = bsd.groups()
        algorithm = _tag_algorithm(tag.decode("ascii"), number)
        if pinned is not None and algorithm != pinned:
            raise IntegrityError(f"line {number}: {tag.decode()} line in a {pinned} list")
        binary = False
    else:
        raise IntegrityError(f"line {number}: not a checksum line")
    digest = _decode_digest(hex_text, algorithm, number)
    name_bytes = _unescape(raw_name, number) if escaped else raw_name
    if b"\x00" in name_bytes:
        raise IntegrityError(f"line {number}: file name contains a NUL byte")
    if not escaped and (b"\n" in name_bytes or b"\r" in name_bytes):
        raise IntegrityError(f"line {number}: unescaped line break in file name")
    name = name_bytes.decode("utf-8", "surrogateescape")
    entry = ChecksumEntry(name=name, algorithm=algorithm, digest=digest, binary=binary, line=number)
    return entry, bsd is not None


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """Read a whole small file, refusing one larger than ``limit`` without reading it all."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise IntegrityError(f"cannot read {what} {os.fspath(path)!r}: {exc.strerror}") from exc
    if len(data) > limit:
        raise IntegrityError(f"{what} {os.fspath(path)!r} is larger than {limit} bytes")
    return data


def _hash_file(path: Path, algorithms: Iterable[str]) -> dict[str, bytes]:
    """Digest a file once for several algorithms, in fixed-size chunks."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK_SIZE):
                for hasher in hashers.values():
                    hasher.update(chunk)
    except OSError as exc:
        raise IntegrityError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc
    return {name: hasher.digest() for name, hasher in hashers.items()}


def verify_file(
    path: str | os.PathLike[str], checksums: ChecksumList, name: str | None = None
) -> tuple[ChecksumEntry, ...]:
    """Check one file against its listed digests; ``name`` defaults to the file's base name.

    Returns the entries that matched; raises IntegrityError if the name is not
    listed or any listed digest differs.
    """
    path = Path(path)
    entries = checksums.lookup(path.name if name is None else name)
    actual = _hash_file(path, {entry.algorithm for entry in entries})
    for entry in entries:
        if actual[entry.algorithm] != entry.digest:
            raise IntegrityError(
                f"{entry.name!r}: {entry.algorithm} mismatch (expected {entry.hexdigest},"
                f" got {actual[entry.algorithm].hex()})"
            )
    return entries


def _relative_parts(name: str) -> tuple[str, ...]:
    """Split a listed name into path components, refusing any that could escape."""
    if not name or "\x00" in name:
        raise UnsafePathError(f"file name {name!r} is not allowed")
    if name.startswith("/"):
        raise UnsafePathError(f"absolute file name {name!r} is not allowed")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if not parts:
        raise UnsafePathError(f"file name {name!r} names no file")
    if ".." in parts:
        raise UnsafePathError(f"file name {name!r} climbs out of the directory")
    return parts


def verify_tree(
    directory: str | os.PathLike[str],
    checksums: ChecksumList,
    names: Iterable[str] | None = None,
) -> tuple[str, ...]:
    """Check listed files under ``directory``; all listed names unless ``names`` is given.

    Every name is checked before any file is read: an absolute name or one with
    a ``..`` component raises UnsafePathError, as does a name that reaches
    outside ``directory`` through a symbolic link. Returns the names checked.
    """
    root = Path(directory).resolve(strict=False)
    if not root.is_dir():
        raise IntegrityError(f"{os.fspath(directory)!r} is not a directory")
    wanted = checksums.names() if names is None else tuple(names)
    planned: list[tuple[str, Path]] = []
    for name in wanted:
        checksums.lookup(name)
        parts = _relative_parts(name)
        candidate = root.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except FileNotFoundError as exc:
            raise IntegrityError(f"{name!r} is listed but missing from {root}") from exc
        except (OSError, RuntimeError) as exc:
            raise IntegrityError(f"cannot resolve {name!r}: {exc}") from exc
        if not resolved.is_relative_to(root):
            raise UnsafePathError(f"{name!r} leads outside {root} through a symbolic link")
        if not resolved.is_file():
            raise IntegrityError(f"{name!r} is not a regular file")
        planned.append((name, resolved))
    for name, resolved in planned:
        verify_file(resolved, checksums, name=name)
    return tuple(name for name, _ in planned)
