"""Swarm speed-up over real TCP: one capped seeder against eight, measured in one run.

A leecher downloads the same release twice on 127.0.0.1: first from one seeder
whose upload is capped at RATE, then (a fresh leecher) from eight seeders each
capped at the same RATE. The ratio of the two download times is the swarm
speed-up (goal: at least 5x, aim 7x). All clients are opendistro clients in one
process; the caps keep the machine far from its CPU limit.

    python3 benchmarks/swarm_speedup.py [--quick] [--rate-kib N] [--size-mib N]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from opendistro import Client, Metainfo, create_torrent

HOST = "127.0.0.1"


async def download_from(
    seeders: int, metainfo: Metainfo, data_dir: Path, target: Path, rate: float
) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        ports = []
        for _ in range(seeders):
            seeder = await stack.enter_async_context(Client(host=HOST, upload_limit=rate))
            await seeder.seed(metainfo, data_dir)
            ports.append(seeder.port)
        leecher = await stack.enter_async_context(Client(host=HOST))
        started = trio.current_time()
        torrent = await leecher.add_torrent(metainfo, target, peers=[(HOST, p) for p in ports])
        await torrent.complete.wait()
        seconds = trio.current_time() - started
        status = torrent.status()
    return {
        "seeders": seeders,
        "seconds": round(seconds, 3),
        "mib_per_s": round(status.bytes_from_peers / seconds / 2**20, 3),
        "ok": torrent.error is None and status.hash_failures == 0,
        "peers_used": sum(1 for amount in torrent.bytes_from_peer.values() if amount > 0),
    }


async def main(args: argparse.Namespace) -> None:
    size = (args.size_mib or (6 if args.quick else 24)) << 20
    rate = float(args.rate_kib << 10)
    with tempfile.TemporaryDirectory(prefix="od-speedup-") as scratch:
        work = Path(scratch)
        data_dir = work / "data"
        data_dir.mkdir()
        release = data_dir / "release.bin"
        release.write_bytes(random.Random(7).randbytes(size))
        metainfo = create_torrent(release, version="hybrid", piece_length=65536)
        print(f"release {size >> 20} MiB; every seeder capped at {args.rate_kib} KiB/s", flush=True)
        one = await download_from(1, metainfo, data_dir, work / "one", rate)
        print(f"1 seeder:  {one}", flush=True)
        eight = await download_from(8, metainfo, data_dir, work / "eight", rate)
        print(f"8 seeders: {eight}", flush=True)
    speedup = one["seconds"] / eight["seconds"]
    print(f"swarm speed-up with 8 seeders: {speedup:.2f}x (goal >= 5x, aim 7x)")
    print(json.dumps({
        "benchmark": "swarm_speedup",
        "size_bytes": size,
        "seeder_cap_bytes_per_s": rate,
        "one_seeder": one,
        "eight_seeders": eight,
        "speedup": round(speedup, 2),
        "goal": 5.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate-kib", type=int, default=1024)
    parser.add_argument("--size-mib", type=int)
    trio.run(main, parser.parse_args())
