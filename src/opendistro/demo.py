"""``opendistro demo``: a real swarm on 127.0.0.1, end to end, in one process.

A bundled tracker, one seeder and several leechers, each a full
:class:`~opendistro.io.client.Client` with its own listening socket, exchange a
generated release over loopback TCP. The packaged mirror server
(:class:`~opendistro.mirrors.server.MirrorServer`) serves the publisher's
folder beside them, capped like a real mirror, and the torrent lists it as a
web seed.

The demo plays two acts. In the first, the swarm delivers and, under the
default ``prefer-p2p`` policy, the mirror stays (mostly) idle: mirror
bandwidth costs the publisher money, the swarm's is free. In the second, a
late leecher starts, and once it has :data:`FALLBACK_AT` of the release every
other client shuts down: the swarm is gone, and the late leecher must finish
from the mirror alone. The report shows how long each act took, where every
leecher's bytes came from (the seeder, other leechers, the mirror), how soon
the mirror took over, and whether every copy is bit-identical to the original.

Every client keeps seeding credit (``spec/od-credit.md``) in its own state
folder, and the tracker keeps a credit database. Between the acts the report
takes stock: each client's ledger (who gave whom how much, and the receipts
that prove it) and, once the clients posted their receipts, the tracker's
health view of the torrent: seeders, leechers, distributed copies and the
contribution ranking.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from .create import create_torrent
from .errors import OpenDistroError
from .io.client import Client
from .io.torrent import Torrent, TorrentStatus
from .mirrors.server import MirrorServer
from .progress import format_bytes
from .tracker.health_client import fetch_tracker_health
from .tracker.server import TrackerServer

__all__ = ["make_release", "run_demo"]

LOOPBACK = "127.0.0.1"
FALLBACK_AT = 0.3
"""Share of the release the late leecher holds when the swarm is shut down."""
LATE_RATE_FACTOR = 2
"""The late leecher takes at most this many times the seeder's cap from peers."""
STALL_SECONDS = 30.0
"""A download that makes no progress for this long is reported, not waited on for ever."""


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


def _late_progress_line(late: Torrent) -> str:
    status = late.status()
    return (
        f"late leecher {status.fraction * 100:5.1f}%  {status.peers} peers  "
        f"{format_bytes(status.bytes_from_peers)} from peers, "
        f"{format_bytes(status.bytes_from_mirrors)} from the mirror"
    )


def _progress_mark(torrents: list[Torrent]) -> list[tuple[int, int, int]]:
    return [
        (status.verified_bytes, status.bytes_from_peers, status.bytes_from_mirrors)
        for status in (torrent.status() for torrent in torrents)
    ]


async def _wait_for(
    finished: Callable[[], bool],
    torrents: list[Torrent],
    say: Callable[[str], None],
    line: Callable[[], str],
    *,
    poll: float = 0.5,
) -> bool:
    """Until ``finished()``, showing progress; False if ``torrents`` stood still too long.

    A demo that hangs teaches nothing: after :data:`STALL_SECONDS` without a
    byte of progress it stops waiting and the report says so.
    """
    mark, since, said = _progress_mark(torrents), trio.current_time(), -float("inf")
    while not finished():
        now = trio.current_time()
        if now - said >= 0.5:
            say(line())
            said = now
        current = _progress_mark(torrents)
        if current != mark:
            mark, since = current, now
        elif now - since >= STALL_SECONDS:
            say(line() + f"  (no progress for {STALL_SECONDS:.0f} s: giving up)")
            return False
        with trio.move_on_after(poll):
            for torrent in torrents:
                await torrent.complete.wait()
    say(line())
    return True


def _all_complete(torrents: list[Torrent]) -> Callable[[], bool]:
    """Done, or failed: ``complete`` is set then too."""
    return lambda: all(torrent.complete.is_set() for torrent in torrents)


def _error(torrent: Torrent) -> str | None:
    if torrent.error is None and not torrent.complete.is_set():
        return f"stalled: no progress for {STALL_SECONDS:.0f} s"
    return torrent.error


async def run_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="opendistro-demo-") as scratch:
        workdir = Path(args.dir) if args.dir else Path(scratch)
        report = await _run(
            workdir,
            args.leechers,
            args.size_mib << 20,
            args.seed_rate_mib << 20,
            args.mirror_rate_mib << 20,
            quiet=args.json,
        )
    print(json.dumps(report) if args.json else _format_report(report))
    return 0 if report["verified"] else 1


async def _run(
    workdir: Path, leecher_count: int, size: int, seed_rate: int, mirror_rate: int, *, quiet: bool
) -> dict[str, Any]:
    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    say(f"generating a {format_bytes(size)} release in {workdir} ...")
    publisher_dir = workdir / "publisher"
    release = await trio.to_thread.run_sync(make_release, publisher_dir, size)
    original = await trio.to_thread.run_sync(_digest_tree, release)
    tracker = TrackerServer(
        host=LOOPBACK,
        port=0,
        interval=5,
        min_interval=1,
        credit_db_path=workdir / "tracker-credit.sqlite",
    )
    states = workdir / "state"
    # The mirror serves the folder that holds the release folder: a multi-file
    # torrent's web seed URL is the base its name and paths are appended to.
    mirror = MirrorServer(publisher_dir, host=LOOPBACK, rate=mirror_rate)
    # The late leecher's client starts first (idle until act 2) so that it
    # encloses, and outlives, the swarm's clients: trio's nurseries must nest.
    async with (
        trio.open_nursery() as nursery,
        Client(host=LOOPBACK, state_dir=states / "late-leecher") as late_client,
    ):
        await nursery.start(tracker.serve)
        await nursery.start(mirror.serve)
        metainfo = await trio.to_thread.run_sync(
            lambda: create_torrent(
                release, version="hybrid", trackers=[tracker.announce_url], webseeds=[mirror.url]
            )
        )
        say(f"tracker {tracker.announce_url}; torrent {metainfo.name}: "
            f"{metainfo.num_pieces} pieces of {format_bytes(metainfo.piece_length)}")
        say(f"mirror {mirror.url} (web seed), upload capped at {format_bytes(mirror_rate)}/s")
        leave = trio.Event()
        async with trio.open_nursery() as swarm:
            # -- act 1: the swarm delivers, the mirror idles --------------------------------
            seeder: Client = await swarm.start(
                _client_until,
                leave,
                {"host": LOOPBACK, "upload_limit": seed_rate, "state_dir": states / "seeder"},
            )
            await seeder.seed(metainfo, publisher_dir)
            say(f"seeder on {LOOPBACK}:{seeder.port}, upload capped at {format_bytes(seed_rate)}/s")
            started = time.monotonic()
            leechers: list[Torrent] = []
            clients = {"seeder": seeder}
            for number in range(leecher_count):
                client: Client = await swarm.start(
                    _client_until,
                    leave,
                    {"host": LOOPBACK, "state_dir": states / f"leecher-{number}"},
                )
                clients[f"leecher {number}"] = client
                leechers.append(await client.add_torrent(metainfo, workdir / f"leecher-{number}"))
            await _wait_for(
                _all_complete(leechers), leechers, say, lambda: _progress_line(leechers)
            )
            elapsed = time.monotonic() - started
            results = []
            for number, torrent in enumerate(leechers):
                status = torrent.status()
                from_seeder = torrent.bytes_by_peer_id.get(seeder.peer_id, 0)
                total = sum(torrent.bytes_by_peer_id.values())
                results.append({
                    "leecher": number,
                    "ok": _error(torrent) is None,
                    "error": _error(torrent),
                    "bytes_from_seeder": from_seeder,
                    "bytes_from_leechers": total - from_seeder,
                    "bytes_from_mirror": status.bytes_from_mirrors,
                    "bytes_uploaded": status.bytes_uploaded,
                    "hash_failures": torrent.hash_failures,
                    "identical": await _is_copy(torrent, original),
                })
            seeder_upload = seeder.torrents[0].status().bytes_uploaded
            mirror_bytes_swarm_act = mirror.bytes_served
            credit = await _credit_act(clients, tracker, metainfo.wire_info_hash)

            # -- act 2: a late leecher, then the swarm goes away ----------------------------
            say(f"fallback: a late leecher starts; at {FALLBACK_AT:.0%} the swarm shuts down")
            # On an uncapped loopback the swarm would hand over the whole release
            # before the cut could land: the late leecher is on a slower line.
            late = await late_client.add_torrent(
                metainfo, workdir / "late-leecher", download_limit=LATE_RATE_FACTOR * seed_rate
            )
            await _wait_for(
                lambda: late.status().fraction >= FALLBACK_AT or late.complete.is_set(),
                [late],
                say,
                lambda: _late_progress_line(late),
                poll=0.01,
            )
            at_cut = late.status()
            say(f"shutting down the seeder and {leecher_count} leechers ...")
            swarm_gone_at = trio.current_time()
            leave.set()
        fallback = await _fallback_act(late, at_cut, swarm_gone_at, original, say)
        fallback["mirror_bytes_served"] = mirror.bytes_served - mirror_bytes_swarm_act
        nursery.cancel_scope.cancel()
    single_source = size * leecher_count / seed_rate
    return {
        "release_bytes": size,
        "leechers": leecher_count,
        "seed_rate": seed_rate,
        "mirror_rate": mirror_rate,
        "seconds": round(elapsed, 3),
        "single_source_seconds": round(single_source, 3),
        "swarm_speedup": round(single_source / elapsed, 2),
        "swarm_mb_per_s": round(size * leecher_count / elapsed / 1e6, 1),
        "seeder_uploaded": seeder_upload,
        "mirror_bytes_swarm_act": mirror_bytes_swarm_act,
        "results": results,
        "credit": credit["ledgers"],
        "tracker_health": credit["tracker_health"],
        "fallback": fallback,
        "verified": all(r["ok"] and r["identical"] for r in results)
        and fallback["ok"]
        and fallback["identical"],
    }


async def _client_until(
    leave: trio.Event,
    options: dict[str, Any],
    *,
    task_status: trio.TaskStatus[Client] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a client until ``leave`` is set.

    Each swarm client lives in its own task so that at the cut they all stop at
    once: a client that keeps credit takes a moment to leave (it trades parting
    receipts with its peers), and one after another the swarm would linger.
    """
    async with Client(**options) as client:
        task_status.started(client)
        await leave.wait()


async def _credit_act(
    clients: dict[str, Client], tracker: TrackerServer, info_hash: bytes
) -> dict[str, Any]:
    """Each client's ledger, then the tracker's view once every client posted its receipts."""
    names = {
        client.credit.public_key: name for name, client in clients.items() if client.credit
    }
    ledgers = []
    for name, client in clients.items():
        if client.credit is None:
            continue
        summary = await client.credit.summary(client.torrents)
        ledgers.append({
            "client": name,
            "identity": client.credit.public_key.hex(),
            "peers": [
                {"peer": names.get(peer.identity, peer.identity.hex()[:16]), **peer.to_json()}
                for peer in summary.peers
            ],
        })
        await client.credit.submit(client.torrents)
    await tracker.refresh_standings()
    try:
        document = await fetch_tracker_health(tracker.announce_url, info_hash)
    except OpenDistroError as exc:
        return {"ledgers": ledgers, "tracker_health": {"error": str(exc)}}
    health = document["torrents"][0] if document["torrents"] else {}
    by_hex = {identity.hex(): name for identity, name in names.items()}
    for entry in health.get("contribution_ranking", []):
        entry["client"] = by_hex.get(entry["identity"])
    return {"ledgers": ledgers, "tracker_health": health}


async def _fallback_act(
    late: Torrent,
    at_cut: TorrentStatus,
    swarm_gone_at: float,
    original: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The late leecher finishes alone; report how the mirror took over."""
    await _wait_for(_all_complete([late]), [late], say, lambda: _late_progress_line(late))
    seconds = trio.current_time() - swarm_gone_at
    status = late.status()
    first_byte = late.mirrors.first_mirror_byte_at if late.mirrors is not None else None
    # Only a first mirror byte after the cut measures the take-over; one before it
    # means the mirror was already helping (the swarm was slow to start).
    latency = first_byte - swarm_gone_at if first_byte is not None else None
    return {
        "fraction_at_cut": round(at_cut.fraction, 3),
        "bytes_from_peers_at_cut": at_cut.bytes_from_peers,
        "bytes_from_mirror_at_cut": at_cut.bytes_from_mirrors,
        "first_mirror_byte_after_seconds": (
            round(latency, 3) if latency is not None and latency >= 0 else None
        ),
        "seconds_after_swarm_left": round(seconds, 3),
        "bytes_from_peers": status.bytes_from_peers,
        "bytes_from_mirror": status.bytes_from_mirrors,
        "bytes_from_mirror_after_swarm_left": status.bytes_from_mirrors - at_cut.bytes_from_mirrors,
        "hash_failures": late.hash_failures,
        "ok": _error(late) is None,
        "error": _error(late),
        "identical": await _is_copy(late, original),
    }


def _format_credit(ledgers: list[dict[str, Any]], health: dict[str, Any]) -> list[str]:
    """Who gave whom how much, from each giver's ledger, then the tracker's view."""
    names = [ledger["client"] for ledger in ledgers]
    given = {
        (ledger["client"], peer["peer"]): (peer["sent"], peer["held"])
        for ledger in ledgers
        for peer in ledger["peers"]
    }
    mib = float(1 << 20)
    lines = [
        "credit ledgers after the swarm act: MiB each giver sent each receiver, "
        "by its own count / proved by the receipts it holds",
        "  " + f"{'giver / receiver':<16}" + "".join(f"{name:>12}" for name in names),
    ]
    for giver in names:
        cells = []
        for receiver in names:
            sent, held = given.get((giver, receiver), (0, 0))
            cells.append("-" if giver == receiver else f"{sent / mib:.1f}/{held / mib:.1f}")
        lines.append("  " + f"{giver:<16}" + "".join(f"{cell:>12}" for cell in cells))
    if "error" in health:
        lines.append(f"tracker health: unavailable ({health['error']})")
        return lines
    lines.append(
        f"tracker health: {health.get('seeders')} seeders, {health.get('leechers')} leechers, "
        f"{health.get('completed')} completed, distributed copies "
        f"~{health.get('distributed_copies_estimate')}"
    )
    ranking = ", ".join(
        f"{entry.get('client') or entry['identity'][:16]} (score "
        f"{format_bytes(entry['score'])})"
        for entry in health.get("contribution_ranking", [])
    )
    lines.append(f"  contribution ranking: {ranking or '-'}")
    return lines


async def _is_copy(torrent: Torrent, original: dict[str, str]) -> bool:
    copy = torrent.final_path
    return copy is not None and await trio.to_thread.run_sync(_digest_tree, copy) == original


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
        f"mirror (web seed, {format_bytes(report['mirror_rate'])}/s) sent "
        f"{format_bytes(report['mirror_bytes_swarm_act'])} while the swarm delivered "
        "(prefer-p2p: mirrors only fill in)",
    ]
    for result in report["results"]:
        lines.append(
            f"  leecher {result['leecher']}: {format_bytes(result['bytes_from_seeder'])} from the "
            f"seeder, {format_bytes(result['bytes_from_leechers'])} from other leechers, "
            f"{format_bytes(result['bytes_from_mirror'])} from the mirror, "
            f"uploaded {format_bytes(result['bytes_uploaded'])}, "
            f"{'bit-identical' if result['identical'] else 'MISMATCH'}"
            + (f", error: {result['error']}" if result["error"] else "")
        )
    lines += _format_credit(report["credit"], report["tracker_health"])
    fallback = report["fallback"]
    latency = fallback["first_mirror_byte_after_seconds"]
    lines += [
        f"fallback: the swarm shut down when a late leecher had "
        f"{fallback['fraction_at_cut'] * 100:.1f}%; "
        + (
            f"its first mirror byte came {latency * 1000:.0f} ms later"
            if latency is not None
            else "the mirror was already sending before that"
            if fallback["bytes_from_mirror_at_cut"]
            else "the mirror sent it nothing after that"
        ),
        f"  late leecher: {format_bytes(fallback['bytes_from_peers'])} from peers, "
        f"{format_bytes(fallback['bytes_from_mirror'])} from the mirror "
        f"({format_bytes(fallback['bytes_from_mirror_after_swarm_left'])} after the swarm left), "
        f"done {fallback['seconds_after_swarm_left']} s after the swarm left, "
        f"{'bit-identical' if fallback['identical'] else 'MISMATCH'}"
        + (f", error: {fallback['error']}" if fallback["error"] else ""),
    ]
    lines.append("verification: " + ("every copy verified" if report["verified"] else "FAILED"))
    return "\n".join(lines)
