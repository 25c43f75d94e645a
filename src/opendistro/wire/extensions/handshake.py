"""The BEP 10 extension handshake: which extensions a peer speaks, and under which ids.

The handshake is a bencoded dictionary sent as extended message 0. Its ``m``
maps extension names to the one-byte ids the *sender* wants to receive them
under; so we send an extension message using the id from the peer's ``m``,
and the peer sends us messages under the ids from ours.

Known keys are checked strictly (a wrong type is a protocol error, because
acting on a half-understood value is worse than dropping the peer); unknown
keys are kept in ``extra`` untouched, so a newer extension can read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ...bencode import decode, encode
from ...errors import BencodeError, RemoteProtocolError

__all__ = ["MAX_METADATA_SIZE", "ExtensionHandshake"]

MAX_METADATA_SIZE: Final = 16 << 20
"""The largest info dictionary we agree to fetch or announce (BEP 9 metadata_size)."""

_MAX_REQQ: Final = 1 << 16
_KNOWN_KEYS: Final = frozenset(
    {b"m", b"v", b"p", b"reqq", b"metadata_size", b"yourip", b"ipv4", b"ipv6"}
)


def _int_field(raw: dict[bytes, Any], key: bytes, low: int, high: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or not low <= value <= high:
        raise RemoteProtocolError(f"extension handshake {key.decode()} must be {low}..{high}")
    return value


def _bytes_field(raw: dict[bytes, Any], key: bytes, sizes: tuple[int, ...]) -> bytes | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes) or len(value) not in sizes:
        raise RemoteProtocolError(f"extension handshake {key.decode()} must be {sizes} bytes")
    return value


def _decode_m(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RemoteProtocolError("extension handshake m must be a dictionary")
    result: dict[str, int] = {}
    for name, ident in value.items():
        if not isinstance(ident, int) or not 0 <= ident <= 255:
            raise RemoteProtocolError("extension ids in m must be integers 0..255")
        try:
            result[name.decode("utf-8")] = ident
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("extension names must be UTF-8") from exc
    return result


@dataclass(frozen=True)
class ExtensionHandshake:
    """A decoded BEP 10 handshake; ``m`` values of 0 mean "disabled"."""

    m: dict[str, int] = field(default_factory=dict)
    v: str | None = None
    p: int | None = None
    reqq: int | None = None
    metadata_size: int | None = None
    yourip: bytes | None = None
    ipv4: bytes | None = None
    ipv6: bytes | None = None
    extra: dict[bytes, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The bencoded payload of extended message 0."""
        raw: dict[bytes, Any] = dict(self.extra)
        raw[b"m"] = {name.encode("utf-8"): ident for name, ident in self.m.items()}
        optional: dict[bytes, Any] = {
            b"v": self.v,
            b"p": self.p,
            b"reqq": self.reqq,
            b"metadata_size": self.metadata_size,
            b"yourip": self.yourip,
            b"ipv4": self.ipv4,
            b"ipv6": self.ipv6,
        }
        raw.update({key: value for key, value in optional.items() if value is not None})
        return encode(raw)

    @classmethod
    def decode(cls, payload: bytes) -> ExtensionHandshake:
        """Parse a peer's handshake payload; RemoteProtocolError when it is malformed."""
        try:
            raw = decode(payload)
        except BencodeError as exc:
            raise RemoteProtocolError(f"extension handshake is not bencoded: {exc}") from exc
        if not isinstance(raw, dict):
            raise RemoteProtocolError("extension handshake must be a dictionary")
        version = raw.get(b"v")
        if version is not None and not isinstance(version, bytes):
            raise RemoteProtocolError("extension handshake v must be a string")
        return cls(
            m=_decode_m(raw.get(b"m")),
            v=version.decode("utf-8", "replace") if version is not None else None,
            p=_int_field(raw, b"p", 0, 65535),
            reqq=_int_field(raw, b"reqq", 1, _MAX_REQQ),
            metadata_size=_int_field(raw, b"metadata_size", 1, MAX_METADATA_SIZE),
            yourip=_bytes_field(raw, b"yourip", (4, 16)),
            ipv4=_bytes_field(raw, b"ipv4", (4,)),
            ipv6=_bytes_field(raw, b"ipv6", (16,)),
            extra={key: value for key, value in raw.items() if key not in _KNOWN_KEYS},
        )

    def supports(self, name: str) -> bool:
        """True when the extension ``name`` is enabled (present with a non-zero id)."""
        return self.m.get(name, 0) != 0

    def updated_by(self, later: ExtensionHandshake) -> ExtensionHandshake:
        """Merge a later handshake into this one, as BEP 10 allows.

        Names in the later ``m`` override ours, an id of 0 disables that
        extension, and fields the later handshake leaves out keep their values.
        """
        m = {**self.m, **later.m}
        return ExtensionHandshake(
            m={name: ident for name, ident in m.items() if ident != 0},
            v=later.v if later.v is not None else self.v,
            p=later.p if later.p is not None else self.p,
            reqq=later.reqq if later.reqq is not None else self.reqq,
            metadata_size=(
                later.metadata_size if later.metadata_size is not None else self.metadata_size
            ),
            yourip=later.yourip if later.yourip is not None else self.yourip,
            ipv4=later.ipv4 if later.ipv4 is not None else self.ipv4,
            ipv6=later.ipv6 if later.ipv6 is not None else self.ipv6,
            extra={**self.extra, **later.extra},
        )
