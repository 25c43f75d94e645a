"""Iterative lookups (Kademlia, BEP 5): walk towards a target, ``alpha`` queries at a time.

A lookup keeps the closest candidates it has heard of, asks the closest
unasked ones (at most ``alpha`` in flight), adds the nodes each answer names,
and ends when the ``k`` closest candidates that did not fail have all
answered. A ``get_peers`` lookup also gathers the peers and the announce
tokens the nodes hand out, so that the announce can go to the ``k`` closest
nodes that gave a token.

This module decides; :class:`~opendistro.dht.node.DHTNode` sends. Everything
is bounded: the candidate list (the farthest unasked ones are forgotten), the
number of queries, and the peers kept. Each candidate remembers its depth
(how many answers led to it), which is what the simulator reports as hops.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from .compact import Address, NodeInfo
from .krpc import Response

if TYPE_CHECKING:
    from .node import DHTNode

__all__ = ["ALPHA", "Candidate", "CandidateState", "Lookup", "LookupKind"]

ALPHA = 3
MAX_CANDIDATES = 64
MAX_QUERIES = 128
MAX_PEERS = 500
_UNKNOWN_DISTANCE = 1 << 161  # bootstrap addresses: no id yet, ask them first anyway


class LookupKind(enum.Enum):
    FIND_NODE = "find_node"
    GET_PEERS = "get_peers"


class CandidateState(enum.Enum):
    NEW = "new"
    ASKED = "asked"
    ANSWERED = "answered"
    FAILED = "failed"


class Candidate:
    __slots__ = ("address", "depth", "distance", "node_id", "state", "token")

    def __init__(self, node_id: bytes | None, address: Address, distance: int, depth: int) -> None:
        self.node_id = node_id
        self.address = address
        self.distance = distance
        self.depth = depth
        self.state = CandidateState.NEW
        self.token: bytes | None = None


class Lookup:
    """One iterative lookup; :attr:`finished` turns True once, then callbacks run."""

    def __init__(
        self,
        node: DHTNode,
        kind: LookupKind,
        target: bytes,
        now: float,
        *,
        announce_port: int | None = None,
        implied_port: bool = False,
        k: int = 8,
        alpha: int = ALPHA,
        max_queries: int = MAX_QUERIES,
    ) -> None:
        self.node = node
        self.kind = kind
        self.target = target
        self.target_int = int.from_bytes(target, "big")
        self.announce_port = announce_port
        self.implied_port = implied_port
        self.k = k
        self.alpha = alpha
        self.max_queries = max_queries
        self.started_at = now
        self.finished_at: float | None = None
        self.first_peer_at: float | None = None
        self.finished = False
        self.peers: dict[Address, None] = {}  # insertion-ordered set
        self.queries = 0
        self.responses = 0
        self.timeouts = 0
        self.announced_to: list[Address] = []
        self.in_flight = 0
        self._candidates: dict[Address, Candidate] = {}
        self._callbacks: list[Callable[[Lookup], None]] = []

    # -- results ------------------------------------------------------------

    @property
    def hops(self) -> int:
        """Depth of the closest node that answered: 1 = a node we already knew."""
        answered = self.closest_answered(1)
        return answered[0].depth if answered else 0

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    def closest_answered(self, count: int) -> list[Candidate]:
        answered = [c for c in self._candidates.values() if c.state is CandidateState.ANSWERED]
        answered.sort(key=lambda c: c.distance)
        return answered[:count]

    def add_done_callback(self, callback: Callable[[Lookup], None]) -> None:
        if self.finished:
            callback(self)
        else:
            self._callbacks.append(callback)

    # -- driving ------------------------------------------------------------

    def add_candidate(self, node_id: bytes | None, address: Address, depth: int) -> None:
        if address in self._candidates or (node_id is not None and node_id == self.node.node_id):
            return
        distance = (
            _UNKNOWN_DISTANCE
            if node_id is None
            else int.from_bytes(node_id, "big") ^ self.target_int
        )
        self._candidates[address] = Candidate(node_id, address, distance, depth)

    def start(self, now: float) -> None:
        self._step(now)

    def _ordered(self) -> list[Candidate]:
        live = [c for c in self._candidates.values() if c.state is not CandidateState.FAILED]
        live.sort(key=lambda c: c.distance)
        return live

    def _prune(self, ordered: list[Candidate]) -> None:
        """Forget the farthest unasked candidates beyond the bound."""
        if len(self._candidates) <= MAX_CANDIDATES:
            return
        for candidate in ordered[MAX_CANDIDATES:]:
            if candidate.state is CandidateState.NEW:
                del self._candidates[candidate.address]
        for address in [
            a for a, c in self._candidates.items() if c.state is CandidateState.FAILED
        ]:
            if len(self._candidates) <= MAX_CANDIDATES:
                break
            del self._candidates[address]

    def _step(self, now: float) -> None:
        if self.finished:
            return
        ordered = self._ordered()
        self._prune(ordered)
        closest = ordered[: self.k]
        for candidate in closest:
            if self.in_flight >= self.alpha or self.queries >= self.max_queries:
                break
            if candidate.state is CandidateState.NEW:
                self._ask(candidate, now)
        if self.in_flight == 0 and (
            self.queries >= self.max_queries
            or all(c.state is CandidateState.ANSWERED for c in closest)
        ):
            self._finish(now)

    def _ask(self, candidate: Candidate, now: float) -> None:
        candidate.state = CandidateState.ASKED
        self.in_flight += 1
        self.queries += 1

        def on_reply(response: Response | None, when: float) -> None:
            self.in_flight -= 1
            if response is None:
                self.timeouts += 1
                candidate.state = CandidateState.FAILED
            else:
                self._answered(candidate, response, when)
            self._step(when)

        if self.kind is LookupKind.GET_PEERS:
            self.node.send_get_peers(
                candidate.address, self.target, now, on_reply, candidate.node_id
            )
        else:
            self.node.send_find_node(
                candidate.address, self.target, now, on_reply, candidate.node_id
            )

    def _answered(self, candidate: Candidate, response: Response, now: float) -> None:
        self.responses += 1
        candidate.state = CandidateState.ANSWERED
        if candidate.node_id is None:  # a bootstrap address: now we know who it is
            candidate.node_id = response.sender_id
            candidate.distance = int.from_bytes(response.sender_id, "big") ^ self.target_int
        candidate.token = response.token
        node_info: NodeInfo
        for node_info in response.nodes:
            self.add_candidate(node_info.node_id, node_info.address, candidate.depth + 1)
        if self.kind is LookupKind.GET_PEERS:
            for peer in response.values:
                if len(self.peers) >= MAX_PEERS:
                    break
                self.peers[peer] = None
            if self.peers and self.first_peer_at is None:
                self.first_peer_at = now

    def _finish(self, now: float) -> None:
        self.finished = True
        self.finished_at = now
        if self.kind is LookupKind.GET_PEERS and self.announce_port is not None:
            self._announce(now)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def _announce(self, now: float) -> None:
        assert self.announce_port is not None
        with_tokens = [c for c in self.closest_answered(self.k) if c.token is not None]
        for candidate in with_tokens:
            assert candidate.token is not None
            self.node.send_announce(
                candidate.address,
                self.target,
                self.announce_port,
                candidate.token,
                self.implied_port,
                now,
            )
            self.announced_to.append(candidate.address)
        # Are we ourselves among the k closest? Then keep the announce too: other
        # nodes ask us, and nobody else may be closer (a tiny or young network).
        own = self.node.node_id_int ^ self.target_int
        if len(with_tokens) < self.k or own < with_tokens[-1].distance:
            self.node.store_own_announce(self.target, self.announce_port, now)
