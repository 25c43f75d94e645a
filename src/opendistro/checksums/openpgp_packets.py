"""OpenPGP packets: framing, v4 public keys and v4 signatures (RFC 4880, RFC 9580).

Only what verifying a release signature needs is decoded; everything is
bounds-checked through :class:`_Reader` so that truncated or hostile input is a
:class:`SignatureError`, never an ``IndexError``.

Framing: both the old (RFC 1991) and the new header formats are read. Partial
body lengths exist only for streamed data packets, which never occur in keys
or signatures, so they are refused; an old-format indeterminate length runs
to the end of the input as the RFC says.

Keys: v4 keys of every algorithm are framed and fingerprinted (a keyring with
an ECDH encryption subkey must still load) but only RSA (1, 3) of at least 2048
bits, legacy EdDSA over Ed25519 (22) and RFC 9580 Ed25519 (27) carry material
we can verify with.
v3, v5 and v6 keys are skipped: their fingerprints are computed differently and
no distribution signs with them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import SignatureError

__all__ = [
    "ALG_ED25519",
    "ALG_EDDSA_LEGACY",
    "ALG_RSA",
    "ALG_RSA_SIGN_ONLY",
    "TAG_PUBLIC_KEY",
    "TAG_PUBLIC_SUBKEY",
    "TAG_SIGNATURE",
    "TAG_USER_ATTRIBUTE",
    "TAG_USER_ID",
    "Packet",
    "PublicKey",
    "Signature",
    "parse_packets",
    "parse_public_key",
    "parse_signature",
]

TAG_SIGNATURE = 2
TAG_PUBLIC_KEY = 6
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
TAG_USER_ATTRIBUTE = 17

ALG_RSA = 1
ALG_RSA_SIGN_ONLY = 3
ALG_EDDSA_LEGACY = 22
ALG_ED25519 = 27

# 1.3.6.1.4.1.11591.15.1, the curve OID of legacy EdDSA over Ed25519.
_ED25519_LEGACY_OID = bytes.fromhex("2b06010401da470f01")
_MAX_MPI_BITS = 16384
_MIN_RSA_BITS = 2048
_MAX_PACKET_SIZE = 16 * 1024 * 1024

# Signature subpacket types.
SUB_CREATION_TIME = 2
SUB_EXPIRATION_TIME = 3
SUB_KEY_EXPIRATION_TIME = 9
SUB_ISSUER_KEY_ID = 16
SUB_KEY_FLAGS = 27
SUB_EMBEDDED_SIGNATURE = 32
SUB_ISSUER_FINGERPRINT = 33

# Subpackets whose meaning we either use or that cannot change what a data or
# self-signature asserts; a *critical* subpacket outside this set makes the
# signature invalid (RFC 9580 section 5.2.3.7). Notations (20) and regular
# expressions (6) are deliberately absent: a critical one asks for a check we
# do not perform.
_UNDERSTOOD_SUBPACKETS = frozenset(
    {2, 3, 4, 5, 7, 9, 11, 12, 16, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 39}
)


class _Reader:
    """A cursor over bytes whose every read is bounds-checked."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._offset = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def take(self, count: int) -> bytes:
        if count < 0 or count > self.remaining:
            raise SignatureError(f"bad format: truncated {self._what}")
        chunk = self._data[self._offset : self._offset + count]
        self._offset += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def mpi(self) -> bytes:
        """A multiprecision integer, returned as its big-endian magnitude bytes."""
        bits = self.uint(2)
        if bits > _MAX_MPI_BITS:
            raise SignatureError(f"bad format: oversized number in {self._what}")
        return self.take((bits + 7) // 8)

    def rest(self) -> bytes:
        return self.take(self.remaining)


@dataclass(frozen=True, slots=True)
class Packet:
    tag: int
    body: bytes


def parse_packets(data: bytes, max_packets: int) -> list[Packet]:
    """Split a binary packet sequence into packets, refusing more than ``max_packets``."""
    reader = _Reader(bytes(data), "packet")
    packets: list[Packet] = []
    while reader.remaining:
        if len(packets) >= max_packets:
            raise SignatureError(f"bad format: more than {max_packets} packets")
        header = reader.byte()
        if not header & 0x80:
            raise SignatureError("bad format: not an OpenPGP packet")
        if header & 0x40:
            tag = header & 0x3F
            first = reader.byte()
            if first < 192:
                length = first
            elif first < 224:
                length = ((first - 192) << 8) + reader.byte() + 192
            elif first == 255:
                length = reader.uint(4)
            else:
                raise SignatureError("bad format: partial body lengths are not allowed here")
        else:
            tag = (header >> 2) & 0x0F
            length_type = header & 0x03
            length = reader.remaining if length_type == 3 else reader.uint((1, 2, 4)[length_type])
        if length > _MAX_PACKET_SIZE:
            raise SignatureError("bad format: packet too large")
        packets.append(Packet(tag, reader.take(length)))
    return packets


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A v4 public key or subkey packet.

    ``material`` is ``(n, e)`` for RSA, ``(point,)`` (32 bytes) for Ed25519,
    and empty for algorithms we cannot verify with.
    """

    body: bytes
    created: int
    algorithm: int
    material: tuple[bytes, ...]
    fingerprint: bytes

    @property
    def key_id(self) -> bytes:
        return self.fingerprint[-8:]

    @property
    def can_verify(self) -> bool:
        return bool(self.material)

    @property
    def hashed_form(self) -> bytes:
        """How the key enters a self-signature or binding signature hash."""
        return b"\x99" + len(self.body).to_bytes(2, "big") + self.body


def parse_public_key(body: bytes) -> PublicKey | None:
    """Decode a key packet body; None for key versions other than 4."""
    reader = _Reader(body, "public key")
    version = reader.byte()
    if version != 4:
        return None
    if len(body) > 0xFFFF:
        raise SignatureError("bad format: public key packet too large")
    created = reader.uint(4)
    algorithm = reader.byte()
    material: tuple[bytes, ...] = ()
    if algorithm in (ALG_RSA, ALG_RSA_SIGN_ONLY):
        modulus = reader.mpi().lstrip(b"\x00")
        exponent = reader.mpi().lstrip(b"\x00")
        if not modulus or not exponent:
            raise SignatureError("bad format: empty RSA key")
        # Shorter RSA keys are factorable; such a key is framed but never trusted.
        if int.from_bytes(modulus, "big").bit_length() >= _MIN_RSA_BITS:
            material = (modulus, exponent)
    elif algorithm == ALG_EDDSA_LEGACY:
        oid = reader.take(reader.byte())
        point = reader.mpi()
        # The point is the 0x40-prefixed native encoding.
        if oid == _ED25519_LEGACY_OID:
            if len(point) != 33 or point[0] != 0x40:
                raise SignatureError("bad format: malformed Ed25519 public key")
            material = (point[1:],)
    elif algorithm == ALG_ED25519:
        material = (reader.take(32),)
    fingerprint = hashlib.sha1(
        b"\x99" + len(body).to_bytes(2, "big") + body, usedforsecurity=False
    ).digest()
    return PublicKey(body, created, algorithm, material, fingerprint)


@dataclass(frozen=True, slots=True)
class Subpacket:
    kind: int
    critical: bool
    value: bytes


def _parse_subpackets(area: bytes) -> tuple[Subpacket, ...]:
    reader = _Reader(area, "signature subpacket")
    found: list[Subpacket] = []
    while reader.remaining:
        first = reader.byte()
        if first < 192:
            length = first
        elif first < 255:
            length = ((first - 192) << 8) + reader.byte() + 192
        else:
            length = reader.uint(4)
        if length == 0:
            raise SignatureError("bad format: empty signature subpacket")
        content = reader.take(length)
        found.append(Subpacket(content[0] & 0x7F, bool(content[0] & 0x80), content[1:]))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Signature:
    """A v4 signature packet, with the subpackets we act on pulled out."""

    sig_type: int
    algorithm: int
    hash_algorithm: int
    hashed_part: bytes
    """Version through hashed subpackets: the bytes appended to the hash."""
    left16: bytes
    values: tuple[bytes, ...]
    """``(s,)`` for RSA; ``(r, s)`` for EdDSA, each as it was encoded."""
    created: int | None
    expires_after: int | None
    key_expires_after: int | None
    key_flags: int | None
    issuer_key_ids: tuple[bytes, ...]
    issuer_fingerprints: tuple[bytes, ...]
    embedded: tuple[Signature, ...]
    unknown_critical: tuple[int, ...]

    @property
    def trailer(self) -> bytes:
        """The v4 hash trailer: 0x04 0xFF and the hashed part's length."""
        return b"\x04\xff" + len(self.hashed_part).to_bytes(4, "big")


def _uint32(value: bytes) -> int:
    if len(value) != 4:
        raise SignatureError("bad format: malformed time subpacket")
    return int.from_bytes(value, "big")


def parse_signature(body: bytes, depth: int = 0) -> Signature | None:
    """Decode a signature packet body; None for versions other than 4."""
    reader = _Reader(body, "signature")
    version = reader.byte()
    if version != 4:
        return None
    sig_type = reader.byte()
    algorithm = reader.byte()
    hash_algorithm = reader.byte()
    hashed_area = reader.take(reader.uint(2))
    unhashed_area = reader.take(reader.uint(2))
    left16 = reader.take(2)
    values: tuple[bytes, ...]
    if algorithm in (ALG_RSA, ALG_RSA_SIGN_ONLY):
        values = (reader.mpi(),)
    elif algorithm == ALG_EDDSA_LEGACY:
        values = (reader.mpi(), reader.mpi())
    elif algorithm == ALG_ED25519:
        raw = reader.take(64)
        values = (raw[:32], raw[32:])
    else:
        values = ()
        reader.rest()
    if reader.remaining:
        raise SignatureError("bad format: trailing bytes in signature packet")
    hashed = _parse_subpackets(hashed_area)
    unhashed = _parse_subpackets(unhashed_area)

    def last(kind: int, area: tuple[Subpacket, ...]) -> bytes | None:
        # The last instance wins for most subpackets; both tools write one.
        matches = [sub.value for sub in area if sub.kind == kind]
        return matches[-1] if matches else None

    created_raw = last(SUB_CREATION_TIME, hashed)
    expires_raw = last(SUB_EXPIRATION_TIME, hashed)
    key_expires_raw = last(SUB_KEY_EXPIRATION_TIME, hashed)
    flags_raw = last(SUB_KEY_FLAGS, hashed)
    everywhere = hashed + unhashed
    key_ids = tuple(sub.value for sub in everywhere if sub.kind == SUB_ISSUER_KEY_ID)
    if any(len(key_id) != 8 for key_id in key_ids):
        raise SignatureError("bad format: malformed issuer key id")
    fingerprints = tuple(
        sub.value[1:]
        for sub in everywhere
        if sub.kind == SUB_ISSUER_FINGERPRINT and sub.value[:1] == b"\x04"
    )
    if any(len(fingerprint) != 20 for fingerprint in fingerprints):
        raise SignatureError("bad format: malformed issuer fingerprint")
    embedded: tuple[Signature, ...] = ()
    if depth == 0:
        parsed = (
            parse_signature(sub.value, depth + 1)
            for sub in everywhere
            if sub.kind == SUB_EMBEDDED_SIGNATURE
        )
        embedded = tuple(sig for sig in parsed if sig is not None)
    return Signature(
        sig_type=sig_type,
        algorithm=algorithm,
        hash_algorithm=hash_algorithm,
        hashed_part=body[: 6 + len(hashed_area)],
        left16=left16,
        values=values,
        created=None if created_raw is None else _uint32(created_raw),
        expires_after=None if expires_raw is None else _uint32(expires_raw),
        key_expires_after=None if key_expires_raw is None else _uint32(key_expires_raw),
        key_flags=flags_raw[0] if flags_raw else None,
        issuer_key_ids=key_ids,
        issuer_fingerprints=fingerprints,
        embedded=embedded,
        unknown_critical=tuple(
            sub.kind for sub in hashed if sub.critical and sub.kind not in _UNDERSTOOD_SUBPACKETS
        ),
    )
