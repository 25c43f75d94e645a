"""What a publisher signs, and the envelope that carries it.

A *statement* is a bencoded dictionary in canonical form (sorted keys, no
unknown keys, nothing the strict decoder would not re-encode byte for byte).
The signature covers a fixed domain-separation prefix followed by the
statement bytes exactly as carried, so nothing is ever re-encoded before it is
verified, and a signature made for one kind of statement (a release, a key
rotation, a revocation) can never be replayed as another.

An *envelope* carries the statement bytes, the scheme and the signature; it is
what goes into a .torrent's top-level ``signatures`` list and into a detached
``.sig`` file. See ``spec/signed-releases.md`` for the normative rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from .. import bencode
from ..errors import BencodeError, ConfigError
from .keys import KEY_ID_SIZE, SCHEMES, Scheme, SigningKey, VerifyingKey, check_text
from .reasons import Reason, refuse

__all__ = [
    "MAX_ENVELOPE_SIZE",
    "MAX_STATEMENT_SIZE",
    "Envelope",
    "ReleaseStatement",
    "RevocationStatement",
    "RotationStatement",
    "seal",
]

MAX_ENVELOPE_SIZE = 16 * 1024
MAX_STATEMENT_SIZE = 4 * 1024
#: Times are unix seconds; anything past this is certainly garbage.
MAX_TIME = 2**40
_SPKI_MAX_SIZE = 3 * 1024
_V1_HASH_SIZE = 20
_V2_HASH_SIZE = 32
_SHA256_SIZE = 32


def _decode_canonical(data: bytes, what: str, max_size: int) -> dict[bytes, Any]:
    """Decode a dictionary that must be exactly its own canonical bencoding."""
    if len(data) > max_size:
        raise refuse(Reason.MALFORMED, f"{what} larger than {max_size} bytes")
    try:
        value = bencode.decode(bytes(data), max_depth=4)
    except BencodeError as exc:
        raise refuse(Reason.MALFORMED, f"{what} is not valid bencoding: {exc}") from None
    if not isinstance(value, dict):
        raise refuse(Reason.MALFORMED, f"{what} is not a dictionary")
    if bencode.encode(value) != data:
        raise refuse(Reason.MALFORMED, f"{what} is not canonically encoded (keys out of order)")
    return value


def _check_keys(
    d: Mapping[bytes, Any], what: str, required: set[bytes], optional: set[bytes]
) -> None:
    missing = required - d.keys()
    if missing:
        raise refuse(Reason.MALFORMED, f"{what} lacks {sorted(k.decode() for k in missing)}")
    unknown = d.keys() - required - optional
    if unknown:
        names = sorted(k.decode("utf-8", "replace") for k in unknown)
        raise refuse(Reason.MALFORMED, f"{what} has unknown keys {names}")


def _bytes(d: Mapping[bytes, Any], key: bytes, what: str, sizes: tuple[int, int]) -> bytes:
    value = d[key]
    if not isinstance(value, bytes):
        raise refuse(Reason.MALFORMED, f"{what}: {key.decode()!r} is not a string")
    low, high = sizes
    if not low <= len(value) <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise refuse(
            Reason.MALFORMED, f"{what}: {key.decode()!r} is {len(value)} bytes, expected {expected}"
        )
    return value


def _time(d: Mapping[bytes, Any], key: bytes, what: str) -> int:
    value = d[key]
    if not isinstance(value, int) or not 0 <= value < MAX_TIME:
        raise refuse(Reason.MALFORMED, f"{what}: {key.decode()!r} is not a unix time")
    return value


def _text(d: Mapping[bytes, Any], key: bytes, what: str) -> str:
    value = d[key]
    if not isinstance(value, bytes):
        raise refuse(Reason.MALFORMED, f"{what}: {key.decode()!r} is not a string")
    return check_text(value, f"{what} {key.decode()!r}")


def _optional_hash(d: Mapping[bytes, Any], key: bytes, what: str, size: int) -> bytes | None:
    return _bytes(d, key, what, (size, size)) if key in d else None


def _key_id(d: Mapping[bytes, Any], key: bytes, what: str) -> bytes:
    return _bytes(d, key, what, (KEY_ID_SIZE, KEY_ID_SIZE))


@dataclass(frozen=True)
class ReleaseStatement:
    """A publisher's claim: this torrent is release ``name`` ``version``, made at ``created``."""

    PREFIX: ClassVar[bytes] = b"opendistro signed release v1\n"

    name: str
    version: str
    created: int
    key_id: bytes
    info_hash_v1: bytes | None = None
    info_hash_v2: bytes | None = None
    delta_index_sha256: bytes | None = None
    """SHA-256 of the release's delta index (``spec/delta-index.md``), when it has one."""

    def encode(self) -> bytes:
        fields: dict[bytes, Any] = {
            b"name": self.name,
            b"version": self.version,
            b"created": self.created,
            b"key-id": self.key_id,
        }
        if self.info_hash_v1 is not None:
            fields[b"info-hash-v1"] = self.info_hash_v1
        if self.info_hash_v2 is not None:
            fields[b"info-hash-v2"] = self.info_hash_v2
        if self.delta_index_sha256 is not None:
            fields[b"delta-index-sha256"] = self.delta_index_sha256
        data = bencode.encode(fields)
        type(self).decode(data)  # never sign what a verifier would refuse
        return data

    @classmethod
    def decode(cls, data: bytes) -> ReleaseStatement:
        what = "release statement"
        d = _decode_canonical(data, what, MAX_STATEMENT_SIZE)
        _check_keys(
            d,
            what,
            {b"name", b"version", b"created", b"key-id"},
            {b"info-hash-v1", b"info-hash-v2", b"delta-index-sha256"},
        )
        v1 = _optional_hash(d, b"info-hash-v1", what, _V1_HASH_SIZE)
        v2 = _optional_hash(d, b"info-hash-v2", what, _V2_HASH_SIZE)
        if v1 is None and v2 is None:
            raise refuse(Reason.MALFORMED, f"{what} names no info-hash")
        return cls(
            name=_text(d, b"name", what),
            version=_text(d, b"version", what),
            created=_time(d, b"created", what),
            key_id=_key_id(d, b"key-id", what),
            info_hash_v1=v1,
            info_hash_v2=v2,
            delta_index_sha256=_optional_hash(d, b"delta-index-sha256", what, _SHA256_SIZE),
        )


@dataclass(frozen=True)
class RotationStatement:
    """The holder of key ``key_id`` hands the publisher's trust on to ``new_key`` (SPKI DER)."""

    PREFIX: ClassVar[bytes] = b"opendistro key rotation v1\n"

    created: int
    key_id: bytes
    new_key: bytes
    not_after: int | None = None

    def encode(self) -> bytes:
        fields: dict[bytes, Any] = {
            b"created": self.created,
            b"key-id": self.key_id,
            b"new-key": self.new_key,
        }
        if self.not_after is not None:
            fields[b"not-after"] = self.not_after
        data = bencode.encode(fields)
        type(self).decode(data)
        return data

    @classmethod
    def decode(cls, data: bytes) -> RotationStatement:
        what = "rotation statement"
        d = _decode_canonical(data, what, MAX_STATEMENT_SIZE)
        _check_keys(d, what, {b"created", b"key-id", b"new-key"}, {b"not-after"})
        new_key = _bytes(d, b"new-key", what, (1, _SPKI_MAX_SIZE))
        VerifyingKey.from_spki(new_key)  # a supported key in canonical form, or "malformed"
        return cls(
            created=_time(d, b"created", what),
            key_id=_key_id(d, b"key-id", what),
            new_key=new_key,
            not_after=_time(d, b"not-after", what) if b"not-after" in d else None,
        )


@dataclass(frozen=True)
class RevocationStatement:
    """Key ``revoked_key`` must no longer be trusted; signed by it or by its predecessor."""

    PREFIX: ClassVar[bytes] = b"opendistro key revocation v1\n"

    created: int
    key_id: bytes
    revoked_key: bytes
    reason: str | None = None

    def encode(self) -> bytes:
        fields: dict[bytes, Any] = {
            b"created": self.created,
            b"key-id": self.key_id,
            b"revoked-key": self.revoked_key,
        }
        if self.reason is not None:
            fields[b"reason"] = self.reason
        data = bencode.encode(fields)
        type(self).decode(data)
        return data

    @classmethod
    def decode(cls, data: bytes) -> RevocationStatement:
        what = "revocation statement"
        d = _decode_canonical(data, what, MAX_STATEMENT_SIZE)
        _check_keys(d, what, {b"created", b"key-id", b"revoked-key"}, {b"reason"})
        return cls(
            created=_time(d, b"created", what),
            key_id=_key_id(d, b"key-id", what),
            revoked_key=_key_id(d, b"revoked-key", what),
            reason=_text(d, b"reason", what) if b"reason" in d else None,
        )


Statement = ReleaseStatement | RotationStatement | RevocationStatement
S = TypeVar("S", ReleaseStatement, RotationStatement, RevocationStatement)


@dataclass(frozen=True)
class Envelope:
    """Statement bytes, the scheme and the signature over ``PREFIX + statement``."""

    statement: bytes
    scheme: Scheme
    signature: bytes

    def encode(self) -> bytes:
        return bencode.encode(
            {b"statement": self.statement, b"scheme": self.scheme, b"signature": self.signature}
        )

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        what = "signature envelope"
        d = _decode_canonical(data, what, MAX_ENVELOPE_SIZE)
        _check_keys(d, what, {b"statement", b"scheme", b"signature"}, set())
        scheme = d[b"scheme"]
        if not isinstance(scheme, bytes) or scheme.decode("ascii", "replace") not in SCHEMES:
            raise refuse(Reason.MALFORMED, f"{what}: unknown scheme {scheme!r}")
        return cls(
            statement=_bytes(d, b"statement", what, (1, MAX_STATEMENT_SIZE)),
            scheme=cast(Scheme, scheme.decode("ascii")),
            signature=_bytes(d, b"signature", what, (1, MAX_ENVELOPE_SIZE)),
        )

    def open(self, kind: type[S], key_for: Callable[[S], VerifyingKey]) -> tuple[S, VerifyingKey]:
        """Decode the statement as ``kind``, find its key, and check the signature.

        ``key_for`` maps the decoded statement to the key it claims (normally by
        its ``key_id``); it raises to refuse the key outright (untrusted, ...).
        The statement's key id must be the key's, and the envelope's scheme the
        key's scheme: a signature is only ever checked the one way.
        """
        statement = kind.decode(self.statement)
        key = key_for(statement)
        if key.key_id != statement.key_id:
            raise refuse(Reason.INVALID, "statement names a different key than the one checked")
        if key.scheme != self.scheme:
            raise refuse(
                Reason.INVALID,
                f"envelope says {self.scheme} but key {key.key_id.hex()} is {key.scheme}",
            )
        key.verify(self.signature, kind.PREFIX + self.statement)
        return statement, key


def seal(key: SigningKey, statement: Statement) -> Envelope:
    """Sign ``statement`` (whose ``key_id`` must be ``key``'s) and wrap it in an envelope."""
    if statement.key_id != key.key_id:
        raise ConfigError("the statement names another key than the signing key")
    data = statement.encode()
    return Envelope(data, key.scheme, key.sign(statement.PREFIX + data))
