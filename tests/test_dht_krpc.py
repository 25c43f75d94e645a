"""KRPC codec (BEP 5): good messages round-trip, bad ones raise DHTError, never crash."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.dht.compact import NodeInfo, pack_nodes, pack_peer, unpack_nodes, unpack_peer
from opendistro.dht.krpc import (
    ERROR_PROTOCOL,
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    Ping,
    Response,
    UnknownQuery,
    decode_message,
    encode_message,
    error_reply_for,
)
from opendistro.errors import DHTError, RemoteProtocolError

ID_A = bytes(range(20))
ID_B = bytes(range(20, 40))

GOOD_MESSAGES = [
    Ping(b"aa", ID_A),
    Ping(b"t1", ID_A, read_only=True),
    FindNode(b"\x00\x01", ID_A, ID_B),
    GetPeers(b"xyz", ID_A, ID_B),
    AnnouncePeer(b"a", ID_A, ID_B, 6881, b"tok"),
    AnnouncePeer(b"a", ID_A, ID_B, 0, b"tok", implied_port=True),
    UnknownQuery(b"q", ID_A, b"sample_infohashes"),
    Response(b"aa", ID_B),
    Response(
        b"aa",
        ID_B,
        nodes=(NodeInfo(ID_A, ("10.0.0.1", 6881)), NodeInfo(ID_B, ("1.2.3.4", 1))),
        values=(("127.0.0.1", 51413), ("8.8.8.8", 80)),
        token=b"secret",
        your_address=("203.0.113.9", 4000),
    ),
    ErrorReply(b"zz", 201, "A Generic Error Ocurred"),
]


@pytest.mark.parametrize("message", GOOD_MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    data = encode_message(message, version=b"OD\x00\x01")  # type: ignore[arg-type]
    assert decode_message(data) == message


def test_bep5_example_ping_decodes() -> None:
    # The ping query as BEP 5 prints it.
    data = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    assert decode_message(data) == Ping(b"aa", b"abcdefghij0123456789")


def test_bep5_example_get_peers_response_with_values() -> None:
    data = (
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee"
        b"1:t2:aa1:y1:re"
    )
    message = decode_message(data)
    assert isinstance(message, Response)
    assert message.token == b"aoeusnth"
    assert message.values == (unpack_peer(b"axje.u"), unpack_peer(b"idhtnm"))


def test_libtorrent_style_extras_are_ignored() -> None:
    data = bencode.encode(
        {
            b"t": b"ab",
            b"y": b"q",
            b"q": b"get_peers",
            b"v": b"LT\x02\x01",
            b"a": {b"id": ID_A, b"info_hash": ID_B, b"want": [b"n4"], b"noseed": 1},
        }
    )
    assert decode_message(data) == GetPeers(b"ab", ID_A, ID_B)


def test_ipv6_values_are_skipped_not_fatal() -> None:
    data = bencode.encode(
        {b"t": b"ab", b"y": b"r", b"r": {b"id": ID_A, b"values": [b"x" * 18, b"abcd\x1a\xe1"]}}
    )
    message = decode_message(data)
    assert isinstance(message, Response)
    assert message.values == (("97.98.99.100", 6881),)


BAD = {
    "not bencoded": b"hello",
    "a list": b"le",
    "no transaction": bencode.encode({b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}),
    "empty transaction": bencode.encode(
        {b"t": b"", b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}
    ),
    "long transaction": bencode.encode(
        {b"t": b"x" * 33, b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}
    ),
    "unknown type": bencode.encode({b"t": b"a", b"y": b"x"}),
    "short id": bencode.encode({b"t": b"a", b"y": b"q", b"q": b"ping", b"a": {b"id": b"abc"}}),
    "no args": bencode.encode({b"t": b"a", b"y": b"q", b"q": b"ping"}),
    "find_node without target": bencode.encode(
        {b"t": b"a", b"y": b"q", b"q": b"find_node", b"a": {b"id": ID_A}}
    ),
    "announce without token": bencode.encode(
        {
            b"t": b"a",
            b"y": b"q",
            b"q": b"announce_peer",
            b"a": {b"id": ID_A, b"info_hash": ID_B, b"port": 1},
        }
    ),
    "announce port 0": bencode.encode(
        {
            b"t": b"a",
            b"y": b"q",
            b"q": b"announce_peer",
            b"a": {b"id": ID_A, b"info_hash": ID_B, b"port": 0, b"token": b"x"},
        }
    ),
    "announce port too big": bencode.encode(
        {
            b"t": b"a",
            b"y": b"q",
            b"q": b"announce_peer",
            b"a": {b"id": ID_A, b"info_hash": ID_B, b"port": 70000, b"token": b"x"},
        }
    ),
    "implied_port 2": bencode.encode(
        {
            b"t": b"a",
            b"y": b"q",
            b"q": b"announce_peer",
            b"a": {b"id": ID_A, b"info_hash": ID_B, b"implied_port": 2, b"token": b"x"},
        }
    ),
    "nodes not multiple of 26": bencode.encode(
        {b"t": b"a", b"y": b"r", b"r": {b"id": ID_A, b"nodes": b"x" * 27}}
    ),
    "values not a list": bencode.encode(
        {b"t": b"a", b"y": b"r", b"r": {b"id": ID_A, b"values": b"abcdef"}}
    ),
    "value of 7 bytes": bencode.encode(
        {b"t": b"a", b"y": b"r", b"r": {b"id": ID_A, b"values": [b"abcdefg"]}}
    ),
    "error without code": bencode.encode({b"t": b"a", b"y": b"e", b"e": [b"oops"]}),
    "too deep": b"d1:t1:a1:y1:q1:q4:ping1:ad2:idllllleeeeeee",
    "oversized": bencode.encode({b"t": b"a", b"y": b"e", b"e": [201, b"x" * 2000]}),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_messages_raise_dht_error(name: str) -> None:
    with pytest.raises(DHTError):
        decode_message(BAD[name])
    assert issubclass(DHTError, RemoteProtocolError)


def test_malformed_query_gets_protocol_error_reply_and_garbage_does_not() -> None:
    reply = error_reply_for(BAD["short id"], "bad id")
    assert reply == ErrorReply(b"a", ERROR_PROTOCOL, "bad id")
    assert error_reply_for(b"garbage", "x") is None
    assert error_reply_for(BAD["nodes not multiple of 26"], "x") is None  # never answer a reply


def test_compact_nodes_and_peers() -> None:
    nodes = [NodeInfo(ID_A, ("192.0.2.1", 6881)), NodeInfo(ID_B, ("198.51.100.7", 65535))]
    packed = pack_nodes(nodes)
    assert len(packed) == 52
    assert unpack_nodes(packed) == nodes
    assert unpack_nodes(ID_A + pack_peer(("1.1.1.1", 0))) == []  # undialable: dropped
    with pytest.raises(DHTError):
        pack_peer(("::1", 80))
    with pytest.raises(DHTError):
        unpack_peer(b"12345")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(DHTError):
        decode_message(data)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=8),
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
    st.integers(1, 65535),
    st.binary(min_size=1, max_size=20),
    st.booleans(),
)
def test_announce_round_trips(
    tid: bytes, sender: bytes, info_hash: bytes, port: int, token: bytes, implied: bool
) -> None:
    message = AnnouncePeer(tid, sender, info_hash, port, token, implied)
    assert decode_message(encode_message(message)) == message
