"""Chaos swarm: real ``opendistro get`` processes on 127.0.0.1 under every fault at once.

Leechers are SIGKILLed at random moments and started again; an honest seeder
sits behind a relay that resets connections in the middle of pieces, another
behind one that flips bits in blocks (the leechers must catch that by hash and
ban it); a garbage peer answers the handshake with noise; the tracker is
SIGKILLed and comes back on the same port and database a few seconds later.
A third, well-behaved seeder keeps the swarm alive. The fault injection lives
in ``tests/chaos_tools.py`` and is shared with ``tests/test_chaos.py``.

Printed: how many faults of each kind were injected, how many leechers ended
bit-exact, and the bytes lost, which must be 0: verified bytes a crash made a
leecher fetch again (pieces intact on disk at a kill that the restarted
leecher did not announce in its first Bitfield) plus bytes missing or wrong in
the final files.

    python3 benchmarks/chaos.py [--quick] [--seed N] [--leechers N] [--size-mib N]
                                [--kills N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos_tools import ChaosConfig, run_chaos


def peak_rss_mb() -> float:
    """Peak RSS of this driver (the in-process seeders, proxies and garbage peer)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any ``opendistro`` subprocess (leechers, tracker)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller swarm, under a minute")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--leechers", type=int)
    parser.add_argument("--size-mib", type=float)
    parser.add_argument("--kills", type=int)
    args = parser.parse_args()
    if args.quick:
        config = ChaosConfig(seed=args.seed, size=3 << 20, leechers=4, seeder_rate=500_000.0,
                             kills=6, reset_chance=0.05, corrupt_chance=0.05,
                             tracker_outage=3.0, time_limit=50.0)
    else:
        config = ChaosConfig(seed=args.seed, size=64 << 20, leechers=8, seeder_rate=1_000_000.0,
                             kills=25, reset_chance=0.02, corrupt_chance=0.03,
                             tracker_outage=10.0, time_limit=500.0)
    if args.leechers is not None:
        config = _replace(config, leechers=args.leechers)
    if args.size_mib is not None:
        config = _replace(config, size=int(args.size_mib * (1 << 20)))
    if args.kills is not None:
        config = _replace(config, kills=args.kills)
    print(f"chaos swarm: {config.leechers} leechers, {config.size} bytes in "
          f"{config.piece_length}-byte pieces, seed {config.seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="od-chaos-") as workdir:
        report = trio.run(run_chaos, config, Path(workdir))
    for kind, count in sorted(report.faults.items()):
        print(f"  injected {kind}: {count}")
    print(f"leechers bit-exact: {report.bit_exact} of {report.leechers}")
    print(f"hash failures reported by the leechers' last runs: {report.hash_failures}")
    print(f"verified pieces fetched again after a crash: {report.refetched_pieces}")
    print(f"bytes lost: {report.bytes_lost} (must be 0)")
    print(f"wall time: {report.seconds:.1f} s")
    for failure in report.failures:
        print(f"FAILURE: {failure}")
    print(f"peak RSS: driver {peak_rss_mb()} MiB, largest subprocess {children_peak_rss_mb()} MiB")
    figures = {
        "benchmark": "chaos",
        "quick": args.quick,
        "config": {"seed": config.seed, "size": config.size, "leechers": config.leechers,
                   "kills": config.kills, "seeder_rate": config.seeder_rate,
                   "reset_chance": config.reset_chance, "corrupt_chance": config.corrupt_chance,
                   "tracker_outage": config.tracker_outage},
        **report.to_json(),
        "peak_rss_mb": peak_rss_mb(),
        "children_peak_rss_mb": children_peak_rss_mb(),
    }
    print(json.dumps(figures))
    ok = not report.failures and report.bytes_lost == 0 and report.bit_exact == report.leechers
    return 0 if ok else 1


def _replace(config: ChaosConfig, **changes: object) -> ChaosConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
