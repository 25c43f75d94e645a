"""The tracker's memory of swarms: who announced what, and whom to tell about it.

Pure policy: the caller passes the peer's real address and the current time,
so the same object runs under the trio server, in the simulator and in tests
with an explicit clock. Its answers follow the usual tracker rules: peers that
stop announcing expire, a peer never gets itself back, a seeder is not sent
other seeders (it has nothing to gain from them), the answer is a random sample
(so every peer does not learn the same first fifty), and ``numwant`` is capped.

On top of that comes the od_credit seeding incentive (``spec/od-credit.md``).
An announce may prove a credit identity; the registry then knows who the
peer is, counts its seeding time, and uses the identity's standing (given to
it by the server, which reads the credit store) when it must choose a subset
of the swarm:

* a contributor (verified net giver) gets a larger share of seeds, more
  peers, and the most complete leechers as trading partners;
* every leecher, newcomers included, is guaranteed at least one seed when
  there is one, and its seed share grows with how much it still lacks;
* a seed is handed the leechers that need it most: those furthest from done
  and least served by seeds lately (contributors weigh more).

Choosing stays O(numwant): seeds and leechers are kept in two pools with O(1)
random sampling, and only a window of about twice ``numwant`` candidates is
drawn and ranked, never the whole swarm.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from ..errors import TrackerError
from .credit import Standing
from .protocol import (
    ANNOUNCE_PROOF_WINDOW,
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    check_announce_proof,
)

__all__ = [
    "IdentityCheck",
    "PeerRecord",
    "RegistryCounters",
    "RegistryStats",
    "Swarm",
    "TrackerRegistry",
]

_SLACK: Final = 2
"""Extra candidates drawn beyond what is needed: the requester itself and a peer at its
own address may be among them."""
_MAX_PENDING: Final = 100_000
"""At most this many identities (or (identity, torrent) credits) wait for the server."""
_CONTRIBUTOR_WEIGHT: Final = 1.5
"""How much more a contributor's need for seeds counts, when a seed's list is chosen."""


@dataclass
class PeerRecord:
    """The last thing one peer told us about one torrent."""

    peer_id: bytes
    ip: str
    port: int
    left: int
    last_seen: float
    uploaded: int = 0
    """The peer's own ``uploaded`` counter (self-reported, for statistics only)."""
    downloaded: int = 0
    """The peer's own ``downloaded`` counter (self-reported, for statistics only)."""
    identity: bytes | None = None
    """The credit identity its last announce proved, or None."""
    proof_time: int = -1
    """The highest ``odts`` accepted from this peer id: a proof not above it is a replay."""
    rate: float = 0.0
    """How fast ``left`` shrinks, bytes/s (smoothed over announces): its completion rate."""
    served: float = 0.0
    """Seed attention it got lately: seeds handed to it, it handed to seeds. Halves per
    announce, so it measures the recent past."""

    @property
    def is_seed(self) -> bool:
        return self.left == 0


class _IdPool:
    """Peer ids with O(1) add, discard and O(k) random sampling."""

    __slots__ = ("_index", "_items")

    def __init__(self) -> None:
        self._items: list[bytes] = []
        self._index: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: bytes) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: bytes) -> None:
        position = self._index.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if position < len(self._items):
            self._items[position] = last
            self._index[last] = position

    def sample(self, rng: random.Random, count: int) -> list[bytes]:
        count = min(count, len(self._items))
        return [self._items[i] for i in rng.sample(range(len(self._items)), count)]


@dataclass
class Swarm:
    """All peers of one torrent, keyed by peer id, plus its finished-download count.

    Change ``peers`` only through :meth:`put` and :meth:`remove`, which keep the
    seed and leecher pools (used for sampling and counting) in step.
    """

    peers: dict[bytes, PeerRecord] = field(default_factory=dict)
    completed: int = 0
    size_hint: int = 0
    """The largest ``left`` any peer announced: about the torrent's size, which the
    tracker is never told (every leecher starts with ``left`` = size)."""
    seed_pool: _IdPool = field(default_factory=_IdPool, repr=False)
    leecher_pool: _IdPool = field(default_factory=_IdPool, repr=False)

    def put(self, record: PeerRecord) -> None:
        self.peers[record.peer_id] = record
        if record.is_seed:
            self.leecher_pool.discard(record.peer_id)
            self.seed_pool.add(record.peer_id)
        else:
            self.seed_pool.discard(record.peer_id)
            self.leecher_pool.add(record.peer_id)
        self.size_hint = max(self.size_hint, record.left)

    def remove(self, peer_id: bytes) -> PeerRecord | None:
        self.seed_pool.discard(peer_id)
        self.leecher_pool.discard(peer_id)
        return self.peers.pop(peer_id, None)

    @property
    def seeders(self) -> int:
        return len(self.seed_pool)

    @property
    def leechers(self) -> int:
        return len(self.leecher_pool)

    def completion(self, peer: PeerRecord) -> float:
        """How much of the torrent ``peer`` has, 0..1, judged from ``left`` and the size hint."""
        if peer.is_seed:
            return 1.0
        if self.size_hint <= 0:
            return 0.0
        return max(0.0, 1.0 - peer.left / self.size_hint)

    def stats(self) -> ScrapeStats:
        return ScrapeStats(
            complete=self.seeders, downloaded=self.completed, incomplete=self.leechers
        )


@dataclass(frozen=True)
class RegistryStats:
    """Totals across every swarm, as served on ``/stats.json``."""

    torrents: int
    seeders: int
    leechers: int
    completed: int


@dataclass
class RegistryCounters:
    """Monotonic counts of what the registry did, for ``/metrics`` and ``/stats.json``."""

    announces: int = 0
    refused: int = 0
    proofs_accepted: int = 0
    proofs_ignored: int = 0
    seeding_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class IdentityCheck:
    """The outcome of checking an announce's identity proof."""

    identity: bytes | None = None
    """The proved identity; None for an anonymous announce or an ignored proof."""
    problem: str | None = None
    """Why a claimed identity was ignored (sent back as a ``warning message``)."""


class TrackerRegistry:
    """Swarms by info-hash, with expiry, an optional allow-list and capped answers."""

    def __init__(
        self,
        *,
        interval: int = 1800,
        min_interval: int | None = 60,
        peer_ttl: float | None = None,
        allow_list: Collection[bytes] | None = None,
        max_numwant: int = 200,
        max_peers_per_swarm: int = 10_000,
        max_swarms: int = 100_000,
        proof_window: float = ANNOUNCE_PROOF_WINDOW,
        rng: random.Random | None = None,
    ) -> None:
        self.interval = interval
        self.min_interval = min_interval
        #: A peer is forgotten after this long without an announce (default: two intervals).
        self.peer_ttl = float(peer_ttl) if peer_ttl is not None else 2.0 * interval
        self.allow_list = frozenset(allow_list) if allow_list is not None else None
        self.max_numwant = max_numwant
        self.max_peers_per_swarm = max_peers_per_swarm
        self.max_swarms = max_swarms
        self.proof_window = proof_window
        self.counters = RegistryCounters()
        self._rng = rng or random.Random()
        self._swarms: dict[bytes, Swarm] = {}
        self._standings: dict[bytes, Standing] = {}
        self._unranked: set[bytes] = set()
        self._seeding: dict[tuple[bytes, bytes], float] = {}

    # ------------------------------------------------------------ queries

    def is_allowed(self, info_hash: bytes) -> bool:
        return self.allow_list is None or info_hash in self.allow_list

    def swarm(self, info_hash: bytes) -> Swarm | None:
        return self._swarms.get(info_hash)

    def swarms(self) -> Iterator[tuple[bytes, Swarm]]:
        return iter(list(self._swarms.items()))

    def scrape(self, info_hashes: Iterable[bytes] = ()) -> dict[bytes, ScrapeStats]:
        """Counters for the named torrents (unknown ones read as zero), or for all when none."""
        wanted = list(info_hashes)
        if not wanted:
            return {info_hash: swarm.stats() for info_hash, swarm in self._swarms.items()}
        result: dict[bytes, ScrapeStats] = {}
        for info_hash in wanted:
            swarm = self._swarms.get(info_hash)
            if swarm is not None:
                result[info_hash] = swarm.stats()
            elif self.is_allowed(info_hash):
                result[info_hash] = ScrapeStats(0, 0, 0)
        return result

    def stats(self) -> RegistryStats:
        seeders = leechers = completed = 0
        for swarm in self._swarms.values():
            seeders += swarm.seeders
            leechers += swarm.leechers
            completed += swarm.completed
        return RegistryStats(
            torrents=len(self._swarms), seeders=seeders, leechers=leechers, completed=completed
        )

    # ------------------------------------------------------------ identities and standing

    def check_identity(self, request: AnnounceRequest, now: float) -> IdentityCheck:
        """Verify the announce's identity proof (time window and signature) at ``now``.

        Done apart from :meth:`announce` so a server can verify before it queues
        an announce by priority: an unproved claim must not jump the queue. The
        replay check (a time not above the peer's last) happens in ``announce``.
        """
        if request.identity is None:
            return IdentityCheck()
        problem = check_announce_proof(request, now, window=self.proof_window)
        if problem is not None:
            return IdentityCheck(None, f"identity ignored: {problem}")
        return IdentityCheck(request.identity)

    def standing_of(self, identity: bytes | None) -> Standing | None:
        """The standing last given for ``identity`` (a newcomer's if none yet); None if no one."""
        if identity is None:
            return None
        return self._standings.get(identity) or Standing(identity)

    def priority(self, identity: bytes | None) -> int:
        """How soon an announce by ``identity`` is served when announces must wait: its score."""
        standing = self.standing_of(identity)
        return standing.score if standing is not None else 0

    def identities(self) -> set[bytes]:
        """Every identity some current peer has proved (what the server fetches standings for)."""
        return {
            peer.identity
            for swarm in self._swarms.values()
            for peer in swarm.peers.values()
            if peer.identity is not None
        }

    @property
    def needs_standings(self) -> bool:
        """Whether identities announced whose standing the registry has not been given yet."""
        return bool(self._unranked)

    def knows_standing(self, identity: bytes) -> bool:
        return identity in self._standings

    def set_standings(self, standings: Iterable[Standing]) -> None:
        """Replace the known standings (the server passes those of :meth:`identities`)."""
        self._standings = {standing.identity: standing for standing in standings}
        self._unranked.difference_update(self._standings)

    def remember_standing(self, standing: Standing) -> None:
        """Add one standing (an identity first seen now), until the next :meth:`set_standings`."""
        if standing.identity in self._standings or len(self._standings) < _MAX_PENDING:
            self._standings[standing.identity] = standing
            self._unranked.discard(standing.identity)

    def take_seeding_credit(self) -> dict[tuple[bytes, bytes], float]:
        """Seconds of seeding per (identity, info-hash) observed since the last call."""
        credit, self._seeding = self._seeding, {}
        return credit

    def _credit_seeding(
        self, info_hash: bytes, previous: PeerRecord, identity: bytes | None, now: float
    ) -> None:
        """Count the time since ``previous`` as seeding if both announces proved ``identity``.

        Both ends must be proved announces with ``left=0``; the time is capped at
        the peer time-to-live, as a peer silent for longer would have expired.
        """
        if identity is None or previous.identity != identity or not previous.is_seed:
            return
        seconds = min(max(0.0, now - previous.last_seen), self.peer_ttl)
        key = (identity, info_hash)
        if seconds <= 0 or (key not in self._seeding and len(self._seeding) >= _MAX_PENDING):
            return
        self._seeding[key] = self._seeding.get(key, 0.0) + seconds
        self.counters.seeding_seconds += seconds

    # ------------------------------------------------------------ updates

    def announce(
        self,
        request: AnnounceRequest,
        ip: str,
        now: float,
        *,
        identity_check: IdentityCheck | None = None,
    ) -> AnnounceResponse:
        """Record ``request`` from address ``ip`` and answer it.

        ``ip`` must be the address the server actually saw (or one it chose to
        trust): the registry never reads ``request.ip`` itself. Pass
        ``identity_check`` when the proof was already checked with
        :meth:`check_identity`; otherwise it is checked here.
        """
        if not self.is_allowed(request.info_hash):
            self.counters.refused += 1
            raise TrackerError("torrent is not tracked here")
        check = identity_check if identity_check is not None else self.check_identity(
            request, now
        )
        swarm = self._swarms.get(request.info_hash)
        if swarm is None:
            if request.event is AnnounceEvent.STOPPED:
                self.counters.announces += 1
                return self._answer(Swarm(), request, ip, None, check)
            if len(self._swarms) >= self.max_swarms:
                self.counters.refused += 1
                raise TrackerError("tracker is full")
            swarm = self._swarms[request.info_hash] = Swarm()
        self.counters.announces += 1
        previous = swarm.peers.get(request.peer_id)
        if (
            check.identity is not None
            and previous is not None
            and request.identity_time is not None
            and request.identity_time <= previous.proof_time
        ):
            check = IdentityCheck(
                None, "identity ignored: proof time is not above this peer's last (a replay?)"
            )
        if check.identity is not None:
            self.counters.proofs_accepted += 1
            if check.identity not in self._standings and len(self._unranked) < _MAX_PENDING:
                self._unranked.add(check.identity)
        elif check.problem is not None:
            self.counters.proofs_ignored += 1
        if request.event is AnnounceEvent.STOPPED:
            if previous is not None:
                self._credit_seeding(request.info_hash, previous, check.identity, now)
            swarm.remove(request.peer_id)
            response = self._answer(swarm, request, ip, None, check)
            if not swarm.peers and not swarm.completed:
                del self._swarms[request.info_hash]
            return response
        if request.event is AnnounceEvent.COMPLETED and (previous is None or previous.left > 0):
            swarm.completed += 1
        record = self._record(request, ip, now, previous, check.identity)
        if previous is not None:
            self._credit_seeding(request.info_hash, previous, check.identity, now)
        if previous is not None or len(swarm.peers) < self.max_peers_per_swarm:
            swarm.put(record)
        return self._answer(swarm, request, ip, record, check)

    @staticmethod
    def _record(
        request: AnnounceRequest,
        ip: str,
        now: float,
        previous: PeerRecord | None,
        identity: bytes | None,
    ) -> PeerRecord:
        record = PeerRecord(
            peer_id=request.peer_id,
            ip=ip,
            port=request.port,
            left=request.left,
            last_seen=now,
            uploaded=request.uploaded,
            downloaded=request.downloaded,
            identity=identity,
        )
        if identity is not None and request.identity_time is not None:
            record.proof_time = request.identity_time
        if previous is None:
            return record
        record.proof_time = max(record.proof_time, previous.proof_time)
        record.served = previous.served / 2
        elapsed = now - previous.last_seen
        if 0 <= request.left <= previous.left and elapsed > 0:
            sample = (previous.left - request.left) / elapsed
            record.rate = sample if previous.rate <= 0 else (previous.rate + sample) / 2
        return record

    def _answer(
        self,
        swarm: Swarm,
        request: AnnounceRequest,
        ip: str,
        requester: PeerRecord | None,
        check: IdentityCheck,
    ) -> AnnounceResponse:
        chosen: list[PeerRecord] = []
        if requester is not None:
            standing = self.standing_of(check.identity)
            contributor = standing is not None and standing.is_contributor
            wanted = max(0, min(request.numwant, self.max_numwant))
            if contributor:  # more peers: a quarter more, within the cap
                wanted = min(self.max_numwant, wanted + (wanted + 3) // 4)
            chosen = self._choose(swarm, request, ip, requester, wanted, contributor=contributor)
        return AnnounceResponse(
            interval=self.interval,
            peers=tuple((peer.ip, peer.port) for peer in chosen),
            min_interval=self.min_interval,
            complete=swarm.seeders,
            incomplete=swarm.leechers,
            warning=check.problem,
            peer_ids=tuple(peer.peer_id for peer in chosen),
        )

    # ------------------------------------------------------------ peer-list policy

    def _draw(
        self, swarm: Swarm, pool: _IdPool, count: int, request: AnnounceRequest, ip: str
    ) -> list[PeerRecord]:
        """A random window of up to ``count`` usable peers from ``pool`` (not the requester)."""
        window: list[PeerRecord] = []
        for peer_id in pool.sample(self._rng, count + _SLACK):
            peer = swarm.peers[peer_id]
            if (
                peer_id != request.peer_id
                and (peer.ip, peer.port) != (ip, request.port)
                and peer.port != 0
            ):
                window.append(peer)
        return window

    def seed_share(self, swarm: Swarm, requester: PeerRecord, *, contributor: bool) -> float:
        """The fraction of a leecher's answer given to seeds, 0.25..0.75.

        A quarter for everyone, up to a quarter more the less it has (a leecher
        with nothing can only get data from seeds), and a quarter more for a
        contributor. At least one seed is always given when there is one.
        """
        need = 1.0 - swarm.completion(requester) if swarm.size_hint > 0 else 1.0
        return 0.25 + 0.25 * need + (0.25 if contributor else 0.0)

    def _need(self, swarm: Swarm, peer: PeerRecord) -> float:
        """How much a leecher needs a seed: what it lacks, less what seeds gave it lately."""
        lacking = 1.0 - swarm.completion(peer) if swarm.size_hint > 0 else 1.0
        standing = self.standing_of(peer.identity)
        weight = _CONTRIBUTOR_WEIGHT if standing is not None and standing.is_contributor else 1.0
        return weight * (0.05 + lacking) / (1.0 + peer.served)

    def _choose(
        self,
        swarm: Swarm,
        request: AnnounceRequest,
        ip: str,
        requester: PeerRecord,
        wanted: int,
        *,
        contributor: bool,
    ) -> list[PeerRecord]:
        if wanted <= 0:
            return []
        if requester.is_seed:
            window = self._draw(swarm, swarm.leecher_pool, 2 * wanted, request, ip)
            window.sort(key=lambda peer: self._need(swarm, peer), reverse=True)
            chosen = window[:wanted]
            for peer in chosen:
                peer.served += 1
            return chosen
        seeds = self._draw(swarm, swarm.seed_pool, wanted, request, ip)
        leechers = self._draw(
            swarm, swarm.leecher_pool, (2 if contributor else 1) * wanted, request, ip
        )
        share = self.seed_share(swarm, requester, contributor=contributor)
        quota = max(1, math.ceil(wanted * share))
        chosen = seeds[:quota]
        if contributor:  # better trading partners: those with the most to give
            leechers.sort(key=swarm.completion, reverse=True)
        chosen += leechers[: wanted - len(chosen)]
        if len(chosen) < wanted:  # too few leechers: fill up with seeds
            chosen += seeds[quota : quota + wanted - len(chosen)]
        requester.served += sum(1 for peer in chosen if peer.is_seed)
        return chosen

    # ------------------------------------------------------------ housekeeping

    def expire(self, now: float) -> int:
        """Forget peers silent for longer than ``peer_ttl``; return how many were dropped."""
        cutoff = now - self.peer_ttl
        dropped = 0
        for info_hash, swarm in list(self._swarms.items()):
            stale = [pid for pid, peer in swarm.peers.items() if peer.last_seen < cutoff]
            for peer_id in stale:
                swarm.remove(peer_id)
            dropped += len(stale)
            if not swarm.peers and not swarm.completed:
                del self._swarms[info_hash]
        return dropped

    def restore(self, info_hash: bytes, peers: Iterable[PeerRecord], completed: int) -> None:
        """Put back a swarm saved by :mod:`opendistro.tracker.store` (replacing any in memory)."""
        swarm = Swarm(completed=completed)
        for peer in peers:
            swarm.put(peer)
        if swarm.peers or swarm.completed:
            self._swarms[info_hash] = swarm
