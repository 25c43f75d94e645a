"""The tracker's memory of swarms: who announced what, and whom to tell about it.

Pure policy: the caller passes the peer's real address and the current time,
so the same object runs under the trio server, in the simulator and in tests
with an explicit clock. Its answers follow the usual tracker rules: peers that
stop announcing expire, a peer never gets itself back, a seeder is not sent
other seeders (it has nothing to gain from them), the answer is a random sample
(so every peer does not learn the same first fifty), and ``numwant`` is capped.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import TrackerError
from .protocol import AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeStats

__all__ = ["PeerRecord", "RegistryStats", "Swarm", "TrackerRegistry"]


@dataclass
class PeerRecord:
    """The last thing one peer told us about one torrent."""

    peer_id: bytes
    ip: str
    port: int
    left: int
    last_seen: float

    @property
    def is_seed(self) -> bool:
        return self.left == 0


@dataclass
class Swarm:
    """All peers of one torrent, keyed by peer id, plus its finished-download count."""

    peers: dict[bytes, PeerRecord] = field(default_factory=dict)
    completed: int = 0

    def stats(self) -> ScrapeStats:
        seeders = sum(1 for peer in self.peers.values() if peer.is_seed)
        return ScrapeStats(
            complete=seeders, downloaded=self.completed, incomplete=len(self.peers) - seeders
        )


@dataclass(frozen=True)
class RegistryStats:
    """Totals across every swarm, as served on ``/stats.json``."""

    torrents: int
    seeders: int
    leechers: int
    completed: int


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
        self._rng = rng or random.Random()
        self._swarms: dict[bytes, Swarm] = {}

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
            counts = swarm.stats()
            seeders += counts.complete
            leechers += counts.incomplete
            completed += swarm.completed
        return RegistryStats(
            torrents=len(self._swarms), seeders=seeders, leechers=leechers, completed=completed
        )

    # ------------------------------------------------------------ updates

    def announce(self, request: AnnounceRequest, ip: str, now: float) -> AnnounceResponse:
        """Record ``request`` from address ``ip`` and answer it.

        ``ip`` must be the address the server actually saw (or one it chose to
        trust): the registry never reads ``request.ip`` itself.
        """
        if not self.is_allowed(request.info_hash):
            raise TrackerError("torrent is not tracked here")
        swarm = self._swarms.get(request.info_hash)
        if swarm is None:
            if request.event is AnnounceEvent.STOPPED:
                return self._response(Swarm(), request, ip, include_peers=False)
            if len(self._swarms) >= self.max_swarms:
                raise TrackerError("tracker is full")
            swarm = self._swarms[request.info_hash] = Swarm()
        previous = swarm.peers.get(request.peer_id)
        if request.event is AnnounceEvent.STOPPED:
            swarm.peers.pop(request.peer_id, None)
            response = self._response(swarm, request, ip, include_peers=False)
            if not swarm.peers and not swarm.completed:
                del self._swarms[request.info_hash]
            return response
        if request.event is AnnounceEvent.COMPLETED and (previous is None or previous.left > 0):
            swarm.completed += 1
        if previous is not None or len(swarm.peers) < self.max_peers_per_swarm:
            swarm.peers[request.peer_id] = PeerRecord(
                peer_id=request.peer_id, ip=ip, port=request.port, left=request.left, last_seen=now
            )
        return self._response(swarm, request, ip, include_peers=True)

    def _response(
        self, swarm: Swarm, request: AnnounceRequest, ip: str, *, include_peers: bool
    ) -> AnnounceResponse:
        chosen: list[PeerRecord] = []
        if include_peers:
            wanted = max(0, min(request.numwant, self.max_numwant))
            requester_is_seed = request.left == 0
            candidates = [
                peer
                for peer in swarm.peers.values()
                if peer.peer_id != request.peer_id
                and (peer.ip, peer.port) != (ip, request.port)
                and peer.port != 0
                and not (requester_is_seed and peer.is_seed)
            ]
            chosen = self._rng.sample(candidates, min(wanted, len(candidates)))
        counts = swarm.stats()
        return AnnounceResponse(
            interval=self.interval,
            peers=tuple((peer.ip, peer.port) for peer in chosen),
            min_interval=self.min_interval,
            complete=counts.complete,
            incomplete=counts.incomplete,
            peer_ids=tuple(peer.peer_id for peer in chosen),
        )

    def expire(self, now: float) -> int:
        """Forget peers silent for longer than ``peer_ttl``; return how many were dropped."""
        cutoff = now - self.peer_ttl
        dropped = 0
        for info_hash, swarm in list(self._swarms.items()):
            stale = [pid for pid, peer in swarm.peers.items() if peer.last_seen < cutoff]
            for peer_id in stale:
                del swarm.peers[peer_id]
            dropped += len(stale)
            if not swarm.peers and not swarm.completed:
                del self._swarms[info_hash]
        return dropped

    def restore(self, info_hash: bytes, peers: Iterable[PeerRecord], completed: int) -> None:
        """Put back a swarm saved by :mod:`opendistro.tracker.store` (replacing any in memory)."""
        swarm = Swarm(completed=completed)
        for peer in peers:
            swarm.peers[peer.peer_id] = peer
        if swarm.peers or swarm.completed:
            self._swarms[info_hash] = swarm
