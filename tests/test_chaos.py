"""A short chaos swarm: real ``opendistro get`` processes on 127.0.0.1 under every fault at once.

Leechers are SIGKILLed at random moments and started again; one seeder sits
behind a relay that resets connections in the middle of pieces, another behind
one that flips bits in blocks (its leechers must catch that by hash and ban
it); a garbage peer answers the handshake with noise; the tracker is killed
and comes back a few seconds later. Every leecher must end with a bit-exact
file, and no piece that was verified on disk at a kill may be missing from
what the restarted leecher announces (its first Bitfield). The long version
with figures is ``benchmarks/chaos.py``.
"""

from __future__ import annotations

from pathlib import Path

from .chaos_tools import ChaosConfig, run_chaos

CONFIG = ChaosConfig(
    seed=3,
    size=1_500_000,
    piece_length=32768,
    leechers=3,
    seeder_rate=300_000.0,
    kills=4,
    reset_chance=0.08,
    corrupt_chance=0.08,
    tracker_outage=2.0,
    time_limit=35.0,
)


async def test_every_leecher_of_a_shaken_swarm_ends_bit_exact(tmp_path: Path) -> None:
    report = await run_chaos(CONFIG, tmp_path)
    assert report.failures == []
    assert report.bit_exact == CONFIG.leechers
    assert report.bytes_lost == 0 and report.refetched_pieces == 0
    # Every kind of fault was really injected, or the run proved nothing about it.
    faults = report.faults
    assert faults["sigkills"] == CONFIG.kills
    assert faults["tracker_outages"] == 1
    assert faults["connection_resets"] > 0
    assert faults["corrupted_blocks"] > 0
    assert faults["garbage_sessions"] > 0
