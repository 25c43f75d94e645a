"""PeerConnection: the legality rules of BEP 3, 6 and 10, checked with a connected pair."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.errors import LocalProtocolError, RemoteProtocolError
from opendistro.wire import messages as m
from opendistro.wire.codec import encode
from opendistro.wire.connection import MAX_REQUEST_LENGTH, Event, PeerConnection, RequestsDropped
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.ut_metadata import (
    MetadataAssembler,
    MetadataData,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
    metadata_response,
)
from tests.lt_session import loopback_session

INFO_HASH = bytes(range(20))
OTHER_HASH = bytes(range(1, 21))
ID_A = b"-OD0001-aaaaaaaaaaaa"
ID_B = b"-OD0001-bbbbbbbbbbbb"
PIECES = 10
BLOCK = 16384


@dataclass
class ConnectionPair:
    """Two connections wired back to back, like h11's ConnectionPair."""

    a: PeerConnection
    b: PeerConnection
    log: list[tuple[str, Event]] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        *,
        fast: tuple[bool, bool] = (True, True),
        extensions: tuple[bool, bool] = (True, True),
        num_pieces: tuple[int | None, int | None] = (PIECES, PIECES),
        max_peer_requests: int = 500,
        handshake: bool = True,
    ) -> ConnectionPair:
        a = PeerConnection(
            info_hash=INFO_HASH,
            our_peer_id=ID_A,
            num_pieces=num_pieces[0],
            initiator=True,
            fast=fast[0],
            extensions=extensions[0],
            max_peer_requests=max_peer_requests,
        )
        b = PeerConnection(
            info_hash=INFO_HASH,
            our_peer_id=ID_B,
            num_pieces=num_pieces[1],
            initiator=False,
            fast=fast[1],
            extensions=extensions[1],
            max_peer_requests=max_peer_requests,
        )
        pair = cls(a, b)
        if handshake:
            pair.handshake()
        return pair

    def handshake(self) -> None:
        (event,) = self.b.receive_data(self.a.send_handshake())
        assert isinstance(event, m.Handshake) and event.peer_id == ID_A
        (event,) = self.a.receive_data(self.b.send_handshake())
        assert isinstance(event, m.Handshake) and event.peer_id == ID_B

    def peers(self, sender: str) -> tuple[PeerConnection, PeerConnection]:
        return (self.a, self.b) if sender == "a" else (self.b, self.a)

    def send(self, sender: str, *messages: m.Message | ExtensionHandshake) -> list[Event]:
        """Send from one side; return what the other side saw."""
        source, target = self.peers(sender)
        return target.receive_data(b"".join(source.send(message) for message in messages))

    def raw(self, sender: str, *messages: m.Message) -> list[Event]:
        """Deliver messages without the sender's own checks (a misbehaving peer)."""
        _, target = self.peers(sender)
        return target.receive_data(b"".join(encode(message) for message in messages))


# ------------------------------------------------------------------ handshake


def test_initial_state() -> None:
    pair = ConnectionPair.make(handshake=False)
    conn = pair.a
    assert conn.am_choking and conn.peer_choking
    assert not conn.am_interested and not conn.peer_interested
    assert not conn.handshake_sent and not conn.handshake_received
    assert conn.remote_peer_id is None and conn.remote_extensions is None
    assert conn.peer_has is not None and conn.peer_has.count == 0
    assert not conn.fast_enabled and not conn.extensions_enabled


def test_handshake_records_remote_identity() -> None:
    pair = ConnectionPair.make()
    assert pair.a.handshake_sent and pair.a.handshake_received
    assert pair.a.remote_peer_id == ID_B
    assert pair.b.remote_peer_id == ID_A
    assert pair.a.remote_reserved == m.DEFAULT_RESERVED


def test_handshake_split_across_reads() -> None:
    pair = ConnectionPair.make(handshake=False)
    data = pair.a.send_handshake()
    assert pair.b.receive_data(data[:30]) == []
    assert not pair.b.handshake_received
    (event,) = pair.b.receive_data(data[30:])
    assert isinstance(event, m.Handshake)


def test_wrong_info_hash_is_refused() -> None:
    b = PeerConnection(info_hash=INFO_HASH, our_peer_id=ID_B, num_pieces=4, initiator=False)
    with pytest.raises(RemoteProtocolError):
        b.receive_data(encode(m.Handshake(OTHER_HASH, ID_A)))


def test_garbage_instead_of_handshake() -> None:
    b = PeerConnection(info_hash=INFO_HASH, our_peer_id=ID_B, num_pieces=4, initiator=False)
    with pytest.raises(RemoteProtocolError):
        b.receive_data(b"GET / HTTP/1.1\r\n\r\n" + bytes(60))


def test_messages_wait_for_both_handshakes() -> None:
    pair = ConnectionPair.make(handshake=False)
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Interested())
    pair.b.receive_data(pair.a.send_handshake())
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Interested())
    with pytest.raises(LocalProtocolError):
        pair.a.send_handshake()  # only once


def test_sending_a_handshake_for_another_torrent_is_local_error() -> None:
    pair = ConnectionPair.make(handshake=False)
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Handshake(OTHER_HASH, ID_A))


@pytest.mark.parametrize(
    ("fast", "enabled"),
    [((True, True), True), ((True, False), False), ((False, True), False), ((False, False), False)],
)
def test_fast_negotiation_both_ways(fast: tuple[bool, bool], enabled: bool) -> None:
    pair = ConnectionPair.make(fast=fast)
    assert pair.a.fast_enabled is enabled
    assert pair.b.fast_enabled is enabled


@pytest.mark.parametrize(
    ("extensions", "enabled"),
    [((True, True), True), ((True, False), False), ((False, True), False)],
)
def test_extension_negotiation_both_ways(extensions: tuple[bool, bool], enabled: bool) -> None:
    pair = ConnectionPair.make(extensions=extensions)
    assert pair.a.extensions_enabled is enabled
    assert pair.b.extensions_enabled is enabled


# ------------------------------------------------------------------ availability


def test_bitfield_sets_peer_has() -> None:
    pair = ConnectionPair.make()
    mine = bytes([0b10100000, 0b01000000])
    (event,) = pair.send("a", m.BitfieldMessage(mine))
    assert event == m.BitfieldMessage(mine)
    assert pair.b.peer_has is not None
    assert list(pair.b.peer_has) == [0, 2, 9]
    assert not pair.b.peer_is_seed


def test_have_all_makes_a_seed_and_have_updates() -> None:
    pair = ConnectionPair.make()
    pair.send("a", m.HaveAll())
    assert pair.b.peer_is_seed
    pair2 = ConnectionPair.make()
    pair2.send("a", m.HaveNone(), m.Have(3))
    assert pair2.b.peer_has is not None and list(pair2.b.peer_has) == [3]


def test_keep_alive_port_and_extension_handshake_may_precede_bitfield() -> None:
    pair = ConnectionPair.make()
    events = pair.send(
        "a",
        m.KeepAlive(),
        ExtensionHandshake(m={"ut_metadata": 3}),
        m.Port(6881),
        m.BitfieldMessage(b"\xff\xc0"),
    )
    assert [type(e) for e in events] == [
        m.KeepAlive,
        ExtensionHandshake,
        m.Port,
        m.BitfieldMessage,
    ]
    assert pair.b.peer_is_seed


def test_metadata_exchange_may_precede_have_none() -> None:
    """A magnet downloader announces its pieces only after fetching the metadata."""
    pair = ConnectionPair.make(num_pieces=(None, PIECES))
    pair.send("b", ExtensionHandshake(m={"ut_metadata": 2}, metadata_size=1000))
    pair.send("a", ExtensionHandshake(m={"ut_metadata": 5}))
    events = pair.send("a", m.Extended(2, b"d8:msg_typei0e5:piecei0ee"), m.HaveNone())
    assert [type(e) for e in events] == [m.Extended, m.HaveNone]


def test_a_late_bitfield_only_adds_pieces() -> None:
    """aria2 sends Bitfields later in place of batches of Have: accept them as updates."""
    pair = ConnectionPair.make()
    pair.raw("a", m.HaveNone())
    pair.raw("a", m.Interested())
    pair.raw("a", m.Have(9))
    events = pair.raw("a", m.BitfieldMessage(b"\x80\x00"))
    assert [type(e) for e in events] == [m.BitfieldMessage]
    assert pair.b.peer_has is not None and set(pair.b.peer_has) == {0, 9}
    pair.raw("a", m.BitfieldMessage(b"\x40\x00"))  # a second one in a row
    assert set(pair.b.peer_has) == {0, 1, 9}


def test_a_late_have_none_takes_nothing_back_and_a_late_have_all_completes() -> None:
    pair = ConnectionPair.make()
    pair.raw("a", m.BitfieldMessage(b"\x80\x00"))
    assert pair.raw("a", m.HaveNone()) == []
    assert pair.b.peer_has is not None and set(pair.b.peer_has) == {0}
    pair.raw("a", m.HaveAll())
    assert pair.b.peer_is_seed


def test_a_late_bitfield_is_still_validated() -> None:
    pair = ConnectionPair.make()
    pair.raw("a", m.Interested())
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", m.BitfieldMessage(b"\xff\xff"))  # spare bits set for 10 pieces


def test_we_cannot_send_a_late_bitfield_either() -> None:
    pair = ConnectionPair.make()
    pair.send("a", m.Interested())
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.BitfieldMessage(bytes(2)))
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.HaveAll())


def test_bad_bitfield_from_peer() -> None:
    pair = ConnectionPair.make()
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", m.BitfieldMessage(b"\xff\xff"))  # spare bits set for 10 pieces


def test_bad_bitfield_to_send_is_local_error() -> None:
    pair = ConnectionPair.make()
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.BitfieldMessage(b"\xff"))


@pytest.mark.parametrize(
    "message",
    [m.Have(PIECES), m.SuggestPiece(PIECES), m.AllowedFast(PIECES), m.Request(PIECES, 0, BLOCK)],
    ids=lambda x: type(x).__name__,
)
def test_index_out_of_range_from_peer(message: m.Message) -> None:
    pair = ConnectionPair.make()
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", message)


@pytest.mark.parametrize(
    "message",
    [
        m.HaveAll(),
        m.HaveNone(),
        m.RejectRequest(0, 0, BLOCK),
        m.SuggestPiece(0),
        m.AllowedFast(0),
    ],
    ids=lambda x: type(x).__name__,
)
def test_fast_messages_need_fast_extension(message: m.Message) -> None:
    pair = ConnectionPair.make(fast=(True, False))
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", message)
    with pytest.raises(LocalProtocolError):
        pair.a.send(message)


# ------------------------------------------------------------------ magnet: pieces unknown


def test_early_bitfield_is_validated_once_pieces_are_known() -> None:
    pair = ConnectionPair.make(num_pieces=(PIECES, None))
    pair.send("a", m.BitfieldMessage(b"\x80\x40"), m.Have(4))
    assert pair.b.peer_has is None
    pair.b.set_num_pieces(PIECES)
    assert pair.b.peer_has is not None and list(pair.b.peer_has) == [0, 4, 9]


def test_two_early_bitfields_add_up_once_pieces_are_known() -> None:
    """aria2's late Bitfields can also reach a magnet downloader that has no metadata yet."""
    pair = ConnectionPair.make(num_pieces=(None, None))
    pair.raw("a", m.BitfieldMessage(b"\x80\x00"))
    pair.raw("a", m.BitfieldMessage(b"\x00\x40"))
    pair.b.set_num_pieces(PIECES)
    assert pair.b.peer_has is not None and list(pair.b.peer_has) == [0, 9]


def test_early_bitfield_of_the_wrong_size_fails_later() -> None:
    pair = ConnectionPair.make(num_pieces=(None, None))
    pair.raw("a", m.BitfieldMessage(b"\xff\xff\xff"))
    with pytest.raises(RemoteProtocolError):
        pair.b.set_num_pieces(PIECES)


def test_early_have_all_and_have_out_of_range() -> None:
    pair = ConnectionPair.make(num_pieces=(None, None))
    pair.raw("a", m.HaveAll())
    assert pair.b.peer_is_seed
    pair.b.set_num_pieces(4)
    assert pair.b.peer_has is not None and pair.b.peer_has.complete
    pair2 = ConnectionPair.make(num_pieces=(None, None))
    pair2.raw("a", m.Have(50))
    with pytest.raises(RemoteProtocolError):
        pair2.b.set_num_pieces(PIECES)


# ------------------------------------------------------------------ choking and interest


def test_choke_and_interest_state_on_both_sides() -> None:
    pair = ConnectionPair.make()
    pair.send("a", m.Interested())
    assert pair.a.am_interested and pair.b.peer_interested
    pair.send("b", m.Unchoke())
    assert not pair.b.am_choking and not pair.a.peer_choking
    pair.send("b", m.Choke())
    assert pair.b.am_choking and pair.a.peer_choking
    pair.send("a", m.NotInterested())
    assert not pair.a.am_interested and not pair.b.peer_interested


def unchoked_pair(*, fast: bool = True, **kwargs: object) -> ConnectionPair:
    """b is a seed that unchoked an interested a."""
    pair = ConnectionPair.make(fast=(fast, fast), **kwargs)  # type: ignore[arg-type]
    pair.send("b", m.BitfieldMessage(b"\xff\xc0"))
    pair.send("a", m.Interested())
    pair.send("b", m.Unchoke())
    return pair


def test_request_and_piece_flow() -> None:
    pair = unchoked_pair()
    (event,) = pair.send("a", m.Request(0, 0, BLOCK))
    assert event == m.Request(0, 0, BLOCK)
    assert pair.a.requests_to_peer == {(0, 0, BLOCK)}
    assert pair.b.requests_from_peer == {(0, 0, BLOCK)}
    assert pair.b.peer_wants(0, 0, BLOCK)
    block = b"\x07" * BLOCK
    (event,) = pair.send("b", m.Piece(0, 0, block))
    assert isinstance(event, m.Piece) and bytes(event.data) == block
    assert not pair.a.requests_to_peer and not pair.b.requests_from_peer


def test_piece_header_path() -> None:
    pair = unchoked_pair()
    pair.send("a", m.Request(1, BLOCK, BLOCK))
    block = b"\x01" * BLOCK
    header = pair.b.send_piece_header(1, BLOCK, BLOCK)
    (event,) = pair.a.receive_data(header + block)
    assert event == m.Piece(1, BLOCK, block)
    with pytest.raises(LocalProtocolError):
        pair.b.send_piece_header(1, BLOCK, BLOCK)  # already answered


def test_sending_a_piece_nobody_asked_for_is_local_error() -> None:
    pair = unchoked_pair()
    with pytest.raises(LocalProtocolError):
        pair.b.send(m.Piece(0, 0, b"x"))


def test_unrequested_piece_is_ignored_and_counted() -> None:
    pair = unchoked_pair()
    assert pair.raw("b", m.Piece(0, 0, b"abc")) == []
    assert pair.a.unrequested_bytes == 3


def test_piece_after_cancel_is_ignored_and_not_held_against_the_peer() -> None:
    pair = unchoked_pair(fast=False)
    pair.send("a", m.Request(0, 0, BLOCK))
    assert pair.a.send(m.Cancel(0, 0, BLOCK)) != b""
    assert not pair.a.requests_to_peer
    assert pair.raw("b", m.Piece(0, 0, bytes(BLOCK))) == []
    assert pair.a.unrequested_bytes == 0
    # The same block again was asked for by nobody.
    assert pair.raw("b", m.Piece(0, 0, bytes(BLOCK))) == []
    assert pair.a.unrequested_bytes == BLOCK


def test_cancel_for_an_answered_request_sends_nothing() -> None:
    pair = unchoked_pair()
    pair.send("a", m.Request(0, 0, BLOCK))
    pair.send("b", m.Piece(0, 0, bytes(BLOCK)))
    assert pair.a.send(m.Cancel(0, 0, BLOCK)) == b""


def _object_pair() -> tuple[PeerConnection, PeerConnection]:
    """Two connections that exchange message objects, as the simulator's do."""
    a = PeerConnection(info_hash=INFO_HASH, our_peer_id=ID_A, num_pieces=PIECES, initiator=True)
    b = PeerConnection(info_hash=INFO_HASH, our_peer_id=ID_B, num_pieces=PIECES, initiator=False)
    for sender, receiver in ((a, b), (b, a)):
        handshake = sender.our_handshake()
        assert sender.send_message(handshake)
        assert receiver.receive_messages([handshake]) == [handshake]
    return a, b


def test_send_message_checks_and_records_like_send_without_encoding() -> None:
    a, b = _object_pair()
    assert a.fast_enabled and a.extensions_enabled and b.fast_enabled
    conversation: list[tuple[PeerConnection, PeerConnection, m.Message | ExtensionHandshake]] = [
        (a, b, ExtensionHandshake(m={"ut_metadata": 3})),
        (b, a, m.HaveAll()),
        (a, b, m.Interested()),
        (b, a, m.Unchoke()),
        (a, b, m.Request(0, 0, BLOCK)),
        (a, b, m.Request(1, 0, BLOCK)),
        (a, b, m.Cancel(1, 0, BLOCK)),
        (b, a, m.Choke()),
    ]
    for sender, receiver, message in conversation:
        assert sender.send_message(message)
        if not isinstance(message, ExtensionHandshake):
            receiver.receive_messages([message])
    assert a.local_extensions == ExtensionHandshake(m={"ut_metadata": 3})
    assert a.am_interested and b.peer_interested and a.peer_choking
    assert a.requests_to_peer == {(0, 0, BLOCK)}
    # With BEP 6, b owes a reject for the cancelled request and, after its
    # choke, for the one still outstanding.
    assert b.requests_from_peer == set()
    rejects = b.pending_rejects()
    assert rejects == [m.RejectRequest(1, 0, BLOCK), m.RejectRequest(0, 0, BLOCK)]
    assert b.pending_rejects() == []
    for reject in rejects:
        assert b.send_message(reject)
    assert a.receive_messages(rejects) == [m.RejectRequest(0, 0, BLOCK)]
    assert a.requests_to_peer == set() and a.unexpected_rejects == 0
    # A Cancel that crossed its answer has nothing to send, as send() says with b"".
    assert a.send_message(m.Cancel(0, 0, BLOCK)) is False
    # The same rules as send(): neither a second handshake nor a request while choked.
    with pytest.raises(LocalProtocolError, match="handshake already sent"):
        a.send_message(a.our_handshake())
    with pytest.raises(LocalProtocolError, match="chokes us"):
        a.send_message(m.Request(2, 0, BLOCK))
    with pytest.raises(LocalProtocolError, match="not a peer wire message"):
        a.send_message(RequestsDropped(frozenset()))  # type: ignore[arg-type]
    # Nothing went through a decoder, so none was needed.
    assert a.unknown_messages == 0 and b.unknown_messages == 0


def test_receive_message_applies_one_message_like_receive_messages() -> None:
    a = PeerConnection(info_hash=INFO_HASH, our_peer_id=ID_A, num_pieces=PIECES, initiator=True)
    b = PeerConnection(info_hash=INFO_HASH, our_peer_id=ID_B, num_pieces=PIECES, initiator=False)
    for sender, receiver in ((a, b), (b, a)):
        handshake = sender.our_handshake()
        assert sender.send_message(handshake)
        assert receiver.receive_message(handshake) == [handshake]
    assert a.send_message(m.HaveNone()) and b.receive_message(m.HaveNone()) == [m.HaveNone()]
    assert a.send_message(m.Have(3))
    assert b.receive_message(m.Have(3)) == [m.Have(3)]
    assert b.peer_has is not None and list(b.peer_has) == [3]
    # A request while b chokes a is not an event: b owes a reject instead.
    assert not b.rejects_owed
    assert b.receive_message(m.Request(3, 0, BLOCK)) == []
    assert b.rejects_owed
    assert b.pending_rejects() == [m.RejectRequest(3, 0, BLOCK)]
    assert not b.rejects_owed and b.pending_rejects() == []
    # A broken rule breaks the connection for good, as with receive_messages.
    with pytest.raises(RemoteProtocolError, match="out of range"):
        b.receive_message(m.Have(PIECES))
    with pytest.raises(RemoteProtocolError, match="already broke"):
        b.receive_message(m.Have(0))
    with pytest.raises(RemoteProtocolError, match="already broke"):
        b.receive_messages([m.Have(0)])


def test_request_sets_are_never_shared_between_connections() -> None:
    # Connections without requests share one empty set until their first request.
    a, b = _object_pair()
    c, d = _object_pair()
    for sender, receiver, message in (
        (b, a, m.HaveAll()),
        (a, b, m.HaveNone()),
        (b, a, m.Unchoke()),
        (a, b, m.Request(0, 0, BLOCK)),
    ):
        assert sender.send_message(message)
        receiver.receive_message(message)
    assert a.requests_to_peer == {(0, 0, BLOCK)} and b.requests_from_peer == {(0, 0, BLOCK)}
    assert c.requests_to_peer == set() and c.requests_from_peer == set()
    assert d.requests_to_peer == set() and d.requests_from_peer == set()
    # Nothing leaks from a connection that drops its requests either.
    b.discard_peer_request(0, 0, BLOCK)
    d.discard_peer_request(0, 0, BLOCK)
    assert b.requests_from_peer == set() and d.requests_from_peer == set()


def test_choke_without_fast_forgets_the_peer_requests() -> None:
    pair = unchoked_pair(fast=False)
    pair.send("a", m.Request(0, 0, BLOCK))
    pair.send("a", m.Request(1, 0, BLOCK))
    assert len(pair.b.requests_from_peer) == 2
    pair.send("b", m.Choke())
    assert pair.b.requests_from_peer == set() and not pair.b.rejects_owed
    # Unchoked again, the peer may ask anew, and only those requests count.
    pair.send("b", m.Unchoke())
    pair.send("a", m.Request(2, 0, BLOCK))
    assert pair.b.requests_from_peer == {(2, 0, BLOCK)}


def test_send_message_waits_for_both_handshakes() -> None:
    a = PeerConnection(info_hash=INFO_HASH, our_peer_id=ID_A, num_pieces=PIECES, initiator=True)
    assert a.send_message(a.our_handshake())
    assert not a.fast_enabled and not a.extensions_enabled
    with pytest.raises(LocalProtocolError, match="both handshakes"):
        a.send_message(m.Interested())
    with pytest.raises(LocalProtocolError, match="both handshakes"):
        a.send_message(m.Cancel(0, 0, BLOCK))


def test_a_connection_has_no_per_instance_dict() -> None:
    # A 10,000-peer simulation holds most of a million connections: slots keep each small.
    a, _ = _object_pair()
    assert not hasattr(a, "__dict__")
    with pytest.raises(AttributeError):
        a.no_such_attribute = 1  # type: ignore[attr-defined]


def test_cancel_removes_peer_request() -> None:
    pair = unchoked_pair(fast=False)
    pair.send("a", m.Request(0, 0, BLOCK), m.Request(0, BLOCK, BLOCK))
    (event,) = pair.send("a", m.Cancel(0, 0, BLOCK))
    assert event == m.Cancel(0, 0, BLOCK)
    assert pair.b.requests_from_peer == {(0, BLOCK, BLOCK)}
    assert pair.b.pending_rejects() == []


def test_cancel_with_fast_obliges_a_reject() -> None:
    pair = unchoked_pair()
    pair.send("a", m.Request(0, 0, BLOCK))
    pair.send("a", m.Cancel(0, 0, BLOCK))
    rejects = pair.b.pending_rejects()
    assert rejects == [m.RejectRequest(0, 0, BLOCK)]
    # The reject that answers our cancel is not an error and not an event.
    assert pair.send("b", *rejects) == []


def test_oversized_or_empty_request_from_peer() -> None:
    pair = unchoked_pair()
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", m.Request(0, 0, MAX_REQUEST_LENGTH + 1))
    pair2 = unchoked_pair()
    with pytest.raises(RemoteProtocolError):
        pair2.raw("a", m.Request(0, 0, 0))


def test_largest_request_is_allowed() -> None:
    pair = unchoked_pair()
    assert pair.send("a", m.Request(0, 0, MAX_REQUEST_LENGTH)) == [
        m.Request(0, 0, MAX_REQUEST_LENGTH)
    ]


def test_request_while_choked_without_fast_is_dropped_silently() -> None:
    pair = ConnectionPair.make(fast=(False, False))
    pair.send("b", m.BitfieldMessage(b"\xff\xc0"))
    assert pair.raw("a", m.Request(0, 0, BLOCK)) == []
    assert not pair.b.requests_from_peer
    assert pair.b.pending_rejects() == []


def test_request_while_choked_with_fast_must_be_rejected() -> None:
    pair = ConnectionPair.make()
    pair.send("b", m.HaveAll())
    assert pair.raw("a", m.Request(0, 0, BLOCK)) == []
    assert not pair.b.requests_from_peer
    (reject,) = pair.b.pending_rejects()
    assert reject == m.RejectRequest(0, 0, BLOCK)
    assert pair.b.pending_rejects() == []  # drained


def test_we_cannot_request_while_choked() -> None:
    pair = ConnectionPair.make()
    pair.send("b", m.HaveAll())
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Request(0, 0, BLOCK))


def test_we_cannot_request_a_piece_the_peer_lacks() -> None:
    pair = ConnectionPair.make()
    pair.send("b", m.HaveNone(), m.Unchoke())
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Request(0, 0, BLOCK))


def test_duplicate_request_is_local_error() -> None:
    pair = unchoked_pair()
    pair.send("a", m.Request(0, 0, BLOCK))
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Request(0, 0, BLOCK))


def test_allowed_fast_lets_requests_through_a_choke() -> None:
    pair = ConnectionPair.make()
    pair.send("b", m.HaveAll())
    (event,) = pair.send("b", m.AllowedFast(2))
    assert event == m.AllowedFast(2)
    assert pair.a.allowed_fast_from_peer == {2}
    (event,) = pair.send("a", m.Request(2, 0, BLOCK))
    assert event == m.Request(2, 0, BLOCK)
    assert pair.b.requests_from_peer == {(2, 0, BLOCK)}
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Request(3, 0, BLOCK))


def test_several_allowed_fast_pieces_each_way() -> None:
    pair = ConnectionPair.make()
    pair.send("b", m.HaveAll())
    pair.send("a", m.AllowedFast(1), m.AllowedFast(4))
    pair.send("b", m.AllowedFast(2), m.AllowedFast(3))
    assert pair.a.allowed_fast_from_peer == {2, 3}
    assert pair.b.allowed_fast_from_peer == {1, 4}
    # What we allowed survives our choke: requests for it are not rejected.
    pair.send("a", m.Request(2, 0, BLOCK), m.Request(3, 0, BLOCK))
    pair.b.send(m.Choke())
    assert pair.b.requests_from_peer == {(2, 0, BLOCK), (3, 0, BLOCK)}
    assert pair.b.pending_rejects() == []


def test_peer_choke_without_fast_drops_our_requests() -> None:
    pair = unchoked_pair(fast=False)
    pair.send("a", m.Request(0, 0, BLOCK), m.Request(1, 0, BLOCK))
    events = pair.send("b", m.Choke())
    assert events[0] == m.Choke()
    assert events[1] == RequestsDropped(frozenset({(0, 0, BLOCK), (1, 0, BLOCK)}))
    assert not pair.a.requests_to_peer
    # and the choking side forgot them too
    assert not pair.b.requests_from_peer


def test_peer_choke_with_fast_keeps_requests_until_rejected() -> None:
    pair = unchoked_pair()
    pair.send("a", m.Request(0, 0, BLOCK), m.Request(1, 0, BLOCK))
    assert pair.send("b", m.Choke()) == [m.Choke()]
    assert pair.a.requests_to_peer == {(0, 0, BLOCK), (1, 0, BLOCK)}
    rejects = pair.b.pending_rejects()
    assert sorted(rejects, key=lambda r: r.index) == [
        m.RejectRequest(0, 0, BLOCK),
        m.RejectRequest(1, 0, BLOCK),
    ]
    events = pair.send("b", *rejects)
    assert len(events) == 2
    assert not pair.a.requests_to_peer


def test_reject_for_a_block_no_longer_outstanding_is_ignored() -> None:
    """A reject can cross the answer on the wire (block cancelled, asked again, served)."""
    pair = unchoked_pair()
    assert pair.raw("b", m.RejectRequest(0, 0, BLOCK)) == []
    assert pair.a.unexpected_rejects == 1
    assert pair.a.requests_to_peer == set()


def test_too_many_requests_from_peer() -> None:
    pair = unchoked_pair(max_peer_requests=3)
    pair.send("a", *(m.Request(0, i * BLOCK, BLOCK) for i in range(3)))
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", m.Request(1, 0, BLOCK))


def test_duplicate_request_from_peer_is_not_reported_twice() -> None:
    pair = unchoked_pair()
    pair.send("a", m.Request(0, 0, BLOCK))
    assert pair.raw("a", m.Request(0, 0, BLOCK)) == []
    assert pair.b.requests_from_peer == {(0, 0, BLOCK)}


def test_keep_alive_is_an_event() -> None:
    pair = unchoked_pair()
    assert pair.send("a", m.KeepAlive()) == [m.KeepAlive()]


def test_many_messages_in_one_read() -> None:
    pair = unchoked_pair()
    requests = [m.Request(i, 0, BLOCK) for i in range(PIECES)]
    assert pair.send("a", *requests) == requests
    pieces = [m.Piece(i, 0, bytes([i]) * BLOCK) for i in range(PIECES)]
    assert pair.send("b", *pieces) == pieces
    assert not pair.a.requests_to_peer


# ------------------------------------------------------------------ fuzzing the state machine

_indices = st.integers(0, PIECES + 2)
_offsets = st.sampled_from([0, BLOCK, 2 * BLOCK])
_lengths = st.sampled_from([0, 1, BLOCK, MAX_REQUEST_LENGTH, MAX_REQUEST_LENGTH + 1])
peer_messages = st.one_of(
    st.sampled_from(
        [
            m.KeepAlive(),
            m.Choke(),
            m.Unchoke(),
            m.Interested(),
            m.NotInterested(),
            m.HaveAll(),
            m.HaveNone(),
            m.Port(1),
        ]
    ),
    st.builds(m.Have, _indices),
    st.builds(m.BitfieldMessage, st.binary(min_size=1, max_size=3)),
    st.builds(m.Request, _indices, _offsets, _lengths),
    st.builds(m.Cancel, _indices, _offsets, _lengths),
    st.builds(m.RejectRequest, _indices, _offsets, _lengths),
    st.builds(m.Piece, _indices, _offsets, st.sampled_from([b"", b"x" * BLOCK])),
    st.builds(m.SuggestPiece, _indices),
    st.builds(m.AllowedFast, _indices),
    st.builds(m.Extended, st.integers(0, 5), st.sampled_from([b"de", b"d1:md1:xi1eee", b"x"])),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(peer_messages, max_size=25),
    st.booleans(),
    st.booleans(),
    st.sampled_from([PIECES, None]),
)
def test_any_message_sequence_only_raises_remote_protocol_error(
    sequence: list[m.Message], fast: bool, unchoke: bool, pieces: int | None
) -> None:
    pair = ConnectionPair.make(fast=(fast, fast), num_pieces=(PIECES, pieces), max_peer_requests=5)
    if unchoke:
        pair.b.send(m.Unchoke())
    b = pair.b
    try:
        for message in sequence:
            pair.raw("a", message)
            assert len(b.requests_from_peer) <= 5
            assert all(0 < length <= MAX_REQUEST_LENGTH for _, _, length in b.requests_from_peer)
            if b.am_choking:
                assert not b.requests_from_peer
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            pair.raw("a", m.KeepAlive())  # a broken connection stays broken
        return
    if pieces is None:
        try:
            b.set_num_pieces(PIECES)
        except RemoteProtocolError:
            return
    assert b.peer_has is not None
    assert all(index < PIECES for index in b.peer_has)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_after_handshake_only_raises_remote_protocol_error(garbage: bytes) -> None:
    pair = ConnectionPair.make()
    try:
        events = pair.b.receive_data(garbage)
    except RemoteProtocolError:
        return
    assert all(not isinstance(event, m.Handshake) for event in events)


# ------------------------------------------------------------------ BEP 10


def test_extension_handshake_fields_and_dispatch() -> None:
    pair = ConnectionPair.make()
    ours = ExtensionHandshake(
        m={"ut_metadata": 3, "ut_pex": 1},
        v="opendistro 0.1",
        p=6881,
        reqq=250,
        metadata_size=31235,
        yourip=bytes([127, 0, 0, 1]),
        extra={b"upload_only": 1},
    )
    (event,) = pair.send("a", ours)
    assert event == ours
    assert pair.b.remote_extensions == ours
    assert pair.a.local_extensions == ours
    # b sends a ut_metadata message using a's id; a resolves it by its own m.
    (event,) = pair.send("b", m.Extended(3, b"d8:msg_typei0e5:piecei0ee"))
    assert isinstance(event, m.Extended)
    assert pair.a.extension_name(event.extension_id) == "ut_metadata"
    assert pair.a.extension_name(7) is None


def test_disabled_extensions_are_dropped_from_the_first_handshake() -> None:
    pair = ConnectionPair.make()
    (event,) = pair.send("a", ExtensionHandshake(m={"ut_metadata": 3, "ut_pex": 0}))
    assert isinstance(event, ExtensionHandshake)
    assert event.m == {"ut_metadata": 3}
    assert pair.b.remote_extensions == event


def test_discarding_a_peer_request_without_fast() -> None:
    pair = unchoked_pair(fast=False, max_peer_requests=1)
    pair.send("a", m.Request(0, 0, BLOCK))
    pair.b.discard_peer_request(0, 0, BLOCK)
    assert not pair.b.peer_wants(0, 0, BLOCK)
    assert pair.send("a", m.Request(1, 0, BLOCK)) == [m.Request(1, 0, BLOCK)]


def test_extension_handshake_updates_merge() -> None:
    pair = ConnectionPair.make()
    pair.send("a", ExtensionHandshake(m={"ut_metadata": 3, "ut_pex": 1}, v="x"))
    pair.send("a", ExtensionHandshake(m={"ut_pex": 0, "od_credit": 9}))
    remote = pair.b.remote_extensions
    assert remote is not None
    assert remote.m == {"ut_metadata": 3, "od_credit": 9}
    assert remote.v == "x"
    assert not remote.supports("ut_pex")


def test_extended_message_needs_extension_protocol() -> None:
    pair = ConnectionPair.make(extensions=(False, True))
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", m.Extended(0, b"de"))
    with pytest.raises(LocalProtocolError):
        pair.a.send(ExtensionHandshake(m={}))


def test_sending_an_extension_the_peer_did_not_offer() -> None:
    pair = ConnectionPair.make()
    with pytest.raises(LocalProtocolError):
        pair.a.send(m.Extended(3, b""))
    pair.send("b", ExtensionHandshake(m={"ut_metadata": 3}))
    assert pair.a.send(m.Extended(3, b"")) == encode(m.Extended(3, b""))


@pytest.mark.parametrize(
    "payload",
    [
        b"not bencode",
        b"li1ee",
        b"d1:mi1ee",
        b"d1:md3:fooi256eee",
        b"d1:md3:foo3:baree",
        b"d1:pi70000ee",
        b"d13:metadata_sizei99999999ee",
        b"d13:metadata_sizei-1ee",
        b"d6:yourip3:abce",
        b"d4:reqqi0ee",
        b"d1:vi1ee",
        b"d1:md2:\xff\xfei1eee",
    ],
)
def test_bad_extension_handshakes(payload: bytes) -> None:
    pair = ConnectionPair.make()
    with pytest.raises(RemoteProtocolError):
        pair.raw("a", m.Extended(0, payload))


def test_extension_handshake_round_trip_keeps_unknown_keys() -> None:
    handshake = ExtensionHandshake(
        m={"ut_metadata": 2},
        ipv4=bytes([10, 0, 0, 1]),
        ipv6=bytes(16),
        extra={b"e": 1, b"complete_ago": 5},
    )
    decoded = ExtensionHandshake.decode(handshake.encode())
    assert decoded == handshake
    assert decoded.extra == {b"e": 1, b"complete_ago": 5}


def test_extension_handshake_from_hand_written_bytes() -> None:
    payload = b"d1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei100e1:pi6881e1:v4:LT20e"
    decoded = ExtensionHandshake.decode(payload)
    assert decoded.m == {"ut_metadata": 3, "ut_pex": 1}
    assert decoded.metadata_size == 100
    assert decoded.p == 6881
    assert decoded.v == "LT20"
    assert decoded.extra == {}


# ------------------------------------------------------------------ a real third-party peer


def _make_torrent(lt: Any, folder: Path, payload: bytes) -> bytes:
    """Write ``payload`` as release.bin and let libtorrent make a .torrent of 32 KiB pieces."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "release.bin").write_bytes(payload)
    creator = lt.create_torrent(lt.list_files(str(folder / "release.bin")), 32768)
    lt.set_piece_hashes(creator, str(folder))
    torrent: bytes = lt.bencode(creator.generate())
    return torrent


def _libtorrent_session(lt: Any) -> Any:
    """A loopback-only libtorrent session, plaintext: this test speaks the plain protocol."""
    return loopback_session(out_enc_policy=2)  # pe_disabled


def _add(lt: Any, session: Any, params: Any, folder: Path) -> Any:
    params.save_path = str(folder)
    params.flags &= ~lt.torrent_flags.auto_managed
    handle = session.add_torrent(params)
    handle.resume()
    return handle


def _libtorrent_seed(folder: Path, payload: bytes) -> tuple[Any, Any, bytes]:
    """Start an in-process libtorrent seed on 127.0.0.1; return session, handle, torrent bytes."""
    lt = pytest.importorskip("libtorrent")
    torrent = _make_torrent(lt, folder, payload)
    session = _libtorrent_session(lt)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(torrent))
    handle = _add(lt, session, params, folder)
    deadline = time.monotonic() + 15
    while not handle.status().is_seeding:
        assert time.monotonic() < deadline, "libtorrent never started seeding"
        time.sleep(0.05)
    return session, handle, torrent


class _Wire:
    """A blocking loopback socket driving one PeerConnection (test-only driver)."""

    def __init__(self, conn: PeerConnection, port: int) -> None:
        self.conn = conn
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.seen: list[Event] = []

    def send(self, *messages: m.Message | ExtensionHandshake) -> None:
        self.sock.sendall(b"".join(self.conn.send(message) for message in messages))

    def until(self, wanted: Callable[[Event], bool]) -> Event:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for index, event in enumerate(self.seen):
                if wanted(event):
                    del self.seen[: index + 1]
                    return event
            data = self.sock.recv(1 << 18)
            assert data, "libtorrent closed the connection"
            self.seen += self.conn.receive_data(data)
        raise AssertionError("timed out waiting for libtorrent")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.interop
def test_magnet_style_session_with_libtorrent(tmp_path: Path) -> None:
    """Fetch the info dict over ut_metadata, then blocks, from a real libtorrent seed."""
    payload = hashlib.sha256(b"seed").digest() * 2600  # 83200 bytes: 3 pieces, last one short
    session, handle, torrent = _libtorrent_seed(tmp_path, payload)
    start, end = bencode.dict_value_span(torrent, b"info") or (0, 0)
    info_bytes = torrent[start:end]
    info_hash = hashlib.sha1(info_bytes).digest()
    conn = PeerConnection(info_hash=info_hash, our_peer_id=ID_A, num_pieces=None, initiator=True)
    wire = _Wire(conn, session.listen_port())
    try:
        wire.send(conn.our_handshake())
        wire.until(lambda e: isinstance(e, m.Handshake))
        assert conn.fast_enabled and conn.extensions_enabled
        wire.send(m.HaveNone(), ExtensionHandshake(m={"ut_metadata": 3}, v="opendistro-test"))
        remote = wire.until(lambda e: isinstance(e, ExtensionHandshake))
        assert isinstance(remote, ExtensionHandshake)
        assert remote.supports("ut_metadata") and remote.metadata_size == len(info_bytes)

        assembler = MetadataAssembler(
            metadata_size=remote.metadata_size, info_hash_v1=info_hash, info_hash_v2=None
        )
        fetched = None
        while fetched is None:
            piece = assembler.next_request(time.monotonic())
            assert piece is not None
            request = encode_metadata_message(MetadataRequest(piece))
            wire.send(m.Extended(remote.m["ut_metadata"], request))
            event = wire.until(
                lambda e: (
                    isinstance(e, m.Extended)
                    and conn.extension_name(e.extension_id) == "ut_metadata"
                )
            )
            assert isinstance(event, m.Extended)
            answer = decode_metadata_message(event.payload)
            assert isinstance(answer, MetadataData)
            fetched = assembler.receive(answer)
        assert fetched == info_bytes

        conn.set_num_pieces(3)
        assert conn.peer_is_seed
        wire.send(m.Interested())
        wire.until(lambda e: isinstance(e, m.Unchoke))
        # The last piece is 17664 bytes: a full block and a short tail block.
        wanted = [(0, 0, BLOCK), (1, BLOCK, BLOCK), (2, 0, BLOCK), (2, BLOCK, 83200 - 81920)]
        wire.send(*(m.Request(*key) for key in wanted))
        got = []
        for _ in wanted:
            piece_event = wire.until(lambda e: isinstance(e, m.Piece | m.RejectRequest))
            assert isinstance(piece_event, m.Piece), piece_event
            offset = piece_event.index * 32768 + piece_event.begin
            assert bytes(piece_event.data) == payload[offset : offset + len(piece_event.data)]
            got.append((piece_event.index, piece_event.begin, len(piece_event.data)))
        assert sorted(got) == sorted(wanted)
        assert not conn.requests_to_peer
    finally:
        wire.close()
        session.remove_torrent(handle)


def _serve(conn: PeerConnection, events: list[Event], payload: bytes, info_bytes: bytes) -> bytes:
    """A minimal seed's reaction to events, through the connection's checks."""
    out: list[bytes] = []
    for event in events:
        if isinstance(event, m.Handshake):
            out.append(conn.send_handshake())
            out.append(conn.send(m.HaveAll()))
            hello = ExtensionHandshake(m={"ut_metadata": 2}, metadata_size=len(info_bytes))
            out.append(conn.send(hello))
        elif isinstance(event, m.Interested):
            out.append(conn.send(m.Unchoke()))
        elif isinstance(event, m.Request):
            offset = event.index * 32768 + event.begin
            out.append(conn.send_piece_header(event.index, event.begin, event.length))
            out.append(payload[offset : offset + event.length])
        elif isinstance(event, m.Extended):
            assert conn.extension_name(event.extension_id) == "ut_metadata"
            request = decode_metadata_message(event.payload)
            assert isinstance(request, MetadataRequest)
            answer = encode_metadata_message(metadata_response(info_bytes, request))
            assert conn.remote_extensions is not None
            out.append(conn.send(m.Extended(conn.remote_extensions.m["ut_metadata"], answer)))
    out += [conn.send(reject) for reject in conn.pending_rejects()]
    return b"".join(out)


@pytest.mark.interop
def test_libtorrent_fetches_metadata_and_data_from_us(tmp_path: Path) -> None:
    """libtorrent, given only a magnet link, downloads everything from our state machine."""
    lt = pytest.importorskip("libtorrent")
    payload = hashlib.sha256(b"serve").digest() * 2600
    torrent = _make_torrent(lt, tmp_path / "seed", payload)
    start, end = bencode.dict_value_span(torrent, b"info") or (0, 0)
    info_bytes = torrent[start:end]
    info_hash = hashlib.sha1(info_bytes).digest()
    conn = PeerConnection(info_hash=info_hash, our_peer_id=ID_B, num_pieces=3, initiator=False)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        session = _libtorrent_session(lt)
        params = lt.parse_magnet_uri(f"magnet:?xt=urn:btih:{info_hash.hex()}")
        handle = _add(lt, session, params, tmp_path / "download")
        handle.connect_peer(listener.getsockname())
        sock, _ = listener.accept()
    with sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + 20
        while not handle.status().is_seeding and time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 18)
            except TimeoutError:
                continue
            if not data:
                break
            sock.sendall(_serve(conn, conn.receive_data(data), payload, info_bytes))
    # libtorrent drops the connection once both sides are seeds, and writes
    # to disk asynchronously: give its status and file a moment to settle.
    # (Seeding already means every piece passed libtorrent's own hash check.)
    downloaded = tmp_path / "download" / "release.bin"
    while time.monotonic() < deadline and not (
        handle.status().is_seeding and downloaded.exists() and downloaded.read_bytes() == payload
    ):
        time.sleep(0.05)
    assert handle.status().is_seeding
    assert downloaded.read_bytes() == payload
    assert conn.peer_interested
    session.remove_torrent(handle)
