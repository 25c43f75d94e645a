"""The UDP tracker protocol (BEP 15) as plain functions over bytes.

Packets are fixed layouts of big-endian integers, so each message is one
``struct`` format. Client-side decoders check the action and transaction id
(a reply to someone else's request is an error, not data); the server-side
parser turns anything it cannot read into :class:`TrackerError` so the server
can drop it. Connection ids are issued by :class:`ConnectionIdIssuer`, which is
stateless (an HMAC of the source address and a time window), so a flood of
connect requests costs the server no memory.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import TrackerError
from .protocol import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    pack_compact_peers,
    unpack_compact_peers,
)

__all__ = [
    "MAX_SCRAPE_HASHES",
    "PROTOCOL_ID",
    "Action",
    "ConnectRequest",
    "ConnectionIdIssuer",
    "UdpAnnounceRequest",
    "UdpScrapeRequest",
    "decode_announce_response",
    "decode_connect_response",
    "decode_scrape_response",
    "encode_announce_request",
    "encode_announce_response",
    "encode_connect_request",
    "encode_connect_response",
    "encode_error",
    "encode_scrape_request",
    "encode_scrape_response",
    "parse_request",
]

PROTOCOL_ID = 0x41727101980
MAX_SCRAPE_HASHES = 74  # what fits in one packet per BEP 15
_HEADER = struct.Struct(">QII")  # connection id, action, transaction id
_REPLY_HEADER = struct.Struct(">II")  # action, transaction id
_ANNOUNCE_BODY = struct.Struct(">20s20sQQQIIIiH")
_ANNOUNCE_REPLY = struct.Struct(">IIIII")

_EVENT_CODES = {
    AnnounceEvent.NONE: 0,
    AnnounceEvent.COMPLETED: 1,
    AnnounceEvent.STARTED: 2,
    AnnounceEvent.STOPPED: 3,
}
_EVENTS_BY_CODE = {code: event for event, code in _EVENT_CODES.items()}


class Action(enum.IntEnum):
    CONNECT = 0
    ANNOUNCE = 1
    SCRAPE = 2
    ERROR = 3


@dataclass(frozen=True)
class ConnectRequest:
    transaction_id: int


@dataclass(frozen=True)
class UdpAnnounceRequest:
    connection_id: int
    transaction_id: int
    request: AnnounceRequest


@dataclass(frozen=True)
class UdpScrapeRequest:
    connection_id: int
    transaction_id: int
    info_hashes: tuple[bytes, ...]


# ---------------------------------------------------------------- client side


def encode_connect_request(transaction_id: int) -> bytes:
    return _HEADER.pack(PROTOCOL_ID, Action.CONNECT, transaction_id)


def encode_announce_request(
    connection_id: int, transaction_id: int, request: AnnounceRequest
) -> bytes:
    """An announce packet; ``ip`` is sent only when it is an IPv4 address, as BEP 15 allows."""
    ip_value = 0
    if request.ip is not None:
        try:
            address = ipaddress.ip_address(request.ip)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv4Address):
            ip_value = int(address)
    numwant = min(request.numwant, 2**31 - 1)
    return _HEADER.pack(connection_id, Action.ANNOUNCE, transaction_id) + _ANNOUNCE_BODY.pack(
        request.info_hash,
        request.peer_id,
        request.downloaded,
        request.left,
        request.uploaded,
        _EVENT_CODES[request.event],
        ip_value,
        (request.key or 0) & 0xFFFFFFFF,
        numwant,
        request.port,
    )


def encode_scrape_request(
    connection_id: int, transaction_id: int, info_hashes: Sequence[bytes]
) -> bytes:
    if not 0 < len(info_hashes) <= MAX_SCRAPE_HASHES:
        raise TrackerError(f"a UDP scrape names 1 to {MAX_SCRAPE_HASHES} torrents")
    if any(len(info_hash) != 20 for info_hash in info_hashes):
        raise TrackerError("info_hash must be 20 bytes")
    return _HEADER.pack(connection_id, Action.SCRAPE, transaction_id) + b"".join(info_hashes)


def _check_reply(data: bytes, transaction_id: int, action: Action, minimum: int) -> None:
    """Raise the tracker's error message, or a TrackerError for a foreign or short reply."""
    if len(data) < _REPLY_HEADER.size:
        raise TrackerError("UDP tracker reply too short")
    got_action, got_transaction = _REPLY_HEADER.unpack_from(data)
    if got_transaction != transaction_id:
        raise TrackerError("UDP tracker reply has the wrong transaction id")
    if got_action == Action.ERROR:
        message = data[_REPLY_HEADER.size :].decode("utf-8", "replace")
        raise TrackerError(message or "UDP tracker reported an error")
    if got_action != action:
        raise TrackerError(f"UDP tracker replied with action {got_action}, expected {action}")
    if len(data) < minimum:
        raise TrackerError("UDP tracker reply too short")


def decode_connect_response(data: bytes, transaction_id: int) -> int:
    """The connection id from a connect reply."""
    _check_reply(data, transaction_id, Action.CONNECT, 16)
    (connection_id,) = struct.unpack_from(">Q", data, 8)
    return int(connection_id)


def decode_announce_response(data: bytes, transaction_id: int, *, ipv6: bool) -> AnnounceResponse:
    """An announce reply; peers are 18-byte entries when the tracker was reached over IPv6."""
    _check_reply(data, transaction_id, Action.ANNOUNCE, _ANNOUNCE_REPLY.size)
    _, _, interval, leechers, seeders = _ANNOUNCE_REPLY.unpack_from(data)
    peers = unpack_compact_peers(data[_ANNOUNCE_REPLY.size :], ipv6=ipv6)
    return AnnounceResponse(interval=interval, peers=peers, complete=seeders, incomplete=leechers)


def decode_scrape_response(
    data: bytes, transaction_id: int, info_hashes: Sequence[bytes]
) -> dict[bytes, ScrapeStats]:
    """Scrape counters, matched to the requested hashes by position."""
    _check_reply(data, transaction_id, Action.SCRAPE, 8 + 12 * len(info_hashes))
    result: dict[bytes, ScrapeStats] = {}
    for index, info_hash in enumerate(info_hashes):
        seeders, completed, leechers = struct.unpack_from(">III", data, 8 + 12 * index)
        result[info_hash] = ScrapeStats(complete=seeders, downloaded=completed, incomplete=leechers)
    return result


# ---------------------------------------------------------------- server side


def parse_request(data: bytes) -> ConnectRequest | UdpAnnounceRequest | UdpScrapeRequest:
    """Parse a packet a client sent; anything unreadable is a :class:`TrackerError`."""
    if len(data) < _HEADER.size:
        raise TrackerError("UDP packet too short")
    connection_id, action, transaction_id = _HEADER.unpack_from(data)
    if action == Action.CONNECT:
        if connection_id != PROTOCOL_ID:
            raise TrackerError("connect request without the protocol id")
        return ConnectRequest(transaction_id)
    if action == Action.ANNOUNCE:
        if len(data) < _HEADER.size + _ANNOUNCE_BODY.size:
            raise TrackerError("UDP announce too short")
        (
            info_hash,
            peer_id,
            downloaded,
            left,
            uploaded,
            event_code,
            ip_value,
            key,
            numwant,
            port,
        ) = _ANNOUNCE_BODY.unpack_from(data, _HEADER.size)
        event = _EVENTS_BY_CODE.get(event_code)
        if event is None:
            raise TrackerError(f"unknown announce event {event_code}")
        request = AnnounceRequest(
            info_hash=info_hash,
            peer_id=peer_id,
            port=port,
            uploaded=min(uploaded, 2**63 - 1),
            downloaded=min(downloaded, 2**63 - 1),
            left=min(left, 2**63 - 1),
            event=event,
            numwant=numwant if numwant >= 0 else 50,
            key=key,
            ip=str(ipaddress.IPv4Address(ip_value)) if ip_value else None,
        )
        return UdpAnnounceRequest(connection_id, transaction_id, request)
    if action == Action.SCRAPE:
        body = data[_HEADER.size :]
        count = min(len(body) // 20, MAX_SCRAPE_HASHES)
        if count == 0:
            raise TrackerError("UDP scrape names no torrent")
        hashes = tuple(body[i * 20 : (i + 1) * 20] for i in range(count))
        return UdpScrapeRequest(connection_id, transaction_id, hashes)
    raise TrackerError(f"unknown UDP tracker action {action}")


def encode_connect_response(transaction_id: int, connection_id: int) -> bytes:
    return _REPLY_HEADER.pack(Action.CONNECT, transaction_id) + struct.pack(">Q", connection_id)


def encode_announce_response(
    transaction_id: int, response: AnnounceResponse, *, ipv6: bool
) -> bytes:
    """An announce reply carrying only peers of the socket's own address family."""
    header = _ANNOUNCE_REPLY.pack(
        Action.ANNOUNCE,
        transaction_id,
        response.interval,
        response.incomplete or 0,
        response.complete or 0,
    )
    return header + pack_compact_peers(response.peers, ipv6=ipv6)


def encode_scrape_response(
    transaction_id: int, info_hashes: Sequence[bytes], stats: Mapping[bytes, ScrapeStats]
) -> bytes:
    zero = ScrapeStats(0, 0, 0)
    parts = [_REPLY_HEADER.pack(Action.SCRAPE, transaction_id)]
    for info_hash in info_hashes:
        entry = stats.get(info_hash, zero)
        parts.append(struct.pack(">III", entry.complete, entry.downloaded, entry.incomplete))
    return b"".join(parts)


def encode_error(transaction_id: int, message: str) -> bytes:
    return _REPLY_HEADER.pack(Action.ERROR, transaction_id) + message.encode("utf-8")


class ConnectionIdIssuer:
    """Stateless BEP 15 connection ids: HMAC(secret, address, time window).

    An id is accepted during the window it was issued in and the next one, so it
    lives between one and two windows (BEP 15 asks for about two minutes), and
    only from the address it was issued to, which stops spoofed-source announces.
    """

    def __init__(self, secret: bytes, *, window: float = 60.0) -> None:
        self._secret = secret
        self._window = window

    def _id_for(self, address: tuple[str, int], slot: int) -> int:
        message = f"{address[0]}|{address[1]}|{slot}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big")

    def issue(self, address: tuple[str, int], now: float) -> int:
        return self._id_for(address, int(now // self._window))

    def is_valid(self, connection_id: int, address: tuple[str, int], now: float) -> bool:
        slot = int(now // self._window)
        return any(
            hmac.compare_digest(
                self._id_for(address, candidate).to_bytes(8, "big"),
                connection_id.to_bytes(8, "big"),
            )
            for candidate in (slot, slot - 1)
        )
