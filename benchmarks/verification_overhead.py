"""What verifying every piece costs: the same download with and without hashing.

A release (512 MiB, or 64 MiB with --quick) is seeded by opendistro on
127.0.0.1 and downloaded by opendistro twice, each downloader in its own
process: once as shipped (every piece hashed in worker threads before it is
written) and once with the hash check replaced by a no-op, a switch that
exists only in this script. Runs alternate (--rounds pairs) so drift on a
noisy machine hits both sides alike. Prints the overhead in percent of wall
time and of CPU time (goal: under 5% of wall time), the raw SHA-1 and
SHA-256 speed of this machine, and each downloader's peak RSS. The last line
is one JSON object.

    python3 benchmarks/verification_overhead.py [--quick] [--size-mib N] [--rounds N]
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
from typing import Any

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


def run_downloader(torrent: Path, target: Path, port: int, *, verify: bool) -> dict[str, float]:
    """One download in a child process; its wall time, CPU time and peak RSS."""
    command = [sys.executable, __file__, "--child", str(torrent), str(target), str(port)]
    if not verify:
        command.append("--no-verify")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"downloader exited with {process.returncode}")
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def child(torrent: str, target: str, port: str, no_verify: bool) -> None:
    """The downloader: ``opendistro get``, with hashing stubbed out if asked."""
    if no_verify:
        from opendistro.integrity.pieces import PieceVerifier

        def accept_everything(self: PieceVerifier, index: int, data: Any) -> bool:
            return True

        PieceVerifier.verify = accept_everything  # type: ignore[method-assign]
    from opendistro.cli import main

    peer = f"{HOST}:{port}"
    code = main(["get", torrent, "-o", target, "--host", HOST, "--peer", peer, "--json"])
    raise SystemExit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.no_verify)
        return
    size = (args.size_mib or (64 if args.quick else 512)) << 20
    rounds = args.rounds or (1 if args.quick else 2)
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
        port = free_port()
        seeder = subprocess.Popen(
            [sys.executable, "-m", "opendistro.cli", "seed", str(torrent), "--data",
             str(publisher), "--host", HOST, "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port)
            results: dict[str, list[dict[str, float]]] = {"verified": [], "unverified": []}
            for round_number in range(rounds):
                for label, verify in (("verified", True), ("unverified", False)):
                    target = root / f"{label}-{round_number}"
                    figures = run_downloader(torrent, target, port, verify=verify)
                    if verify and (target / release.name).stat().st_size != size:
                        raise RuntimeError("the verified download is incomplete")
                    results[label].append(figures)
                    print(f"  {label:10s} {figures['wall_seconds']:6.2f} s wall, "
                          f"{figures['cpu_seconds']:6.2f} s CPU, "
                          f"{figures['peak_rss_mb']:.0f} MB peak RSS", flush=True)
                    for path in sorted(target.rglob("*"), reverse=True):
                        path.unlink() if path.is_file() else path.rmdir()
        finally:
            seeder.terminate()
            seeder.wait()

    def best(label: str, key: str) -> float:
        return min(figures[key] for figures in results[label])

    def overhead(key: str) -> float:
        return 100 * (best("verified", key) / best("unverified", key) - 1)

    wall_overhead = overhead("wall_seconds")
    cpu_overhead = overhead("cpu_seconds")
    print(f"verification costs {wall_overhead:+.1f}% wall time (goal < 5%) and "
          f"{cpu_overhead:+.1f}% CPU time for {size >> 20} MiB (hybrid: SHA-1 and SHA-256)")
    print(json.dumps({
        "benchmark": "verification_overhead",
        "size_bytes": size,
        "rounds": rounds,
        "sha1_mb_per_s": round(sha1, 1),
        "sha256_mb_per_s": round(sha256, 1),
        "wall_overhead_percent": round(wall_overhead, 2),
        "cpu_overhead_percent": round(cpu_overhead, 2),
        "goal_wall_overhead_percent": 5.0,
        "verified": results["verified"],
        "unverified": results["unverified"],
        "peak_rss_mb": max(f["peak_rss_mb"] for runs in results.values() for f in runs),
    }))


if __name__ == "__main__":
    main()
