"""DHTNode behaviour: tokens, limits, queries and lookups between real nodes in memory."""

from __future__ import annotations

import random

import pytest

from opendistro import bencode
from opendistro.dht.krpc import (
    ERROR_METHOD_UNKNOWN,
    ERROR_PROTOCOL,
    AnnouncePeer,
    ErrorReply,
    GetPeers,
    Ping,
    Response,
    UnknownQuery,
    decode_message,
    encode_message,
)
from opendistro.dht.node import DHTConfig, DHTNode
from opendistro.dht.node_id import secure_id
from opendistro.dht.peer_store import PeerStore
from opendistro.dht.rate_limit import SourceRateLimiter
from opendistro.dht.tokens import TokenIssuer
from opendistro.errors import DHTError

INFO_HASH = bytes.fromhex("aa" * 20)
STRANGER = bytes.fromhex("55" * 20)


# -- tokens ---------------------------------------------------------------------


def test_token_valid_for_its_ip_only() -> None:
    tokens = TokenIssuer(random.Random(1), 0.0)
    token = tokens.issue("10.0.0.1", 0.0)
    assert tokens.is_valid(token, "10.0.0.1", 1.0)
    assert not tokens.is_valid(token, "10.0.0.2", 1.0)
    assert not tokens.is_valid(b"forged!!", "10.0.0.1", 1.0)


def test_token_survives_one_rotation_not_two() -> None:
    tokens = TokenIssuer(random.Random(1), 0.0, rotation=300.0)
    token = tokens.issue("10.0.0.1", 0.0)
    assert tokens.is_valid(token, "10.0.0.1", 299.0)
    assert tokens.is_valid(token, "10.0.0.1", 310.0)  # previous secret still accepted
    assert tokens.issue("10.0.0.1", 310.0) != token
    assert not tokens.is_valid(token, "10.0.0.1", 610.0)  # two rotations later: refused


def test_token_refused_after_a_long_silence() -> None:
    tokens = TokenIssuer(random.Random(1), 0.0, rotation=300.0)
    token = tokens.issue("10.0.0.1", 0.0)
    assert not tokens.is_valid(token, "10.0.0.1", 5000.0)


# -- limits ---------------------------------------------------------------------


def test_peer_store_bounds_and_expiry() -> None:
    store = PeerStore(max_info_hashes=3, max_peers_per_hash=5, ttl=100.0)
    rng = random.Random(1)
    for i in range(10):
        store.add(INFO_HASH, ("10.0.0.1", 1000 + i), float(i))
    assert store.peer_count(INFO_HASH) == 5
    assert set(store.get(INFO_HASH, 10.0, rng)) == {("10.0.0.1", 1000 + i) for i in range(5, 10)}
    assert len(store.get(INFO_HASH, 10.0, rng, limit=2)) == 2
    for i in range(5):
        store.add(bytes([i]) * 20, ("10.0.0.2", 1), 20.0)
    assert len(store) == 3
    assert INFO_HASH not in store  # least recently announced went first
    assert store.get(bytes([4]) * 20, 121.0, rng) == []  # expired
    store.expire(121.0)
    assert len(store) == 0


def test_rate_limiter_per_source_and_bounded() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=3.0, max_sources=10)
    assert [limiter.allow("10.0.0.1", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("10.0.0.2", 0.0)  # others are not punished
    assert limiter.allow("10.0.0.1", 1.5)  # refilled a token
    for i in range(100):
        limiter.allow(f"10.1.0.{i}", 2.0)
    assert len(limiter) <= 10
    limiter.prune(100.0)
    assert len(limiter) == 0


# -- one node answering queries ---------------------------------------------------


class Wire:
    """Carries datagrams between real DHTNodes in memory, instantly."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, int], DHTNode] = {}
        self.now = 0.0
        self.delivered = 0

    def add(self, address: tuple[str, int], **config: object) -> DHTNode:
        node = DHTNode(self.now, config=DHTConfig(**config), rng=random.Random(len(self.nodes)))  # type: ignore[arg-type]
        self.nodes[address] = node
        return node

    def address_of(self, node: DHTNode) -> tuple[str, int]:
        return next(a for a, n in self.nodes.items() if n is node)

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for source, node in list(self.nodes.items()):
                for data, destination in node.datagrams_to_send():
                    moved = True
                    target = self.nodes.get(destination)
                    if target is not None:
                        self.delivered += 1
                        target.datagram_received(data, source, self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for node in self.nodes.values():
            node.advance(self.now)
        self.pump()


def ask(node: DHTNode, message: object, source: tuple[str, int], now: float = 0.0) -> object:
    node.datagram_received(encode_message(message), source, now)  # type: ignore[arg-type]
    out = node.datagrams_to_send()
    replies = [decode_message(data) for data, destination in out if destination == source]
    return replies[0] if replies else None


def test_answers_ping_find_node_and_unknown_methods() -> None:
    node = DHTNode(0.0, rng=random.Random(1))
    source = ("10.0.0.9", 4000)
    reply = ask(node, Ping(b"p1", STRANGER), source)
    assert isinstance(reply, Response) and reply.sender_id == node.node_id
    assert reply.your_address == source  # BEP 42 "ip"
    reply = ask(node, UnknownQuery(b"u1", STRANGER, b"put"), source)
    assert isinstance(reply, ErrorReply) and reply.code == ERROR_METHOD_UNKNOWN


def test_malformed_query_answered_with_203_and_oversized_dropped() -> None:
    node = DHTNode(0.0, rng=random.Random(1))
    source = ("10.0.0.9", 4000)
    bad = bencode.encode({b"t": b"x", b"y": b"q", b"q": b"ping", b"a": {b"id": b"short"}})
    node.datagram_received(bad, source, 0.0)
    [(data, _)] = node.datagrams_to_send()
    reply = decode_message(data)
    assert isinstance(reply, ErrorReply) and reply.code == ERROR_PROTOCOL
    node.datagram_received(b"d1:t1:x" + b"x" * 2000, source, 0.0)
    assert node.datagrams_to_send() == []
    assert node.stats.malformed == 2


def test_announce_with_forged_or_foreign_token_is_refused() -> None:
    node = DHTNode(0.0, rng=random.Random(1))
    honest = ("10.0.0.1", 4000)
    reply = ask(node, GetPeers(b"g1", STRANGER, INFO_HASH), honest)
    assert isinstance(reply, Response) and reply.token is not None
    token = reply.token
    # someone else replays the token: refused
    thief = ask(node, AnnouncePeer(b"a1", STRANGER, INFO_HASH, 6881, token), ("10.0.0.66", 4000))
    assert isinstance(thief, ErrorReply) and thief.code == ERROR_PROTOCOL
    forged = ask(node, AnnouncePeer(b"a2", STRANGER, INFO_HASH, 6881, b"forged"), honest)
    assert isinstance(forged, ErrorReply)
    assert node.peer_store.peer_count(INFO_HASH) == 0
    assert node.stats.bad_tokens == 2
    ok = ask(node, AnnouncePeer(b"a3", STRANGER, INFO_HASH, 6881, token), honest)
    assert isinstance(ok, Response)
    # implied_port: the UDP source port is the peer's port
    ask(node, AnnouncePeer(b"a4", STRANGER, INFO_HASH, 1, token, implied_port=True), honest)
    reply = ask(node, GetPeers(b"g2", STRANGER, INFO_HASH), ("10.0.0.2", 1))
    assert isinstance(reply, Response)
    assert set(reply.values) == {("10.0.0.1", 6881), ("10.0.0.1", 4000)}


def test_query_flood_from_one_source_is_cut_off() -> None:
    node = DHTNode(0.0, config=DHTConfig(query_rate=1.0, query_burst=10.0), rng=random.Random(1))
    answered = sum(
        ask(node, Ping(i.to_bytes(2, "big"), STRANGER), ("10.0.0.7", 1)) is not None
        for i in range(100)
    )
    assert answered == 10
    assert node.stats.rate_limited == 90
    assert ask(node, Ping(b"zz", STRANGER), ("10.0.0.8", 1)) is not None


def test_reply_from_another_address_is_not_accepted() -> None:
    node = DHTNode(0.0, rng=random.Random(1))
    node.ping(("10.0.0.1", 1), 0.0)
    [(data, _)] = node.datagrams_to_send()
    query = decode_message(data)
    spoof = encode_message(Response(query.transaction_id, STRANGER))
    node.datagram_received(spoof, ("10.0.0.2", 1), 0.0)
    assert node.stats.unexpected_replies == 1
    assert len(node.table) == 0
    node.datagram_received(spoof, ("10.0.0.1", 1), 0.0)
    assert STRANGER in node.table


def test_bep42_enforcement_keeps_bad_public_ids_out_and_is_configurable() -> None:
    for enforce, expected in ((True, False), (False, True)):
        node = DHTNode(0.0, config=DHTConfig(enforce_node_id=enforce), rng=random.Random(1))
        node.ping(("8.8.8.8", 1), 0.0)
        [(data, _)] = node.datagrams_to_send()
        tid = decode_message(data).transaction_id
        node.datagram_received(encode_message(Response(tid, STRANGER)), ("8.8.8.8", 1), 0.0)
        assert (STRANGER in node.table) is expected
    node = DHTNode(0.0, rng=random.Random(1))
    good = secure_id("8.8.8.8", random.Random(3))
    node.ping(("8.8.8.8", 1), 0.0)
    [(data, _)] = node.datagrams_to_send()
    tid = decode_message(data).transaction_id
    node.datagram_received(encode_message(Response(tid, good)), ("8.8.8.8", 1), 0.0)
    assert good in node.table


def test_query_timeout_calls_back_and_marks_node() -> None:
    node = DHTNode(0.0, config=DHTConfig(query_timeout=2.0), rng=random.Random(1))
    results: list[object] = []
    node.ping(("10.0.0.1", 1), 0.0, lambda response, now: results.append((response, now)))
    assert node.next_deadline() == 2.0
    node.advance(1.0)
    assert results == []
    node.advance(2.0)
    assert results == [(None, 2.0)]
    assert node.stats.timeouts == 1


def test_node_id_must_be_20_bytes() -> None:
    with pytest.raises(DHTError):
        DHTNode(0.0, node_id=b"short")
    with pytest.raises(DHTError):
        DHTNode(0.0).get_peers(b"x" * 32, 0.0)


# -- several nodes ----------------------------------------------------------------


def test_small_network_finds_announced_peer() -> None:
    wire = Wire()
    addresses = [(f"10.0.0.{i + 1}", 6881) for i in range(12)]
    nodes = [wire.add(address) for address in addresses]
    for node in nodes[1:]:
        node.bootstrap([addresses[0]], wire.now)
        wire.pump()
    announce = nodes[3].get_peers(INFO_HASH, wire.now, announce_port=51413)
    wire.pump()
    assert announce.finished and announce.announced_to
    lookup = nodes[9].get_peers(INFO_HASH, wire.now)
    wire.pump()
    assert lookup.finished
    assert ("10.0.0.4", 51413) in lookup.peers
    assert lookup.hops >= 1 and lookup.queries >= 1


def test_lookup_survives_dead_nodes_by_timing_out() -> None:
    wire = Wire()
    addresses = [(f"10.0.1.{i + 1}", 6881) for i in range(8)]
    nodes = [wire.add(address) for address in addresses]
    for node in nodes[1:]:
        node.bootstrap([addresses[0]], wire.now)
        wire.pump()
    for address in addresses[4:]:
        del wire.nodes[address]  # gone without a word
    lookup = nodes[1].get_peers(INFO_HASH, wire.now)
    wire.pump()
    while not lookup.finished:
        wire.advance(1.0)
    assert lookup.timeouts >= 1
    assert lookup.responses >= 1
