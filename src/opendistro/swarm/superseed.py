"""BEP 16 super-seeding: how an initial seeder makes each upload count once.

A lone initial seeder with little bandwidth wastes most of it as a normal seed:
peers ask it for whatever they like, so popular pieces are uploaded many times
and the swarm takes 150-200% of the torrent's size from the seed before anyone
finishes. In super-seed mode the seed instead pretends to have nothing (it
sends no bitfield) and reveals pieces one at a time with Have messages:

* each peer is told about one piece, the rarest in the swarm counting pieces
  already revealed and on their way (a piece nobody has and nobody was offered
  comes first), so the peer fetches exactly that piece;
* that peer is told about another only once the revealed piece has been seen
  at some *other* peer, i.e. it passed the piece on; until then the seed gives
  it nothing new, so a peer that does not share costs the seed one piece;
* a peer may only download the pieces revealed to it.

The seed thus uploads each piece about once and the swarm does the rest. Two
refinements keep it that way and keep it moving:

* a piece is revealed only while fewer than ``max_copies`` connected peers have
  it or are fetching it (default 2). Without a cap a seed with a fast link keeps
  revealing pieces the swarm already holds, and peers happily take them from the
  seed rather than from each other; in simulation that cost 3-6 uploads of each
  piece, against about 1.05 with the cap (BEP 16 reports 105% in practice). A
  piece whose holders all leave falls under the cap and is revealed again.
  ``max_copies=None`` lifts the cap (libtorrent's behaviour).
* a peer alone with us has nobody to pass a piece to, so it gets the next piece
  as soon as it has the last. ``strict=False`` relaxes the rule further, as
  libtorrent's default does: a peer gets its next piece once it has the last
  one, whether or not it shared it.

Like the picker, this is bookkeeping only: the driver reports joins, Haves and
departures, sends a Have for each piece :meth:`SuperSeeder.piece_to_offer`
returns, and refuses requests that :meth:`SuperSeeder.may_upload` rejects.
Whenever any peer sends a Have or leaves, other peers may have become
unblocked, so the driver asks again for each of them; a peer still waiting on
its last piece costs O(1) to ask.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field

from ..bitfield import Bitfield
from ..errors import ConfigError, LocalProtocolError, RemoteProtocolError

__all__ = ["SuperSeeder"]


@dataclass
class _Peer:
    have: Bitfield
    offered: set[int] = field(default_factory=set)
    pending: int | None = None
    """The piece revealed last, which the peer must pass on before it gets another."""


class SuperSeeder:
    """Which piece to reveal to which peer, and what each peer may download."""

    def __init__(
        self,
        num_pieces: int,
        *,
        rng: random.Random | None = None,
        strict: bool = True,
        max_copies: int | None = 2,
    ) -> None:
        if num_pieces < 0:
            raise LocalProtocolError("a torrent cannot have a negative number of pieces")
        if max_copies is not None and max_copies < 1:
            raise ConfigError("max_copies must be at least 1 (or None for no limit)")
        self.num_pieces = num_pieces
        self.strict = strict
        self.max_copies = max_copies
        self._rng = rng or random.Random()
        self._peers: dict[Hashable, _Peer] = {}
        self._availability = [0] * num_pieces
        """How many connected peers have each piece."""
        self._in_flight = [0] * num_pieces
        """How many connected peers were just offered each piece and do not have it yet."""
        self._times_offered = [0] * num_pieces

    # -- what peers have -------------------------------------------------

    def peer_joined(self, key: Hashable, peer_has: Bitfield | None) -> None:
        """A peer connected; ``peer_has`` is its bitfield (None: it has nothing)."""
        if key in self._peers:
            raise LocalProtocolError(f"peer {key!r} joined twice")
        if peer_has is None:
            have = Bitfield(self.num_pieces)
        elif peer_has.length != self.num_pieces:
            raise LocalProtocolError(
                f"bitfield of {peer_has.length} pieces for a torrent of {self.num_pieces}"
            )
        else:
            have = peer_has.copy()
        for index in have:
            self._availability[index] += 1
        self._peers[key] = _Peer(have)

    def peer_has(self, key: Hashable, index: int) -> None:
        """Peer ``key`` announced piece ``index`` (a Have, or one bit of its bitfield)."""
        peer = self._peers.get(key)
        if peer is None:
            raise LocalProtocolError(f"peer {key!r} has not joined")
        if not 0 <= index < self.num_pieces:
            raise RemoteProtocolError(f"have for piece {index} outside 0..{self.num_pieces - 1}")
        if peer.have.has(index):
            return
        peer.have.set(index)
        self._availability[index] += 1
        if peer.pending == index:
            self._in_flight[index] -= 1

    def peer_left(self, key: Hashable) -> None:
        """Forget a departed peer (unknown keys are ignored: teardown may repeat)."""
        peer = self._peers.pop(key, None)
        if peer is None:
            return
        for index in peer.have:
            self._availability[index] -= 1
        self._drop_pending(peer)

    # -- what to reveal ----------------------------------------------------

    def piece_to_offer(self, key: Hashable) -> int | None:
        """The next piece to reveal to ``key`` with a Have, recorded as offered.

        None while the piece revealed last has not spread to another peer, when
        every piece the peer lacks already has ``max_copies`` copies in the
        swarm (it can fetch them from other peers), or when the key is unknown.
        """
        peer = self._peers.get(key)
        if peer is None or (peer.pending is not None and not self._passed_on(peer)):
            return None
        index = self._rarest_for(peer)
        if index is None:
            return None
        self._drop_pending(peer)
        peer.pending = index
        peer.offered.add(index)
        self._in_flight[index] += 1
        self._times_offered[index] += 1
        return index

    def may_upload(self, key: Hashable, index: int) -> bool:
        """Whether ``key`` may download ``index`` from us: only pieces revealed to it."""
        peer = self._peers.get(key)
        return peer is not None and index in peer.offered

    def offered_to(self, key: Hashable) -> frozenset[int]:
        """Every piece revealed to ``key`` so far (empty for an unknown key)."""
        peer = self._peers.get(key)
        return frozenset(peer.offered) if peer is not None else frozenset()

    def _passed_on(self, peer: _Peer) -> bool:
        """Whether the piece last revealed to ``peer`` is now present at some other peer."""
        index = peer.pending
        assert index is not None
        holds = peer.have.has(index)
        if self._availability[index] - holds > 0:
            return True
        return holds and (not self.strict or len(self._peers) == 1)

    def _rarest_for(self, peer: _Peer) -> int | None:
        """The rarest piece the peer lacks and was not offered yet, ties at random.

        Rarity counts peers that have the piece plus peers it is on its way to,
        so two peers are not sent the same piece while others were sent none.
        """
        best: tuple[int, int] | None = None
        chosen: int | None = None
        ties = 0
        cap = self.max_copies
        for index in peer.have.missing():
            if index in peer.offered:
                continue
            copies = self._availability[index] + self._in_flight[index]
            if cap is not None and copies >= cap:
                continue
            rank = (copies, self._times_offered[index])
            if best is None or rank < best:
                best, chosen, ties = rank, index, 1
            elif rank == best:
                ties += 1
                if self._rng.randrange(ties) == 0:
                    chosen = index
        return chosen

    def _drop_pending(self, peer: _Peer) -> None:
        index = peer.pending
        if index is not None and not peer.have.has(index):
            self._in_flight[index] -= 1
        peer.pending = None
