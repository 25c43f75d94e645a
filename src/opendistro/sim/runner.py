"""Run a :class:`~opendistro.sim.scenario.Scenario` and measure it.

The runner adds the initial seeds and the peers at the times the scenario asks
for, makes the impatient ones leave part-way, retires the seed once it has
uploaded its share, lets finished peers leave when the scenario's seeding
policy says so, and stops when every peer that stayed has the whole file
(or the scenario's time limit passes). What it measures is what
:class:`~opendistro.sim.metrics.RunMetrics` reports: completion times against
the fluid-model bound, seed upload, share ratios and their fairness.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable

from ..swarm.session import SessionConfig
from .driver import SimulatedSwarm, VirtualPeer
from .metrics import RunMetrics, fluid_lower_bound, peak_rss_mb
from .scenario import PeerPlan, Scenario, plan_peers

__all__ = ["run_scenario", "simulation_config"]

SWEEP_INTERVAL = 1.0
REANNOUNCE_INTERVAL = 30.0
"""With a seeding policy, how often a peer short of neighbours asks for more."""


def simulation_config(scenario: Scenario) -> SessionConfig:
    """Session settings for virtual peers: quarter-piece blocks, nothing to hash.

    Blocks far larger than the wire's 16 KiB keep big swarms within reach of
    a Python event loop; a quarter piece rather than a whole one still lets a
    peer fetch one piece from several uploaders at once (whole-piece blocks put
    the last peer at 3.5x the fluid bound instead of 2.1x in a 200-peer flash
    crowd). A peer counts as snubbing us when it sits on a request for several
    times what one piece takes at the slowest uplink's share of a slot.
    """
    uploads = [peer.upload for peer in scenario.peers if not peer.free_rider and peer.upload > 0]
    slowest = min(uploads, default=scenario.seed_upload)
    piece_time = scenario.piece_length / (slowest / (SessionConfig.upload_slots + 1))
    config = SessionConfig(
        block_size=max(16384, scenario.piece_length // 4),
        min_queue=2,
        max_queue=8,
        queue_seconds=2.0,
        max_unverified_bytes=1 << 62,
        snub_timeout=max(60.0, 4 * piece_time),
    )
    if scenario.choking is not None:
        config = dataclasses.replace(config, choking=scenario.choking)
    return config


def run_scenario(
    scenario: Scenario,
    *,
    config: SessionConfig | None = None,
    choking: str | None = None,
    progress: Callable[[float, int, int], None] | None = None,
) -> RunMetrics:
    """Simulate ``scenario`` to the end.

    ``choking`` names the unchoke policy of every peer for this run, over the
    scenario's and ``config``'s. ``progress(now, completed, total)`` is called
    once per virtual second.
    """
    started = time.perf_counter()
    rng = random.Random(scenario.seed)
    config = config or simulation_config(scenario)
    if choking is not None:
        config = dataclasses.replace(config, choking=choking)
    swarm = SimulatedSwarm(
        num_pieces=scenario.num_pieces,
        piece_length=scenario.piece_length,
        total_length=scenario.file_size,
        config=config,
        rng=random.Random(rng.getrandbits(64)),
        max_connections=scenario.max_connections,
    )
    seed = swarm.add_peer(
        upload=scenario.seed_upload,
        download=scenario.seed_download,
        latency=0.02,
        seed=True,
        super_seed=scenario.seed_leaves_after_copies is not None,
    )
    seeds = [seed] + [
        swarm.add_peer(
            upload=scenario.seed_upload, download=scenario.seed_download, latency=0.02, seed=True
        )
        for _ in range(scenario.seeds - 1)
    ]
    arrivals = plan_peers(scenario)
    quitters: dict[int, float] = {}
    joined: list[VirtualPeer] = []
    retired: set[int] = set()
    """Peers that finished and then stopped seeding, as the seeding policy said."""
    policy = scenario.seeding_policy
    timeline: list[tuple[float, float, float]] = []

    def join(plan: PeerPlan) -> None:
        peer = swarm.add_peer(
            upload=plan.upload,
            download=plan.download,
            latency=plan.latency,
            free_rider=plan.free_rider,
        )
        joined.append(peer)
        if plan.leave_at_fraction is not None:
            quitters[peer.number] = plan.leave_at_fraction

    for plan in arrivals:
        swarm.loop.call_at(plan.arrival, join, plan)

    total = len(arrivals)
    staying = sum(1 for plan in arrivals if plan.leave_at_fraction is None)

    def finished() -> bool:
        done = sum(
            1
            for peer in joined
            if peer.completed_at is not None and (peer.online or peer.number in retired)
        )
        return len(joined) == total and done >= staying

    last_reannounce = 0.0

    def reannounce_if_isolated(now: float) -> None:
        nonlocal last_reannounce
        if now - last_reannounce < REANNOUNCE_INTERVAL:
            return
        last_reannounce = now
        for peer in joined:
            short = len(peer.connections) < scenario.max_connections // 2
            if peer.online and peer.completed_at is None and short:
                swarm.reannounce(peer)

    def retire_finished_seeders(now: float) -> None:
        for peer in joined:
            if peer.completed_at is None or not peer.online:
                continue
            if policy.should_stop(
                uploaded=peer.uploaded,
                downloaded=peer.downloaded,
                total_length=scenario.file_size,
                seeding_for=now - peer.completed_at,
            ):
                swarm.remove_peer(peer)
                retired.add(peer.number)

    def sweep() -> None:
        for number, fraction in list(quitters.items()):
            peer = swarm.peers[number]
            if peer.session.have.count >= fraction * scenario.num_pieces:
                swarm.remove_peer(peer)
                del quitters[number]
        if not policy.seeds_forever:
            # Peers leave once they finish, so those still downloading need new neighbours.
            retire_finished_seeders(swarm.loop.now)
            reannounce_if_isolated(swarm.loop.now)
        limit = scenario.seed_leaves_after_copies
        if limit is not None and seed.online and seed.uploaded >= limit * scenario.file_size:
            swarm.remove_peer(seed)
        completed = sum(1 for peer in joined if peer.completed_at is not None)
        if joined:
            pieces = sum(peer.session.have.count for peer in joined)
            mean = pieces / (len(joined) * scenario.num_pieces)
            timeline.append((swarm.loop.now, mean, completed / total))
        if progress is not None:
            progress(swarm.loop.now, completed, total)
        if finished():
            swarm.loop.stop()
        else:
            swarm.loop.call_later(SWEEP_INTERVAL, sweep)

    swarm.loop.call_later(SWEEP_INTERVAL, sweep)
    swarm.loop.run(until=scenario.duration_limit)
    metrics = _measure(scenario, swarm, seeds, joined, time.perf_counter() - started)
    metrics.timeline = timeline
    return metrics


def _measure(
    scenario: Scenario,
    swarm: SimulatedSwarm,
    seeds: list[VirtualPeer],
    joined: list[VirtualPeer],
    wall_seconds: float,
) -> RunMetrics:
    completion = {
        peer.number: peer.completed_at - peer.joined_at
        for peer in joined
        if peer.completed_at is not None
    }
    stayed = [peer for peer in joined if peer.online or peer.completed_at is not None]
    bound = fluid_lower_bound(
        scenario.file_size,
        scenario.seeds * scenario.seed_upload,
        [peer.host.upload_capacity for peer in stayed],
        [peer.host.download_capacity for peer in stayed],
    )
    return RunMetrics(
        completion_times=completion,
        uploaded={peer.number: peer.uploaded for peer in joined},
        downloaded={peer.number: peer.downloaded for peer in joined},
        seed_uploaded=sum(seed.uploaded for seed in seeds),
        file_size=scenario.file_size,
        bound=bound,
        wall_seconds=wall_seconds,
        events=swarm.loop.events_processed,
        peak_rss_mb=peak_rss_mb(),
        peers=len(joined),
        free_riders=frozenset(peer.number for peer in joined if peer.free_rider),
        seeds_uploaded=[seed.uploaded for seed in seeds],
    )

