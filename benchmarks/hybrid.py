"""Peers and HTTP mirrors together: P2P only, mirror only, both, and mirrors taking over.

One release (64 MiB, 16 MiB with --quick, 256 KiB pieces) with the test
mirror in its ``url-list`` is downloaded four times on 127.0.0.1 by a fresh
opendistro leecher each time:

1. ``p2p-only`` from SEEDERS opendistro seeders, each capped at --seeder-kib;
2. ``mirrors-only`` from one HTTP mirror (``tests/mirror_server.py``) capped
   at --mirror-kib, no peers;
3. ``fastest`` from the seeders and the mirror at once;
4. ``prefer-p2p`` (the default policy) from the seeders, which are all shut
   down once 30% of the release has arrived: the swarm fails. Measured from
   that moment: when the policy opened the mirrors, when the mirror was first
   asked for data, when its first byte arrived, and when the download
   rate (peer and mirror bytes over a 1 s window, sampled every 50 ms) is
   back to half of what the swarm delivered before. Then the seeders come
   back and the mirror's share of what is left is reported (the policy stops
   giving mirrors new work once the swarm has been good for 5 s).

Every download is compared byte for byte with the original. The goal (issue 5)
is that mirrors carry the download within 5 s of the swarm failing (aim: 1 s).
The test mirror runs inside the same event loop and process as the clients:
its work slows them and its buffers count in the peak RSS, so mirror figures
are a lower bound (the p2p-only RSS figure, taken before the mirror served
anything, is the library's own).

    python3 benchmarks/hybrid.py [--quick] [--size-mib N] [--seeders N]
                                 [--seeder-kib N] [--mirror-kib N]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import random
import resource
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.mirror_server import MirrorServer

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.torrent import Torrent
from opendistro.metainfo import Metainfo
from opendistro.swarm.sources import SourcePolicy

HOST = "127.0.0.1"
PIECE_LENGTH = 256 << 10
SAMPLE_EVERY = 0.05
RATE_WINDOW = 1.0
FAIL_AT = 0.30
RECOVERED_AT = 0.5


class BenchmarkError(Exception):
    """A download failed, came out wrong, or took far too long."""


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclass(frozen=True)
class Release:
    path: Path
    data_dir: Path
    metainfo: Metainfo
    seeders: int
    seeder_rate: float
    mirror: MirrorServer


@dataclass(frozen=True)
class Sample:
    at: float
    from_peers: int
    from_mirrors: int
    mirror_requests: int
    mirrors_wanted: bool

    @property
    def received(self) -> int:
        return self.from_peers + self.from_mirrors


class Swarm:
    """Capped seeder clients that can be shut down together: the swarm failing."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.ports: list[int] = []
        self._scope = trio.CancelScope()

    async def run(
        self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                for _ in range(self.release.seeders):
                    self.ports.append(await nursery.start(self._seeder))
                task_status.started(self.ports)

    async def _seeder(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        release = self.release
        async with Client(host=HOST, upload_limit=release.seeder_rate) as seeder:
            await seeder.seed(release.metainfo, release.data_dir)
            task_status.started(seeder.port)
            await trio.sleep_forever()

    def stop(self) -> None:
        """Close every seeder (their connections reset, their ports stop listening)."""
        self._scope.cancel()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.ports]


def sample(torrent: Torrent, mirror: MirrorServer) -> Sample:
    status = torrent.status()
    gate = torrent.mirrors.gate if torrent.mirrors is not None else None
    return Sample(
        at=trio.current_time(),
        from_peers=status.bytes_from_peers,
        from_mirrors=status.bytes_from_mirrors,
        mirror_requests=len(mirror.requests),
        mirrors_wanted=gate is not None and gate.mirrors_wanted(),
    )


def window_rate(samples: list[Sample], end: int, window: float = RATE_WINDOW) -> float | None:
    """Bytes/s received over the ``window`` seconds up to ``samples[end]`` (None: too early)."""
    last = samples[end]
    for first in range(end, -1, -1):
        if last.at - samples[first].at >= window:
            span = last.at - samples[first].at
            return (last.received - samples[first].received) / span
    return None


async def verify(release: Release, torrent: Torrent, name: str) -> None:
    """Fail loudly unless the download ended well and is byte-identical to the release."""
    if torrent.error is not None:
        raise BenchmarkError(f"{name}: download failed: {torrent.error}")
    final = torrent.final_path
    if final is None or not final.is_file():
        raise BenchmarkError(f"{name}: no file at the final path ({final})")
    same = await trio.to_thread.run_sync(filecmp.cmp, release.path, final, False)
    if not same:
        raise BenchmarkError(f"{name}: {final} differs from the original release")


def figures(name: str, seconds: float, torrent: Torrent) -> dict[str, Any]:
    status = torrent.status()
    total = status.bytes_from_peers + status.bytes_from_mirrors
    return {
        "scenario": name,
        "seconds": round(seconds, 3),
        "bytes_from_peers": status.bytes_from_peers,
        "bytes_from_mirrors": status.bytes_from_mirrors,
        "mb_per_s": round(total / seconds / 1e6, 3),
        "hash_failures": status.hash_failures,
    }


async def plain(
    release: Release, work: Path, name: str, policy: SourcePolicy, *, peers: bool, limit: float
) -> dict[str, Any]:
    """One download under ``policy``, with the seeders running or not."""
    async with trio.open_nursery() as nursery:
        swarm = Swarm(release)
        addresses: list[tuple[str, int]] = []
        if peers:
            await nursery.start(swarm.run)
            addresses = swarm.addresses
        async with Client(host=HOST) as leecher:
            requests_before = len(release.mirror.requests)
            started = trio.current_time()
            torrent = await leecher.add_torrent(
                release.metainfo, work / name, peers=addresses, sources=policy
            )
            with trio.move_on_after(limit):
                await torrent.complete.wait()
            seconds = trio.current_time() - started
            if not torrent.complete.is_set():
                raise BenchmarkError(f"{name}: not done after {limit:.0f} s: {torrent.status()}")
            await verify(release, torrent, name)
            result = figures(name, seconds, torrent)
            result["mirror_requests"] = len(release.mirror.requests) - requests_before
        swarm.stop()
    result["peak_rss_mb_so_far"] = peak_rss_mb()
    return result


async def fallback(
    release: Release, work: Path, *, limit: float, peers_return: bool
) -> dict[str, Any]:
    """The swarm fails at 30%: how soon the mirror carries the download (see the docstring)."""
    name = "prefer-p2p"
    mirror = release.mirror
    async with trio.open_nursery() as nursery:
        swarm = Swarm(release)
        await nursery.start(swarm.run)
        async with Client(host=HOST) as leecher:
            requests_before = len(mirror.requests)
            started = trio.current_time()
            torrent = await leecher.add_torrent(
                release.metainfo,
                work / name,
                peers=swarm.addresses,
                sources=SourcePolicy.PREFER_P2P,
            )
            total = release.metainfo.total_length
            samples: list[Sample] = []
            failed_at: float | None = None
            failed_index = 0
            recovered_at: float | None = None
            returned_at: float | None = None
            returned_index = 0
            pre_rate = 0.0
            second_swarm = Swarm(release)
            with trio.move_on_after(limit):
                while not torrent.complete.is_set():
                    samples.append(sample(torrent, mirror))
                    now = samples[-1]
                    if failed_at is None and now.from_peers >= FAIL_AT * total:
                        pre_rate = window_rate(samples, len(samples) - 1) or 0.0
                        swarm.stop()
                        failed_at = trio.current_time()
                        failed_index = len(samples) - 1
                    elif failed_at is not None and recovered_at is None:
                        rate = window_rate(samples, len(samples) - 1)
                        if (
                            rate is not None
                            and now.at - RATE_WINDOW >= failed_at
                            and rate >= RECOVERED_AT * pre_rate
                        ):
                            recovered_at = now.at
                    # The swarm comes back a second after the rate recovered (or after 10 s).
                    if (
                        peers_return
                        and failed_at is not None
                        and returned_at is None
                        and now.at >= (recovered_at or failed_at + 9.0) + 1.0
                    ):
                        await nursery.start(second_swarm.run)
                        for address in second_swarm.addresses:
                            leecher.connect_soon(torrent, address)
                        returned_at = trio.current_time()
                        returned_index = len(samples) - 1
                    with trio.move_on_after(SAMPLE_EVERY):
                        await torrent.complete.wait()
            seconds = trio.current_time() - started
            if not torrent.complete.is_set():
                raise BenchmarkError(f"{name}: not done after {limit:.0f} s: {torrent.status()}")
            samples.append(sample(torrent, mirror))
            await verify(release, torrent, name)
            if failed_at is None:
                raise BenchmarkError(f"{name}: finished before {FAIL_AT:.0%} came from peers")
            result = figures(name, seconds, torrent)
            result["mirror_requests"] = len(mirror.requests) - requests_before
            at_failure = samples[failed_index]
            result["failed_after_s"] = round(failed_at - started, 3)
            result["pre_failure_mb_per_s"] = round(pre_rate / 1e6, 3)
            result["mirror_bytes_before_failure"] = at_failure.from_mirrors
            result["mirror_requests_before_failure"] = at_failure.mirror_requests - requests_before

            def after_failure(moment: float | None) -> float | None:
                if moment is None or moment < failed_at:
                    return None
                return round(moment - failed_at, 3)

            gate = torrent.mirrors.gate if torrent.mirrors is not None else None
            result["gate_opened_s"] = after_failure(gate.opened_at if gate else None)
            after = samples[failed_index:]
            first_request = next(
                (s.at for s in after if s.mirror_requests > at_failure.mirror_requests), None
            )
            result["first_mirror_request_s"] = after_failure(first_request)
            first_byte = torrent.mirrors.first_mirror_byte_at if torrent.mirrors else None
            if first_byte is not None and first_byte < failed_at:  # the mirror worked before, too
                first_byte = next(
                    (s.at for s in after if s.from_mirrors > at_failure.from_mirrors), None
                )
            result["first_mirror_byte_s"] = after_failure(first_byte)
            result["rate_recovered_s"] = after_failure(recovered_at)
            if returned_at is not None:
                result.update(peers_returned(samples, returned_index, returned_at - failed_at))
        swarm.stop()
        second_swarm.stop()
    result["peak_rss_mb_so_far"] = peak_rss_mb()
    return result


def peers_returned(samples: list[Sample], index: int, after_failure: float) -> dict[str, Any]:
    """Where the bytes came from once the seeders were back, and when mirrors stopped."""
    back, last = samples[index], samples[-1]
    from_peers = last.from_peers - back.from_peers
    from_mirrors = last.from_mirrors - back.from_mirrors
    closed = next((s for s in samples[index:] if not s.mirrors_wanted), None)
    return {
        "peers_returned_s": round(after_failure, 3),
        "after_return_bytes_from_peers": from_peers,
        "after_return_bytes_from_mirrors": from_mirrors,
        "after_return_mirror_share": round(from_mirrors / max(1, from_peers + from_mirrors), 3),
        "gate_closed_after_return_s": round(closed.at - back.at, 3) if closed else None,
        "mirror_bytes_after_gate_closed": (
            last.from_mirrors - closed.from_mirrors if closed else None
        ),
    }


@contextmanager
def guard(name: str, limit: float) -> Iterator[None]:
    """Stop a scenario that hangs outside the download itself (seeders, checks)."""
    try:
        with trio.fail_after(limit + 30):
            yield
    except trio.TooSlowError:
        raise BenchmarkError(f"{name}: no result after {limit + 30:.0f} s") from None


def leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def row(result: dict[str, Any]) -> str:
    return (
        f"{result['scenario']:<13} {result['seconds']:>8.2f} {result['bytes_from_peers']:>14,}"
        f" {result['bytes_from_mirrors']:>14,} {result['mb_per_s']:>7.2f}"
    )


def seconds_text(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


async def main(args: argparse.Namespace) -> None:
    size = (args.size_mib or (16 if args.quick else 64)) << 20
    seeder_rate = float(args.seeder_kib << 10)
    mirror_rate = args.mirror_kib << 10
    slowest = min(seeder_rate * args.seeders, mirror_rate)
    limit = 30 + 4 * size / slowest
    with tempfile.TemporaryDirectory(prefix="od-hybrid-") as scratch:
        work = Path(scratch)
        data_dir = work / "data"
        data_dir.mkdir()
        release_path = data_dir / "release.bin"
        rng = random.Random(5)
        with release_path.open("wb") as handle:
            for _ in range(size >> 20):
                handle.write(rng.randbytes(1 << 20))
        async with trio.open_nursery() as nursery:
            mirror = MirrorServer(data_dir)
            await nursery.start(mirror.serve)
            mirror.faults.rate = mirror_rate
            metainfo = create_torrent(
                release_path, version="hybrid", piece_length=PIECE_LENGTH, webseeds=[mirror.url]
            )
            release = Release(release_path, data_dir, metainfo, args.seeders, seeder_rate, mirror)
            print(
                f"release {size >> 20} MiB, {PIECE_LENGTH >> 10} KiB pieces; {args.seeders} seeders"
                f" at {args.seeder_kib} KiB/s each, mirror at {args.mirror_kib} KiB/s"
                f" ({mirror.url}); guard {limit:.0f} s per download",
                flush=True,
            )
            print(
                f"{'scenario':<13} {'seconds':>8} {'from peers':>14} {'from mirrors':>14}"
                f" {'MB/s':>7}"
            )
            results = {}
            for name, policy, peers in (
                ("p2p-only", SourcePolicy.P2P_ONLY, True),
                ("mirrors-only", SourcePolicy.MIRRORS_ONLY, False),
                ("fastest", SourcePolicy.FASTEST, True),
            ):
                with guard(name, limit):
                    results[name] = await plain(
                        release, work, name, policy, peers=peers, limit=limit
                    )
                print(row(results[name]), flush=True)
            with guard("prefer-p2p", limit):
                fell_back = await fallback(
                    release, work, limit=limit, peers_return=not args.no_return
                )
            results["prefer-p2p"] = fell_back
            print(row(fell_back), flush=True)
            nursery.cancel_scope.cancel()

    print(f"fallback: the swarm failed after {fell_back['failed_after_s']:.2f} s, delivering "
          f"{fell_back['pre_failure_mb_per_s']:.2f} MB/s "
          f"({fell_back['mirror_bytes_before_failure']:,} mirror bytes before)")
    print(f"  policy opened mirrors       {seconds_text(fell_back['gate_opened_s'])} after")
    print(f"  first mirror request        {seconds_text(fell_back['first_mirror_request_s'])} after"
          f" (sampled every {SAMPLE_EVERY * 1000:.0f} ms)")
    print(f"  first mirror byte           {seconds_text(fell_back['first_mirror_byte_s'])} after")
    print(f"  rate back to >= {RECOVERED_AT:.0%}        "
          f"{seconds_text(fell_back['rate_recovered_s'])} after ({RATE_WINDOW:.0f} s window)")
    if "peers_returned_s" in fell_back:
        print(f"  peers returned {fell_back['peers_returned_s']:.2f} s after; since then "
              f"{fell_back['after_return_mirror_share']:.0%} of bytes from the mirror;"
              f" policy closed mirrors {seconds_text(fell_back['gate_closed_after_return_s'])}"
              " after the return")
    first_byte = fell_back["first_mirror_byte_s"]
    goal_met = first_byte is not None and first_byte <= 5
    print(f"mirrors carry the download {seconds_text(fell_back['first_mirror_byte_s'])} after the"
          f" swarm failed (goal <= 5 s, aim 1 s): {'met' if goal_met else 'NOT met'}")
    print(json.dumps({
        "benchmark": "hybrid",
        "size_bytes": size,
        "piece_length": PIECE_LENGTH,
        "seeders": args.seeders,
        "seeder_cap_bytes_per_s": seeder_rate,
        "mirror_cap_bytes_per_s": mirror_rate,
        "scenarios": results,
        "fallback_gate_opened_s": fell_back["gate_opened_s"],
        "fallback_first_mirror_request_s": fell_back["first_mirror_request_s"],
        "fallback_first_mirror_byte_s": fell_back["first_mirror_byte_s"],
        "fallback_rate_recovered_s": fell_back["rate_recovered_s"],
        "fallback_after_return_mirror_share": fell_back.get("after_return_mirror_share"),
        "goal_s": 5.0,
        "goal_met": goal_met,
        "peak_rss_mb": peak_rss_mb(),
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int)
    parser.add_argument("--seeders", type=int, default=4)
    parser.add_argument("--seeder-kib", type=int, default=1024)
    parser.add_argument("--mirror-kib", type=int, default=4096)
    parser.add_argument("--no-return", action="store_true", help="skip the peers-return phase")
    try:
        trio.run(main, parser.parse_args())
    except* BenchmarkError as failures:
        for failure in leaves(failures):
            print(f"hybrid benchmark FAILED: {failure}", file=sys.stderr)
        raise SystemExit(1) from None
