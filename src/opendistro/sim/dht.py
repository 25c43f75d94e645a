"""Many DHT nodes on the virtual clock: the real :class:`~opendistro.dht.DHTNode`, simulated.

Each virtual node is the same sans-I/O node the trio service runs; this
driver only carries its datagrams (real KRPC bytes) and calls its timers.
A datagram from A to B arrives ``latency(A) + latency(B)`` later (each host
has a one-way latency to the core, as in :mod:`~opendistro.sim.network`;
KRPC packets are too small for bandwidth to matter), or never, with
probability ``loss``. Hosts get public IPv4 addresses and BEP 42 ids, so the
id check is exercised as on the Internet.

Nodes join the way real ones do: one after another, each from the first
few nodes (the "routers"), by looking up its own id. Everything depends on
the seed only: one :class:`random.Random` per node, derived from it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..dht.compact import Address
from ..dht.lookup import Lookup
from ..dht.node import DHTConfig, DHTNode
from ..errors import ConfigError
from .loop import EventLoop, Timer

__all__ = ["DHTSimConfig", "DHTSimulation", "LookupRecord"]


@dataclass(frozen=True)
class DHTSimConfig:
    nodes: int = 1000
    seed: int = 1
    routers: int = 4
    """The first nodes; every later node bootstraps from these (like router.bittorrent.com)."""
    join_interval: float = 0.05
    min_latency: float = 0.005
    max_latency: float = 0.080
    loss: float = 0.0
    settle: float = 10.0
    """Virtual seconds to let the last joins finish after the last node is added."""
    node_config: DHTConfig = field(default_factory=DHTConfig)


@dataclass(frozen=True)
class LookupRecord:
    kind: str
    hops: int
    queries: int
    timeouts: int
    duration: float
    found: bool
    """get_peers: whether the announced peer was among the results."""


def _bootstrapper(routers: list[Address]) -> Callable[[DHTNode, float], object]:
    def bootstrap(node: DHTNode, now: float) -> object:
        return node.bootstrap(routers, now)

    return bootstrap


class DHTSimulation:
    """A network of :class:`DHTNode` on one :class:`EventLoop`."""

    def __init__(self, config: DHTSimConfig, loop: EventLoop | None = None) -> None:
        if config.nodes < 1 or config.routers < 1:
            raise ConfigError("a DHT simulation needs at least one node and one router")
        if not 0.0 <= config.loss < 1.0:
            raise ConfigError("loss must be in [0, 1)")
        self.config = config
        self.loop = loop or EventLoop()
        self._rng = random.Random(config.seed)
        self.nodes: list[DHTNode] = []
        self.addresses: list[Address] = []
        self._latency: list[float] = []
        self._index: dict[Address, int] = {}
        self._timers: list[Timer | None] = []
        self.datagrams = 0
        self.lost = 0

    # -- building -------------------------------------------------------------

    def _public_address(self) -> Address:
        while True:
            ip = ".".join(str(self._rng.randrange(1, 224)) for _ in range(4))
            address = (ip, 6881)
            if address not in self._index:
                return address

    def add_node(self) -> int:
        """Create one node (not yet bootstrapped); returns its index."""
        index = len(self.nodes)
        address = self._public_address()
        node_rng = random.Random(self._rng.getrandbits(64))
        config = dataclasses.replace(self.config.node_config, external_ip=address[0])
        node = DHTNode(self.loop.now, config=config, rng=node_rng)
        self.nodes.append(node)
        self.addresses.append(address)
        self._latency.append(self._rng.uniform(self.config.min_latency, self.config.max_latency))
        self._index[address] = index
        self._timers.append(None)
        self._schedule(index)
        return index

    def build(self, on_progress: Callable[[int], None] | None = None) -> None:
        """Add every node, one per ``join_interval``, each bootstrapping from the routers."""
        for _ in range(self.config.nodes):
            index = self.add_node()
            routers = [
                self.addresses[i] for i in range(min(self.config.routers, index))
            ]
            if routers:
                self.call(index, _bootstrapper(routers))
            self.loop.run(until=self.loop.now + self.config.join_interval)
            if on_progress is not None:
                on_progress(index + 1)
        self.loop.run(until=self.loop.now + self.config.settle)

    # -- driving one node -----------------------------------------------------

    def call(self, index: int, action: Callable[[DHTNode, float], object]) -> object:
        """Run ``action(node, now)`` on node ``index``, then send what it queued."""
        result = action(self.nodes[index], self.loop.now)
        self._flush(index)
        return result

    def _flush(self, index: int) -> None:
        node = self.nodes[index]
        loop = self.loop
        now = loop.now
        source = self.addresses[index]
        latency = self._latency[index]
        rng = self._rng
        loss = self.config.loss
        for data, destination in node.datagrams_to_send():
            self.datagrams += 1
            target = self._index.get(destination)
            if target is None or (loss and rng.random() < loss):
                self.lost += 1
                continue
            loop._schedule(
                now + latency + self._latency[target], self._deliver, (target, data, source)
            )
        self._schedule(index)

    def _deliver(self, index: int, data: bytes, source: Address) -> None:
        self.nodes[index].datagram_received(data, source, self.loop.now)
        self._flush(index)

    def _schedule(self, index: int) -> None:
        """Keep one timer per node, at its next deadline."""
        deadline = self.nodes[index].next_deadline()
        timer = self._timers[index]
        if timer is not None and timer.pending:
            if timer.when <= deadline:
                return  # fires early enough; it reschedules itself then
            timer.cancel()
        self._timers[index] = self.loop.call_at(max(deadline, self.loop.now), self._wake, index)

    def _wake(self, index: int) -> None:
        self._timers[index] = None
        self.nodes[index].advance(self.loop.now)
        self._flush(index)

    # -- experiments ----------------------------------------------------------

    def run_lookup(
        self, index: int, info_hash: bytes, *, announce_port: int | None = None
    ) -> Lookup:
        """Start a get_peers lookup (announcing if ``announce_port``) and run until it ends."""
        lookup = self.call(
            index,
            lambda node, now: node.get_peers(info_hash, now, announce_port=announce_port),
        )
        assert isinstance(lookup, Lookup)
        while not lookup.finished:
            self.loop.run(until=self.loop.now + 1.0)
        return lookup

    def record(self, lookup: Lookup, expected: Address | None = None) -> LookupRecord:
        return LookupRecord(
            kind=lookup.kind.value,
            hops=lookup.hops,
            queries=lookup.queries,
            timeouts=lookup.timeouts,
            duration=lookup.duration or 0.0,
            found=expected is not None and expected in lookup.peers,
        )

    def run_experiment(self, swarms: int, lookups_per_swarm: int) -> list[LookupRecord]:
        """``swarms`` random nodes each announce a random info-hash; then
        ``lookups_per_swarm`` other random nodes look each one up."""
        records: list[LookupRecord] = []
        announced: list[tuple[bytes, Address]] = []
        port = 50000
        for _ in range(swarms):
            info_hash = self._rng.randbytes(20)
            announcer = self._rng.randrange(len(self.nodes))
            port += 1
            lookup = self.run_lookup(announcer, info_hash, announce_port=port)
            records.append(self.record(lookup))
            announced.append((info_hash, (self.addresses[announcer][0], port)))
        self.loop.run(until=self.loop.now + 5.0)  # let the announces land
        for info_hash, peer in announced:
            for _ in range(lookups_per_swarm):
                index = self._rng.randrange(len(self.nodes))
                records.append(self.record(self.run_lookup(index, info_hash), peer))
        return records
