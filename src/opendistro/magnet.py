"""Magnet URIs (BEP 9, with BEP 52's ``btmh`` and the ``x.pe`` peer hint).

A magnet names a torrent by info-hash only; the info dict is then fetched from
peers. We accept the v1 hash as 40 hex digits or 32 base32 characters, the v2
hash as a multihash (``1220`` = SHA2-256, 32 bytes, then 64 hex digits), and
produce the canonical hex forms. Anything we cannot use raises MagnetError
rather than being half-understood.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus

from .errors import MagnetError

__all__ = ["MAX_MAGNET_LENGTH", "MagnetLink"]

MAX_MAGNET_LENGTH = 64 * 1024
_BTIH = "urn:btih:"
_BTMH = "urn:btmh:"
_SHA256_MULTIHASH = "1220"
#: Characters left unescaped in tracker and web-seed URLs we emit.
_URL_SAFE = ":/?=@!$'()*+,;~[]"


def _parse_btih(value: str) -> bytes:
    try:
        if len(value) == 40:
            return bytes.fromhex(value)
        if len(value) == 32:
            return base64.b32decode(value.upper())
    except (ValueError, binascii.Error) as exc:
        raise MagnetError(f"bad btih info-hash {value!r}") from exc
    raise MagnetError(f"btih info-hash has {len(value)} characters, expected 40 or 32")


def _parse_btmh(value: str) -> bytes:
    if not value.lower().startswith(_SHA256_MULTIHASH) or len(value) != 4 + 64:
        raise MagnetError("btmh must be a SHA2-256 multihash (1220 + 64 hex digits)")
    try:
        return bytes.fromhex(value[4:])
    except ValueError as exc:
        raise MagnetError(f"bad btmh info-hash {value!r}") from exc


def _parse_peer(value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise MagnetError(f"bad x.pe peer {value!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise MagnetError(f"bad IPv6 address in x.pe {value!r}") from exc
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or ":" in host or "/" in host or " " in host:
            raise MagnetError(f"bad x.pe peer {value!r}")
    # At most five digits, so a hostile run of digits never reaches int() (which
    # refuses over 4300 digits with a plain ValueError).
    if (
        not port_text.isascii()
        or not port_text.isdigit()
        or len(port_text) > 5
        or not 0 < int(port_text) < 65536
    ):
        raise MagnetError(f"bad port in x.pe peer {value!r}")
    return host, int(port_text)


def _format_peer(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class MagnetLink:
    """The parts of a magnet URI that a BitTorrent client can act on."""

    info_hash_v1: bytes | None
    info_hash_v2: bytes | None
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    webseeds: tuple[str, ...] = ()
    peers: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.info_hash_v1 is None and self.info_hash_v2 is None:
            raise MagnetError("a magnet link needs a btih or btmh info-hash")
        if self.info_hash_v1 is not None and len(self.info_hash_v1) != 20:
            raise MagnetError("a v1 info-hash is 20 bytes")
        if self.info_hash_v2 is not None and len(self.info_hash_v2) != 32:
            raise MagnetError("a v2 info-hash is 32 bytes")

    @property
    def wire_info_hash(self) -> bytes:
        """The 20 bytes for handshakes and trackers (truncated v2 hash if no v1)."""
        if self.info_hash_v1 is not None:
            return self.info_hash_v1
        assert self.info_hash_v2 is not None
        return self.info_hash_v2[:20]

    @classmethod
    def parse(cls, uri: str) -> MagnetLink:
        """Parse a ``magnet:?`` URI; unknown parameters are ignored."""
        if not isinstance(uri, str):
            raise MagnetError("a magnet URI must be text")
        if len(uri) > MAX_MAGNET_LENGTH:
            raise MagnetError("magnet URI is too long")
        if not uri[:8].lower() == "magnet:?":
            raise MagnetError("not a magnet URI (must start with 'magnet:?')")
        v1: bytes | None = None
        v2: bytes | None = None
        name: str | None = None
        trackers: list[str] = []
        webseeds: list[str] = []
        peers: list[tuple[str, int]] = []
        for part in uri[8:].split("&"):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            if not sep:
                continue
            key = key.lower()
            try:
                # Display names are often form-encoded ('+' for space); URLs are not.
                value = (unquote_plus if key == "dn" else unquote)(raw, errors="strict")
            except UnicodeDecodeError as exc:
                raise MagnetError(f"magnet parameter {key!r} is not UTF-8") from exc
            if key == "dn":
                name = value
            elif key == "xt" or key.startswith("xt."):
                lowered = value.lower()
                if lowered.startswith(_BTIH):
                    found = _parse_btih(value[len(_BTIH) :])
                    if v1 is not None and v1 != found:
                        raise MagnetError("magnet names two different btih hashes")
                    v1 = found
                elif lowered.startswith(_BTMH):
                    found = _parse_btmh(value[len(_BTMH) :])
                    if v2 is not None and v2 != found:
                        raise MagnetError("magnet names two different btmh hashes")
                    v2 = found
            elif key == "tr" or key.startswith("tr."):
                if value and value not in trackers:
                    trackers.append(value)
            elif key == "ws":
                if value and value not in webseeds:
                    webseeds.append(value)
            elif key == "x.pe":
                peers.append(_parse_peer(value))
        if v1 is None and v2 is None:
            raise MagnetError("magnet has no btih or btmh info-hash")
        return cls(v1, v2, name, tuple(trackers), tuple(webseeds), tuple(peers))

    def to_uri(self) -> str:
        """Produce a magnet URI with hex hashes; :meth:`parse` reads it back unchanged."""
        parts: list[str] = []
        if self.info_hash_v1 is not None:
            parts.append("xt=urn:btih:" + self.info_hash_v1.hex())
        if self.info_hash_v2 is not None:
            parts.append("xt=urn:btmh:" + _SHA256_MULTIHASH + self.info_hash_v2.hex())
        if self.display_name is not None:
            parts.append("dn=" + quote(self.display_name, safe=""))
        parts.extend("tr=" + quote(url, safe=_URL_SAFE) for url in self.trackers)
        parts.extend("ws=" + quote(url, safe=_URL_SAFE) for url in self.webseeds)
        parts.extend(
            "x.pe=" + quote(_format_peer(host, port), safe=":[]") for host, port in self.peers
        )
        return "magnet:?" + "&".join(parts)
