"""The DHT simulator: the real DHTNode on the virtual clock, deterministic for a seed."""

from __future__ import annotations

import pytest

from opendistro.dht.node_id import is_secure_id
from opendistro.errors import ConfigError
from opendistro.sim.dht import DHTSimConfig, DHTSimulation


def run(seed: int) -> tuple[list[object], int, int, list[bytes]]:
    sim = DHTSimulation(DHTSimConfig(nodes=150, seed=seed))
    sim.build()
    records = sim.run_experiment(swarms=3, lookups_per_swarm=5)
    return records, sim.datagrams, sim.loop.events_processed, [n.node_id for n in sim.nodes]


def test_same_seed_same_run_and_lookups_succeed() -> None:
    first = run(7)
    assert first == run(7)
    records = first[0]
    lookups = records[3:]
    assert lookups and all(record.found for record in lookups)  # type: ignore[attr-defined]
    assert all(record.hops >= 1 for record in records)  # type: ignore[attr-defined]
    assert run(8)[3] != first[3]


def test_nodes_use_bep42_ids_for_their_public_addresses() -> None:
    sim = DHTSimulation(DHTSimConfig(nodes=30, seed=1))
    sim.build()
    assert all(
        is_secure_id(node.node_id, address[0])
        for node, address in zip(sim.nodes, sim.addresses, strict=True)
    )
    assert sum(len(node.table) for node in sim.nodes) > 30


def test_lossy_network_still_finds_peers() -> None:
    sim = DHTSimulation(DHTSimConfig(nodes=120, seed=3, loss=0.1))
    sim.build()
    records = sim.run_experiment(swarms=2, lookups_per_swarm=5)
    assert sim.lost > 0
    assert sum(r.timeouts for r in records) > 0
    assert sum(r.found for r in records[2:]) >= 8


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        DHTSimulation(DHTSimConfig(nodes=0))
    with pytest.raises(ConfigError):
        DHTSimulation(DHTSimConfig(loss=1.0))
