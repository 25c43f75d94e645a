"""PeerConnection: argument checks, limits on what a peer may pile up, and rare send paths."""

from __future__ import annotations

import pytest

from opendistro.errors import LocalProtocolError, RemoteProtocolError
from opendistro.wire import messages as m
from opendistro.wire.codec import encode
from opendistro.wire.connection import PeerConnection
from opendistro.wire.extensions.handshake import ExtensionHandshake
from tests.test_wire_connection import (
    BLOCK,
    ID_A,
    INFO_HASH,
    PIECES,
    ConnectionPair,
    unchoked_pair,
)


@pytest.mark.parametrize(
    ("info_hash", "peer_id"), [(INFO_HASH[:19], ID_A), (INFO_HASH, ID_A + b"x")]
)
def test_identities_of_the_wrong_size_are_local_errors(info_hash: bytes, peer_id: bytes) -> None:
    with pytest.raises(LocalProtocolError, match="20 bytes"):
        PeerConnection(info_hash=info_hash, our_peer_id=peer_id, num_pieces=4, initiator=True)


def test_the_piece_count_is_learnt_once() -> None:
    pair = ConnectionPair.make(num_pieces=(PIECES, None))
    assert pair.a.num_pieces == PIECES and pair.b.num_pieces is None
    pair.b.set_num_pieces(PIECES)
    assert pair.b.num_pieces == PIECES
    pair.b.set_num_pieces(PIECES)  # told again, the same: nothing changes
    with pytest.raises(LocalProtocolError, match="already known"):
        pair.b.set_num_pieces(PIECES + 1)
    assert pair.b.num_pieces == PIECES


def test_a_late_bitfield_merges_into_pieces_learnt_from_the_metadata() -> None:
    pair = ConnectionPair.make(num_pieces=(PIECES, None))
    pair.send("a", m.Have(1))
    pair.b.set_num_pieces(PIECES)
    pair.raw("a", m.BitfieldMessage(b"\x80\x40"))  # late: adds 0 and 9, keeps 1
    assert pair.b.peer_has is not None and list(pair.b.peer_has) == [0, 1, 9]


def test_unknown_message_ids_are_counted() -> None:
    pair = ConnectionPair.make()
    unknown = (5).to_bytes(4, "big") + bytes([77]) + b"abcd"
    assert pair.b.receive_data(unknown + encode(m.Interested())) == [m.Interested()]
    assert pair.b.unknown_messages == 1


def test_extension_names_need_our_own_handshake_and_a_nonzero_id() -> None:
    pair = ConnectionPair.make()
    assert pair.a.extension_name(3) is None  # we offered nothing yet
    pair.send("a", ExtensionHandshake(m={"ut_metadata": 3}))
    assert pair.a.extension_name(3) == "ut_metadata"
    assert pair.a.extension_name(0) is None  # id 0 is the handshake itself


def test_we_cannot_announce_a_piece_out_of_range_or_before_the_metadata() -> None:
    pair = ConnectionPair.make(num_pieces=(PIECES, None))
    with pytest.raises(LocalProtocolError, match="out of range"):
        pair.a.send(m.Have(PIECES))
    with pytest.raises(LocalProtocolError, match="before the metadata"):
        pair.b.send(m.HaveAll())
    pair.b.send(m.HaveNone())  # the one announcement allowed without the metadata
    with pytest.raises(LocalProtocolError, match="out of range"):
        pair.b.send(m.Have(0))  # b does not know the piece count yet


def test_a_connection_that_broke_refuses_messages_handed_in_directly() -> None:
    pair = ConnectionPair.make()
    with pytest.raises(RemoteProtocolError):
        pair.b.receive_messages([m.Have(PIECES)])
    with pytest.raises(RemoteProtocolError, match="already broke"):
        pair.b.receive_messages([m.Interested()])


def test_early_haves_before_the_metadata_are_bounded() -> None:
    pair = ConnectionPair.make(num_pieces=(PIECES, None))
    pair.b.receive_messages([m.Have(index) for index in range(1 << 16)])
    with pytest.raises(RemoteProtocolError, match="too many have"):
        pair.b.receive_messages([m.Have(1 << 16)])


def test_allowed_fast_pieces_from_a_peer_are_bounded() -> None:
    pair = ConnectionPair.make(num_pieces=(PIECES, None))
    pair.b.receive_messages([m.AllowedFast(index) for index in range(1024)])
    assert len(pair.b.allowed_fast_from_peer) == 1024
    with pytest.raises(RemoteProtocolError, match="allowed-fast"):
        pair.b.receive_messages([m.AllowedFast(1024)])


def test_only_peer_wire_messages_can_be_sent() -> None:
    pair = ConnectionPair.make()
    with pytest.raises(LocalProtocolError, match="not a peer wire message"):
        pair.a.send("interested")  # type: ignore[arg-type]


def test_a_piece_header_waits_for_both_handshakes() -> None:
    pair = ConnectionPair.make(handshake=False)
    pair.b.receive_data(pair.a.send_handshake())
    with pytest.raises(LocalProtocolError, match="both handshakes"):
        pair.b.send_piece_header(0, 0, BLOCK)


@pytest.mark.parametrize("length", [0, 128 * 1024 + 1])
def test_we_cannot_request_an_empty_or_oversized_block(length: int) -> None:
    pair = unchoked_pair()
    with pytest.raises(LocalProtocolError, match="request for"):
        pair.a.send(m.Request(0, 0, length))
    assert not pair.a.requests_to_peer


def test_only_the_latest_cancels_are_remembered() -> None:
    """A block cancelled long ago that still arrives counts as unasked for, so memory is bounded."""
    pair = unchoked_pair(fast=False)
    blocks = [(index, begin * BLOCK, BLOCK) for begin in range(410) for index in range(PIECES)]
    for block in blocks[:4097]:
        pair.a.send(m.Request(*block))
        pair.a.send(m.Cancel(*block))
    assert pair.raw("b", m.Piece(blocks[4096][0], blocks[4096][1], bytes(BLOCK))) == []
    assert pair.a.unrequested_bytes == 0  # remembered
    assert pair.raw("b", m.Piece(blocks[0][0], blocks[0][1], bytes(BLOCK))) == []
    assert pair.a.unrequested_bytes == BLOCK  # the oldest was forgotten


def test_suggest_needs_the_fast_extension_and_a_piece_in_range() -> None:
    pair = ConnectionPair.make()
    assert pair.send("a", m.SuggestPiece(3)) == [m.SuggestPiece(3)]
    with pytest.raises(LocalProtocolError, match="out of range"):
        pair.a.send(m.SuggestPiece(PIECES))
    slow = ConnectionPair.make(fast=(False, False))
    with pytest.raises(LocalProtocolError, match="fast extension"):
        slow.a.send(m.SuggestPiece(3))


def test_a_suggestion_ends_our_chance_to_announce_pieces() -> None:
    pair = ConnectionPair.make()
    pair.send("a", m.SuggestPiece(3))
    with pytest.raises(LocalProtocolError, match="first message"):
        pair.a.send(m.HaveAll())


def test_extended_messages_need_the_extension_protocol() -> None:
    pair = ConnectionPair.make(extensions=(False, True))
    with pytest.raises(LocalProtocolError, match="extension protocol"):
        pair.a.send(m.Extended(3, b""))


def test_an_extension_handshake_sent_as_raw_bytes_is_checked_and_recorded() -> None:
    pair = ConnectionPair.make()
    ours = ExtensionHandshake(m={"ut_pex": 2})
    (event,) = pair.send("a", m.Extended(0, ours.encode()))
    assert event == ours
    assert pair.a.local_extensions == ours
    with pytest.raises(LocalProtocolError, match="bad extension handshake"):
        pair.a.send(m.Extended(0, b"not bencode"))
    assert pair.a.local_extensions == ours


ROOT = bytes(32)


def test_a_hash_request_from_the_peer_ends_its_announcement_window() -> None:
    pair = ConnectionPair.make()
    request = m.HashRequest(ROOT, 0, 0, 2, 0)
    assert pair.send("a", request) == [request]
    pair.raw("a", m.BitfieldMessage(b"\x80\x00"))  # late, so taken as an update
    pair.raw("a", m.HaveNone())  # a late HaveNone takes nothing back
    assert pair.b.peer_has is not None and list(pair.b.peer_has) == [0]


def test_a_hash_request_we_send_ends_our_announcement_window() -> None:
    pair = ConnectionPair.make()
    pair.a.send(m.HashRequest(ROOT, 0, 0, 2, 0))
    with pytest.raises(LocalProtocolError, match="first message"):
        pair.a.send(m.HaveAll())
