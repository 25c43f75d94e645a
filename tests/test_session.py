"""The sans-I/O swarm session, driven by hand through real PeerConnections (no sockets)."""

from __future__ import annotations

from collections.abc import Sequence

from opendistro.bitfield import Bitfield
from opendistro.swarm.session import (
    Action,
    SendMessage,
    ServeBlock,
    SessionConfig,
    StoreBlock,
    SwarmComplete,
    SwarmSession,
    VerifyPiece,
)
from opendistro.wire import messages as m
from opendistro.wire.codec import encode
from opendistro.wire.connection import PeerConnection

INFO_HASH = b"\x11" * 20
BLOCK = 16384


class Remote:
    """A peer on the other end of one connection: its own PeerConnection, driven by the test."""

    def __init__(self, name: str, num_pieces: int) -> None:
        self.name = name
        self.ours = PeerConnection(
            info_hash=INFO_HASH, our_peer_id=b"L" * 20, num_pieces=num_pieces, initiator=True
        )
        self.theirs = PeerConnection(
            info_hash=INFO_HASH,
            our_peer_id=name[0].encode() * 20,
            num_pieces=num_pieces,
            initiator=False,
        )
        self.theirs.receive_data(self.ours.send_handshake())
        self.ours.receive_data(self.theirs.send_handshake())

    def says(self, session: SwarmSession[str], *messages: m.Message, now: float = 0.0) -> list:
        """The remote sends ``messages``; return what our session decides."""
        data = b"".join(self.theirs.send(message) for message in messages)
        actions = []
        for event in self.ours.receive_data(data):
            actions += session.handle(self.name, event, now)
        return actions + session.after_events(self.name, now)

    def says_raw(self, session: SwarmSession[str], message: m.Message) -> list:
        """Bytes a misbehaving remote sends, bypassing its own connection's checks."""
        actions = []
        for event in self.ours.receive_data(encode(message)):
            actions += session.handle(self.name, event, 0.0)
        return actions + session.after_events(self.name, 0.0)

    def hears(self, actions: Sequence[Action[str]]) -> list[m.Message]:
        """Deliver our session's messages for this remote to it; return them."""
        sent = []
        for action in actions:
            if isinstance(action, SendMessage) and action.peer == self.name:
                data = self.ours.send(action.message)
                for reject in self.ours.pending_rejects():
                    data += self.ours.send(reject)
                self.theirs.receive_data(data)
                sent.append(action.message)
        return sent


def requests(actions: Sequence[Action[str]], peer: str) -> list[m.Request]:
    return [
        a.message
        for a in actions
        if isinstance(a, SendMessage) and a.peer == peer and isinstance(a.message, m.Request)
    ]


def leecher(num_pieces: int, total: int, **config: object) -> SwarmSession[str]:
    return SwarmSession(
        num_pieces=num_pieces,
        piece_length=2 * BLOCK,
        total_length=total,
        have=Bitfield(num_pieces),
        config=SessionConfig(**config),  # type: ignore[arg-type]
    )


def connect(session: SwarmSession[str], remote: Remote) -> list[m.Message]:
    """Tell the session about the connection; return what it sent the remote."""
    return remote.hears(session.peer_connected(remote.name, remote.ours, 0.0))


def ordered(found: list[m.Request]) -> list[tuple[int, int, int]]:
    return sorted((r.index, r.begin, r.length) for r in found)


def test_endgame_cancels_the_duplicate_request_when_a_block_arrives() -> None:
    session = leecher(1, 2 * BLOCK, min_queue=4)
    b, c = Remote("b", 1), Remote("c", 1)
    for remote in (b, c):
        connect(session, remote)
        remote.hears(remote.says(session, m.HaveAll()))
    asked_b = requests(b.says(session, m.Unchoke()), "b")
    b.hears(asked_b and [SendMessage("b", r) for r in asked_b])
    assert len(asked_b) == 2  # the whole piece from b
    asked_c = requests(c.says(session, m.Unchoke()), "c")
    c.hears([SendMessage("c", r) for r in asked_c])
    assert ordered(asked_c) == ordered(asked_b)  # endgame: the same blocks from c
    first = asked_b[0]
    actions = b.says(session, m.Piece(first.index, first.begin, bytes(first.length)))
    assert StoreBlock("b", first.index, first.begin, first.length) in actions
    assert SendMessage("c", m.Cancel(first.index, first.begin, first.length)) in actions


def test_a_complete_piece_is_verified_then_announced_and_the_download_completes() -> None:
    session = leecher(1, 2 * BLOCK)
    b, c = Remote("b", 1), Remote("c", 1)
    connect(session, b)
    connect(session, c)
    b.hears(b.says(session, m.HaveAll()))
    asked = requests(b.says(session, m.Unchoke()), "b")
    b.hears([SendMessage("b", r) for r in asked])
    actions: list = []
    for request in asked:
        actions += b.says(session, m.Piece(request.index, request.begin, bytes(request.length)))
    assert VerifyPiece(0) in actions
    checked = session.piece_checked(0, True, 1.0)
    assert SendMessage("c", m.Have(0)) in checked
    assert SwarmComplete() in checked
    assert session.seeding


def test_a_failed_piece_is_requested_again() -> None:
    session = leecher(1, 2 * BLOCK)
    b = Remote("b", 1)
    connect(session, b)
    b.hears(b.says(session, m.HaveAll()))
    asked = requests(b.says(session, m.Unchoke()), "b")
    b.hears([SendMessage("b", r) for r in asked])
    for request in asked:
        b.says(session, m.Piece(request.index, request.begin, bytes(request.length)))
    again = session.piece_checked(0, False, 1.0)
    assert ordered(requests(again, "b")) == ordered(asked)
    assert session.hash_failures == 1


def test_a_snubbing_peer_loses_its_requests_but_keeps_one() -> None:
    session = leecher(4, 8 * BLOCK, snub_timeout=30.0)
    slow, fast = Remote("slow", 4), Remote("fast", 4)
    connect(session, slow)
    slow.hears(slow.says(session, m.HaveAll()))
    asked = requests(slow.says(session, m.Unchoke()), "slow")
    slow.hears([SendMessage("slow", r) for r in asked])
    assert len(asked) >= 2
    actions = session.tick(31.0)
    cancels = [
        a.message
        for a in actions
        if isinstance(a, SendMessage) and isinstance(a.message, m.Cancel)
    ]
    assert len(cancels) == len(asked)
    assert len(requests(actions, "slow")) == 1  # one request, to notice a recovery
    connect(session, fast)
    fast.hears(fast.says(session, m.HaveAll(), now=31.0))
    assert requests(fast.says(session, m.Unchoke(), now=31.0), "fast")


def test_a_request_for_a_piece_we_lack_is_rejected_and_one_we_have_is_served() -> None:
    have = Bitfield(2)
    have.set(0)
    session: SwarmSession[str] = SwarmSession(
        num_pieces=2, piece_length=2 * BLOCK, total_length=4 * BLOCK, have=have
    )
    b = Remote("b", 2)
    connect(session, b)
    b.hears(b.says(session, m.Interested()))
    assert not b.theirs.peer_choking  # a free slot: unchoked at once
    served = b.says(session, m.Request(0, 0, BLOCK))
    assert ServeBlock("b", 0, 0, BLOCK) in served
    rejected = b.says_raw(session, m.Request(1, 0, BLOCK))
    assert SendMessage("b", m.RejectRequest(1, 0, BLOCK)) in rejected


def test_a_super_seed_reveals_pieces_one_at_a_time_and_serves_only_those() -> None:
    session: SwarmSession[str] = SwarmSession(
        num_pieces=4,
        piece_length=2 * BLOCK,
        total_length=8 * BLOCK,
        have=Bitfield.full(4),
        config=SessionConfig(super_seed=True),
    )
    b = Remote("b", 4)
    sent = connect(session, b)
    assert m.HaveNone() in sent and m.HaveAll() not in sent
    offered = [msg.index for msg in sent if isinstance(msg, m.Have)]
    assert len(offered) == 1
    b.hears(b.says(session, m.Interested()))
    hidden = next(i for i in range(4) if i != offered[0])
    actions = b.says_raw(session, m.Request(hidden, 0, BLOCK))
    assert SendMessage("b", m.RejectRequest(hidden, 0, BLOCK)) in actions
    assert ServeBlock("b", offered[0], 0, BLOCK) in b.says(session, m.Request(offered[0], 0, BLOCK))


def test_a_snubbing_peer_that_chokes_us_gets_no_new_request() -> None:
    session = leecher(4, 8 * BLOCK, snub_timeout=30.0)
    slow = Remote("slow", 4)
    connect(session, slow)
    slow.hears(slow.says(session, m.HaveAll()))
    asked = requests(slow.says(session, m.Unchoke()), "slow")
    slow.hears([SendMessage("slow", r) for r in asked])
    slow.hears(slow.says(session, m.Choke(), now=1.0))  # fast: our requests stay pending
    actions = session.tick(31.0)
    assert requests(actions, "slow") == []
    slow.hears(actions)  # every action is legal to send
