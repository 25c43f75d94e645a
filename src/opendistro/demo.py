"""``opendistro demo``: a real swarm on 127.0.0.1, end to end, in one process.

A bundled tracker, one seeder and several leechers, each a full
:class:`~opendistro.io.client.Client` with its own listening socket, exchange a
generated release over loopback TCP. The report shows how long it took, where
each leecher's bytes came from (the seeder or other leechers), and whether
every copy is bit-identical to the original.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from .create import create_torrent
from .io.client import Client
from .io.torrent import Torrent
from .progress import format_bytes
from .tracker.server import TrackerServer

__all__ = ["make_release", "run_demo"]

LOOPBACK = "127.0.0.1"


def make_release(folder: Path, total_size: int, *, files: int = 4, seed: int = 1) -> Path:
    """Write a multi-file release of pseudo-random bytes (uncompressible, like an ISO)."""
    rng = random.Random(seed)
    release = folder / "demo-release-1.0"
    release.mkdir(parents=True, exist_ok=True)
    sizes = [total_size // files] * files
    sizes[-1] += total_size - sum(sizes)
    chunk = 1 << 20
    for number, size in enumerate(sizes):
        with open(release / f"part-{number}.bin", "wb") as out:
            for start in range(0, size, chunk):
                out.write(rng.randbytes(min(chunk, size - start)))
    return release


def _digest_tree(root: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha = hashlib.sha256()
        with open(path, "rb") as source:
            while block := source.read(1 << 20):
                sha.update(block)
        digests[str(path.relative_to(root))] = sha.hexdigest()
    return digests


def _progress_line(leechers: list[Torrent]) -> str:
    parts = [f"L{number}:{t.status().fraction * 100:5.1f}%" for number, t in enumerate(leechers)]
    rate = sum(t.status().download_rate for t in leechers)
    return "  ".join(parts) + f"  swarm {format_bytes(rate)}/s"


async def run_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="opendistro-demo-") as scratch:
        workdir = Path(args.dir) if args.dir else Path(scratch)
        report = await _run(
            workdir, args.leechers, args.size_mib << 20, args.seed_rate_mib << 20, quiet=args.json
        )
    print(json.dumps(report) if args.json else _format_report(report))
    return 0 if report["verified"] else 1


async def _run(
    workdir: Path, leecher_count: int, size: int, seed_rate: int, *, quiet: bool
) -> dict[str, Any]:
    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    say(f"generating a {format_bytes(size)} release in {workdir} ...")
    publisher_dir = workdir / "publisher"
    release = await trio.to_thread.run_sync(make_release, publisher_dir, size)
    tracker = TrackerServer(host=LOOPBACK, port=0, interval=5, min_interval=1)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        await nursery.start(tracker.serve)
        metainfo = await trio.to_thread.run_sync(
            lambda: create_torrent(release, version="hybrid", trackers=[tracker.announce_url])
        )
        say(f"tracker {tracker.announce_url}; torrent {metainfo.name}: "
            f"{metainfo.num_pieces} pieces of {format_bytes(metainfo.piece_length)}")
        seeder = await stack.enter_async_context(Client(host=LOOPBACK, upload_limit=seed_rate))
        await seeder.seed(metainfo, publisher_dir)
        say(f"seeder on {LOOPBACK}:{seeder.port}, upload capped at {format_bytes(seed_rate)}/s")
        started = time.monotonic()
        leechers: list[Torrent] = []
        clients: list[Client] = []
        for number in range(leecher_count):
            client = await stack.enter_async_context(Client(host=LOOPBACK))
            clients.append(client)
            leechers.append(await client.add_torrent(metainfo, workdir / f"leecher-{number}"))
        while not all(t.complete.is_set() for t in leechers):
            say(_progress_line(leechers))
            with trio.move_on_after(0.5):
                for torrent in leechers:
                    await torrent.complete.wait()
        elapsed = time.monotonic() - started
        say(_progress_line(leechers))
        original = _digest_tree(release)
        results = []
        for number, torrent in enumerate(leechers):
            from_seeder = torrent.bytes_by_peer_id.get(seeder.peer_id, 0)
            total = sum(torrent.bytes_by_peer_id.values())
            copy = torrent.final_path
            identical = copy is not None and _digest_tree(copy) == original
            results.append({
                "leecher": number,
                "ok": torrent.error is None,
                "error": torrent.error,
                "bytes_from_seeder": from_seeder,
                "bytes_from_leechers": total - from_seeder,
                "bytes_uploaded": torrent.status().bytes_uploaded,
                "hash_failures": torrent.hash_failures,
                "identical": identical,
            })
        seeder_upload = seeder.torrents[0].status().bytes_uploaded
        nursery.cancel_scope.cancel()
    single_source = size * leecher_count / seed_rate
    return {
        "release_bytes": size,
        "leechers": leecher_count,
        "seed_rate": seed_rate,
        "seconds": round(elapsed, 3),
        "single_source_seconds": round(single_source, 3),
        "swarm_speedup": round(single_source / elapsed, 2),
        "swarm_mb_per_s": round(size * leecher_count / elapsed / 1e6, 1),
        "seeder_uploaded": seeder_upload,
        "results": results,
        "verified": all(r["ok"] and r["identical"] for r in results),
    }


def _format_report(report: dict[str, Any]) -> str:
    lines = [
        "",
        f"opendistro demo: {report['leechers']} leechers fetched "
        f"{format_bytes(report['release_bytes'])} each in {report['seconds']} s "
        f"({report['swarm_mb_per_s']} MB/s across the swarm)",
        f"seeder uploaded {format_bytes(report['seeder_uploaded'])} "
        f"({report['seeder_uploaded'] / report['release_bytes']:.2f} copies)",
        f"swarm speed-up: {report['swarm_speedup']}x against the seeder alone, which at "
        f"{format_bytes(report['seed_rate'])}/s would need {report['single_source_seconds']} s",
    ]
    for result in report["results"]:
        lines.append(
            f"  leecher {result['leecher']}: {format_bytes(result['bytes_from_seeder'])} from the "
            f"seeder, {format_bytes(result['bytes_from_leechers'])} from other leechers, "
            f"uploaded {format_bytes(result['bytes_uploaded'])}, "
            f"{'bit-identical' if result['identical'] else 'MISMATCH'}"
            + (f", error: {result['error']}" if result["error"] else "")
        )
    lines.append("verification: " + ("every copy verified" if report["verified"] else "FAILED"))
    return "\n".join(lines)
