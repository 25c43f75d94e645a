"""OpenPGP ASCII armor and the cleartext signature framework (RFC 9580 sections 6.2 and 7).

Armor wraps binary packets in base64 between ``-----BEGIN PGP ...-----`` and
``-----END PGP ...-----`` lines, optionally followed by a CRC-24 line
(``=XXXX``). RFC 9580 made the CRC optional, so a missing one is accepted, but
one that is present must match: it is the only thing that tells a corrupted
download from a tampered one before the signature check does.

A cleartext signed message (Debian's ``InRelease``, Fedora's ``CHECKSUM``
files) carries readable text followed by an armored signature of type 0x01.
What is signed is not the text as it stands but its canonical form: lines
beginning with ``- `` lose that dash escape, trailing spaces and tabs are
removed, lines are joined with CRLF and the line break just before the
signature's armor is not part of the text. :func:`split_cleartext` returns that
signed form (joined with LF) so a caller parses only bytes the signature
covers; trailing whitespace that the sender wrote is *not* authenticated and so
is not handed back.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from ..errors import SignatureError

__all__ = [
    "ARMOR_PUBLIC_KEY",
    "ARMOR_SIGNATURE",
    "Cleartext",
    "crc24",
    "dearmor",
    "is_armored",
    "is_cleartext",
    "split_cleartext",
]

ARMOR_SIGNATURE = "PGP SIGNATURE"
ARMOR_PUBLIC_KEY = "PGP PUBLIC KEY BLOCK"
_CLEARTEXT_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_MAX_BLOCKS = 1024

_HASH_NAMES = {
    "SHA1": 2,
    "SHA224": 11,
    "SHA256": 8,
    "SHA384": 9,
    "SHA512": 10,
}


def _crc24_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()


def crc24(data: bytes) -> int:
    """The CRC-24 of RFC 9580 section 6.1.1 (initial value 0xB704CE, polynomial 0x1864CFB)."""
    crc = 0xB704CE
    table = _CRC24_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ byte]
    return crc


def _lines(data: bytes) -> list[bytes]:
    return [line.rstrip(b" \t\r") for line in data.split(b"\n")]


def _begin_label(line: bytes) -> str | None:
    if line.startswith(b"-----BEGIN ") and line.endswith(b"-----") and len(line) > 16:
        return line[11:-5].decode("ascii", "replace")
    return None


def is_armored(data: bytes) -> bool:
    """Whether ``data`` holds an armor header line (anything may precede it, as in gpg)."""
    return any(_begin_label(line) is not None for line in _lines(bytes(data[: 1 << 20])))


def is_cleartext(data: bytes) -> bool:
    """Whether ``data`` starts with a cleartext signed message header."""
    return bytes(data).lstrip().startswith(_CLEARTEXT_BEGIN)


def _decode_block(lines: list[bytes], start: int, label: str) -> tuple[bytes, int]:
    """Decode the block whose BEGIN line is ``lines[start]``; return data and next index."""
    index = start + 1
    # Armor headers ("Key: value") run to the first blank line.
    while index < len(lines) and lines[index]:
        if b": " not in lines[index]:
            raise SignatureError(f"bad armor: malformed header line in {label}")
        index += 1
    if index >= len(lines):
        raise SignatureError(f"bad armor: {label} has no blank line after its headers")
    index += 1
    body: list[bytes] = []
    checksum: bytes | None = None
    end = f"-----END {label}-----".encode("ascii")
    while True:
        if index >= len(lines):
            raise SignatureError(f"bad armor: {label} is not terminated")
        line = lines[index]
        index += 1
        if line == end:
            break
        if checksum is not None:
            raise SignatureError(f"bad armor: data after the checksum of {label}")
        if line.startswith(b"="):
            checksum = line[1:]
        elif line.startswith(b"-----"):
            raise SignatureError(f"bad armor: unexpected armor line in {label}")
        else:
            body.append(line)
    try:
        data = binascii.a2b_base64(b"".join(body), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"bad armor: {label} is not valid base64") from exc
    if checksum is not None:
        try:
            expected = binascii.a2b_base64(checksum, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"bad armor: malformed checksum in {label}") from exc
        if len(expected) != 3:
            raise SignatureError(f"bad armor: malformed checksum in {label}")
        if int.from_bytes(expected, "big") != crc24(data):
            raise SignatureError(f"bad armor: CRC-24 checksum mismatch in {label}")
    return data, index


def dearmor(data: bytes, label: str) -> bytes:
    """Decode every armored block labelled ``label`` in ``data`` and concatenate them.

    Text around the blocks is ignored, as gpg ignores it; blocks with another
    label are skipped. No block with the label at all is an error.
    """
    lines = _lines(bytes(data))
    decoded: list[bytes] = []
    index = 0
    while index < len(lines):
        found = _begin_label(lines[index])
        if found is None:
            index += 1
            continue
        if found != label:
            raise SignatureError(f"bad armor: expected {label}, found {found}")
        if len(decoded) >= _MAX_BLOCKS:
            raise SignatureError("bad armor: too many armored blocks")
        block, index = _decode_block(lines, index, found)
        decoded.append(block)
    if not decoded:
        raise SignatureError(f"bad armor: no {label} block")
    return b"".join(decoded)


@dataclass(frozen=True, slots=True)
class Cleartext:
    """A split cleartext signed message."""

    signed_text: bytes
    """The canonical text joined with LF: exactly what the signature covers, minus CRs."""
    hash_algorithms: frozenset[int] | None
    """Hash algorithm ids named by ``Hash:`` headers; None when there were none."""
    signature: bytes
    """The binary signature packets from the armored block."""

    @property
    def canonical(self) -> bytes:
        """The bytes that are hashed: the signed text with CRLF line endings."""
        return self.signed_text.replace(b"\n", b"\r\n")


def split_cleartext(data: bytes) -> Cleartext:
    """Split a ``-----BEGIN PGP SIGNED MESSAGE-----`` document into text and signature."""
    raw = bytes(data).lstrip()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in raw.split(b"\n")]
    if not lines or lines[0].rstrip(b" \t") != _CLEARTEXT_BEGIN:
        raise SignatureError("bad format: not a cleartext signed message")
    index = 1
    hashes: set[int] = set()
    saw_hash_header = False
    while index < len(lines) and lines[index].rstrip(b" \t"):
        key, sep, value = lines[index].partition(b": ")
        if not sep or key != b"Hash":
            raise SignatureError("bad format: unexpected cleartext header")
        saw_hash_header = True
        for name in value.decode("ascii", "replace").split(","):
            algorithm = _HASH_NAMES.get(name.strip().upper())
            if algorithm is None:
                raise SignatureError(f"bad format: unsupported Hash header {name.strip()!r}")
            hashes.add(algorithm)
        index += 1
    if index >= len(lines):
        raise SignatureError("bad format: cleartext message has no text")
    index += 1
    text: list[bytes] = []
    signature_begin = f"-----BEGIN {ARMOR_SIGNATURE}-----".encode("ascii")
    while True:
        if index >= len(lines):
            raise SignatureError("bad format: cleartext message has no signature")
        line = lines[index]
        if line.rstrip(b" \t") == signature_begin:
            break
        if line.startswith(b"- "):
            line = line[2:]
        elif line.startswith(b"-"):
            raise SignatureError(f"bad format: line {index + 1} is not dash-escaped")
        text.append(line.rstrip(b" \t"))
        index += 1
    signature = dearmor(b"\n".join(lines[index:]), ARMOR_SIGNATURE)
    return Cleartext(
        signed_text=b"\n".join(text),
        hash_algorithms=frozenset(hashes) if saw_hash_header else None,
        signature=signature,
    )
