"""Who may download from us: the choker.

Upload bandwidth is the one thing a peer can trade, so every mainstream client
spends it on a few peers at a time (an unchoked connection that gets a share
large enough to matter beats many connections that each get a trickle). The
choker decides, every ``rechoke_interval`` seconds, which peers those are. It is
pure policy: the driver passes in a snapshot of every connection and the time,
and gets back the set of peers to have unchoked; sending the Choke and Unchoke
messages that change the state is the driver's job.

Policy, as in BitTorrent mainline and libtorrent:

* **Leeching (tit-for-tat).** The ``slots`` interested peers that upload the
  most to us get the regular unchoke slots, so peers that reciprocate are
  rewarded and free riders are not. Snubbed peers (they stopped sending what we
  asked for) and seeds (they want nothing we could trade for) get no regular
  slot. Ties are broken at random, never by connection order, so no peer is
  starved for having connected late.
* **Optimistic unchoke.** ``optimistic_slots`` more peers are unchoked at random
  whatever their rate, because a peer we never upload to can never show us how
  fast it would reciprocate, and a newcomer has nothing to reciprocate with yet
  (it gets ``new_peer_weight`` times the chance during ``new_peer_window``). The
  choice is kept for ``optimistic_interval`` so the peer has time to answer; an
  optimistic peer that leaves or loses interest is replaced at the next round.
  A snubbed peer may still be unchoked optimistically: that is its only way back.
* **Seeding.** There is no download rate to reciprocate, and the best use of a
  seed's upload is to spread it so every leecher progresses and the swarm holds
  more distinct copies. Regular slots go round robin (as libtorrent's
  ``round_robin`` seed choker): the peers unchoked least recently first, then
  those we upload to most slowly, each kept for a round and then rotated. With
  ``n`` interested leechers every one is unchoked within ``ceil(n / slots)``
  rounds. Snubbing means nothing here (a seed requests nothing), so it is
  ignored.

**Deficit policy** (``policy="deficit"``, after FairTorrent). Tit-for-tat
looks at recent rates only, so a peer that just joined and a peer that fed us
for an hour rank alike once their rates match, and a free rider that happens to
hold a slot keeps drawing on it until someone out-uploads it. The deficit policy
keeps the books instead: each peer's *deficit* is what it gave us (this
connection, plus the ``credit`` its identity earned before) minus what we gave
it. Leeching, it unchokes first the peers it *owes* (positive deficit),
largest first: the ``slots`` largest, and more of them (up to
``MAX_OWED_SLOTS_FACTOR * slots``) while our upload until the next round would
reach their deficit. That is what FairTorrent's per-block rule (every block to
the largest deficit) does over a round: a peer that feeds us fast stays owed and
keeps its slot however many others we owe, so fast uploaders get fast
downloads. Slots left over go to the other peers that ever gave us anything,
fastest first (plain tit-for-tat among contributors); a peer that never gave us
anything gets no regular slot at all, so a free rider draws only on the
optimistic slot, kept exactly as above, and so does a new identity with no
credit: newcomers keep that share and nobody starves (the session also lends
an idle slot to a peer that becomes interested between rounds). When seeding,
the peers that fed us while we leeched come first, largest deficit first, so
they are repaid before anyone else; among the rest (for an initial seed,
everyone) the fewest bytes sent, then the least recently unchoked. That is
byte-even rather than turn-even, so every leecher, slow or fast, gets the
same share of the seed.

The choker remembers only what the policy needs: when the last round and the
last optimistic rotation happened, the current optimistic peers, and when each
present peer was last unchoked. Keys absent from a round's snapshot are
forgotten, so memory is bounded by the number of connections.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["CHOKING_POLICIES", "Choker", "PeerStats"]

CHOKING_POLICIES = ("tit-for-tat", "deficit")
"""The unchoke policies :class:`Choker` implements (see the module docstring)."""

MAX_OWED_SLOTS_FACTOR = 4
"""The deficit policy unchokes at most this many times ``slots`` peers it owes at once."""


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What the choker needs to know about one connection at rechoke time."""

    key: Hashable
    """Opaque peer identity; the choker returns these."""
    interested: bool
    """The peer wants something we have (only interested peers are unchoked)."""
    download_rate: float
    """Bytes/s we recently received from this peer: what it reciprocates with."""
    upload_rate: float
    """Bytes/s we recently sent to this peer."""
    connected_at: float
    """When the connection was established, on the same clock as ``now``."""
    is_seed: bool = False
    """The peer already has everything, so it is never unchoked."""
    snubbed: bool = False
    """It has not sent us anything we requested for a while."""
    credit: float = 0.0
    """Bytes its identity gave us, net of what we gave it, in earlier connections
    (0 for a newcomer or a peer without a credit identity)."""
    downloaded: float = 0.0
    """Bytes received from this peer over this connection."""
    uploaded: float = 0.0
    """Bytes sent to this peer over this connection."""

    @property
    def reciprocated(self) -> bool:
        """It ever gave us anything: on this connection, or as credit from earlier ones."""
        return self.downloaded > 0 or self.credit > 0

    @property
    def deficit(self) -> float:
        """What this peer gave us, earlier credit included, minus what we gave it."""
        return self.credit + self.downloaded - self.uploaded


class Choker:
    """Decides every round which peers are unchoked; see the module docstring."""

    def __init__(
        self,
        *,
        slots: int = 4,
        optimistic_slots: int = 1,
        rechoke_interval: float = 10.0,
        optimistic_interval: float = 30.0,
        new_peer_window: float = 60.0,
        new_peer_weight: int = 3,
        policy: str = "tit-for-tat",
        rng: random.Random | None = None,
    ) -> None:
        if policy not in CHOKING_POLICIES:
            raise ConfigError(
                f"unknown choking policy {policy!r} (use {', '.join(CHOKING_POLICIES)})"
            )
        if slots < 0 or optimistic_slots < 0:
            raise ConfigError("unchoke slot counts cannot be negative")
        if not (rechoke_interval > 0 and optimistic_interval > 0):
            raise ConfigError("choke intervals must be positive")
        if not new_peer_window >= 0:
            raise ConfigError("the new-peer window cannot be negative")
        if new_peer_weight < 1:
            raise ConfigError("the new-peer weight must be at least 1")
        self.slots = slots
        self.optimistic_slots = optimistic_slots
        self.rechoke_interval = rechoke_interval
        self.optimistic_interval = optimistic_interval
        self.new_peer_window = new_peer_window
        self.new_peer_weight = new_peer_weight
        self.policy = policy
        self._rng = rng or random.Random()
        self._last_round: float | None = None
        self._last_rotation: float | None = None
        self._optimistic: frozenset[Hashable] = frozenset()
        self._last_unchoked: dict[Hashable, float] = {}

    # -- timing -----------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a rechoke round is due: before the first round, or an interval later."""
        return self._last_round is None or now - self._last_round >= self.rechoke_interval

    def _rotation_due(self, now: float) -> bool:
        return self._last_rotation is None or now - self._last_rotation >= self.optimistic_interval

    # -- state --------------------------------------------------------------

    @property
    def optimistic(self) -> frozenset[Hashable]:
        """The peers currently unchoked optimistically."""
        return self._optimistic

    def last_unchoked(self, key: Hashable) -> float | None:
        """When ``key`` was last in a round's unchoked set, or None if never (or forgotten)."""
        return self._last_unchoked.get(key)

    # -- the round --------------------------------------------------------

    def rechoke(
        self,
        peers: Sequence[PeerStats],
        now: float,
        *,
        seeding: bool,
        present: Collection[Hashable] | None = None,
    ) -> frozenset[Hashable]:
        """Run one round: return the keys to have unchoked; every other peer is choked.

        ``peers`` is every current connection (a key given twice counts once,
        the last entry wins). Records the round's time for :meth:`due`.

        A caller with many connections may instead give in ``peers`` only those
        that could be unchoked (interested, not seeds: the others count for
        nothing in a round) and the key of every connection in ``present``,
        which decides whom the choker keeps remembering.
        """
        by_key = {peer.key: peer for peer in peers}
        if present is None:
            present = by_key
        eligible = {key: peer for key, peer in by_key.items() if _may_unchoke(peer)}

        rotating = self._rotation_due(now)
        keep: frozenset[Hashable] = frozenset(
            () if rotating else (key for key in self._optimistic if key in eligible)
        )

        regular_candidates = [
            peer
            for key, peer in eligible.items()
            if key not in keep and (seeding or not peer.snubbed)
        ]
        if seeding and self.policy == "deficit":
            chosen = self._rank_seeding_by_deficit(regular_candidates)[: self.slots]
        elif seeding:
            chosen = self._rank_round_robin(regular_candidates)[: self.slots]
        elif self.policy == "deficit":
            chosen = self._choose_by_deficit(regular_candidates)
        else:
            chosen = self._rank_by_reciprocation(regular_candidates)[: self.slots]
        regular = frozenset(peer.key for peer in chosen)

        wanted = self.optimistic_slots - len(keep)
        others = [peer for key, peer in eligible.items() if key not in regular and key not in keep]
        optimistic = keep | self._pick_optimistic(others, wanted, now)

        self._optimistic = optimistic
        if rotating:
            self._last_rotation = now
        self._last_round = now
        unchoked = regular | optimistic
        self._last_unchoked = {
            key: when for key, when in self._last_unchoked.items() if key in present
        }
        for key in unchoked:
            self._last_unchoked[key] = now
        return unchoked

    def _rank_by_reciprocation(self, candidates: list[PeerStats]) -> list[PeerStats]:
        """Fastest uploaders to us first; then those using their slot; the rest at random."""
        tiebreak = {peer.key: self._rng.random() for peer in candidates}
        return sorted(
            candidates,
            key=lambda peer: (-peer.download_rate, -peer.upload_rate, tiebreak[peer.key]),
        )

    def _choose_by_deficit(self, candidates: list[PeerStats]) -> list[PeerStats]:
        """The peers we owe, largest deficit first, then contributors, fastest first.

        FairTorrent sends every block to the peer with the largest deficit, so
        over one round the largest deficits are worked down to a common level.
        A round-based choker gets close by unchoking exactly the peers above
        that level: the ``slots`` largest, plus every further one whose
        deficit our upload until the next round (``budget``) would reach.
        """
        tiebreak = {peer.key: self._rng.random() for peer in candidates}
        owed = sorted(
            (peer for peer in candidates if peer.deficit > 0),
            key=lambda peer: (-peer.deficit, -peer.download_rate, tiebreak[peer.key]),
        )
        budget = math.fsum(peer.upload_rate for peer in candidates) * self.rechoke_interval
        chosen: list[PeerStats] = []
        for peer in owed[: self.slots * MAX_OWED_SLOTS_FACTOR]:
            if len(chosen) >= self.slots:
                above = math.fsum(taken.deficit - peer.deficit for taken in chosen)
                if above >= budget:
                    break
            chosen.append(peer)
        contributors = sorted(
            (peer for peer in candidates if peer.reciprocated and peer.deficit <= 0),
            key=lambda peer: (-peer.download_rate, -peer.deficit, tiebreak[peer.key]),
        )
        return chosen + contributors[: max(0, self.slots - len(chosen))]

    def _rank_seeding_by_deficit(self, candidates: list[PeerStats]) -> list[PeerStats]:
        """Peers that ever gave us anything first; within each group the largest
        deficit (so, among equals in what they gave, the fewest bytes sent), then
        the least recently unchoked."""
        tiebreak = {peer.key: self._rng.random() for peer in candidates}

        def order(peer: PeerStats) -> tuple[bool, float, float, float]:
            last = self._last_unchoked.get(peer.key, -math.inf)
            return not peer.reciprocated, -peer.deficit, last, tiebreak[peer.key]

        return sorted(candidates, key=order)

    def _rank_round_robin(self, candidates: list[PeerStats]) -> list[PeerStats]:
        """Least recently unchoked first, then the ones we serve most slowly."""
        tiebreak = {peer.key: self._rng.random() for peer in candidates}

        def order(peer: PeerStats) -> tuple[float, float, float]:
            last = self._last_unchoked.get(peer.key, -math.inf)
            return last, peer.upload_rate, tiebreak[peer.key]

        return sorted(candidates, key=order)

    def _pick_optimistic(
        self, candidates: list[PeerStats], count: int, now: float
    ) -> frozenset[Hashable]:
        """Up to ``count`` peers drawn at random, newcomers weighted up."""
        pool = list(candidates)
        weights = [self._weight(peer, now) for peer in pool]
        chosen: set[Hashable] = set()
        while pool and len(chosen) < count:
            # Weights are whole numbers >= 1, so the sums are exact and a point
            # in [0, total) always falls inside some peer's share.
            point = self._rng.random() * sum(weights)
            position = bisect.bisect_right(list(itertools.accumulate(weights)), point)
            chosen.add(pool.pop(position).key)
            weights.pop(position)
        return frozenset(chosen)

    def _weight(self, peer: PeerStats, now: float) -> int:
        if now - peer.connected_at < self.new_peer_window:
            return self.new_peer_weight
        return 1


def _may_unchoke(peer: PeerStats) -> bool:
    """Only a peer that wants data and lacks some of it can use an unchoke."""
    return peer.interested and not peer.is_seed
