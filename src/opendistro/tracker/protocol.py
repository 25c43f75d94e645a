"""HTTP tracker announce and scrape messages, encoded and decoded without I/O.

Both directions live here so the client and the server agree by construction:
the client calls :meth:`AnnounceRequest.to_query` and :meth:`AnnounceResponse.decode`,
the server calls :meth:`AnnounceRequest.from_query` and :meth:`AnnounceResponse.encode`.

Covered: BEP 3 (announce, dictionary peers, ``failure reason``), BEP 23 (compact
IPv4 peers), BEP 7 (``peers6``), BEP 48 (scrape) and the common extensions
``warning message``, ``min interval`` and ``tracker id``; also the od_credit
announce binding (``odid``/``odts``/``odsig``, ``spec/od-credit.md``), by which
a peer proves which credit identity it is. Everything a remote side
hands us is validated and every problem surfaces as :class:`TrackerError`, never
as a ``KeyError`` or ``struct.error``: a tracker is an untrusted party, and so is
whoever sends a query string to our tracker.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit, urlunsplit

from .. import bencode
from ..credit.identity import CreditIdentity, is_valid_signature
from ..errors import OpenDistroError, TrackerError

__all__ = [
    "ANNOUNCE_PROOF_DOMAIN",
    "ANNOUNCE_PROOF_WINDOW",
    "DEFAULT_NUMWANT",
    "AnnounceEvent",
    "AnnounceRequest",
    "AnnounceResponse",
    "ScrapeStats",
    "announce_statement",
    "check_announce_proof",
    "decode_scrape_response",
    "encode_failure",
    "encode_scrape_response",
    "pack_compact_peers",
    "parse_query",
    "parse_scrape_query",
    "scrape_query",
    "scrape_url_for",
    "sign_announce",
    "unpack_compact_peers",
]

DEFAULT_NUMWANT = 50
_MAX_COUNTER = 2**63 - 1  # the UDP protocol carries 64-bit signed counters
_MAX_QUERY_PARAMS = 256  # a real announce has about a dozen; more is an attack

ANNOUNCE_PROOF_DOMAIN = b"opendistro-credit-announce-v1\x00"
"""Domain prefix of an announce proof, distinct from every other od_credit signature."""
ANNOUNCE_PROOF_WINDOW = 300
"""Seconds an announce proof's ``odts`` may differ from the tracker's clock."""
_IDENTITY_HEX = re.compile(rb"[0-9a-fA-F]{64}")
_SIGNATURE_HEX = re.compile(rb"[0-9a-fA-F]{128}")


class AnnounceEvent(enum.Enum):
    """The ``event`` parameter; NONE is a regular periodic announce."""

    NONE = ""
    STARTED = "started"
    COMPLETED = "completed"
    STOPPED = "stopped"


def parse_query(query: str | bytes) -> list[tuple[bytes, bytes]]:
    """Split a raw query string into percent-decoded ``(name, value)`` byte pairs.

    Bytes, not text, because ``info_hash`` and ``peer_id`` are binary; the
    standard library's ``parse_qs`` would decode them as UTF-8 and lose data.
    """
    raw = query.encode("utf-8", "surrogateescape") if isinstance(query, str) else bytes(query)
    if raw.startswith(b"?"):
        raw = raw[1:]
    pairs: list[tuple[bytes, bytes]] = []
    for part in raw.split(b"&"):
        if not part:
            continue
        if len(pairs) >= _MAX_QUERY_PARAMS:
            raise TrackerError("too many query parameters")
        name, _, value = part.partition(b"=")
        pairs.append(
            (
                unquote_to_bytes(name.replace(b"+", b" ")),
                unquote_to_bytes(value.replace(b"+", b" ")),
            )
        )
    return pairs


def _first_values(pairs: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Keep the first value of each parameter: repeating one must not change its meaning."""
    values: dict[bytes, bytes] = {}
    for name, value in pairs:
        values.setdefault(name, value)
    return values


def _parse_int(name: str, text: bytes, *, minimum: int, maximum: int) -> int:
    stripped = text[1:] if text.startswith(b"-") else text
    if not stripped or len(stripped) > 20 or not stripped.isdigit():
        raise TrackerError(f"parameter {name!r} is not an integer")
    value = int(text)
    if not minimum <= value <= maximum:
        raise TrackerError(f"parameter {name!r} is out of range")
    return value


def _parse_key(text: bytes) -> int | None:
    """Read the ``key`` as the hex number clients usually send; ignore other spellings.

    The key only helps a tracker recognise a peer whose address changed, so an
    odd spelling is not worth refusing the announce over.
    """
    try:
        value = int(text.decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if 0 <= value <= 0xFFFFFFFF else None


def _quote(value: bytes | str) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return quote_from_bytes(data, safe="")


@dataclass(frozen=True)
class AnnounceRequest:
    """What a peer tells a tracker about itself and one torrent."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: AnnounceEvent = AnnounceEvent.NONE
    numwant: int = DEFAULT_NUMWANT
    compact: bool = True
    key: int | None = None
    ip: str | None = None
    tracker_id: bytes | None = None
    identity: bytes | None = None
    """The od_credit identity (32-byte Ed25519 key) the peer claims; None: anonymous."""
    identity_time: int | None = None
    """The proof's time (``odts``, Unix seconds): fresh, and above the peer's last one."""
    identity_sig: bytes | None = None
    """The identity's signature over :func:`announce_statement` (``odsig``)."""

    def __post_init__(self) -> None:
        proof = (self.identity, self.identity_time, self.identity_sig)
        if any(part is not None for part in proof) and any(part is None for part in proof):
            raise TrackerError("an identity proof needs odid, odts and odsig together")

    @property
    def statement(self) -> bytes:
        """What the identity signs for this announce (see :func:`announce_statement`)."""
        if self.identity is None or self.identity_time is None:
            raise TrackerError("this announce claims no identity")
        return announce_statement(
            identity=self.identity,
            info_hash=self.info_hash,
            peer_id=self.peer_id,
            port=self.port,
            time=self.identity_time,
        )

    def to_query(self) -> str:
        """The query string (without ``?``) for an HTTP announce."""
        params = [
            f"info_hash={_quote(self.info_hash)}",
            f"peer_id={_quote(self.peer_id)}",
            f"port={self.port}",
            f"uploaded={self.uploaded}",
            f"downloaded={self.downloaded}",
            f"left={self.left}",
            f"compact={1 if self.compact else 0}",
            f"numwant={self.numwant}",
        ]
        if self.event is not AnnounceEvent.NONE:
            params.append(f"event={self.event.value}")
        if self.key is not None:
            params.append(f"key={self.key:08X}")
        if self.ip is not None:
            params.append(f"ip={_quote(self.ip)}")
        if self.tracker_id is not None:
            params.append(f"trackerid={_quote(self.tracker_id)}")
        if self.identity is not None and self.identity_sig is not None:
            params.append(f"odid={self.identity.hex()}")
            params.append(f"odts={self.identity_time}")
            params.append(f"odsig={self.identity_sig.hex()}")
        return "&".join(params)

    @classmethod
    def from_query(cls, query: str | bytes) -> AnnounceRequest:
        """Parse an announce query string; :class:`TrackerError` says what is wrong with it."""
        values = _first_values(parse_query(query))

        def required(name: str) -> bytes:
            value = values.get(name.encode())
            if value is None:
                raise TrackerError(f"missing parameter {name!r}")
            return value

        info_hash = required("info_hash")
        if len(info_hash) != 20:
            raise TrackerError("info_hash must be 20 bytes")
        peer_id = required("peer_id")
        if len(peer_id) != 20:
            raise TrackerError("peer_id must be 20 bytes")
        port = _parse_int("port", required("port"), minimum=0, maximum=65535)

        def counter(name: str) -> int:
            value = values.get(name.encode())
            if value is None:
                return 0
            return _parse_int(name, value, minimum=0, maximum=_MAX_COUNTER)

        numwant = DEFAULT_NUMWANT
        if b"numwant" in values:
            numwant = _parse_int("numwant", values[b"numwant"], minimum=-1, maximum=_MAX_COUNTER)
            if numwant < 0:
                numwant = DEFAULT_NUMWANT
        try:
            event = AnnounceEvent(values.get(b"event", b"").decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            event = AnnounceEvent.NONE  # e.g. BEP 21 "paused": a regular announce for us
        ip: str | None = None
        if values.get(b"ip"):
            try:
                ip = values[b"ip"].decode("ascii")
            except UnicodeDecodeError:
                ip = None
        key = _parse_key(values[b"key"]) if b"key" in values else None
        identity, identity_time, identity_sig = _parse_proof(values)
        return cls(
            info_hash=info_hash,
            peer_id=peer_id,
            port=port,
            uploaded=counter("uploaded"),
            downloaded=counter("downloaded"),
            left=counter("left"),
            event=event,
            numwant=numwant,
            compact=values.get(b"compact", b"1") != b"0",
            key=key,
            ip=ip,
            tracker_id=values.get(b"trackerid") or None,
            identity=identity,
            identity_time=identity_time,
            identity_sig=identity_sig,
        )


def _parse_proof(values: Mapping[bytes, bytes]) -> tuple[bytes | None, int | None, bytes | None]:
    """Read ``odid``/``odts``/``odsig`` strictly: all three well-formed, or none at all.

    A malformed proof is a client bug, so the announce is refused with a
    reason rather than silently treated as anonymous (which would quietly
    cost the client its credit). Whether a well-formed proof is *valid* is
    the tracker's business (:func:`check_announce_proof`).
    """
    raw_identity, raw_time, raw_sig = (values.get(name) for name in (b"odid", b"odts", b"odsig"))
    if raw_identity is None and raw_time is None and raw_sig is None:
        return None, None, None
    if raw_identity is None or raw_time is None or raw_sig is None:
        raise TrackerError("an identity proof needs odid, odts and odsig together")
    if not _IDENTITY_HEX.fullmatch(raw_identity):
        raise TrackerError("parameter 'odid' must be 64 hex digits")
    if not _SIGNATURE_HEX.fullmatch(raw_sig):
        raise TrackerError("parameter 'odsig' must be 128 hex digits")
    if not raw_time.isdigit():
        raise TrackerError("parameter 'odts' is not a non-negative integer")
    identity_time = _parse_int("odts", raw_time, minimum=0, maximum=_MAX_COUNTER)
    identity = bytes.fromhex(raw_identity.decode("ascii"))
    return identity, identity_time, bytes.fromhex(raw_sig.decode("ascii"))


def announce_statement(
    *, identity: bytes, info_hash: bytes, peer_id: bytes, port: int, time: int
) -> bytes:
    """The bytes an identity signs to bind itself to one announce.

    The domain prefix, then the canonical bencoding of the identity, the
    torrent, the peer id and port the peer announces, and the proof's time.
    Binding the peer id means a recorded signature only ever speaks for that
    one peer of that one torrent; the time makes it expire (see
    :func:`check_announce_proof`).
    """
    return ANNOUNCE_PROOF_DOMAIN + bencode.encode({
        b"identity": identity,
        b"info_hash": info_hash,
        b"peer_id": peer_id,
        b"port": port,
        b"time": time,
    })


def sign_announce(
    request: AnnounceRequest, identity: CreditIdentity, *, time: int
) -> AnnounceRequest:
    """``request`` with an identity proof made by ``identity`` at ``time`` (Unix seconds).

    The tracker takes a proof only if ``time`` is within
    :data:`ANNOUNCE_PROOF_WINDOW` of its clock and above the time of the last
    proof it took from this peer id, so a client announcing twice within one
    second must count up (``max(int(now), last + 1)``).
    """
    statement = announce_statement(
        identity=identity.public_key,
        info_hash=request.info_hash,
        peer_id=request.peer_id,
        port=request.port,
        time=time,
    )
    return dataclasses.replace(
        request,
        identity=identity.public_key,
        identity_time=time,
        identity_sig=identity.sign(statement),
    )


def check_announce_proof(
    request: AnnounceRequest, now: float, *, window: float = ANNOUNCE_PROOF_WINDOW
) -> str | None:
    """Why the request's identity proof is not acceptable at ``now``, or None if it is.

    Checks freshness first (cheap) and the signature last. Replays within
    the window are the registry's job: it remembers each peer's last time.
    """
    if request.identity is None or request.identity_time is None or request.identity_sig is None:
        return "no identity proof"
    if abs(request.identity_time - now) > window:
        return f"identity proof time is more than {int(window)} s from the tracker's clock"
    if not is_valid_signature(request.identity, request.identity_sig, request.statement):
        return "identity proof signature does not verify"
    return None


def pack_compact_peers(peers: Iterable[tuple[str, int]], *, ipv6: bool) -> bytes:
    """BEP 23 / BEP 7 compact form; peers of the other family (or hostnames) are skipped."""
    chunks: list[bytes] = []
    for host, port in peers:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if (address.version == 6) == ipv6 and 0 <= port <= 65535:
            chunks.append(address.packed + struct.pack(">H", port))
    return b"".join(chunks)


def unpack_compact_peers(data: bytes, *, ipv6: bool) -> tuple[tuple[str, int], ...]:
    """Inverse of :func:`pack_compact_peers`; a ragged length is a :class:`TrackerError`."""
    size = 18 if ipv6 else 6
    if len(data) % size:
        raise TrackerError(f"compact peer list length {len(data)} is not a multiple of {size}")
    peers: list[tuple[str, int]] = []
    for offset in range(0, len(data), size):
        host_bytes = data[offset : offset + size - 2]
        (port,) = struct.unpack_from(">H", data, offset + size - 2)
        host = ipaddress.IPv6Address(host_bytes) if ipv6 else ipaddress.IPv4Address(host_bytes)
        peers.append((str(host), port))
    return tuple(peers)


def encode_failure(reason: str) -> bytes:
    """A bencoded ``failure reason`` body: how a tracker says no (with HTTP 200)."""
    return bencode.encode({b"failure reason": reason.encode("utf-8")})


def _decode_body(body: bytes) -> dict[bytes, Any]:
    """Decode a tracker body to a dictionary, raising the tracker's own refusal as an error."""
    try:
        value = bencode.decode(bytes(body))
    except OpenDistroError as exc:
        raise TrackerError(f"tracker sent malformed bencoding: {exc}") from exc
    if not isinstance(value, dict):
        raise TrackerError("tracker response is not a dictionary")
    failure = value.get(b"failure reason")
    if failure is not None:
        text = failure.decode("utf-8", "replace") if isinstance(failure, bytes) else str(failure)
        raise TrackerError(text or "tracker refused the request")
    return value


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _dictionary_peers(items: Any) -> tuple[list[tuple[str, int]], list[bytes | None]]:
    if not isinstance(items, list):
        raise TrackerError("'peers' is neither a string nor a list")
    peers: list[tuple[str, int]] = []
    peer_ids: list[bytes | None] = []
    for item in items:
        if not isinstance(item, dict):
            raise TrackerError("dictionary peer entry is not a dictionary")
        host, port, peer_id = item.get(b"ip"), item.get(b"port"), item.get(b"peer id")
        if not isinstance(host, bytes) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise TrackerError("dictionary peer entry lacks a valid ip or port")
        try:
            text = host.decode("ascii")
        except UnicodeDecodeError as exc:
            raise TrackerError("peer ip is not ASCII") from exc
        peers.append((text, port))
        peer_ids.append(peer_id if isinstance(peer_id, bytes) else None)
    return peers, peer_ids


@dataclass(frozen=True)
class AnnounceResponse:
    """A tracker's answer: when to come back, and whom to talk to.

    ``peer_ids`` is either empty or parallel to ``peers``; it is only carried by
    the dictionary (non-compact) form.
    """

    interval: int
    peers: tuple[tuple[str, int], ...]
    min_interval: int | None = None
    complete: int | None = None
    incomplete: int | None = None
    warning: str | None = None
    tracker_id: bytes | None = None
    peer_ids: tuple[bytes | None, ...] = ()

    def encode(self, *, compact: bool) -> bytes:
        """Bencode the response; ``compact`` chooses BEP 23/7 strings over dictionaries."""
        body: dict[bytes, Any] = {b"interval": self.interval}
        if compact:
            body[b"peers"] = pack_compact_peers(self.peers, ipv6=False)
            peers6 = pack_compact_peers(self.peers, ipv6=True)
            if peers6:
                body[b"peers6"] = peers6
        else:
            entries: list[dict[bytes, Any]] = []
            for index, (host, port) in enumerate(self.peers):
                entry: dict[bytes, Any] = {b"ip": host.encode("utf-8"), b"port": port}
                peer_id = self.peer_ids[index] if index < len(self.peer_ids) else None
                if peer_id is not None:
                    entry[b"peer id"] = peer_id
                entries.append(entry)
            body[b"peers"] = entries
        if self.min_interval is not None:
            body[b"min interval"] = self.min_interval
        if self.complete is not None:
            body[b"complete"] = self.complete
        if self.incomplete is not None:
            body[b"incomplete"] = self.incomplete
        if self.warning is not None:
            body[b"warning message"] = self.warning.encode("utf-8")
        if self.tracker_id is not None:
            body[b"tracker id"] = self.tracker_id
        return bencode.encode(body)

    @classmethod
    def decode(cls, body: bytes) -> AnnounceResponse:
        """Decode a tracker's body; a ``failure reason`` or any malformation is a TrackerError."""
        value = _decode_body(body)
        interval = value.get(b"interval")
        if not isinstance(interval, int) or interval < 0:
            raise TrackerError("tracker response lacks a valid 'interval'")
        raw_peers = value.get(b"peers", b"")
        peer_ids: list[bytes | None] = []
        if isinstance(raw_peers, bytes):
            peers = list(unpack_compact_peers(raw_peers, ipv6=False))
        else:
            peers, peer_ids = _dictionary_peers(raw_peers)
        raw_peers6 = value.get(b"peers6", b"")
        if not isinstance(raw_peers6, bytes):
            raise TrackerError("'peers6' is not a string")
        peers6 = unpack_compact_peers(raw_peers6, ipv6=True)
        if peer_ids and peers6:
            peer_ids.extend([None] * len(peers6))
        warning = value.get(b"warning message")
        tracker_id = value.get(b"tracker id")
        return cls(
            interval=interval,
            peers=(*peers, *peers6),
            min_interval=_optional_int(value.get(b"min interval")),
            complete=_optional_int(value.get(b"complete")),
            incomplete=_optional_int(value.get(b"incomplete")),
            warning=warning.decode("utf-8", "replace") if isinstance(warning, bytes) else None,
            tracker_id=tracker_id if isinstance(tracker_id, bytes) else None,
            peer_ids=tuple(peer_ids) if any(pid is not None for pid in peer_ids) else (),
        )


@dataclass(frozen=True)
class ScrapeStats:
    """Per-torrent counters from a scrape: seeders, finished downloads, leechers."""

    complete: int
    downloaded: int
    incomplete: int


def scrape_query(info_hashes: Sequence[bytes]) -> str:
    """Query string naming several torrents (repeated ``info_hash`` parameters)."""
    return "&".join(f"info_hash={_quote(info_hash)}" for info_hash in info_hashes)


def parse_scrape_query(query: str | bytes) -> list[bytes]:
    """Every ``info_hash`` in a scrape query, in order and without duplicates; may be empty."""
    hashes: list[bytes] = []
    for name, value in parse_query(query):
        if name != b"info_hash":
            continue
        if len(value) != 20:
            raise TrackerError("info_hash must be 20 bytes")
        if value not in hashes:
            hashes.append(value)
    return hashes


def encode_scrape_response(files: Mapping[bytes, ScrapeStats]) -> bytes:
    """The BEP 48 ``files`` dictionary keyed by raw info-hash."""
    return bencode.encode(
        {
            b"files": {
                info_hash: {
                    b"complete": stats.complete,
                    b"downloaded": stats.downloaded,
                    b"incomplete": stats.incomplete,
                }
                for info_hash, stats in files.items()
            }
        }
    )


def decode_scrape_response(body: bytes) -> dict[bytes, ScrapeStats]:
    """Decode a scrape body; missing counters read as 0, wrong shapes as TrackerError."""
    files = _decode_body(body).get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("scrape response lacks a 'files' dictionary")
    result: dict[bytes, ScrapeStats] = {}
    for info_hash, entry in files.items():
        if not isinstance(entry, dict):
            raise TrackerError("scrape entry is not a dictionary")
        result[info_hash] = ScrapeStats(
            complete=_optional_int(entry.get(b"complete")) or 0,
            downloaded=_optional_int(entry.get(b"downloaded")) or 0,
            incomplete=_optional_int(entry.get(b"incomplete")) or 0,
        )
    return result


def scrape_url_for(announce_url: str) -> str:
    """BEP 48 convention: replace ``announce`` in the last path segment with ``scrape``.

    A URL that is already a scrape URL is returned unchanged; one whose last
    segment does not start with ``announce`` does not support scraping.
    """
    parts = urlsplit(announce_url)
    head, _, last = parts.path.rpartition("/")
    if last.startswith("scrape"):
        return announce_url
    if not last.startswith("announce"):
        raise TrackerError(f"tracker {announce_url!r} does not support scrape")
    path = f"{head}/scrape{last[len('announce') :]}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
