"""Loopback throughput: opendistro and libtorrent in every direction, side by side.

One release (256 MiB, or 32 MiB with --quick) is transferred over 127.0.0.1 four
ways, each side in its own process: opendistro->opendistro, libtorrent->opendistro,
opendistro->libtorrent and libtorrent->libtorrent (the reference). For each it
prints MB/s, the ratio to libtorrent->libtorrent, the downloader's CPU seconds per
GiB and its peak RSS. The last line is one JSON object with every figure.

    python3 benchmarks/loopback_throughput.py [--quick] [--size-mib N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opendistro.create import create_torrent

LT_PEER = Path(__file__).resolve().parents[2] / "shared" / "interop" / "lt_peer.py"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")


def seeder_command(kind: str, torrent: Path, data_dir: Path, port: int) -> list[str]:
    if kind == "opendistro":
        return [sys.executable, "-m", "opendistro.cli", "seed", str(torrent), "--data",
                str(data_dir), "--host", HOST, "--port", str(port)]
    return [sys.executable, str(LT_PEER), "--torrent", str(torrent), "--save", str(data_dir),
            "--port", str(port), "--seed", "--no-trackers", "--no-webseeds", "--timeout", "600"]


def downloader_command(kind: str, torrent: Path, target: Path, seed_port: int) -> list[str]:
    if kind == "opendistro":
        return [sys.executable, "-m", "opendistro.cli", "get", str(torrent), "-o", str(target),
                "--peer", f"{HOST}:{seed_port}", "--host", HOST, "--json"]
    return [sys.executable, str(LT_PEER), "--torrent", str(torrent), "--save", str(target),
            "--port", str(free_port()), "--connect", f"{HOST}:{seed_port}", "--no-trackers",
            "--no-webseeds", "--timeout", "600"]


def run_pair(seeder: str, downloader: str, torrent: Path, data_dir: Path, work: Path,
             size: int) -> dict[str, Any]:
    port = free_port()
    seed = subprocess.Popen(seeder_command(seeder, torrent, data_dir, port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = work / f"{seeder}-to-{downloader}"
    try:
        wait_listening(port)
        time.sleep(0.5)
        started = time.monotonic()
        fetch = subprocess.Popen(downloader_command(downloader, torrent, target, port),
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert fetch.stdout is not None
        output = fetch.stdout.read()
        _, status, usage = os.wait4(fetch.pid, 0)
        wall = time.monotonic() - started
        fetch.returncode = os.waitstatus_to_exitcode(status)
    finally:
        seed.terminate()
        seed.wait(10)
    summary = json.loads(output.decode().strip().splitlines()[-1])
    ok = fetch.returncode == 0 and (summary.get("ok") or summary.get("done"))
    transfer = float(summary["seconds"])
    cpu = usage.ru_utime + usage.ru_stime
    shutil.rmtree(target, ignore_errors=True)
    return {
        "ok": bool(ok),
        "transfer_seconds": round(transfer, 3),
        "wall_seconds": round(wall, 3),
        "mb_per_s": round(size / transfer / 1e6, 1),
        "downloader_cpu_s_per_gib": round(cpu / (size / 2**30), 2),
        "downloader_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB instead of 256 MiB")
    parser.add_argument("--size-mib", type=int)
    args = parser.parse_args()
    size = (args.size_mib or (32 if args.quick else 256)) << 20
    with tempfile.TemporaryDirectory(prefix="od-bench-") as scratch:
        work = Path(scratch)
        data_dir = work / "data"
        data_dir.mkdir()
        release = data_dir / "bench.bin"
        rng = random.Random(42)
        with open(release, "wb") as out:
            for start in range(0, size, 1 << 22):
                out.write(rng.randbytes(min(1 << 22, size - start)))
        metainfo = create_torrent(release, version="hybrid")
        torrent = work / "bench.torrent"
        torrent.write_bytes(metainfo.to_bytes())
        print(f"release {size >> 20} MiB, {metainfo.num_pieces} pieces of "
              f"{metainfo.piece_length >> 10} KiB", flush=True)
        pairs = [("libtorrent", "libtorrent"), ("opendistro", "opendistro"),
                 ("libtorrent", "opendistro"), ("opendistro", "libtorrent")]
        results: dict[str, Any] = {}
        for seeder, downloader in pairs:
            name = f"{seeder}->{downloader}"
            results[name] = run_pair(seeder, downloader, torrent, data_dir, work, size)
            print(f"{name:28} {results[name]}", flush=True)
    reference = results["libtorrent->libtorrent"]["mb_per_s"]
    for figures in results.values():
        figures["ratio_to_libtorrent"] = round(figures["mb_per_s"] / reference, 3)
    print(json.dumps({"benchmark": "loopback_throughput", "size_bytes": size, "results": results,
                      "goal_od_to_od_ratio": 0.5,
                      "od_to_od_ratio": results["opendistro->opendistro"]["ratio_to_libtorrent"]}))


if __name__ == "__main__":
    main()
