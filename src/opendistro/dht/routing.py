"""The routing table (BEP 5): k-buckets that get finer near our own id.

The table starts as one bucket over the whole id space. A full bucket splits
only if our own id falls in its range, so we know many nodes close to us and
few far away, and the table holds at most 160 buckets of ``k`` nodes (plus a
replacement cache of ``k`` per bucket): bounded by construction, however many
nodes the network throws at us.

Nodes are *good* (answered us within 15 minutes, or answered us once and
queried us within 15 minutes), *questionable* (quiet for 15 minutes) or *bad*
(failed to answer several queries in a row). Only nodes that answered one of
our queries are inserted, so a spoofed source address cannot get in. When a
bucket is full, a newcomer replaces a bad node; failing that it waits in the
replacement cache while the table asks its owner to ping the questionable
nodes, whose failure then makes room.
"""

from __future__ import annotations

import bisect
import enum
import random

from .compact import Address
from .node_id import ID_BITS, random_id_in_range

__all__ = [
    "BAD_AFTER_FAILURES",
    "BUCKET_REFRESH",
    "GOOD_FOR",
    "Bucket",
    "K",
    "NodeEntry",
    "NodeState",
    "RoutingTable",
]

K = 8
GOOD_FOR = 15 * 60.0
BUCKET_REFRESH = 15 * 60.0
BAD_AFTER_FAILURES = 2
_QUESTIONABLE_PING_GAP = 60.0  # do not ping the same questionable node more often


class NodeState(enum.Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


class NodeEntry:
    """One node in the table; ``id_int`` caches the id as an integer for distances."""

    __slots__ = ("address", "failures", "id_int", "last_pinged", "last_seen", "node_id")

    def __init__(self, node_id: bytes, address: Address, now: float) -> None:
        self.node_id = node_id
        self.id_int = int.from_bytes(node_id, "big")
        self.address = address
        self.last_seen = now
        self.last_pinged = -float("inf")
        self.failures = 0

    def state(self, now: float) -> NodeState:
        if self.failures >= BAD_AFTER_FAILURES:
            return NodeState.BAD
        if now - self.last_seen < GOOD_FOR:
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def __repr__(self) -> str:
        return f"<NodeEntry {self.node_id.hex()[:12]} {self.address[0]}:{self.address[1]}>"


class Bucket:
    """Nodes whose ids fall in ``low <= id < high``."""

    __slots__ = ("high", "last_changed", "low", "nodes", "replacements")

    def __init__(self, low: int, high: int, now: float) -> None:
        self.low = low
        self.high = high
        self.nodes: list[NodeEntry] = []
        self.replacements: list[NodeEntry] = []  # oldest first
        self.last_changed = now

    def covers(self, id_int: int) -> bool:
        return self.low <= id_int < self.high


class RoutingTable:
    def __init__(self, own_id: bytes, now: float, *, k: int = K) -> None:
        self.own_id = own_id
        self.own_int = int.from_bytes(own_id, "big")
        self.k = k
        self.buckets: list[Bucket] = [Bucket(0, 1 << ID_BITS, now)]
        self._lows: list[int] = [0]
        self._by_id: dict[bytes, NodeEntry] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: bytes) -> NodeEntry | None:
        return self._by_id.get(node_id)

    def nodes(self) -> list[NodeEntry]:
        return [node for bucket in self.buckets for node in bucket.nodes]

    def bucket_for(self, id_int: int) -> Bucket:
        return self.buckets[bisect.bisect_right(self._lows, id_int) - 1]

    # -- changes ------------------------------------------------------------

    def would_accept(self, node_id: bytes, now: float) -> bool:
        """Whether inserting this (not yet verified) node could succeed: worth a ping."""
        if node_id == self.own_id or node_id in self._by_id:
            return False
        bucket = self.bucket_for(int.from_bytes(node_id, "big"))
        if len(bucket.nodes) < self.k or bucket.covers(self.own_int):
            return True
        return any(node.state(now) is not NodeState.GOOD for node in bucket.nodes)

    def node_responded(self, node_id: bytes, address: Address, now: float) -> list[NodeEntry]:
        """A node answered one of our queries: insert or refresh it.

        Returns questionable nodes the caller should ping (the bucket is full
        and the newcomer waits in the replacement cache).
        """
        if node_id == self.own_id:
            return []
        entry = self._by_id.get(node_id)
        if entry is not None:
            if entry.address == address:  # an id does not move to another address
                entry.last_seen = now
                entry.failures = 0
            return []
        return self._insert(NodeEntry(node_id, address, now), now)

    def node_queried(self, node_id: bytes, address: Address, now: float) -> None:
        """A node we know sent us a query: it is alive (BEP 5 keeps it good)."""
        entry = self._by_id.get(node_id)
        if entry is not None and entry.address == address and entry.failures == 0:
            entry.last_seen = now

    def node_failed(self, node_id: bytes, now: float) -> None:
        """A query to this node timed out; a bad node makes room for a replacement."""
        entry = self._by_id.get(node_id)
        if entry is None:
            return
        entry.failures += 1
        if entry.state(now) is NodeState.BAD:
            bucket = self.bucket_for(entry.id_int)
            if bucket.replacements:
                self._remove(bucket, entry)
                self._add_to(bucket, bucket.replacements.pop(), now)

    def _insert(self, entry: NodeEntry, now: float) -> list[NodeEntry]:
        while True:
            bucket = self.bucket_for(entry.id_int)
            if len(bucket.nodes) < self.k:
                self._add_to(bucket, entry, now)
                return []
            if bucket.covers(self.own_int) and bucket.high - bucket.low > self.k:
                self._split(bucket, now)
                continue
            for old in bucket.nodes:
                if old.state(now) is NodeState.BAD:
                    self._remove(bucket, old)
                    self._add_to(bucket, entry, now)
                    return []
            self._remember_replacement(bucket, entry)
            to_ping = [
                node
                for node in bucket.nodes
                if node.state(now) is NodeState.QUESTIONABLE
                and now - node.last_pinged >= _QUESTIONABLE_PING_GAP
            ]
            for node in to_ping:
                node.last_pinged = now
            return to_ping

    def _remember_replacement(self, bucket: Bucket, entry: NodeEntry) -> None:
        cache = bucket.replacements
        for index, old in enumerate(cache):
            if old.node_id == entry.node_id or old.address == entry.address:
                del cache[index]
                break
        cache.append(entry)
        if len(cache) > self.k:
            del cache[0]

    def _add_to(self, bucket: Bucket, entry: NodeEntry, now: float) -> None:
        bucket.nodes.append(entry)
        bucket.last_changed = now
        self._by_id[entry.node_id] = entry

    def _remove(self, bucket: Bucket, entry: NodeEntry) -> None:
        bucket.nodes.remove(entry)
        del self._by_id[entry.node_id]

    def _split(self, bucket: Bucket, now: float) -> None:
        middle = (bucket.low + bucket.high) // 2
        upper = Bucket(middle, bucket.high, bucket.last_changed)
        bucket.high = middle
        upper.nodes = [node for node in bucket.nodes if node.id_int >= middle]
        bucket.nodes = [node for node in bucket.nodes if node.id_int < middle]
        upper.replacements = [node for node in bucket.replacements if node.id_int >= middle]
        bucket.replacements = [node for node in bucket.replacements if node.id_int < middle]
        index = self.buckets.index(bucket)
        self.buckets.insert(index + 1, upper)
        self._lows.insert(index + 1, middle)

    # -- queries ------------------------------------------------------------

    def closest(self, target: bytes, count: int | None = None) -> list[NodeEntry]:
        """The ``count`` (default k) non-bad nodes closest to ``target``, closest first."""
        target_int = int.from_bytes(target, "big")
        candidates = [
            node
            for bucket in self.buckets
            for node in bucket.nodes
            if node.failures < BAD_AFTER_FAILURES
        ]
        candidates.sort(key=lambda node: node.id_int ^ target_int)
        return candidates[: count or self.k]

    def stale_buckets(self, now: float, interval: float = BUCKET_REFRESH) -> list[Bucket]:
        """Buckets that saw no change for ``interval``: look up a random id in each."""
        return [bucket for bucket in self.buckets if now - bucket.last_changed >= interval]

    def refresh_target(self, bucket: Bucket, rng: random.Random) -> bytes:
        return random_id_in_range(bucket.low, bucket.high, rng)
