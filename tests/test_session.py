"""The sans-I/O swarm session, driven by hand through real PeerConnections (no sockets)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from opendistro.bitfield import Bitfield
from opendistro.swarm.session import (
    Action,
    DropPeer,
    PieceUnverifiable,
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

    def __init__(self, name: str, num_pieces: int, *, fast: bool = True) -> None:
        self.name = name
        self.ours = PeerConnection(
            info_hash=INFO_HASH,
            our_peer_id=b"L" * 20,
            num_pieces=num_pieces,
            initiator=True,
            fast=fast,
        )
        self.theirs = PeerConnection(
            info_hash=INFO_HASH,
            our_peer_id=name[0].encode() * 20,
            num_pieces=num_pieces,
            initiator=False,
            fast=fast,
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


def test_a_verified_piece_is_announced_only_to_peers_that_lack_it() -> None:
    session = leecher(2, 4 * BLOCK)
    seed, holder, needy = Remote("s", 2), Remote("h", 2), Remote("n", 2)
    for remote in (seed, holder, needy):
        connect(session, remote)
    seed.hears(seed.says(session, m.HaveAll()))
    holder.hears(holder.says(session, m.Have(0)))
    asked = [r for r in requests(seed.says(session, m.Unchoke()), "s") if r.index == 0]
    seed.hears([SendMessage("s", r) for r in asked])
    for request in asked:
        seed.says(session, m.Piece(request.index, request.begin, bytes(request.length)))
    announced = {
        a.peer for a in session.piece_checked(0, True, 1.0)
        if isinstance(a, SendMessage) and isinstance(a.message, m.Have)
    }
    assert announced == {"n"}  # the seed and the holder already have piece 0


def deliver(session: SwarmSession[str], remote: Remote, asked: list[m.Request], fill: int) -> list:
    """``remote`` answers every request with blocks of ``fill`` bytes."""
    actions: list = []
    for request in asked:
        data = bytes([fill]) * request.length
        actions += remote.says(session, m.Piece(request.index, request.begin, data))
    return actions


def digests_of(fills: list[int]) -> dict[int, bytes]:
    return {n * BLOCK: hashlib.sha1(bytes([fill]) * BLOCK).digest() for n, fill in enumerate(fills)}


def test_the_sole_sender_of_a_failed_piece_is_banned_and_others_asked_again() -> None:
    session = leecher(1, 2 * BLOCK)
    b, c = Remote("b", 1), Remote("c", 1)
    connect(session, b)
    connect(session, c)
    b.hears(b.says(session, m.HaveAll()))
    asked = requests(b.says(session, m.Unchoke()), "b")
    b.hears([SendMessage("b", r) for r in asked])
    c.hears(c.says(session, m.HaveAll()))
    deliver(session, b, asked, 0xEE)
    c.hears(c.says(session, m.Unchoke()))
    again = session.piece_checked(0, False, 1.0, digests_of([0xEE, 0xEE]))
    assert DropPeer("b", "sent piece 0, which failed its hash check", ban=True) in again
    assert not requests(again, "b")
    assert ordered(requests(again, "c")) == ordered(asked)
    assert session.hash_failures == 1


def test_of_two_senders_only_the_one_whose_block_was_wrong_is_banned() -> None:
    session = leecher(1, 2 * BLOCK, min_queue=1, max_queue=1)
    b, c, d = Remote("b", 1), Remote("c", 1), Remote("d", 1)
    for remote in (b, c, d):
        connect(session, remote)
        remote.hears(remote.says(session, m.HaveAll()))
    first = requests(b.says(session, m.Unchoke()), "b")
    b.hears([SendMessage("b", r) for r in first])
    second = requests(c.says(session, m.Unchoke()), "c")
    c.hears([SendMessage("c", r) for r in second])
    assert first[0].begin == 0 and second[0].begin == BLOCK
    deliver(session, b, first, 0x01)  # right
    deliver(session, c, second, 0xBA)  # wrong
    failed = session.piece_checked(0, False, 1.0, digests_of([0x01, 0xBA]))
    assert not [a for a in failed if isinstance(a, DropPeer)]  # not yet known who lied
    assert session.needs_block_digests(0)
    asked = requests(d.says(session, m.Unchoke()), "d")
    d.hears([SendMessage("d", r) for r in asked])
    deliver(session, d, asked, 0x01)
    passed = session.piece_checked(0, True, 2.0, digests_of([0x01, 0x01]))
    assert [a for a in passed if isinstance(a, DropPeer)] == [
        DropPeer("c", "sent bad data for piece 0", ban=True)
    ]


def test_a_piece_failing_whole_from_two_peers_blames_the_torrent() -> None:
    session = leecher(1, 2 * BLOCK)
    outcomes = []
    for name in ("b", "c"):
        remote = Remote(name, 1)
        connect(session, remote)
        remote.hears(remote.says(session, m.HaveAll()))
        asked = requests(remote.says(session, m.Unchoke()), name)
        remote.hears([SendMessage(name, r) for r in asked])
        deliver(session, remote, asked, 0x01)
        outcomes.append(session.piece_checked(0, False, 1.0, digests_of([0x01, 0x01])))
        session.peer_disconnected(name, 1.0)
    assert PieceUnverifiable(0) not in outcomes[0]
    assert PieceUnverifiable(0) in outcomes[1]
    assert not [a for a in outcomes[1] if isinstance(a, DropPeer)]


def test_a_peer_sending_much_unrequested_data_is_banned() -> None:
    session = leecher(4, 8 * BLOCK, max_unrequested_bytes=3 * BLOCK)
    b = Remote("b", 4)
    connect(session, b)
    b.hears(b.says(session, m.HaveAll()))
    actions: list = []
    for begin in range(0, 4 * BLOCK, BLOCK):
        actions += b.says_raw(session, m.Piece(3, begin % (2 * BLOCK), bytes(BLOCK)))
    assert DropPeer("b", "sent too much data nobody asked for", ban=True) in actions


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


def suggestions(actions: Sequence[Action[str]], peer: str) -> list[int]:
    return [
        a.message.index
        for a in actions
        if isinstance(a, SendMessage) and a.peer == peer and isinstance(a.message, m.SuggestPiece)
    ]


def test_a_seed_suggests_each_piece_once_before_any_twice() -> None:
    seed: SwarmSession[str] = SwarmSession(
        num_pieces=4, piece_length=2 * BLOCK, total_length=8 * BLOCK, have=Bitfield.full(4)
    )
    offered: list[int] = []
    for name in ("a", "b", "c"):
        remote = Remote(name, 4)
        connect(seed, remote)
        remote.says(seed, m.HaveNone())
        offered += suggestions(remote.says(seed, m.Interested()), name)  # a free slot: unchoked
    assert sorted(offered[:4]) == [0, 1, 2, 3]  # every piece once first
    assert len(offered) == 4  # then no more: the seed only steers until each was handed out
    holder = Remote("h", 4)
    connect(seed, holder)
    holder.says(seed, m.Have(0), m.Have(1), m.Have(2), m.Have(3))
    assert suggestions(holder.says(seed, m.Interested()), "h") == []  # nothing it lacks


def test_a_leecher_takes_suggested_pieces_first() -> None:
    session = leecher(8, 16 * BLOCK, min_queue=4)
    seed = Remote("s", 8)
    connect(session, seed)
    seed.hears(seed.says(session, m.HaveAll()))
    seed.says(session, m.SuggestPiece(6), m.SuggestPiece(3))
    asked = requests(seed.says(session, m.Unchoke()), "s")
    assert [r.index for r in asked] == [6, 6, 3, 3]  # the suggested pieces, in order
    seed.hears([SendMessage("s", r) for r in asked])
    seed.says(session, m.SuggestPiece(6))  # a piece already being fetched is not taken twice
    more = [r.index for r in requests(deliver(session, seed, asked[:1], 1), "s")]
    assert 6 not in more


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


def test_an_idle_unchoked_peer_takes_a_queued_block_from_a_busier_one() -> None:
    session = leecher(2, 4 * BLOCK, min_queue=2, max_queue=2)
    b, c = Remote("b", 2), Remote("c", 2)
    for remote in (b, c):
        connect(session, remote)
    b.hears(b.says(session, m.HaveAll()))
    asked_b = requests(b.says(session, m.Unchoke()), "b")
    b.hears([SendMessage("b", r) for r in asked_b])
    assert len({r.index for r in asked_b}) == 1 and len(asked_b) == 2
    piece = asked_b[0].index
    c.hears(c.says(session, m.Have(piece)))
    actions = c.says(session, m.Unchoke())
    moved = max(asked_b, key=lambda r: r.begin)
    assert requests(actions, "c") == [moved]
    cancels = [a.message for a in actions if isinstance(a, SendMessage) and a.peer == "b"]
    assert cancels == [m.Cancel(moved.index, moved.begin, moved.length)]


def test_a_peer_told_we_had_nothing_hears_each_piece_once_we_know_better() -> None:
    have = Bitfield(3)
    have.set(0)
    have.set(2)
    session: SwarmSession[str] = SwarmSession(
        num_pieces=3, piece_length=2 * BLOCK, total_length=6 * BLOCK, have=have
    )
    b = Remote("b", 3)
    b.hears([SendMessage("b", m.HaveNone())])  # what the driver said while checking
    told = b.hears(session.peer_connected("b", b.ours, 0.0, announced=True))
    assert told == [m.Have(0), m.Have(2)]
    assert b.theirs.peer_has is not None and list(b.theirs.peer_has) == [0, 2]


class Driver:
    """What the trio driver does with the session's decisions, minus sockets and threads.

    It keeps each stored block's bytes in a buffer per piece, takes a piece's
    buffer away to be hashed when told to verify it (the verdict comes back
    later, when the test says so, as from a worker thread), and keeps the bans.
    """

    def __init__(self, session: SwarmSession[str], truth: bytes) -> None:
        self.session = session
        self.truth = truth
        self.buffers: dict[int, bytearray] = {}
        self.hashing: list[tuple[int, bytes]] = []
        self.overlapping: list[int] = []
        self.banned: dict[str, str] = {}

    def run(self, actions: list, data: bytes | None = None) -> list:
        for action in actions:
            if isinstance(action, StoreBlock):
                assert data is not None and len(data) == action.length
                buffer = self.buffers.setdefault(
                    action.index, bytearray(self.session.piece_size(action.index))
                )
                buffer[action.begin : action.begin + action.length] = data
            elif isinstance(action, VerifyPiece):
                if any(index == action.index for index, _ in self.hashing):
                    self.overlapping.append(action.index)
                self.hashing.append((action.index, bytes(self.buffers.pop(action.index))))
            elif isinstance(action, DropPeer) and action.ban:
                self.banned[action.peer] = action.reason
        return actions

    def hash_done(self, now: float) -> list:
        """The oldest piece handed out for hashing is done: report it as the driver would."""
        index, data = self.hashing.pop(0)
        start = index * self.session.piece_length
        good = data == self.truth[start : start + len(data)]
        digests = {
            begin: hashlib.sha1(data[begin : begin + BLOCK]).digest()
            for begin in range(0, len(data), BLOCK)
        }
        return self.run(self.session.piece_checked(index, good, now, digests))


Answer = Callable[[m.Request], bytes | None]


def answer(session: SwarmSession[str], driver: Driver, remote: Remote, make: Answer) -> list:
    """``remote`` answers each request it holds with ``make(request)`` (None: keeps silent)."""
    actions: list = []
    for index, begin, length in sorted(remote.theirs.requests_from_peer):
        data = make(m.Request(index, begin, length))
        if data is not None:
            actions += driver.run(remote.says(session, m.Piece(index, begin, data)), data)
    return actions


def truth_and_lie(size: int) -> tuple[bytes, Answer, Answer]:
    """The torrent's data; an honest answer; one poisoning block 0 of every piece."""
    truth = bytes(range(256)) * (size // 256)

    def tell_truth(request: m.Request) -> bytes:
        start = request.index * 2 * BLOCK + request.begin
        return truth[start : start + request.length]

    def lie(request: m.Request) -> bytes:
        data = tell_truth(request)
        return data if request.begin else bytes([data[0] ^ 1]) + data[1:]

    return truth, tell_truth, lie


def first_copy_failed() -> tuple[SwarmSession[str], Driver, Remote, Remote, Answer, Answer]:
    """A one-piece download from a liar and an honest peer whose first copy has just failed.

    That copy had two senders: the liar's bad block 0, and block 1 from the honest
    peer, asked in endgame while the liar was slow to send it. Returns the session,
    the driver, the liar, the honest peer, and how each answers a request.
    """
    session = leecher(1, 2 * BLOCK, min_queue=2, max_queue=2)
    truth, tell_truth, lie = truth_and_lie(2 * BLOCK)
    driver = Driver(session, truth)
    liar, honest = Remote("liar", 1), Remote("honest", 1)
    for remote in (liar, honest):
        connect(session, remote)
        remote.hears(remote.says(session, m.HaveAll()))
    liar.hears(liar.says(session, m.Unchoke()))
    bad = lie(m.Request(0, 0, BLOCK))
    assert bad is not None
    liar.hears(driver.run(liar.says(session, m.Piece(0, 0, bad)), bad))
    honest.hears(honest.says(session, m.Unchoke()))  # endgame: block 1 from it too
    liar.hears(answer(session, driver, honest, tell_truth))  # and the liar's is cancelled
    assert [index for index, _ in driver.hashing] == [0]
    return session, driver, liar, honest, tell_truth, lie


def test_a_liar_leaving_while_its_copy_is_hashed_does_not_get_the_next_sender_banned() -> None:
    session, driver, liar, honest, tell_truth, lie = first_copy_failed()

    def everyone_hears(actions: list) -> None:
        for remote in (liar, honest):
            remote.hears(actions)

    everyone_hears(driver.hash_done(1.0))
    assert driver.banned == {}  # two senders: not yet known who lied
    # The next copy: the liar, asked first, now answers everything it is asked.
    while not driver.hashing:
        everyone_hears(answer(session, driver, liar, lie))
        everyone_hears(answer(session, driver, honest, tell_truth))
    # It leaves (banned for another piece, say) while that copy is hashed.
    honest.hears(driver.run(session.peer_disconnected("liar", 2.0)))
    honest.hears(answer(session, driver, honest, tell_truth))
    while driver.hashing:
        honest.hears(driver.hash_done(3.0))
        honest.hears(answer(session, driver, honest, tell_truth))

    assert list(driver.banned) == ["liar"]
    assert driver.overlapping == []  # one copy of a piece is hashed at a time
    assert session.seeding


def test_a_piece_refetched_from_one_peer_is_not_shared_with_an_idle_one() -> None:
    _, driver, _, _, _, _ = first_copy_failed()
    refill = driver.hash_done(1.0)
    assert len(requests(refill, "liar")) == 2  # the whole piece, from the liar alone
    # The honest peer, idle, takes no block off the liar's queue: the copy must have one
    # sender, so that it passes or its sender is known to have lied.
    assert not [a for a in refill if isinstance(a, SendMessage) and a.peer == "honest"]


def test_a_block_moved_to_an_idle_peer_in_the_same_round_is_cancelled_at_its_holder() -> None:
    session = leecher(
        3, 6 * BLOCK, min_queue=2, max_queue=2, sequential=True, max_unverified_bytes=0
    )
    truth, tell_truth, _ = truth_and_lie(6 * BLOCK)
    driver = Driver(session, truth)
    busy, idle = Remote("busy", 3), Remote("idle", 3)
    connect(session, busy)
    connect(session, idle)
    busy.hears(busy.says(session, m.HaveAll()))
    busy.hears(busy.says(session, m.Unchoke()))
    busy.hears(answer(session, driver, busy, tell_truth))
    assert [index for index, _ in driver.hashing] == [0]
    # While piece 0 is hashed nobody is asked for more; then one round asks both.
    idle.hears(idle.says(session, m.Have(1), m.Unchoke()))
    assert not idle.ours.requests_to_peer
    refill = driver.hash_done(1.0)
    busy.hears(refill)
    idle.hears(refill)
    assert idle.ours.requests_to_peer == {(1, BLOCK, BLOCK)}
    assert busy.ours.requests_to_peer == {(1, 0, BLOCK)}  # not asked for it twice
