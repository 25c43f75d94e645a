"""Edge cases of the sans-I/O swarm session: peers without the fast extension, late and
repeated announcements, super-seeding's joins and departures, HTTP mirrors, choking rounds.

Driven, like tests/test_session.py, through real PeerConnections with no sockets.
"""

from __future__ import annotations

import pytest

from opendistro.bitfield import Bitfield
from opendistro.errors import ConfigError
from opendistro.swarm.session import (
    DropPeer,
    SendMessage,
    ServeBlock,
    SessionConfig,
    StoreBlock,
    SwarmSession,
    VerifyPiece,
)
from opendistro.wire import messages as m
from opendistro.wire.connection import PeerConnection
from opendistro.wire.extensions.handshake import ExtensionHandshake

from .test_session import (
    BLOCK,
    INFO_HASH,
    Remote,
    connect,
    deliver,
    digests_of,
    leecher,
    ordered,
    requests,
)


def sent_to(actions: list, peer: str) -> list[m.Message]:
    return [a.message for a in actions if isinstance(a, SendMessage) and a.peer == peer]


def seed(num_pieces: int, **config: object) -> SwarmSession[str]:
    return SwarmSession(
        num_pieces=num_pieces,
        piece_length=2 * BLOCK,
        total_length=2 * BLOCK * num_pieces,
        have=Bitfield.full(num_pieces),
        config=SessionConfig(**config),  # type: ignore[arg-type]
    )


def half_seed(**config: object) -> SwarmSession[str]:
    """A session with piece 0 of 2: peers can want something from it, and it from them."""
    have = Bitfield(2)
    have.set(0)
    return SwarmSession(
        num_pieces=2,
        piece_length=2 * BLOCK,
        total_length=4 * BLOCK,
        have=have,
        config=SessionConfig(**config),  # type: ignore[arg-type]
    )


def unchoked_with_all(session: SwarmSession[str], remote: Remote, now: float = 0.0) -> list:
    """``remote`` connects, has every piece and unchokes us: return our requests to it."""
    connect(session, remote)
    remote.hears(remote.says(session, m.HaveAll(), now=now))
    asked = requests(remote.says(session, m.Unchoke(), now=now), remote.name)
    remote.hears([SendMessage(remote.name, r) for r in asked])
    return asked


# -- bookkeeping -------------------------------------------------------------------


def test_peers_and_their_rates_are_tracked_per_connection() -> None:
    session = leecher(1, 2 * BLOCK)
    b, c = Remote("b", 1), Remote("c", 1)
    asked = unchoked_with_all(session, b)
    connect(session, c)
    assert sorted(session.peers) == ["b", "c"]
    deliver(session, b, asked[:1], 7)
    assert session.download_rate("b", 1.0) > 0
    assert session.download_rate("c", 1.0) == 0
    assert session.upload_rate("b", 1.0) == 0
    session.block_served("b", BLOCK, 1.0)
    assert session.upload_rate("b", 2.0) > 0
    session.peer_disconnected("c", 2.0)
    assert session.peers == ["b"]


def test_events_for_a_peer_the_session_does_not_know_change_nothing() -> None:
    session = leecher(2, 4 * BLOCK)
    b = Remote("b", 2)
    connect(session, b)
    b.hears(b.says(session, m.HaveAll()))
    assert session.peer_disconnected("b", 1.0) == []  # nothing was asked of it
    assert session.peer_disconnected("b", 1.0) == []  # teardown may repeat
    assert session.handle("b", m.Unchoke(), 1.0) == []
    assert session.handle("ghost", m.Have(0), 1.0) == []
    assert session.after_events("ghost", 1.0) == []
    session.set_peer_credit("ghost", 1e9)
    session.block_served("ghost", BLOCK, 1.0)
    assert session.peers == []
    assert session.picker.availability(0) == 0  # b's pieces no longer count


def test_earlier_credit_wins_a_peer_the_unchoke_slot() -> None:
    session = half_seed(upload_slots=1, optimistic_slots=0, choking="deficit")
    a, b = Remote("a", 2), Remote("b", 2)
    for remote in (a, b):
        connect(session, remote)
    a.hears(a.says(session, m.Interested()))  # the free slot goes to the first
    b.hears(b.says(session, m.Interested()))
    assert not a.theirs.peer_choking and b.theirs.peer_choking
    session.set_peer_credit("b", 10.0 * BLOCK)  # b gave us much before this connection
    round_ = session.tick(10.0)
    assert sent_to(round_, "a") == [m.Choke()]
    assert sent_to(round_, "b") == [m.Unchoke()]


@pytest.mark.parametrize("choking", ["deficit", "tit-for-tat"])
def test_a_leecher_lends_no_idle_slot_to_a_peer_that_only_took(choking: str) -> None:
    """Under the deficit policy a free rider cannot re-take an idle slot by turning
    interested again after each piece; a newcomer still gets one at once."""
    session = half_seed(upload_slots=2, optimistic_slots=0, choking=choking)
    taker, newcomer = Remote("taker", 2), Remote("newcomer", 2)
    for remote in (taker, newcomer):
        connect(session, remote)
    taker.hears(taker.says(session, m.Interested()))
    assert not taker.theirs.peer_choking  # a free slot, at once
    session.block_served("taker", BLOCK, 1.0)
    taker.hears(taker.says(session, m.NotInterested(), now=1.0))
    assert taker.theirs.peer_choking
    taker.hears(taker.says(session, m.Interested(), now=2.0))
    assert taker.theirs.peer_choking == (choking == "deficit")
    newcomer.hears(newcomer.says(session, m.Interested(), now=2.0))
    assert not newcomer.theirs.peer_choking


def test_an_unknown_choking_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown choking policy 'fastest'"):
        SessionConfig(choking="fastest")


# -- requests and their answers ---------------------------------------------------


def test_no_more_requests_are_queued_than_the_peer_says_it_keeps() -> None:
    session = leecher(4, 8 * BLOCK, min_queue=8)
    b = Remote("b", 4)
    connect(session, b)
    events = b.ours.receive_data(b.theirs.send(ExtensionHandshake(reqq=3)))
    assert [a for event in events for a in session.handle("b", event, 0.0)] == []
    b.hears(b.says(session, m.HaveAll()))
    assert len(requests(b.says(session, m.Unchoke()), "b")) == 3  # not min_queue's 8


def test_a_rejected_block_is_free_again_and_asked_for_once_more() -> None:
    session = leecher(4, 8 * BLOCK, min_queue=2, max_queue=2, sequential=True)
    b = Remote("b", 4)
    asked = unchoked_with_all(session, b)
    assert ordered(asked) == [(0, 0, BLOCK), (0, BLOCK, BLOCK)]
    first = asked[0]
    again = b.says(session, m.RejectRequest(first.index, first.begin, first.length))
    assert requests(again, "b") == [first]  # not lost: the only free block of the queue
    b.hears(again)  # and legal to ask again


def test_a_request_while_choked_is_rejected_after_the_batch() -> None:
    session = half_seed()
    b = Remote("b", 2)
    connect(session, b)
    actions = b.says_raw(session, m.Request(0, 0, BLOCK))  # we never unchoked b
    assert actions == [SendMessage("b", m.RejectRequest(0, 0, BLOCK))]


# -- peers without the fast extension -------------------------------------------


def test_without_the_fast_extension_a_bad_request_is_dropped_silently() -> None:
    session = half_seed()
    b = Remote("b", 2, fast=False)
    assert connect(session, b) == [m.BitfieldMessage(session.have.to_bytes())]
    b.hears(b.says(session, m.Interested()))
    assert not b.theirs.peer_choking
    assert b.says_raw(session, m.Request(1, 0, BLOCK)) == []  # no RejectRequest in BEP 3
    assert b.ours.requests_from_peer == set()  # and it no longer counts as outstanding
    assert ServeBlock("b", 0, 0, BLOCK) in b.says(session, m.Request(0, 0, BLOCK))


def test_a_seed_suggests_nothing_to_a_peer_without_the_fast_extension() -> None:
    session = seed(4)
    b = Remote("b", 4, fast=False)
    assert connect(session, b) == [m.BitfieldMessage(Bitfield.full(4).to_bytes())]
    told = b.hears(b.says(session, m.Interested()))
    assert told == [m.Unchoke()]  # a SuggestPiece would break a plain BEP 3 connection
    last = b.says(session, m.Request(0, BLOCK, BLOCK))  # the end of a piece
    assert last == [ServeBlock("b", 0, BLOCK, BLOCK)]


def test_requests_dropped_by_a_choke_go_to_another_peer() -> None:
    session = leecher(4, 8 * BLOCK, min_queue=2, max_queue=2, sequential=True)
    b, c = Remote("b", 4, fast=False), Remote("c", 4, fast=False)
    everything = m.BitfieldMessage(Bitfield.full(4).to_bytes())
    for remote in (b, c):
        connect(session, remote)
        remote.hears(remote.says(session, everything))
    asked = requests(b.says(session, m.Unchoke()), "b")
    b.hears([SendMessage("b", r) for r in asked])
    assert ordered(asked) == [(0, 0, BLOCK), (0, BLOCK, BLOCK)]
    assert b.says(session, m.Choke()) == []  # plain BEP 3: those requests are gone
    assert b.ours.requests_to_peer == set()
    assert ordered(requests(c.says(session, m.Unchoke()), "c")) == ordered(asked)


# -- what peers announce -----------------------------------------------------------


def test_repeated_and_late_announcements_count_each_piece_once() -> None:
    have = Bitfield(3)
    have.set(0)
    session: SwarmSession[str] = SwarmSession(
        num_pieces=3, piece_length=2 * BLOCK, total_length=6 * BLOCK, have=have
    )
    b = Remote("b", 3)
    connect(session, b)
    told = b.hears(b.says(session, m.Have(1)))
    assert told == [m.Interested()]
    assert b.says(session, m.Have(1)) == []  # said twice: counted once
    # aria2 sends a later Bitfield in place of Haves: only the new pieces count.
    late = m.BitfieldMessage(Bitfield.full(3).to_bytes())
    assert b.says_raw(session, late) == []  # already interested
    assert [session.picker.availability(i) for i in range(3)] == [1, 1, 1]


def test_a_peer_announcing_only_pieces_we_have_does_not_interest_us() -> None:
    have = Bitfield(3)
    have.set(0)
    have.set(2)
    session: SwarmSession[str] = SwarmSession(
        num_pieces=3, piece_length=2 * BLOCK, total_length=6 * BLOCK, have=have
    )
    b = Remote("b", 3)
    connect(session, b)
    assert b.says(session, m.BitfieldMessage(have.to_bytes())) == []
    assert b.says(session, m.Have(0)) == []
    assert session.picker.availability(0) == session.picker.availability(2) == 1
    assert b.hears(b.says(session, m.Have(1))) == [m.Interested()]


def test_a_connection_that_does_not_know_the_piece_count_yet_is_counted_once_it_does() -> None:
    session = leecher(2, 4 * BLOCK)
    ours = PeerConnection(info_hash=INFO_HASH, our_peer_id=b"L" * 20, num_pieces=None,
                          initiator=True)
    theirs = PeerConnection(info_hash=INFO_HASH, our_peer_id=b"B" * 20, num_pieces=2,
                            initiator=False)
    theirs.receive_data(ours.send_handshake())
    ours.receive_data(theirs.send_handshake())
    assert session.peer_connected("b", ours, 0.0) == [SendMessage("b", m.HaveNone())]
    events = ours.receive_data(theirs.send(m.HaveNone()) + theirs.send(m.Have(1)))
    for event in events:
        assert session.handle("b", event, 0.0) == []  # nothing known to count yet
    assert session.after_events("b", 0.0) == []
    assert session.picker.availability(1) == 0
    ours.set_num_pieces(2)
    events = ours.receive_data(theirs.send(m.Have(0)))
    actions = [a for event in events for a in session.handle("b", event, 0.0)]
    assert actions == [SendMessage("b", m.Interested())]
    assert [session.picker.availability(i) for i in range(2)] == [1, 1]


def test_a_repeated_suggestion_or_one_of_a_piece_we_have_pushes_nothing_out() -> None:
    have = Bitfield(20)
    have.set(0)
    session: SwarmSession[str] = SwarmSession(
        num_pieces=20,
        piece_length=2 * BLOCK,
        total_length=40 * BLOCK,
        have=have,
        config=SessionConfig(min_queue=2, max_queue=2),
    )
    s = Remote("s", 20)
    connect(session, s)
    s.hears(s.says(session, m.HaveAll()))
    s.says(session, *(m.SuggestPiece(index) for index in range(1, 17)))  # 16: all kept
    s.says(session, m.SuggestPiece(1), m.SuggestPiece(0))
    asked = requests(s.says(session, m.Unchoke()), "s")
    assert [r.index for r in asked] == [1, 1]  # the oldest suggestion is still first


def test_a_seventeenth_suggestion_pushes_out_the_oldest() -> None:
    session = leecher(20, 40 * BLOCK, min_queue=2, max_queue=2)
    s = Remote("s", 20)
    connect(session, s)
    s.hears(s.says(session, m.HaveAll()))
    s.says(session, *(m.SuggestPiece(index) for index in range(17)))
    asked = requests(s.says(session, m.Unchoke()), "s")
    assert [r.index for r in asked] == [1, 1]  # piece 0 was forgotten: 16 are kept


# -- blocks arriving ---------------------------------------------------------------


def test_a_copy_that_crossed_our_cancel_is_not_stored_twice() -> None:
    session = leecher(1, 2 * BLOCK, min_queue=4)
    b, c = Remote("b", 1), Remote("c", 1)
    asked = unchoked_with_all(session, b)
    assert ordered(unchoked_with_all(session, c)) == ordered(asked)  # endgame
    first, second = sorted(asked, key=lambda r: r.begin)
    stored = deliver(session, b, [first], 1)
    assert StoreBlock("b", 0, 0, BLOCK) in stored
    # c's copy was on the wire before our Cancel reached it (c never hears it).
    assert c.says(session, m.Piece(0, 0, bytes(BLOCK))) == []
    done = deliver(session, b, [second], 1)
    assert VerifyPiece(0) in done
    session.piece_checked(0, True, 1.0)
    assert c.says(session, m.Piece(0, BLOCK, bytes(BLOCK))) == []  # we have the piece now
    assert c.ours.unrequested_bytes == 0  # both were asked for: nothing held against c


def test_a_snubbed_peer_that_delivers_again_gets_a_full_queue() -> None:
    session = leecher(4, 8 * BLOCK, min_queue=4, snub_timeout=30.0)
    slow = Remote("slow", 4)
    asked = unchoked_with_all(session, slow)
    assert session.tick(29.0) == []  # waiting is not snubbing, yet
    slow.hears(session.tick(31.0))
    (kept,) = slow.ours.requests_to_peer
    refill = deliver(session, slow, [m.Request(*kept)], 3)
    assert len(requests(refill, "slow")) == 4
    assert len(asked) == 4


def test_blocks_of_a_snubbing_peer_go_to_an_idle_one() -> None:
    session = leecher(2, 4 * BLOCK, min_queue=1, max_queue=1, snub_timeout=30.0)
    slow, fast = Remote("slow", 2), Remote("fast", 2)
    (first,) = unchoked_with_all(session, slow)
    connect(session, fast)
    fast.hears(fast.says(session, m.Have(first.index)))
    (second,) = requests(fast.says(session, m.Unchoke()), "fast")
    fast.hears([SendMessage("fast", second)])
    assert (second.index, second.begin) == (first.index, BLOCK - first.begin)
    actions = fast.says(session, m.Piece(second.index, second.begin, bytes(BLOCK)), now=20.0)
    assert requests(actions, "fast") == []  # the piece's last block is slow's
    round_ = session.tick(31.0)
    assert SendMessage("slow", m.Cancel(first.index, first.begin, first.length)) in round_
    assert requests(round_, "fast") == [first]
    (kept,) = requests(round_, "slow")  # slow keeps one request, of the other piece
    assert kept.index != first.index


# -- choking ------------------------------------------------------------------------


def test_a_peer_beyond_the_free_slots_waits_for_the_next_round() -> None:
    session = seed(2, upload_slots=1, optimistic_slots=1)
    a, b, c = Remote("a", 2), Remote("b", 2), Remote("c", 2)
    for remote in (a, b, c):
        connect(session, remote)
    assert m.Unchoke() in a.hears(a.says(session, m.Interested()))
    assert m.Unchoke() in b.hears(b.says(session, m.Interested()))
    assert c.says(session, m.Interested()) == []  # both slots taken
    assert c.theirs.peer_choking


def test_a_peer_losing_interest_is_choked_and_frees_its_slot() -> None:
    session = seed(2, upload_slots=1, optimistic_slots=0)
    a, b = Remote("a", 2), Remote("b", 2)
    for remote in (a, b):
        connect(session, remote)
    a.hears(a.says(session, m.Interested()))
    assert b.says(session, m.Interested()) == []
    assert a.hears(a.says(session, m.NotInterested())) == [m.Choke()]
    assert b.says(session, m.NotInterested()) == []  # never unchoked: nothing to take back
    assert m.Unchoke() in b.hears(b.says(session, m.Interested()))


def test_a_round_unchokes_the_peer_that_gives_most_and_chokes_the_other() -> None:
    session = half_seed(upload_slots=1, optimistic_slots=0, min_queue=1, max_queue=1)
    a, b = Remote("a", 2), Remote("b", 2)
    for remote in (a, b):
        connect(session, remote)
    a.hears(a.says(session, m.Interested()))
    assert b.says(session, m.Interested()) == []
    b.hears(b.says(session, m.Have(1)))
    asked = requests(b.says(session, m.Unchoke()), "b")
    b.hears([SendMessage("b", r) for r in asked])
    deliver(session, b, asked, 9)  # b uploads to us; a gives nothing
    round_ = session.tick(10.0)
    assert sent_to(round_, "a") == [m.Choke()]
    assert sent_to(round_, "b") == [m.Unchoke()]
    assert session.tick(11.0) == []  # no round due yet, nobody snubbed


# -- super-seeding ------------------------------------------------------------------


def test_a_super_seed_reveals_a_piece_to_a_plain_peer_without_have_none() -> None:
    session = seed(4, super_seed=True)
    b = Remote("b", 4, fast=False)
    sent = connect(session, b)
    assert len(sent) == 1 and isinstance(sent[0], m.Have)


def test_a_super_seed_reveals_the_next_piece_once_the_last_was_passed_on() -> None:
    session = seed(4, super_seed=True)
    b, c = Remote("b", 4), Remote("c", 4)
    (first,) = [msg.index for msg in connect(session, b) if isinstance(msg, m.Have)]
    connect(session, c)
    assert b.says(session, m.Have(first)) == []  # b has it; nobody else does yet
    actions = c.says(session, m.Have(first))  # now c has it too: b passed it on
    (second,) = [msg.index for msg in sent_to(actions, "b") if isinstance(msg, m.Have)]
    assert second != first


def test_a_super_seed_counts_a_newcomers_bitfield_as_passing_pieces_on() -> None:
    session = seed(4, super_seed=True)
    b, c = Remote("b", 4), Remote("c", 4)
    (first,) = [msg.index for msg in connect(session, b) if isinstance(msg, m.Have)]
    connect(session, c)
    holds = Bitfield(4)
    holds.set(first)
    actions = c.says(session, m.BitfieldMessage(holds.to_bytes()))
    assert [type(msg) for msg in sent_to(actions, "b")] == [m.Have]
    assert sent_to(actions, "b") != [m.Have(first)]


def test_a_super_seed_reveals_a_piece_again_when_a_peer_fetching_it_leaves() -> None:
    session = seed(1, super_seed=True)  # at most two copies on their way
    b, c, d = Remote("b", 1), Remote("c", 1), Remote("d", 1)
    assert m.Have(0) in connect(session, b)
    assert m.Have(0) in connect(session, c)
    assert m.Have(0) not in connect(session, d)
    actions = session.peer_disconnected("b", 1.0)
    assert sent_to(actions, "d") == [m.Have(0)]
    assert sent_to(actions, "c") == []


# -- smart ban with block hashes ------------------------------------------------


def test_blocks_blamed_by_their_hashes_get_their_sender_banned() -> None:
    session = leecher(1, 2 * BLOCK, min_queue=1, max_queue=1)
    b, c = Remote("b", 1), Remote("c", 1)
    first = unchoked_with_all(session, b)
    second = unchoked_with_all(session, c)
    assert {first[0].begin, second[0].begin} == {0, BLOCK}
    deliver(session, b, first, 1)
    deliver(session, c, second, 2)
    session.piece_checked(0, False, 1.0, digests_of([1, 2]))
    bad = second[0].begin
    assert session.blame_blocks(0, [bad]) == [
        DropPeer("c", "sent bad data for piece 0", ban=True)
    ]
    assert session.blame_blocks(0, [bad]) == []  # the piece is forgotten once blamed


# -- mirrors ----------------------------------------------------------------------


def test_a_mirror_gets_nothing_to_fetch_when_seeding_or_while_hashing_is_behind() -> None:
    assert seed(2).mirror_pick("m", 4) == []
    session = leecher(3, 6 * BLOCK, sequential=True, max_unverified_bytes=0)
    assert session.mirror_pick("m", 1) == [0]
    assert session.mirror_piece_arrived("m", 0) == [VerifyPiece(0)]
    assert session.mirror_pick("m", 2) == []  # piece 0 is still being hashed
    session.piece_checked(0, True, 1.0)
    assert session.mirror_pick("m", 2) == [1, 2]


def test_a_piece_from_a_mirror_cancels_peer_requests_for_it_and_only_for_it() -> None:
    session = leecher(3, 6 * BLOCK, min_queue=8, sequential=True)
    assert session.mirror_pick("m", 1) == [0]
    b = Remote("b", 3)
    asked = unchoked_with_all(session, b)
    assert {r.index for r in asked} == {0, 1, 2}  # endgame: piece 0 from b too
    actions = session.mirror_piece_arrived("m", 0)
    cancels = sorted((c.index, c.begin, c.length) for c in sent_to(actions, "b"))
    assert cancels == [(0, 0, BLOCK), (0, BLOCK, BLOCK)]
    assert actions[-1] == VerifyPiece(0)
    assert session.mirror_piece_arrived("m", 0) == []  # being hashed already
    session.piece_checked(0, True, 1.0)
    assert session.mirror_piece_arrived("m", 0) == []  # and then had


def test_a_piece_handed_to_a_faster_mirror_may_still_come_from_the_slow_one() -> None:
    session = leecher(4, 8 * BLOCK, sequential=True)
    assert session.mirror_pick("slow", 4) == [0, 1, 2, 3]
    assert session.mirror_hand_over("slow", "fast", [2, 3]) == [2, 3]
    assert session.mirror_pick("fast", 4) == []  # the hand-over took nothing new
    # The slow mirror was already sending piece 2: it is taken, and "fast" (not a
    # peer connection) is not sent a Cancel.
    assert session.mirror_piece_arrived("slow", 2) == [VerifyPiece(2)]


def test_pieces_a_mirror_gives_up_go_to_idle_peers() -> None:
    session: SwarmSession[str] = SwarmSession(
        num_pieces=4,
        piece_length=BLOCK,
        total_length=4 * BLOCK,
        have=Bitfield(4),
        config=SessionConfig(sequential=True),
    )
    assert session.mirror_pick("m", 2) == [0, 1]
    b = Remote("b", 4)
    connect(session, b)
    b.hears(b.says(session, m.Have(0), m.Have(1)))
    assert b.says(session, m.Unchoke()) == []  # what b has is asked of the mirror
    partial = session.mirror_stopped("m", 1.0, [1])
    assert requests(partial, "b") == [m.Request(1, 0, BLOCK)]
    rest = session.mirror_stopped("m", 1.0)
    assert requests(rest, "b") == [m.Request(0, 0, BLOCK)]


def test_an_idle_peer_takes_a_block_of_a_mirrors_piece_without_cancelling_at_the_mirror() -> None:
    session = leecher(2, 4 * BLOCK, sequential=True)
    assert session.mirror_pick("m", 1) == [0]
    b = Remote("b", 2)
    connect(session, b)
    b.hears(b.says(session, m.Have(0)))
    actions = b.says(session, m.Unchoke())
    assert actions == [SendMessage("b", m.Request(0, BLOCK, BLOCK))]  # no Cancel for "m"
    b.hears(actions)
    arrived = session.mirror_piece_arrived("m", 0)  # the mirror was quicker
    assert arrived == [SendMessage("b", m.Cancel(0, BLOCK, BLOCK)), VerifyPiece(0)]
