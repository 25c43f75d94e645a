"""The peers other nodes announced to us, per info-hash, bounded and expiring.

Anyone may announce, so everything here has a ceiling: how many info-hashes
we track (the least recently announced one makes room for a new one), how
many peers per info-hash (the oldest announce makes room), and how long an
announce counts (30 minutes, as trackers and libtorrent do: announcers repeat
every 15).
"""

from __future__ import annotations

import random
from collections import OrderedDict

from .compact import Address

__all__ = ["PEER_TTL", "PeerStore"]

PEER_TTL = 30 * 60.0


class PeerStore:
    def __init__(
        self,
        *,
        max_info_hashes: int = 2000,
        max_peers_per_hash: int = 200,
        ttl: float = PEER_TTL,
    ) -> None:
        self.max_info_hashes = max_info_hashes
        self.max_peers_per_hash = max_peers_per_hash
        self.ttl = ttl
        # info-hash -> peer -> expiry; both in least-recently-announced-first order
        self._swarms: OrderedDict[bytes, OrderedDict[Address, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many info-hashes are tracked."""
        return len(self._swarms)

    def __contains__(self, info_hash: object) -> bool:
        return info_hash in self._swarms

    def peer_count(self, info_hash: bytes) -> int:
        return len(self._swarms.get(info_hash, ()))

    def add(self, info_hash: bytes, peer: Address, now: float) -> None:
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            while len(self._swarms) >= self.max_info_hashes:
                self._swarms.popitem(last=False)
            swarm = self._swarms[info_hash] = OrderedDict()
        else:
            self._swarms.move_to_end(info_hash)
        swarm.pop(peer, None)
        while len(swarm) >= self.max_peers_per_hash:
            swarm.popitem(last=False)
        swarm[peer] = now + self.ttl

    def get(
        self, info_hash: bytes, now: float, rng: random.Random, limit: int = 50
    ) -> list[Address]:
        """Up to ``limit`` live peers of ``info_hash`` (a random sample when there are more)."""
        swarm = self._swarms.get(info_hash)
        if not swarm:
            return []
        live = [peer for peer, expiry in swarm.items() if expiry > now]
        if len(live) <= limit:
            return live
        return rng.sample(live, limit)

    def expire(self, now: float) -> None:
        """Drop announces older than the TTL, and info-hashes left with no peers."""
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            for peer in [peer for peer, expiry in swarm.items() if expiry <= now]:
                del swarm[peer]
            if not swarm:
                del self._swarms[info_hash]
