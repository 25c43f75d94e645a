"""What verifying every piece costs: the same download with and without hashing.

A release (512 MiB, or 64 MiB with --quick) is seeded by opendistro on
127.0.0.1 and downloaded by opendistro, each downloader in its own process:
once as shipped (every piece hashed in worker threads before it is written)
and once with the hash check replaced by a no-op, a switch that exists only
in this script: the seeder, the connection and the writes are the same, only
the hashing differs. Downloads start once the seeder has finished its own
start-up check, and the sides take turns going first (--rounds pairs), so
drift on a noisy machine hits both alike; each side's best run counts.

Two links are measured. On a fast link (the seeder capped at --link-mib-s,
default 100 MiB/s, about 0.85 Gbit/s) the network is the bottleneck, as for
real users, and hashing should hide behind it: this is the figure the goal
(under 5% of wall time) is about. Uncapped loopback is CPU-bound on a 2-core
machine (seeder and downloader share both cores), so there every hash cycle
shows up in wall time; it is printed as the worst case.

Prints the overhead in percent of wall and CPU time for both (wall time also
without the interpreter's start-up, as ``get`` reports it), the raw SHA-1
and SHA-256 speed of this machine, and each downloader's peak RSS. The last
line is one JSON object.

    python3 benchmarks/verification_overhead.py [--quick] [--size-mib N] [--rounds N]
                                                [--link-mib-s N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")


def hash_speed(name: str, seconds: float = 1.0) -> float:
    """MB/s of one thread hashing 1 MiB buffers with ``name``."""
    block = random.Random(1).randbytes(1 << 20)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        hashlib.new(name, block).digest()
        done += len(block)
    return done / (time.perf_counter() - start) / 1e6


def wait_seeding(seeder: subprocess.Popen[str]) -> None:
    """Block until the seeder has checked its data and serves it.

    It listens before its own start-up hash check ends; a download started in
    that window would share the CPU with the check and be charged for it.
    """
    assert seeder.stdout is not None
    for line in seeder.stdout:
        if line.startswith("seeding "):
            return
    raise RuntimeError(f"the seeder exited with {seeder.wait()} before seeding")


def run_downloader(torrent: Path, target: Path, port: int, *, verify: bool) -> dict[str, float]:
    """One download in a child process; its wall time, CPU time and peak RSS.

    ``download_seconds`` is the time ``get`` itself reports, without the
    interpreter's start-up and imports that ``wall_seconds`` includes.
    """
    command = [sys.executable, __file__, "--child", str(torrent), str(target), str(port)]
    if not verify:
        command.append("--no-verify")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"downloader exited with {process.returncode}")
    return {
        "wall_seconds": wall,
        "download_seconds": float(json.loads(output.splitlines()[-1])["seconds"]),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def child(torrent: str, target: str, port: str, no_verify: bool) -> None:
    """The downloader: ``opendistro get``, with hashing stubbed out if asked."""
    if no_verify:
        # Where a downloaded piece is hashed and written: write it unhashed instead.
        from opendistro.io.torrent import Torrent

        def write_unhashed(
            self: Torrent, index: int, data: bytearray, block_size: int, digests: bool
        ) -> tuple[bool, None]:
            assert self.storage is not None
            self.storage.write_block(index, 0, memoryview(data))
            return True, None

        Torrent._verify_and_write = write_unhashed  # type: ignore[method-assign,assignment]
    from opendistro.cli import main

    peer = f"{HOST}:{port}"
    code = main(["get", torrent, "-o", target, "--host", HOST, "--peer", peer, "--json"])
    raise SystemExit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--link-mib-s", type=float, default=100.0)
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.no_verify)
        return
    size = (args.size_mib or (64 if args.quick else 512)) << 20
    rounds = args.rounds or 3
    sha1 = hash_speed("sha1")
    sha256 = hash_speed("sha256")
    print(f"this machine hashes SHA-1 at {sha1:.0f} MB/s and SHA-256 at {sha256:.0f} MB/s "
          "(one thread)", flush=True)

    from opendistro.create import create_torrent

    with tempfile.TemporaryDirectory(prefix="od-verify-") as scratch:
        root = Path(scratch)
        publisher = root / "publisher"
        publisher.mkdir()
        release = publisher / "release.iso"
        rng = random.Random(7)
        with release.open("wb") as handle:
            for _ in range(size >> 20):
                handle.write(rng.randbytes(1 << 20))
        torrent = root / "release.torrent"
        torrent.write_bytes(create_torrent(release, version="hybrid").to_bytes())
        links = {"fast link": args.link_mib_s, "uncapped loopback": None}
        results: dict[str, dict[str, list[dict[str, float]]]] = {}
        for link, rate in links.items():
            print(f"{link}:", flush=True)
            results[link] = measure(torrent, release, root, rate, rounds)

    def best(runs: list[dict[str, float]], key: str) -> float:
        return min(figures[key] for figures in runs)

    def overhead(link: str, key: str) -> float:
        runs = results[link]
        return 100 * (best(runs["verified"], key) / best(runs["unverified"], key) - 1)

    summary: dict[str, dict[str, float]] = {}
    for link in links:
        summary[link] = {
            "wall_overhead_percent": round(overhead(link, "wall_seconds"), 2),
            "cpu_overhead_percent": round(overhead(link, "cpu_seconds"), 2),
            "download_overhead_percent": round(overhead(link, "download_seconds"), 2),
            "verified_wall_seconds": round(best(results[link]["verified"], "wall_seconds"), 3),
            "unverified_wall_seconds": round(best(results[link]["unverified"], "wall_seconds"), 3),
        }
        print(f"{link}: verification costs {summary[link]['wall_overhead_percent']:+.1f}% wall "
              f"time ({summary[link]['download_overhead_percent']:+.1f}% of the download "
              f"alone) and {summary[link]['cpu_overhead_percent']:+.1f}% CPU time "
              f"({size >> 20} MiB, hybrid: SHA-1 and SHA-256)")
    fast = summary["fast link"]
    print(f"goal: under 5% of wall time on a fast link: {fast['wall_overhead_percent']:+.1f}%")
    print(json.dumps({
        "benchmark": "verification_overhead",
        "size_bytes": size,
        "rounds": rounds,
        "link_mib_s": args.link_mib_s,
        "sha1_mb_per_s": round(sha1, 1),
        "sha256_mb_per_s": round(sha256, 1),
        "wall_overhead_percent": fast["wall_overhead_percent"],
        "cpu_overhead_percent": fast["cpu_overhead_percent"],
        "goal_wall_overhead_percent": 5.0,
        "links": summary,
        "peak_rss_mb": max(
            figures["peak_rss_mb"]
            for link in results.values()
            for runs in link.values()
            for figures in runs
        ),
    }))


def measure(
    torrent: Path, release: Path, root: Path, rate: float | None, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """Seed ``release`` (capped at ``rate`` MiB/s) and download it verified and not, in turns."""
    port = free_port()
    command = [sys.executable, "-m", "opendistro.cli", "seed", str(torrent), "--data",
               str(release.parent), "--host", HOST, "--port", str(port)]
    if rate is not None:
        command += ["--upload-limit", f"{rate}M"]
    seeder = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    results: dict[str, list[dict[str, float]]] = {"verified": [], "unverified": []}
    sides = [("verified", True), ("unverified", False)]
    try:
        wait_seeding(seeder)
        wait_listening(port)
        for round_number in range(rounds):
            # Each side goes first every other round: whatever the first run
            # of a pair pays (cold caches, a busy neighbour) falls on both.
            for label, verify in sides if round_number % 2 == 0 else sides[::-1]:
                target = root / f"{label}-{round_number}"
                figures = run_downloader(torrent, target, port, verify=verify)
                if (target / release.name).stat().st_size != release.stat().st_size:
                    raise RuntimeError(f"the {label} download is incomplete")
                results[label].append(figures)
                print(f"  {label:10s} {figures['wall_seconds']:6.2f} s wall "
                      f"({figures['download_seconds']:.2f} s downloading), "
                      f"{figures['cpu_seconds']:6.2f} s CPU, "
                      f"{figures['peak_rss_mb']:.0f} MB peak RSS", flush=True)
                for path in sorted(target.rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
                target.rmdir()
    finally:
        seeder.terminate()
        seeder.wait()
    return results


if __name__ == "__main__":
    main()
