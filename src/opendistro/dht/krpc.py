"""KRPC (BEP 5): the DHT's bencoded queries, responses and errors, as frozen dataclasses.

Every datagram is one bencoded dictionary with a transaction id ``t`` and a
type ``y``. Queries name their method, so they decode to a typed message;
a response does not say what it answers, so it decodes to one
:class:`Response` with every optional field, and the node that sent the query
knows what to look for. Decoding is strict: a wrong type, a missing field or
an id of the wrong length raises :class:`~opendistro.errors.DHTError`, never a
``KeyError``. Unknown keys are ignored (clients add their own, such as ``v``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .. import bencode
from ..errors import BencodeError, DHTError
from .compact import (
    COMPACT_PEER_LENGTH,
    Address,
    NodeInfo,
    pack_nodes,
    pack_peer,
    unpack_nodes,
    unpack_peer,
)
from .node_id import ID_LENGTH

__all__ = [
    "ERROR_GENERIC",
    "ERROR_METHOD_UNKNOWN",
    "ERROR_PROTOCOL",
    "ERROR_SERVER",
    "MAX_DATAGRAM_SIZE",
    "MAX_TOKEN_LENGTH",
    "MAX_TRANSACTION_ID_LENGTH",
    "AnnouncePeer",
    "ErrorReply",
    "FindNode",
    "GetPeers",
    "Message",
    "Ping",
    "Query",
    "Response",
    "UnknownQuery",
    "decode_message",
    "encode_message",
    "error_reply_for",
]

MAX_DATAGRAM_SIZE = 1500
"""Larger datagrams are refused unread: KRPC messages fit in one Ethernet frame."""
MAX_TRANSACTION_ID_LENGTH = 32
MAX_TOKEN_LENGTH = 64
MAX_ERROR_TEXT = 256
_MAX_DEPTH = 4  # {"r": {"values": [b"..."]}} is as deep as KRPC goes

ERROR_GENERIC = 201
ERROR_SERVER = 202
ERROR_PROTOCOL = 203
ERROR_METHOD_UNKNOWN = 204
_IPV6_PEER_LENGTH = 18


@dataclass(frozen=True, slots=True)
class Ping:
    transaction_id: bytes
    sender_id: bytes
    read_only: bool = field(default=False, kw_only=True)
    """BEP 43: the sender answers no queries, so it does not belong in a routing table."""


@dataclass(frozen=True, slots=True)
class FindNode:
    transaction_id: bytes
    sender_id: bytes
    target: bytes
    read_only: bool = field(default=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class GetPeers:
    transaction_id: bytes
    sender_id: bytes
    info_hash: bytes
    read_only: bool = field(default=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    transaction_id: bytes
    sender_id: bytes
    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False
    """Use the datagram's source port instead of ``port`` (for peers behind NAT, uTP)."""
    read_only: bool = field(default=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class UnknownQuery:
    """A query for a method we do not serve (BEP 44 ``get``, ``sample_infohashes``...)."""

    transaction_id: bytes
    sender_id: bytes
    method: bytes
    read_only: bool = field(default=False, kw_only=True)


Query: TypeAlias = Ping | FindNode | GetPeers | AnnouncePeer | UnknownQuery


@dataclass(frozen=True, slots=True)
class Response:
    transaction_id: bytes
    sender_id: bytes
    nodes: tuple[NodeInfo, ...] = ()
    values: tuple[Address, ...] = ()
    token: bytes | None = None
    your_address: Address | None = None
    """BEP 42 ``ip``: the address the responder saw our query come from."""


@dataclass(frozen=True, slots=True)
class ErrorReply:
    transaction_id: bytes
    code: int
    message: str


Message: TypeAlias = Query | Response | ErrorReply

_METHODS: dict[type[Any], bytes] = {
    Ping: b"ping",
    FindNode: b"find_node",
    GetPeers: b"get_peers",
    AnnouncePeer: b"announce_peer",
}


# ---------------------------------------------------------------- encoding


def encode_message(message: Message, *, version: bytes | None = None) -> bytes:
    """Bencode a message; ``version`` is the optional client ``v`` key."""
    top: dict[bytes, Any] = {b"t": message.transaction_id}
    if isinstance(message, Response):
        body: dict[bytes, Any] = {b"id": message.sender_id}
        if message.nodes:
            body[b"nodes"] = pack_nodes(list(message.nodes))
        if message.values:
            body[b"values"] = [pack_peer(address) for address in message.values]
        if message.token is not None:
            body[b"token"] = message.token
        top[b"y"] = b"r"
        top[b"r"] = body
        if message.your_address is not None:
            top[b"ip"] = pack_peer(message.your_address)
    elif isinstance(message, ErrorReply):
        top[b"y"] = b"e"
        top[b"e"] = [message.code, message.message.encode("utf-8")]
    else:
        args: dict[bytes, Any] = {b"id": message.sender_id}
        if isinstance(message, FindNode):
            args[b"target"] = message.target
        elif isinstance(message, GetPeers):
            args[b"info_hash"] = message.info_hash
        elif isinstance(message, AnnouncePeer):
            args[b"info_hash"] = message.info_hash
            args[b"port"] = message.port
            args[b"token"] = message.token
            if message.implied_port:
                args[b"implied_port"] = 1
        method = message.method if isinstance(message, UnknownQuery) else _METHODS[type(message)]
        top[b"y"] = b"q"
        top[b"q"] = method
        top[b"a"] = args
        if message.read_only:
            top[b"ro"] = 1
    if version is not None:
        top[b"v"] = version
    return bencode.encode(top)


# ---------------------------------------------------------------- decoding


def _bytes(container: dict[bytes, Any], key: bytes, where: str) -> bytes:
    value = container.get(key)
    if not isinstance(value, bytes):
        raise DHTError(f"{where} needs a string {key.decode()!r}")
    return value


def _node_id(container: dict[bytes, Any], key: bytes, where: str) -> bytes:
    value = _bytes(container, key, where)
    if len(value) != ID_LENGTH:
        raise DHTError(f"{where} {key.decode()!r} must be 20 bytes, got {len(value)}")
    return value


def _flag(container: dict[bytes, Any], key: bytes) -> bool:
    value = container.get(key, 0)
    if not isinstance(value, int) or value not in (0, 1):
        raise DHTError(f"{key.decode()!r} must be 0 or 1")
    return value == 1


def _decode_query(top: dict[bytes, Any], transaction_id: bytes) -> Query:
    method = _bytes(top, b"q", "a query")
    args = top.get(b"a")
    if not isinstance(args, dict):
        raise DHTError("a query needs an argument dictionary 'a'")
    sender = _node_id(args, b"id", method.decode("ascii", "replace"))
    read_only = _flag(top, b"ro")
    if method == b"ping":
        return Ping(transaction_id, sender, read_only=read_only)
    if method == b"find_node":
        return FindNode(
            transaction_id, sender, _node_id(args, b"target", "find_node"), read_only=read_only
        )
    if method == b"get_peers":
        return GetPeers(
            transaction_id, sender, _node_id(args, b"info_hash", "get_peers"), read_only=read_only
        )
    if method == b"announce_peer":
        info_hash = _node_id(args, b"info_hash", "announce_peer")
        token = _bytes(args, b"token", "announce_peer")
        if not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise DHTError(f"announce_peer token must be 1 to {MAX_TOKEN_LENGTH} bytes")
        implied = _flag(args, b"implied_port")
        port = args.get(b"port", 0 if implied else None)
        if not isinstance(port, int) or not 0 <= port < 65536 or (port == 0 and not implied):
            raise DHTError("announce_peer needs a port 1 to 65535 (or implied_port=1)")
        return AnnouncePeer(
            transaction_id, sender, info_hash, port, token, implied, read_only=read_only
        )
    if len(method) > 64:
        raise DHTError("query method name too long")
    return UnknownQuery(transaction_id, sender, method, read_only=read_only)


def _decode_values(raw: Any) -> tuple[Address, ...]:
    if not isinstance(raw, list):
        raise DHTError("'values' must be a list of compact peers")
    peers = []
    for item in raw:
        if not isinstance(item, bytes):
            raise DHTError("'values' must be a list of compact peers")
        if len(item) == COMPACT_PEER_LENGTH:
            peer = unpack_peer(item)
            if peer[1]:
                peers.append(peer)
        elif len(item) != _IPV6_PEER_LENGTH:  # IPv6 peers are fine, just not for us
            raise DHTError(f"a compact peer is 6 or 18 bytes, got {len(item)}")
    return tuple(peers)


def _decode_response(top: dict[bytes, Any], transaction_id: bytes) -> Response:
    body = top.get(b"r")
    if not isinstance(body, dict):
        raise DHTError("a response needs a dictionary 'r'")
    sender = _node_id(body, b"id", "a response")
    nodes: tuple[NodeInfo, ...] = ()
    if b"nodes" in body:
        nodes = tuple(unpack_nodes(_bytes(body, b"nodes", "a response")))
    values = _decode_values(body[b"values"]) if b"values" in body else ()
    token = None
    if b"token" in body:
        token = _bytes(body, b"token", "a response")
        if not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise DHTError(f"a token must be 1 to {MAX_TOKEN_LENGTH} bytes")
    your_address = None
    ip = top.get(b"ip")
    if isinstance(ip, bytes) and len(ip) == COMPACT_PEER_LENGTH:
        your_address = unpack_peer(ip)
    return Response(transaction_id, sender, nodes, values, token, your_address)


def _decode_error(top: dict[bytes, Any], transaction_id: bytes) -> ErrorReply:
    body = top.get(b"e")
    if (
        not isinstance(body, list)
        or len(body) < 2
        or not isinstance(body[0], int)
        or not isinstance(body[1], bytes)
    ):
        raise DHTError("an error needs 'e': [code, message]")
    text = body[1][:MAX_ERROR_TEXT].decode("utf-8", "replace")
    return ErrorReply(transaction_id, body[0], text)


def decode_message(data: bytes, *, max_size: int = MAX_DATAGRAM_SIZE) -> Message:
    """Decode one KRPC datagram; anything we cannot accept raises DHTError."""
    if len(data) > max_size:
        raise DHTError(f"datagram of {len(data)} bytes exceeds {max_size}")
    try:
        top = bencode.decode(data, max_depth=_MAX_DEPTH)
    except BencodeError as exc:
        raise DHTError(f"not bencoded: {exc}") from exc
    if not isinstance(top, dict):
        raise DHTError("a KRPC message is a dictionary")
    transaction_id = _bytes(top, b"t", "a KRPC message")
    if not 0 < len(transaction_id) <= MAX_TRANSACTION_ID_LENGTH:
        raise DHTError(f"transaction id must be 1 to {MAX_TRANSACTION_ID_LENGTH} bytes")
    kind = top.get(b"y")
    if kind == b"q":
        return _decode_query(top, transaction_id)
    if kind == b"r":
        return _decode_response(top, transaction_id)
    if kind == b"e":
        return _decode_error(top, transaction_id)
    raise DHTError(f"unknown KRPC message type {kind!r}")


def error_reply_for(data: bytes, reason: str) -> ErrorReply | None:
    """The protocol error (203) to answer a malformed *query* with, or None.

    Only a datagram that reads as a query with a usable transaction id gets an
    answer; malformed responses and garbage are dropped silently, so we never
    reply to a reply (which two confused nodes could bounce forever).
    """
    if len(data) > MAX_DATAGRAM_SIZE:
        return None
    try:
        top = bencode.decode(data, max_depth=_MAX_DEPTH)
    except BencodeError:
        return None
    if not isinstance(top, dict) or top.get(b"y") != b"q":
        return None
    transaction_id = top.get(b"t")
    if not isinstance(transaction_id, bytes) or not 0 < len(transaction_id) <= 32:
        return None
    return ErrorReply(transaction_id, ERROR_PROTOCOL, reason[:MAX_ERROR_TEXT])
