"""Announce/scrape encoding (HTTP and BEP 15 UDP) and BEP 12 tier order, all without I/O."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.errors import TrackerError
from opendistro.tracker import udp
from opendistro.tracker.protocol import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    check_announce_proof,
    decode_scrape_response,
    encode_failure,
    encode_scrape_response,
    pack_compact_peers,
    parse_query,
    parse_scrape_query,
    scrape_query,
    scrape_url_for,
    unpack_compact_peers,
)
from opendistro.tracker.tiers import TrackerTiers

INFO_HASH = bytes(range(20))
PEER_ID = b"-OD0001-" + bytes([0, 255, 37, 38, 61, 43, 32, 63, 35, 1, 2, 3])

# ---------------------------------------------------------------- announce request


def test_request_query_round_trip_keeps_binary_fields() -> None:
    request = AnnounceRequest(
        info_hash=INFO_HASH,
        peer_id=PEER_ID,
        port=6881,
        uploaded=10,
        downloaded=20,
        left=2**40,
        event=AnnounceEvent.STARTED,
        numwant=80,
        compact=False,
        key=0xDEADBEEF,
        ip="127.0.0.2",
        tracker_id=b"tr&id=1",
    )
    assert AnnounceRequest.from_query(request.to_query()) == request
    assert AnnounceRequest.from_query(request.to_query().encode()) == request


def test_request_defaults_when_optional_parameters_are_absent() -> None:
    query = AnnounceRequest(INFO_HASH, PEER_ID, 1).to_query()
    minimal = "&".join(p for p in query.split("&") if p.split("=")[0] in {"info_hash", "peer_id"})
    parsed = AnnounceRequest.from_query(minimal + "&port=51413")
    assert parsed.port == 51413
    assert parsed.numwant == 50
    assert parsed.compact is True
    assert parsed.event is AnnounceEvent.NONE
    assert parsed.left == 0


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda q: q.replace("port=6881", "port=70000"), "port"),
        (lambda q: q.replace("port=6881", "port=abc"), "port"),
        (lambda q: q.replace("left=0", "left=-5"), "left"),
        (lambda q: q.replace("info_hash=", "info_hash=%00"), "info_hash"),
        (lambda q: q.replace("peer_id=", "x="), "peer_id"),
    ],
)
def test_request_rejects_bad_parameters(mutation: object, message: str) -> None:
    query = AnnounceRequest(INFO_HASH, PEER_ID, 6881).to_query()
    assert callable(mutation)
    with pytest.raises(TrackerError, match=message):
        AnnounceRequest.from_query(mutation(query))


def test_unknown_event_is_a_regular_announce() -> None:
    query = AnnounceRequest(INFO_HASH, PEER_ID, 1).to_query() + "&event=paused"
    assert AnnounceRequest.from_query(query).event is AnnounceEvent.NONE


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_query_only_raises_tracker_error(garbage: bytes) -> None:
    try:
        request = AnnounceRequest.from_query(garbage)
    except TrackerError:
        return
    assert len(request.info_hash) == 20 and len(request.peer_id) == 20


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            [
                "info_hash",
                "peer_id",
                "port",
                "left",
                "numwant",
                "key",
                "ip",
                "event",
                "compact",
                "%",
                "=",
                "&",
                "%zz",
                "-1",
                "+",
            ]
        ),
        max_size=30,
    )
)
def test_query_shaped_garbage_only_raises_tracker_error(tokens: list[str]) -> None:
    with pytest.raises(TrackerError):
        AnnounceRequest.from_query("".join(tokens))


def test_a_leading_question_mark_is_not_part_of_the_first_name() -> None:
    query = AnnounceRequest(INFO_HASH, PEER_ID, 6881).to_query()
    assert AnnounceRequest.from_query("?" + query) == AnnounceRequest.from_query(query)


def test_too_many_query_parameters_are_refused() -> None:
    with pytest.raises(TrackerError, match="too many query parameters"):
        parse_query("&".join(f"p{n}=1" for n in range(257)))
    assert len(parse_query("&".join(f"p{n}=1" for n in range(256)))) == 256


def test_odd_optional_parameters_fall_back_to_their_defaults() -> None:
    base = AnnounceRequest(INFO_HASH, PEER_ID, 6881).to_query()
    parsed = AnnounceRequest.from_query(
        base.replace("numwant=50", "numwant=-1") + "&key=not-hex&ip=%FF%FE"
    )
    assert parsed.numwant == 50  # -1 means "the tracker's default"
    assert parsed.key is None  # an odd key spelling is ignored, not refused
    assert parsed.ip is None  # so is an ip claim that is not ASCII
    too_big_key = AnnounceRequest.from_query(base + "&key=1FFFFFFFF")
    assert too_big_key.key is None
    assert AnnounceRequest.from_query(base + "&key=ff").key == 0xFF


def test_a_peer_id_of_the_wrong_length_is_refused() -> None:
    query = AnnounceRequest(INFO_HASH, PEER_ID, 6881).to_query()
    with pytest.raises(TrackerError, match="peer_id must be 20 bytes"):
        AnnounceRequest.from_query(query.replace("peer_id=", "peer_id=x"))


def test_an_identity_proof_is_all_or_nothing() -> None:
    with pytest.raises(TrackerError, match="odid, odts and odsig together"):
        AnnounceRequest(INFO_HASH, PEER_ID, 1, identity=b"\x01" * 32)
    anonymous = AnnounceRequest(INFO_HASH, PEER_ID, 1)
    with pytest.raises(TrackerError, match="claims no identity"):
        _ = anonymous.statement
    assert check_announce_proof(anonymous, now=0) == "no identity proof"


# ---------------------------------------------------------------- announce response

PEERS_V4 = (("127.0.0.1", 6881), ("10.1.2.3", 65535))
PEERS_V6 = (("::1", 6882), ("2001:db8::5", 1))


def test_compact_response_round_trip_with_ipv4_and_ipv6() -> None:
    response = AnnounceResponse(
        interval=900,
        peers=PEERS_V4 + PEERS_V6,
        min_interval=30,
        complete=3,
        incomplete=4,
        warning="be nice",
        tracker_id=b"abc",
    )
    body = response.encode(compact=True)
    decoded_dict = bencode.decode(body)
    assert decoded_dict[b"peers"] == pack_compact_peers(PEERS_V4, ipv6=False)
    assert len(decoded_dict[b"peers"]) == 12
    assert len(decoded_dict[b"peers6"]) == 36
    assert AnnounceResponse.decode(body) == response


def test_dictionary_response_round_trip_carries_peer_ids() -> None:
    response = AnnounceResponse(
        interval=60,
        peers=PEERS_V4 + PEERS_V6,
        peer_ids=(b"a" * 20, b"b" * 20, b"c" * 20, b"d" * 20),
    )
    body = response.encode(compact=False)
    entries = bencode.decode(body)[b"peers"]
    assert entries[0] == {b"ip": b"127.0.0.1", b"port": 6881, b"peer id": b"a" * 20}
    assert AnnounceResponse.decode(body) == response


def test_compact_peers_known_bytes() -> None:
    assert pack_compact_peers([("1.2.3.4", 0x1AE1)], ipv6=False) == b"\x01\x02\x03\x04\x1a\xe1"
    assert unpack_compact_peers(b"\x7f\x00\x00\x01\x00\x50", ipv6=False) == (("127.0.0.1", 80),)
    with pytest.raises(TrackerError):
        unpack_compact_peers(b"\x00" * 7, ipv6=False)
    with pytest.raises(TrackerError):
        unpack_compact_peers(b"\x00" * 17, ipv6=True)


def test_failure_reason_becomes_tracker_error() -> None:
    with pytest.raises(TrackerError, match="torrent not registered"):
        AnnounceResponse.decode(encode_failure("torrent not registered"))
    with pytest.raises(TrackerError, match="nope"):
        decode_scrape_response(encode_failure("nope"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not bencode",
        b"le",
        b"d8:intervali-1ee",
        b"d5:peers3:abce",
        b"d8:intervali60e5:peers3:abce",
        b"d8:intervali60e5:peersi3ee",
        b"d8:intervali60e5:peersl3:abcee",
        b"d8:intervali60e5:peersld2:ip3:abcee",
        b"d8:intervali60e6:peers6i1ee",
        b"d8:intervali60e5:peersld2:ip1:\xff4:porti1eeee",
    ],
)
def test_malformed_response_is_tracker_error(body: bytes) -> None:
    with pytest.raises(TrackerError):
        AnnounceResponse.decode(body)


def test_compact_encoding_skips_hostnames_and_bad_ports() -> None:
    peers = [("tracker.example", 1), ("127.0.0.1", 70_000), ("127.0.0.2", 6881)]
    assert pack_compact_peers(peers, ipv6=False) == bytes([127, 0, 0, 2]) + struct.pack(
        ">H", 6881
    )
    body = AnnounceResponse(interval=60, peers=tuple(peers)).encode(compact=True)
    assert AnnounceResponse.decode(body).peers == (("127.0.0.2", 6881),)


def test_dictionary_peers_with_peers6_keep_ids_parallel() -> None:
    body = bencode.encode({
        b"interval": 60,
        b"peers": [{b"ip": b"127.0.0.1", b"port": 1, b"peer id": PEER_ID}],
        b"peers6": pack_compact_peers([("::1", 2)], ipv6=True),
    })
    response = AnnounceResponse.decode(body)
    assert response.peers == (("127.0.0.1", 1), ("::1", 2))
    assert response.peer_ids == (PEER_ID, None)


@pytest.mark.parametrize(
    "entry",
    [{b"port": 1}, {b"ip": b"127.0.0.1"}, {b"ip": b"127.0.0.1", b"port": 65536},
     {b"ip": 7, b"port": 1}],
    ids=["no ip", "no port", "port out of range", "ip not a string"],
)
def test_a_dictionary_peer_without_a_usable_address_is_refused(entry: dict[bytes, object]) -> None:
    body = bencode.encode({b"interval": 60, b"peers": [entry]})
    with pytest.raises(TrackerError, match="lacks a valid ip or port"):
        AnnounceResponse.decode(body)


_bencodable = st.recursive(
    st.integers(-(2**40), 2**40) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    b"interval",
                    b"peers",
                    b"peers6",
                    b"ip",
                    b"port",
                    b"peer id",
                    b"failure reason",
                    b"complete",
                    b"files",
                    b"min interval",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.binary(max_size=200) | _bencodable.map(bencode.encode))
def test_garbage_bodies_only_raise_tracker_error(body: bytes) -> None:
    for decoder in (AnnounceResponse.decode, decode_scrape_response):
        with contextlib.suppress(TrackerError):
            decoder(body)


# ---------------------------------------------------------------- scrape


def test_scrape_round_trip() -> None:
    other = b"\xff" * 20
    files = {INFO_HASH: ScrapeStats(1, 2, 3), other: ScrapeStats(0, 0, 7)}
    assert decode_scrape_response(encode_scrape_response(files)) == files
    assert parse_scrape_query(scrape_query([INFO_HASH, other, INFO_HASH])) == [INFO_HASH, other]
    assert parse_scrape_query("") == []
    with pytest.raises(TrackerError):
        parse_scrape_query("info_hash=short")


def test_scrape_url_convention() -> None:
    assert scrape_url_for("http://t.example/announce") == "http://t.example/scrape"
    assert scrape_url_for("http://t/x/announce.php?k=1") == "http://t/x/scrape.php?k=1"
    assert scrape_url_for("http://t/scrape") == "http://t/scrape"
    with pytest.raises(TrackerError):
        scrape_url_for("http://t/a")


def test_scrape_query_ignores_other_parameters_and_bad_entries_are_refused() -> None:
    assert parse_scrape_query("passkey=abc&" + scrape_query([INFO_HASH])) == [INFO_HASH]
    with pytest.raises(TrackerError, match="not a dictionary"):
        decode_scrape_response(bencode.encode({b"files": {INFO_HASH: 5}}))
    with pytest.raises(TrackerError, match="'files'"):
        decode_scrape_response(bencode.encode({b"files": [INFO_HASH]}))


# ---------------------------------------------------------------- UDP (BEP 15)


def test_udp_connect_exchange() -> None:
    packet = udp.encode_connect_request(0x1234)
    assert packet == struct.pack(">QII", 0x41727101980, 0, 0x1234)
    parsed = udp.parse_request(packet)
    assert parsed == udp.ConnectRequest(0x1234)
    reply = udp.encode_connect_response(0x1234, 0xAABBCCDDEEFF0011)
    assert udp.decode_connect_response(reply, 0x1234) == 0xAABBCCDDEEFF0011
    with pytest.raises(TrackerError, match="transaction"):
        udp.decode_connect_response(reply, 0x9999)


def test_udp_announce_round_trip() -> None:
    request = AnnounceRequest(
        INFO_HASH,
        PEER_ID,
        6881,
        uploaded=1,
        downloaded=2,
        left=3,
        event=AnnounceEvent.COMPLETED,
        numwant=10,
        key=77,
        ip="127.0.0.5",
    )
    packet = udp.encode_announce_request(99, 7, request)
    assert len(packet) == 98
    parsed = udp.parse_request(packet)
    assert parsed == udp.UdpAnnounceRequest(99, 7, request)
    response = AnnounceResponse(interval=120, peers=PEERS_V4 + PEERS_V6, complete=5, incomplete=6)
    v4 = udp.decode_announce_response(
        udp.encode_announce_response(7, response, ipv6=False), 7, ipv6=False
    )
    assert v4 == AnnounceResponse(interval=120, peers=PEERS_V4, complete=5, incomplete=6)
    v6 = udp.decode_announce_response(
        udp.encode_announce_response(7, response, ipv6=True), 7, ipv6=True
    )
    assert v6.peers == PEERS_V6


def test_udp_scrape_and_error() -> None:
    hashes = [INFO_HASH, b"\x01" * 20]
    parsed = udp.parse_request(udp.encode_scrape_request(5, 6, hashes))
    assert parsed == udp.UdpScrapeRequest(5, 6, tuple(hashes))
    reply = udp.encode_scrape_response(6, hashes, {INFO_HASH: ScrapeStats(1, 2, 3)})
    assert udp.decode_scrape_response(reply, 6, hashes) == {
        INFO_HASH: ScrapeStats(1, 2, 3),
        hashes[1]: ScrapeStats(0, 0, 0),
    }
    with pytest.raises(TrackerError, match="go away"):
        udp.decode_scrape_response(udp.encode_error(6, "go away"), 6, hashes)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_udp_garbage_only_raises_tracker_error(packet: bytes) -> None:
    for parse in (
        udp.parse_request,
        lambda data: udp.decode_connect_response(data, 0),
        lambda data: udp.decode_announce_response(data, 0, ipv6=False),
        lambda data: udp.decode_scrape_response(data, 0, [INFO_HASH]),
    ):
        with contextlib.suppress(TrackerError):
            parse(packet)


def test_connection_ids_are_tied_to_address_and_time() -> None:
    issuer = udp.ConnectionIdIssuer(b"secret", window=60)
    address = ("127.0.0.1", 5000)
    cid = issuer.issue(address, now=1000.0)
    assert issuer.is_valid(cid, address, now=1000.0)
    assert issuer.is_valid(cid, address, now=1000.0 + 60)
    assert not issuer.is_valid(cid, address, now=1000.0 + 180)
    assert not issuer.is_valid(cid, ("127.0.0.1", 5001), now=1000.0)
    assert not udp.ConnectionIdIssuer(b"other").is_valid(cid, address, now=1000.0)


def test_udp_announce_sends_only_an_ipv4_ip_claim() -> None:
    for claim in ("not-an-address", "::1", None):
        request = AnnounceRequest(INFO_HASH, PEER_ID, 6881, ip=claim)
        parsed = udp.parse_request(udp.encode_announce_request(1, 2, request))
        assert isinstance(parsed, udp.UdpAnnounceRequest)
        assert parsed.request.ip is None


def test_udp_scrape_requests_name_one_to_74_well_formed_hashes() -> None:
    with pytest.raises(TrackerError, match="1 to 74"):
        udp.encode_scrape_request(1, 2, [])
    with pytest.raises(TrackerError, match="1 to 74"):
        udp.encode_scrape_request(1, 2, [INFO_HASH] * 75)
    with pytest.raises(TrackerError, match="20 bytes"):
        udp.encode_scrape_request(1, 2, [INFO_HASH, b"short"])
    assert len(udp.encode_scrape_request(1, 2, [INFO_HASH] * 74)) == 16 + 74 * 20


def test_udp_server_side_refuses_short_and_unknown_packets() -> None:
    announce = udp.encode_announce_request(1, 2, AnnounceRequest(INFO_HASH, PEER_ID, 6881))
    with pytest.raises(TrackerError, match="announce too short"):
        udp.parse_request(announce[:-1])
    bad_event = announce[:80] + struct.pack(">I", 9) + announce[84:]
    with pytest.raises(TrackerError, match="unknown announce event 9"):
        udp.parse_request(bad_event)
    with pytest.raises(TrackerError, match="names no torrent"):
        udp.parse_request(struct.pack(">QII", 1, udp.Action.SCRAPE, 2) + b"x" * 19)


def test_udp_replies_of_the_right_action_but_too_short_are_refused() -> None:
    reply = udp.encode_scrape_response(6, [INFO_HASH], {})
    with pytest.raises(TrackerError, match="too short"):
        udp.decode_scrape_response(reply, 6, [INFO_HASH, b"\x01" * 20])
    with pytest.raises(TrackerError, match="action 2, expected 1"):
        udp.decode_announce_response(reply, 6, ipv6=False)


# ---------------------------------------------------------------- BEP 12 tiers


def test_tiers_keep_tier_order_and_shuffle_within() -> None:
    tiers = [["a1", "a2", "a3", "a4"], ["b1", "b2"]]
    orders = {tuple(TrackerTiers(tiers, random.Random(seed)).urls()) for seed in range(30)}
    assert len(orders) > 1  # shuffled
    for order in orders:
        assert set(order[:4]) == {"a1", "a2", "a3", "a4"}
        assert set(order[4:]) == {"b1", "b2"}


def test_working_tracker_moves_to_front_of_its_tier() -> None:
    tiers = TrackerTiers([["a1", "a2", "a3"], ["b1", "b2"]], random.Random(1))
    first_tier = tiers.tiers[0]
    last = first_tier[-1]
    for url in tiers.urls():  # promoting while iterating is safe
        if url in ("b2", last):
            tiers.succeeded(url)
    assert tiers.tiers[0][0] == last
    assert tiers.tiers[1][0] == "b2"
    assert set(tiers.tiers[0]) == set(first_tier)
    tiers.succeeded("unknown")  # ignored
    assert next(iter(tiers.urls())) == last


def test_empty_tiers_are_dropped() -> None:
    tiers = TrackerTiers([[], ["a", "a"], []], random.Random(1))
    assert tiers.tiers == [["a"]]
    assert list(tiers.urls()) == ["a"]
