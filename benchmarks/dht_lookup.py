"""DHT lookups in the simulator: hops and time of get_peers over N real DHT nodes.

Builds a network of N virtual nodes (the real sans-I/O ``DHTNode``, real KRPC
bytes, BEP 42 ids for random public IPv4 addresses, one-way latencies of
5-80 ms per host), joined one after another through four router nodes as on
the Internet, and left running for SETTLE virtual seconds (20 minutes by
default, so every node has refreshed its buckets once). Then SWARMS random
nodes announce a random info-hash each, and LOOKUPS random nodes per swarm
look it up. Prints median/p95 hops (depth of
the closest node that answered: 1 = a node already in the routing table),
queries per lookup, virtual lookup time, success rate, simulated events per
wall second, wall time and peak RSS. The last line is one JSON object.

    python3 benchmarks/dht_lookup.py [--quick] [--nodes N] [--loss P] [--seed S] [--settle S]

Defaults: 10,000 nodes; --quick: 1,000 nodes.
"""

from __future__ import annotations

import argparse
import json
import time

from opendistro.sim.dht import DHTSimConfig, DHTSimulation
from opendistro.sim.metrics import peak_rss_mb, percentiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--swarms", type=int, default=20)
    parser.add_argument("--lookups", type=int, default=10, help="lookups per swarm")
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--settle",
        type=float,
        default=1200.0,
        help="virtual seconds the network runs after the last join (bucket refresh: 900 s)",
    )
    args = parser.parse_args()
    nodes = args.nodes or (1000 if args.quick else 10_000)
    sim = DHTSimulation(
        DHTSimConfig(nodes=nodes, seed=args.seed, loss=args.loss, settle=args.settle)
    )
    print(f"DHT lookups: {nodes} nodes, {args.swarms} swarms x {args.lookups} lookups, "
          f"loss {args.loss}", flush=True)
    started = time.monotonic()
    last_report = started

    def progress(joined: int) -> None:
        nonlocal last_report
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"  {joined}/{nodes} nodes joined", flush=True)

    sim.build(on_progress=progress)
    build_seconds = time.monotonic() - started
    build_events = sim.loop.events_processed
    tables = [len(node.table) for node in sim.nodes]
    print(f"built in {build_seconds:.1f} s wall ({sim.loop.now:.0f} s virtual, "
          f"{build_events} events); routing table size median "
          f"{percentiles(tables)['median']:.0f}", flush=True)

    experiment_started = time.monotonic()
    records = sim.run_experiment(args.swarms, args.lookups)
    wall = time.monotonic() - started
    announces, lookups = records[: args.swarms], records[args.swarms :]
    hops = percentiles([r.hops for r in lookups])
    queries = percentiles([r.queries for r in lookups])
    seconds = percentiles([r.duration for r in lookups])
    found = sum(r.found for r in lookups) / len(lookups)
    events = sim.loop.events_processed
    events_per_second = events / wall if wall > 0 else 0.0
    summary = {
        "benchmark": "dht_lookup",
        "nodes": nodes,
        "seed": args.seed,
        "loss": args.loss,
        "settle_seconds": args.settle,
        "lookups": len(lookups),
        "found_fraction": round(found, 4),
        "hops_median": hops["median"],
        "hops_p95": hops["p95"],
        "queries_median": queries["median"],
        "queries_p95": queries["p95"],
        "lookup_seconds_median": round(seconds["median"], 4),
        "lookup_seconds_p95": round(seconds["p95"], 4),
        "announce_queries_median": percentiles([r.queries for r in announces])["median"],
        "routing_table_median": percentiles(tables)["median"],
        "datagrams": sim.datagrams,
        "events": events,
        "events_per_wall_second": round(events_per_second),
        "build_wall_seconds": round(build_seconds, 2),
        "experiment_wall_seconds": round(time.monotonic() - experiment_started, 2),
        "wall_seconds": round(wall, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(f"found the announced peer in {found:.1%} of {len(lookups)} lookups")
    print(f"hops median/p95 {hops['median']:.1f}/{hops['p95']:.1f}; queries median/p95 "
          f"{queries['median']:.0f}/{queries['p95']:.0f}; lookup time median/p95 "
          f"{seconds['median']:.3f}/{seconds['p95']:.3f} s (virtual)")
    print(f"{events} events, {sim.datagrams} datagrams in {wall:.1f} s wall "
          f"({events_per_second:.0f} events/s), peak RSS {summary['peak_rss_mb']:.0f} MB")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
