"""BEP 11 ut_pex: payload codec, what we tell a peer over time, and what we believe from one."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.errors import LocalProtocolError, RemoteProtocolError
from opendistro.wire.connection import PeerConnection
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.ut_pex import (
    EXTENSION_NAME,
    MAX_ADDED,
    MAX_DECODED_PEERS,
    MAX_DROPPED,
    MAX_PEX_PAYLOAD,
    NO_FLAGS,
    PEX_INTERVAL,
    PexFlags,
    PexMessage,
    PexPeer,
    PexReceiver,
    PexSender,
    decode_pex,
    encode_pex,
    is_local_address,
)
from opendistro.wire.messages import Extended
from tests.lt_session import loopback_session

VECTORS = Path(__file__).resolve().parent.parent / "extensions" / "ut_pex_vectors.json"


def v4_peers(count: int, start: int = 0, flags: PexFlags = NO_FLAGS) -> list[PexPeer]:
    return [PexPeer(f"10.9.{i // 250}.{i % 250 + 1}", 6881, flags) for i in range(start, count)]


# ---------------------------------------------------------------- codec


@pytest.mark.parametrize(
    "message",
    [
        PexMessage(),
        PexMessage(added=(PexPeer("1.2.3.4", 6881),)),
        PexMessage(added=(PexPeer("2001:db8::5", 1, PexFlags.SEED | PexFlags.UTP),)),
        PexMessage(dropped=(("5.6.7.8", 65535), ("::1", 80))),
        PexMessage(
            added=(
                PexPeer("8.8.8.8", 51413, PexFlags.ENCRYPTION | PexFlags.REACHABLE),
                PexPeer("9.9.9.9", 2),
                PexPeer("2a00:1450::1", 443, PexFlags.HOLEPUNCH),
            ),
            dropped=(("1.1.1.1", 1),),
        ),
    ],
    ids=repr,
)
def test_round_trip(message: PexMessage) -> None:
    assert decode_pex(encode_pex(message)) == message


def test_byte_layout_matches_libtorrent() -> None:
    # Written out by hand: libtorrent always sends all six keys, sorted, empty ones included.
    message = PexMessage(
        added=(
            PexPeer("10.0.0.1", 6881, PexFlags.SEED | PexFlags.ENCRYPTION),
            PexPeer("2001:db8::1", 51413, PexFlags.UTP),
        ),
        dropped=(("192.168.1.2", 80),),
    )
    expected = (
        b"d"
        b"5:added6:\x0a\x00\x00\x01\x1a\xe1"
        b"7:added.f1:\x03"
        b"6:added618:\x20\x01\x0d\xb8" + bytes(11) + b"\x01\xc8\xd5"
        b"8:added6.f1:\x04"
        b"7:dropped6:\xc0\xa8\x01\x02\x00\x50"
        b"8:dropped60:"
        b"e"
    )
    assert encode_pex(message) == expected
    assert decode_pex(expected) == message


def test_empty_message_still_has_every_key() -> None:
    raw = bencode.decode(encode_pex(PexMessage()))
    assert raw == {
        b"added": b"",
        b"added.f": b"",
        b"added6": b"",
        b"added6.f": b"",
        b"dropped": b"",
        b"dropped6": b"",
    }


def _vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


@pytest.mark.parametrize("vector", _vectors(), ids=lambda vector: vector["name"])
def test_vectors(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["hex"])
    if "error" in vector:
        assert vector["error"] == "RemoteProtocolError"
        with pytest.raises(RemoteProtocolError):
            decode_pex(payload)
        return
    expected = vector["expected"]
    message = decode_pex(payload)
    assert [(peer.host, peer.port, int(peer.flags)) for peer in message.added] == [
        (peer["host"], peer["port"], peer["flags"]) for peer in expected["added"]
    ]
    assert [list(address) for address in message.dropped] == expected["dropped"]


def test_vectors_cover_good_and_bad() -> None:
    vectors = _vectors()
    assert sum("error" in vector for vector in vectors) >= 10
    assert sum("expected" in vector for vector in vectors) >= 10


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = b"d5:added" + str(MAX_PEX_PAYLOAD).encode() + b":" + bytes(MAX_PEX_PAYLOAD) + b"e"
    with pytest.raises(RemoteProtocolError, match="too large"):
        decode_pex(payload)


def test_long_dropped_lists_are_truncated_not_refused() -> None:
    dropped = b"".join(
        ipaddress.IPv4Address(0x0A000000 + i).packed + b"\x00\x50" for i in range(1, 400)
    )
    message = decode_pex(bencode.encode({b"dropped": dropped}))
    assert len(message.dropped) == MAX_DECODED_PEERS
    assert message.dropped[0] == ("10.0.0.1", 80)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (PexMessage(added=(PexPeer("example.org", 80),)), "IP addresses"),
        (PexMessage(added=(PexPeer("1.2.3.4", 0),)), "port"),
        (PexMessage(dropped=(("1.2.3.4", 70000),)), "port"),
        (PexMessage(added=tuple(v4_peers(MAX_DECODED_PEERS + 1))), "at most"),
    ],
)
def test_encode_refuses_what_we_must_not_send(message: PexMessage, problem: str) -> None:
    with pytest.raises(LocalProtocolError, match=problem):
        encode_pex(message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_remote_protocol_error(payload: bytes) -> None:
    try:
        message = decode_pex(payload)
    except RemoteProtocolError:
        return
    assert isinstance(message, PexMessage)


_KEYS = st.sampled_from([b"added", b"added.f", b"added6", b"added6.f", b"dropped", b"dropped6"])
_VALUES = st.one_of(st.binary(max_size=60), st.integers(), st.lists(st.binary(max_size=4)))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_random_pex_dictionaries_decode_or_raise_remote_protocol_error(
    raw: dict[bytes, Any],
) -> None:
    try:
        message = decode_pex(bencode.encode(raw))
    except RemoteProtocolError:
        return
    for peer in message.added:
        assert 0 < peer.port <= 0xFFFF
        assert int(peer.flags) & ~0x1F == 0
        ipaddress.ip_address(peer.host)
    for _, port in message.dropped:
        assert 0 < port <= 0xFFFF


_PEERS = st.builds(
    PexPeer,
    st.ip_addresses().map(str),
    st.integers(1, 65535),
    st.integers(0, 0x1F).map(PexFlags),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_PEERS, max_size=30),
    st.lists(st.tuples(st.ip_addresses().map(str), st.integers(1, 65535)), max_size=30),
)
def test_round_trip_of_random_messages(
    added: list[PexPeer], dropped: list[tuple[str, int]]
) -> None:
    decoded = decode_pex(encode_pex(PexMessage(tuple(added), tuple(dropped))))
    # The wire keeps IPv4 and IPv6 apart, so IPv4 comes back first, each family in order.
    assert list(decoded.added) == sorted(added, key=lambda peer: _version(peer.host))
    assert list(decoded.dropped) == sorted(dropped, key=lambda address: _version(address[0]))


def _version(host: str) -> int:
    return ipaddress.ip_address(host).version


# ---------------------------------------------------------------- sender


def test_first_message_lists_current_peers_up_to_the_cap() -> None:
    sender = PexSender()
    peers = v4_peers(MAX_ADDED + 20, flags=PexFlags.SEED)
    assert sender.due(0.0)
    message = sender.make_message(peers, now=0.0)
    assert message is not None
    assert message.added == tuple(peers[:MAX_ADDED])
    assert message.dropped == ()
    assert not sender.due(1.0)
    # The peers that did not fit go out with the next message.
    later = sender.make_message(peers, now=PEX_INTERVAL)
    assert later is not None
    assert later.added == tuple(peers[MAX_ADDED:])
    assert sender.messages_sent == 2


def test_later_messages_carry_only_the_difference() -> None:
    sender = PexSender()
    a, b, c = PexPeer("1.1.1.1", 1), PexPeer("2.2.2.2", 2), PexPeer("2001:db8::3", 3)
    assert sender.make_message([a, b], now=100.0) == PexMessage(added=(a, b))
    # Not due yet, however much changed.
    assert sender.make_message([c], now=100.0 + PEX_INTERVAL - 1) is None
    message = sender.make_message([b, c], now=100.0 + PEX_INTERVAL)
    assert message == PexMessage(added=(c,), dropped=(("1.1.1.1", 1),))
    assert sender.told == {("2.2.2.2", 2), ("2001:db8::3", 3)}


def test_nothing_changed_sends_nothing_and_does_not_use_up_the_minute() -> None:
    sender = PexSender()
    a, b = PexPeer("1.1.1.1", 1), PexPeer("2.2.2.2", 2)
    assert sender.make_message([a], now=0.0) is not None
    assert sender.make_message([a], now=60.0) is None
    assert sender.due(61.0)
    # The change after the quiet minute is sent at once, not a minute after the check.
    assert sender.make_message([a, b], now=61.0) == PexMessage(added=(b,))
    assert sender.messages_sent == 2


def test_no_peers_means_no_first_message() -> None:
    sender = PexSender()
    assert sender.make_message([], now=0.0) is None
    assert sender.make_message([PexPeer("1.2.3.4", 0)], now=0.0) is None  # no listen port
    assert sender.messages_sent == 0


def test_every_added_is_eventually_dropped_even_beyond_the_cap() -> None:
    sender = PexSender()
    peers = v4_peers(MAX_DROPPED + 10)
    now = 0.0
    told: set[tuple[str, int]] = set()
    while (message := sender.make_message(peers, now)) is not None:
        told |= {(peer.host, peer.port) for peer in message.added}
        now += PEX_INTERVAL
    assert told == {(peer.host, peer.port) for peer in peers}
    dropped: list[tuple[str, int]] = []
    while (message := sender.make_message([], now)) is not None:
        assert len(message.dropped) <= MAX_DROPPED
        dropped += message.dropped
        now += PEX_INTERVAL
    assert sorted(dropped) == sorted(told)
    assert sender.told == frozenset()


def test_one_address_spelled_two_ways_is_one_peer() -> None:
    sender = PexSender()
    message = sender.make_message([PexPeer("::1", 5), PexPeer("0:0::1", 5)], now=0.0)
    assert message is not None and len(message.added) == 1
    assert sender.make_message([PexPeer("0::0:1", 5)], now=PEX_INTERVAL) is None


def test_a_peer_that_comes_back_is_added_again() -> None:
    sender = PexSender()
    a = PexPeer("1.1.1.1", 1)
    sender.make_message([a], now=0.0)
    assert sender.make_message([], now=60.0) == PexMessage(dropped=(("1.1.1.1", 1),))
    assert sender.make_message([a], now=120.0) == PexMessage(added=(a,))


# ---------------------------------------------------------------- receiver


def test_receiver_returns_new_public_candidates_once() -> None:
    receiver = PexReceiver()
    message = PexMessage(added=(PexPeer("8.8.8.8", 1), PexPeer("2a00:1450::1", 2)))
    assert receiver.receive(message, now=0.0) == [("8.8.8.8", 1), ("2a00:1450::1", 2)]
    assert receiver.receive(message, now=60.0) == []
    dropped = PexMessage(dropped=(("8.8.8.8", 1),))
    assert receiver.receive(dropped, now=120.0) == []
    assert receiver.remembered == {("2a00:1450::1", 2)}
    assert receiver.receive(message, now=180.0) == [("8.8.8.8", 1)]


def test_receiver_ignores_and_counts_messages_that_come_too_fast() -> None:
    receiver = PexReceiver(min_interval=45.0)
    assert receiver.receive(PexMessage(added=(PexPeer("8.8.8.8", 1),)), now=0.0)
    assert receiver.receive(PexMessage(added=(PexPeer("8.8.4.4", 1),)), now=44.0) == []
    assert receiver.ignored_messages == 1
    # The ignored message did not restart the clock.
    assert receiver.receive(PexMessage(added=(PexPeer("8.8.4.4", 1),)), now=45.0) == [
        ("8.8.4.4", 1)
    ]


def test_receiver_never_remembers_more_than_max_candidates() -> None:
    receiver = PexReceiver(min_interval=0.0, max_candidates=30)
    total = 0
    for round_number in range(5):
        peers = [PexPeer(f"8.{round_number}.0.{i + 1}", 80) for i in range(20)]
        total += len(receiver.receive(PexMessage(added=tuple(peers)), now=float(round_number)))
    assert total == 30
    assert len(receiver.remembered) == 30


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::",
        "ff02::1",
        "::ffff:224.0.0.1",
        "100::1",
    ],
)
def test_receiver_rejects_addresses_that_are_not_unicast(host: str) -> None:
    receiver = PexReceiver(accept_local=True)
    assert receiver.receive(PexMessage(added=(PexPeer(host, 80),)), now=0.0) == []
    assert receiver.rejected_addresses == 1


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.1.2.3", "192.168.0.9", "169.254.1.1", "::1", "fe80::1", "fd00::1"]
)
def test_receiver_passes_on_local_addresses_only_between_local_peers(host: str) -> None:
    assert is_local_address(host)
    message = PexMessage(added=(PexPeer(host, 6881),))
    assert PexReceiver().receive(message, now=0.0) == []
    assert PexReceiver(accept_local=True).receive(message, now=0.0) == [(host, 6881)]


def test_receiver_rejects_port_zero_and_unmaps_ipv4_in_ipv6() -> None:
    receiver = PexReceiver()
    message = PexMessage(added=(PexPeer("8.8.8.8", 0), PexPeer("::ffff:8.8.4.4", 53)))
    assert receiver.receive(message, now=0.0) == [("8.8.4.4", 53)]
    assert not is_local_address("8.8.8.8")
    assert not is_local_address("not an address")


def test_ipv4_mapped_addresses_are_judged_as_the_ipv4_address() -> None:
    assert is_local_address("::ffff:192.168.1.2")
    assert is_local_address("::ffff:127.0.0.1")
    assert not is_local_address("::ffff:8.8.8.8")


def test_receiver_skips_hosts_that_are_not_addresses_and_dropped_ones_it_cannot_dial() -> None:
    receiver = PexReceiver(min_interval=0.0)
    added = PexMessage(added=(PexPeer("example.org", 80), PexPeer("8.8.8.8", 80)))
    assert receiver.receive(added, now=0.0) == [("8.8.8.8", 80)]
    assert receiver.rejected_addresses == 1
    # Dropping an address that could never have been remembered changes nothing.
    dropped = PexMessage(dropped=(("example.org", 80), ("10.0.0.1", 80), ("8.8.8.8", 0)))
    assert receiver.receive(dropped, now=1.0) == []
    assert receiver.remembered == {("8.8.8.8", 80)}


@pytest.mark.parametrize("kwargs", [{"min_interval": -1.0}, {"max_candidates": -1}])
def test_receiver_refuses_negative_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError, match="negative"):
        PexReceiver(**kwargs)  # type: ignore[arg-type]


def test_sender_to_receiver_over_the_wire() -> None:
    sender, receiver = PexSender(), PexReceiver()
    swarm = [PexPeer("8.8.8.8", 1, PexFlags.SEED), PexPeer("2a00:1450::1", 2)]
    first = sender.make_message(swarm, now=0.0)
    assert first is not None
    assert receiver.receive(decode_pex(encode_pex(first)), now=0.0) == [
        ("8.8.8.8", 1),
        ("2a00:1450::1", 2),
    ]
    second = sender.make_message([*swarm[1:], PexPeer("9.9.9.9", 3)], now=PEX_INTERVAL)
    assert second is not None
    assert receiver.receive(decode_pex(encode_pex(second)), now=PEX_INTERVAL) == [("9.9.9.9", 3)]
    assert receiver.remembered == {("2a00:1450::1", 2), ("9.9.9.9", 3)}


# ---------------------------------------------------------------- libtorrent


LOOPBACK = "127.0.0.1"
PIECE_LENGTH = 16384


def _lt_session(lt: Any) -> Any:
    """A loopback-only libtorrent session (ut_pex is on by default)."""
    return loopback_session()


@pytest.fixture
def lt_pair(tmp_path: Path) -> Iterator[tuple[int, int, bytes, int]]:
    """Two libtorrent peers of one torrent, the first of which has dialled the second.

    Neither has any data: two seeds (or a seed and a finished peer) would
    hang up on each other, and a connection must stay up for PEX to list it.
    Yields (first peer's port, second peer's port, info-hash, number of pieces).
    """
    lt: Any = pytest.importorskip("libtorrent")
    pieces = 4
    source = tmp_path / "source"
    source.mkdir()
    (source / "payload.bin").write_bytes(os.urandom(PIECE_LENGTH * pieces))
    creator = lt.create_torrent(
        lt.list_files(str(source / "payload.bin")), PIECE_LENGTH, lt.create_torrent.v1_only
    )
    lt.set_piece_hashes(creator, str(source))
    info = lt.torrent_info(lt.bdecode(lt.bencode(creator.generate())))
    sessions, handles = [], []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        session = _lt_session(lt)
        params = lt.add_torrent_params()
        params.ti = info
        params.save_path = str(folder)
        params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        sessions.append(session)
        handles.append(session.add_torrent(params))
    downloading = lt.torrent_status.downloading
    deadline = time.monotonic() + 15
    while not all(
        handle.status().state == downloading and session.listen_port()
        for session, handle in zip(sessions, handles, strict=True)
    ):
        if time.monotonic() > deadline:
            pytest.fail("libtorrent did not start")
        time.sleep(0.05)
    # The first peer dials the second, so it knows a listening address to pass on.
    handles[0].connect_peer((LOOPBACK, sessions[1].listen_port()))
    try:
        yield (
            sessions[0].listen_port(),
            sessions[1].listen_port(),
            info.info_hashes().v1.to_bytes(),
            pieces,
        )
    finally:
        for session, handle in zip(sessions, handles, strict=True):
            session.remove_torrent(handle)


@pytest.mark.interop
async def test_libtorrent_tells_us_about_its_other_peer(
    lt_pair: tuple[int, int, bytes, int],
) -> None:
    first_port, other_port, info_hash, pieces = lt_pair
    connection = PeerConnection(
        info_hash=info_hash,
        our_peer_id=b"-OD0001-pexinterop01",
        num_pieces=pieces,
        initiator=True,
    )
    our_pex_id = 3
    payload: bytes | None = None
    # libtorrent sends its first PEX message a few seconds after it has two peers.
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream(LOOPBACK, first_port)
        async with stream:
            await stream.send_all(connection.send_handshake())
            sent_extensions = False
            while payload is None:
                data = await stream.receive_some(65536)
                assert data, "libtorrent closed the connection"
                for event in connection.receive_data(data):
                    if isinstance(event, Extended) and (
                        connection.extension_name(event.extension_id) == EXTENSION_NAME
                    ):
                        payload = event.payload
                if connection.extensions_enabled and not sent_extensions:
                    handshake = ExtensionHandshake(m={EXTENSION_NAME: our_pex_id}, v="opendistro")
                    await stream.send_all(connection.send(handshake))
                    sent_extensions = True
    message = decode_pex(payload)
    listed = [(peer.host, peer.port) for peer in message.added]
    assert (LOOPBACK, other_port) in listed
    # libtorrent's full list has exactly our layout: all six keys, empty ones included.
    assert encode_pex(message) == payload
    receiver = PexReceiver(accept_local=is_local_address(LOOPBACK))
    assert (LOOPBACK, other_port) in receiver.receive(message, now=0.0)
