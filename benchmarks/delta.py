"""Delta updates on real consecutive releases: what an update from version N to N+1 costs.

For every pair of the delta corpus (``../shared/delta-corpus/dev.tsv``:
wheels, sdists, npm tarballs, a .deb) the whole update runs on 127.0.0.1 as a
user would meet it:

1. the publisher puts the new file in its folder, makes the torrent (hybrid,
   the mirror as its web seed) and runs :func:`publish_delta` (timed: the
   publisher's cost) with the previous release's index (made beforehand, in a
   folder of its own, untimed), so that it also writes the pack of new chunks
   and binary patches for contents that changed throughout (``--no-patches``:
   chunks only);
   the package's own mirror server serves that folder and an opendistro
   client seeds it (``--no-pack``: no previous index, no pack);
2. the old file lies in a folder of its own; :func:`update_from_previous`
   fetches the index, chunks the old file, fetches what is missing from the
   mirror and rebuilds the new file into the staging folder;
3. a leecher then downloads the torrent with the seeder as its peer and the
   mirror beside it: it hash-checks every piece and fetches whatever the
   rebuild did not get right. The result is compared byte for byte with the
   new file.

Traffic = index + bytes the rebuild fetched + bytes the leecher got from
peers and mirrors; the ratio is traffic / size of the new file (lower is
better). Beside it the ratios of xdelta3, zsync and rsync from
``baselines.tsv``. Then medians per format and overall, against the seed
requirement (median <= 0.20), the goal (median <= 0.10) and "better than zsync
on every format". ``--explain`` also breaks each update's traffic down (raw
segments, compressed content, whole segments, fallbacks, merged-range gaps),
which costs one more chunking pass over the old file. Chunking speed is
measured on the largest corpus file present.

The mirror is on loopback, so round trips cost nothing; ``--mirror-rtt-ms``
puts a relay in front of it that adds latency (not bandwidth limits), which
shows what the number of requests (also printed) costs in update time.
``--delta-from peer`` has the rebuild take the index, the pack (header, blocks
and patches) and content from the seeder over ``od_delta`` instead of the
mirror (segments fetched whole still come from the mirror); every pair then
also runs over the mirror (unless ``--no-compare``), and the peer-path median
is printed next to the mirror median. Ratios count body bytes, as the
baselines do; each request also costs ~500 bytes of HTTP headers, and
od_delta messages their BitTorrent framing (counted: the peer path counts
bytes as received on the wire).

Everything runs in one process (publisher, mirror, seeder, leecher), so the
peak RSS is an upper bound for the client alone: the publisher's xz recipe
search for the .deb alone takes ~155 MB. The last line is one JSON object.

    python3 benchmarks/delta.py [--quick] [--corpus DIR] [--pairs NAME_FORMAT,...]
                                [--explain] [--piece-kib N] [--mirror-rtt-ms MS]
                                [--delta-from mirror|peer] [--no-compare] [--no-pack]
                                [--no-patches]
"""

from __future__ import annotations

import argparse
import copy
import csv
import filecmp
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chunking import file_pieces, measure  # benchmarks/chunking.py

from opendistro.create import create_torrent
from opendistro.delta.chunker import ChunkerParams
from opendistro.delta.index import DeltaIndex
from opendistro.delta.plan import plan_update
from opendistro.delta.publish import publish_delta
from opendistro.io.client import Client
from opendistro.io.delta_update import (
    DeltaOutcome,
    catalogue_old_files,
    update_from_previous,
)
from opendistro.metainfo import Metainfo
from opendistro.mirrors.server import MirrorServer

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
CORPUS_TOOLS = REPO.parent / "shared" / "delta-corpus"
DEFAULT_CORPUS = Path.home() / ".cache" / "opendistro-delta-corpus"
BASELINES = ("xdelta3", "zsync", "rsync")
SEED_REQUIREMENT = 0.20
GOAL = 0.10
QUICK_PAIRS = 5
HTTP_HEADER_BYTES = 500
"""Request and response headers of one Range request, HttpMirror to MirrorServer (measured
on loopback: ~195 + ~305 bytes); not in the ratio, which counts body bytes as the baselines do."""


class BenchmarkError(Exception):
    """An update failed or its result differs from the new release."""


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclass(frozen=True)
class Pair:
    name: str
    format: str
    old_version: str
    new_version: str
    new_bytes: int

    @property
    def key(self) -> str:
        """How baselines.tsv names the pair, e.g. ``numpy_wheel``."""
        return f"{self.name}_{self.format}"

    def folder(self, corpus: Path, version: str) -> Path:
        """Where fetch.py puts one version (``:`` and ``/`` in versions become ``_``)."""
        return corpus / self.format / self.name / version.replace(":", "_").replace("/", "_")


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def the_file(folder: Path) -> Path | None:
    """The one release file fetch.py left in ``folder``, if it is there."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return files[0] if len(files) == 1 else None


def locate(pair: Pair, corpus: Path) -> tuple[Path, Path] | None:
    old = the_file(pair.folder(corpus, pair.old_version))
    new = the_file(pair.folder(corpus, pair.new_version))
    return (old, new) if old is not None and new is not None else None


def fetch_corpus(manifest: Path, corpus: Path) -> None:
    """Run the corpus's own fetch.py (idempotent; failures are reported, not fatal)."""
    print(f"fetching the corpus into {corpus} ...", flush=True)
    done = subprocess.run(
        [sys.executable, str(manifest.parent / "fetch.py"), str(manifest), str(corpus)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stderr.strip().splitlines():
        print(f"  fetch: {line}", flush=True)


def place(source: Path, folder: Path) -> Path:
    """A copy of ``source`` in ``folder`` (not a link: nothing here may touch the corpus)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copyfile(source, target)
    return target


@dataclass
class Explained:
    """Where an update's bytes go, from the index and the update's plan."""

    figures: dict[str, int]

    @classmethod
    def of(cls, index: DeltaIndex, old: Path, scratch: Path, outcome: DeltaOutcome) -> Explained:
        catalogue, _ = catalogue_old_files([old], index, scratch)
        plan = plan_update(index, catalogue)
        figures = dict.fromkeys(
            (
                "raw_segments", "raw_bytes", "raw_fetched",
                "fallback_segments", "fallback_bytes", "fallback_fetched",
                "compressed_segments", "compressed_bytes", "content_bytes", "content_fetched",
                "whole_segments", "whole_bytes", "planned_bytes", "merge_gap_bytes",
            ),
            0,
        )
        for segment_plan in plan.segments:
            segment = index.files[segment_plan.file].segments[segment_plan.segment]
            if segment_plan.whole:
                figures["whole_segments"] += 1
                figures["whole_bytes"] += segment.length
            elif segment.kind != "raw":
                figures["compressed_segments"] += 1
                figures["compressed_bytes"] += segment.length
                figures["content_bytes"] += segment.content_length
                figures["content_fetched"] += segment_plan.fetched
            elif segment.fallback_reason:
                figures["fallback_segments"] += 1
                figures["fallback_bytes"] += segment.length
                figures["fallback_fetched"] += segment_plan.fetched
            else:
                figures["raw_segments"] += 1
                figures["raw_bytes"] += segment.length
                figures["raw_fetched"] += segment_plan.fetched
        figures["planned_bytes"] = plan.bytes_to_transfer
        figures["merge_gap_bytes"] = outcome.bytes_fetched - plan.bytes_to_transfer
        return cls(figures)

    def text(self, size: int) -> str:
        f = self.figures

        def share(value: int) -> str:
            return f"{value / size:.3f}"

        return (
            f"    raw {f['raw_segments']} seg {f['raw_bytes']:,} B,"
            f" fetched {share(f['raw_fetched'])};"
            f" fallback {f['fallback_segments']} seg {f['fallback_bytes']:,} B,"
            f" fetched {share(f['fallback_fetched'])};\n"
            f"    compressed {f['compressed_segments']} seg {f['compressed_bytes']:,} B"
            f" (content {f['content_bytes']:,} B), content fetched {share(f['content_fetched'])};"
            f" whole {f['whole_segments']} seg {share(f['whole_bytes'])};"
            f" merge gaps {share(f['merge_gap_bytes'])}"
        )


class DelayProxy:
    """A TCP relay to the mirror that holds every byte ``delay`` seconds each way.

    It adds latency only: bytes are stamped when they arrive and sent on when
    their time comes, so throughput is the mirror's own. With it, the update
    time shows what round trips (one per mirror request) cost on a real link.
    """

    def __init__(self, port: int, delay: float) -> None:
        self.target_port = port
        self.delay = delay
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = int(listeners[0].socket.getsockname()[1])
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(HOST, self.target_port)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._one_way, client, server, nursery.cancel_scope)
            nursery.start_soon(self._one_way, server, client, nursery.cancel_scope)

    async def _one_way(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](64)

        async def forward() -> None:
            async for due, data in receive:
                await trio.sleep_until(due)
                await sink.send_all(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                async with send:
                    while data := await source.receive_some(65536):
                        await send.send((trio.current_time() + self.delay, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side closed: close both once the delayed bytes went out


async def run_pair(
    pair: Pair, old_file: Path, new_file: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The whole update of one pair (see the module docstring); returns its figures."""
    publisher, previous, download = work / "publisher", work / "old", work / "download"
    new_path = place(new_file, publisher)
    old_path = place(old_file, previous)
    size = new_path.stat().st_size
    limit = 120 + size / 2e6  # generous: the rebuild and the checks, not the network
    async with trio.open_nursery() as nursery:
        server = MirrorServer(publisher)
        await nursery.start(server.serve)
        mirror_url = server.url
        if args.mirror_rtt_ms:
            delay = DelayProxy(server.port, args.mirror_rtt_ms / 2000)
            await nursery.start(delay.serve)
            mirror_url = delay.url
        piece_length = args.piece_kib << 10 if args.piece_kib else None
        metainfo: Metainfo = await trio.to_thread.run_sync(
            lambda: create_torrent(
                new_path, version="hybrid", webseeds=[mirror_url], piece_length=piece_length
            )
        )
        previous_index = None
        if not args.no_pack:
            old_publisher = work / "old-publisher"
            old_copy = place(old_file, old_publisher)
            old_metainfo = await trio.to_thread.run_sync(
                lambda: create_torrent(old_copy, version="hybrid")
            )
            old_published = await trio.to_thread.run_sync(
                publish_delta, old_metainfo, old_publisher
            )
            previous_index = old_published.index
        started = time.perf_counter()
        published = await trio.to_thread.run_sync(
            lambda: publish_delta(
                metainfo,
                publisher,
                previous_index=previous_index,
                previous_files=[old_file] if previous_index is not None else [],
                patches=not args.no_patches,
            )
        )
        publish_s = time.perf_counter() - started
        async with Client(host=HOST) as seeder:
            seeding = await seeder.seed(metainfo, publisher)
            started = time.perf_counter()
            with trio.fail_after(limit):
                outcome = await update_from_previous(
                    metainfo, download, [old_path], [mirror_url],
                    peers=[(HOST, seeder.port)] if args.delta_from == "peer" else (),
                )
            rebuild_s = time.perf_counter() - started
            async with Client(host=HOST) as leecher:
                torrent = await leecher.add_torrent(
                    metainfo, download, peers=[(HOST, seeder.port)], mirrors=[mirror_url]
                )
                with trio.move_on_after(limit):
                    await torrent.complete.wait()
                complete_s = time.perf_counter() - started - rebuild_s
                if not torrent.complete.is_set():
                    raise BenchmarkError(f"{pair.key}: not complete after {limit:.0f} s")
                status = torrent.status()
            peer_pack_requests = seeding.delta_server.pack_requests_served
        nursery.cancel_scope.cancel()
    if torrent.error is not None:
        raise BenchmarkError(f"{pair.key}: download failed: {torrent.error}")
    final = torrent.final_path
    if final is None or not filecmp.cmp(new_path, final, shallow=False):
        raise BenchmarkError(f"{pair.key}: the result differs from the new release")
    traffic = (
        outcome.index_bytes + outcome.bytes_fetched + status.bytes_from_peers
        + status.bytes_from_mirrors
    )
    segments = outcome.segments
    result: dict[str, Any] = {
        "pair": pair.key,
        "format": pair.format,
        "old_version": pair.old_version,
        "new_version": pair.new_version,
        "new_bytes": size,
        "piece_length": metainfo.piece_length,
        "traffic_bytes": traffic,
        "ratio": round(traffic / size, 4),
        "index_bytes": outcome.index_bytes,
        "rebuild_fetched_bytes": outcome.bytes_fetched,
        "pack_bytes": outcome.pack_bytes,
        "pack_size": (
            0 if published.pack is None
            else published.pack.blocks_size + len(published.pack.encode())
        ),
        "reused_bytes": outcome.bytes_reused,
        "patches_in_pack": 0 if published.pack is None else len(published.pack.patches),
        "patches_applied": outcome.patches_applied,
        "patch_bytes": outcome.patch_bytes,
        "patch_failures": len(outcome.patch_failures),
        "pack_chunks_refetched": outcome.pack_chunks_refetched,
        "delta_from": args.delta_from,
        "peer_pack_requests": peer_pack_requests,
        "leecher_bytes_from_peers": status.bytes_from_peers,
        "leecher_bytes_from_mirrors": status.bytes_from_mirrors,
        "hash_failures": status.hash_failures,
        "mirror_bytes_served": server.bytes_served,
        "mirror_requests": server.requests_served,
        "est_http_header_bytes": server.requests_served * HTTP_HEADER_BYTES,
        "segments": segments,
        "segments_whole": outcome.segments_whole,
        "raw_fallbacks": len(outcome.raw_fallbacks),
        "raw_fallback_reasons": sorted(set(r.split(": ", 1)[-1] for r in outcome.raw_fallbacks)),
        "failures": len(outcome.failures),
        "failure_examples": outcome.failures[:3],
        "rebuilt_share": round((segments - len(outcome.failures)) / segments, 4) if segments else 0,
        "fallback_share": round(len(outcome.raw_fallbacks) / segments, 4) if segments else 0,
        "publish_s": round(publish_s, 3),
        "rebuild_s": round(rebuild_s, 3),
        "complete_s": round(complete_s, 3),
        "update_s": round(rebuild_s + complete_s, 3),
    }
    if args.explain:
        scratch = work / "explain"
        scratch.mkdir()
        explained = await trio.to_thread.run_sync(
            Explained.of, published.index, old_path, scratch, outcome
        )
        result["explain"] = explained.figures
        result["explain_text"] = explained.text(size)
    return result


def baseline_ratio(baselines: dict[str, dict[str, str]], key: str, tool: str) -> float | None:
    value = baselines.get(key, {}).get(f"{tool}_ratio", "NA")
    return None if value in ("", "NA") else float(value)


def ratio_text(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.3f}"


def header() -> str:
    return (
        f"{'pair':<20} {'format':<6} {'new MB':>7} {'od':>6} {'xdelta3':>7} {'zsync':>6}"
        f" {'rsync':>6} {'publish s':>9} {'update s':>8} {'rebuilt':>7} {'fallback':>8}"
        f" {'whole':>5} {'fail':>4} {'requests':>8}"
    )


def row(result: dict[str, Any], baselines: dict[str, dict[str, str]]) -> str:
    key = result["pair"]
    return (
        f"{key:<20} {result['format']:<6} {result['new_bytes'] / 1e6:>7.2f}"
        f" {result['ratio']:>6.3f}"
        f" {ratio_text(baseline_ratio(baselines, key, 'xdelta3')):>7}"
        f" {ratio_text(baseline_ratio(baselines, key, 'zsync')):>6}"
        f" {ratio_text(baseline_ratio(baselines, key, 'rsync')):>6}"
        f" {result['publish_s']:>9.2f} {result['update_s']:>8.2f}"
        f" {result['rebuilt_share']:>7.0%} {result['fallback_share']:>8.0%}"
        f" {result['segments_whole']:>5} {result['failures']:>4} {result['mirror_requests']:>8}"
    )


def traffic_text(result: dict[str, Any]) -> str:
    size = result["new_bytes"]
    swarm = result["leecher_bytes_from_peers"] + result["leecher_bytes_from_mirrors"]
    return (
        f"    traffic {result['traffic_bytes']:,} B = index {result['index_bytes'] / size:.3f}"
        f" + rebuild {result['rebuild_fetched_bytes'] / size:.3f}"
        f" (pack {result['pack_bytes'] / size:.3f},"
        f" {result['patches_applied']} patches {result['patch_bytes'] / size:.3f})"
        f" + swarm {swarm / size:.3f}"
        f" ({result['segments']} segments, {result['raw_fallbacks']} raw fallbacks,"
        f" pieces {result['piece_length'] >> 10} KiB)"
    )


def medians(
    results: list[dict[str, Any]], baselines: dict[str, dict[str, str]]
) -> dict[str, dict[str, float | None]]:
    """Median ratio per format and overall, for opendistro and each baseline."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(result["format"], []).append(result)
    groups["overall"] = results
    table: dict[str, dict[str, float | None]] = {}
    for group, members in groups.items():
        figures: dict[str, float | None] = {
            "pairs": len(members),
            "opendistro": round(statistics.median(r["ratio"] for r in members), 4),
        }
        mirror = [r["mirror_ratio"] for r in members if "mirror_ratio" in r]
        if mirror:
            figures["opendistro_mirror"] = round(statistics.median(mirror), 4)
        for tool in BASELINES:
            values = [baseline_ratio(baselines, r["pair"], tool) for r in members]
            known = [v for v in values if v is not None]
            figures[tool] = round(statistics.median(known), 4) if known else None
        table[group] = figures
    return table


def chunking_speed(path: Path, rounds: int) -> dict[str, Any]:
    """chunk_stream over a real corpus file, as benchmarks/chunking.py measures it."""
    print("chunking speed (od-cdc-1, default parameters, SHA-256 included):", flush=True)
    return measure(
        path.name, path.stat().st_size, lambda: file_pieces(path), ChunkerParams(), rounds,
        search_only=False,
    )


def all_pairs(rows: list[dict[str, str]]) -> list[Pair]:
    return [
        Pair(r["name"], r["format"], r["old_version"], r["new_version"], int(r["new_bytes"]))
        for r in rows
    ]


def selected_pairs(rows: list[dict[str, str]], args: argparse.Namespace) -> list[Pair]:
    pairs = all_pairs(rows)
    if args.pairs:
        wanted = set(args.pairs.split(","))
        unknown = wanted - {p.key for p in pairs}
        if unknown:
            raise SystemExit(f"unknown pairs: {', '.join(sorted(unknown))}")
        pairs = [p for p in pairs if p.key in wanted]
    if args.quick:
        pairs = sorted(pairs, key=lambda p: p.new_bytes)[:QUICK_PAIRS]
    return pairs


def leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


async def run_guarded(
    pair: Pair, old_file: Path, new_file: Path, args: argparse.Namespace,
    skipped: list[dict[str, str]],
) -> dict[str, Any] | None:
    """:func:`run_pair` in a scratch folder; a failed pair is reported and noted in ``skipped``."""
    with tempfile.TemporaryDirectory(prefix="od-delta-bench-") as scratch:
        try:
            return await run_pair(pair, old_file, new_file, Path(scratch), args)
        except* BenchmarkError as failed:
            for failure in leaves(failed):
                print(f"{pair.key}: FAILED: {failure}", flush=True)
                skipped.append({"pair": pair.key, "reason": f"failed: {failure}"})
    return None


async def main(args: argparse.Namespace) -> None:
    manifest = args.manifest
    baselines = {r["pair"]: r for r in read_tsv(manifest.parent / "baselines.tsv")}
    rows = read_tsv(manifest)
    pairs = selected_pairs(rows, args)
    if any(locate(p, args.corpus) is None for p in pairs) and not args.no_fetch:
        fetch_corpus(manifest, args.corpus)
    skipped: list[dict[str, str]] = []
    located: list[tuple[Pair, Path, Path]] = []
    for pair in pairs:
        files = locate(pair, args.corpus)
        if files is None:
            skipped.append({"pair": pair.key, "reason": "not in the corpus (could not be fetched)"})
            print(f"skipped {pair.key}: {pair.old_version} or {pair.new_version} could not be"
                  f" fetched into {args.corpus}", flush=True)
        else:
            located.append((pair, *files))
    print(f"{len(located)} pairs from {args.corpus}; Python {sys.version.split()[0]}", flush=True)
    print(header(), flush=True)
    results: list[dict[str, Any]] = []
    compare = args.delta_from == "peer" and not args.no_compare
    for pair, old_file, new_file in located:
        mirror_result = None
        if compare:
            over_mirror = copy.copy(args)
            over_mirror.delta_from, over_mirror.explain = "mirror", False
            mirror_result = await run_guarded(pair, old_file, new_file, over_mirror, skipped)
        result = await run_guarded(pair, old_file, new_file, args, skipped)
        if result is None:
            continue
        if mirror_result is not None:
            result["mirror_ratio"] = mirror_result["ratio"]
            result["mirror_rebuild_fetched_bytes"] = mirror_result["rebuild_fetched_bytes"]
            print(f"{'':<20} over the mirror: {mirror_result['ratio']:.3f}"
                  f" (peer {result['ratio']:.3f}, {result['peer_pack_requests']} pack"
                  f" requests, {result['patches_applied']} patches)", flush=True)
        result["peak_rss_mb_so_far"] = peak_rss_mb()
        results.append(result)
        print(row(result, baselines), flush=True)
        if args.verbose or args.explain:
            print(traffic_text(result), flush=True)
        if args.explain:
            print(result.pop("explain_text"), flush=True)
    if not results:
        raise SystemExit("no pair could be run")

    table = medians(results, baselines)
    print()
    od = "od peer" if args.delta_from == "peer" else "od"
    mirror_column = compare and any("opendistro_mirror" in f for f in table.values())
    print(f"{'median ratio':<12} {'pairs':>5} {od:>7} "
          + (f"{'od mirror':>9} " if mirror_column else "")
          + " ".join(f"{t:>7}" for t in BASELINES))
    for group, figures in table.items():
        print(
            f"{group:<12} {figures['pairs']:>5} {figures['opendistro']:>7.3f} "
            + (f"{ratio_text(figures.get('opendistro_mirror')):>9} " if mirror_column else "")
            + " ".join(f"{ratio_text(figures[t]):>7}" for t in BASELINES)
        )
    overall = table["overall"]["opendistro"]
    assert overall is not None
    formats = [g for g in table if g != "overall"]
    beats_zsync = {
        g: table[g]["zsync"] is not None and table[g]["opendistro"] < table[g]["zsync"]  # type: ignore[operator]
        for g in formats
    }
    seed_met = overall <= SEED_REQUIREMENT
    goal_met = overall <= GOAL
    every_format = all(beats_zsync.values())
    print(f"seed requirement, median <= {SEED_REQUIREMENT}: {'met' if seed_met else 'NOT met'}"
          f" ({overall:.3f})")
    print(f"goal, median <= {GOAL}: {'met' if goal_met else 'NOT met'} ({overall:.3f})")
    print("better than zsync on every format: "
          + ("yes" if every_format else "NO")
          + " (" + ", ".join(f"{g} {'yes' if ok else 'no'}" for g, ok in beats_zsync.items()) + ")")

    # The largest file at hand, whichever pairs ran: small files time too briefly.
    found = (locate(pair, args.corpus) for pair in all_pairs(rows))
    present = [files[1] for files in found if files is not None]
    largest = max(present, key=lambda p: p.stat().st_size)
    chunking = chunking_speed(largest, 1 if args.quick else 3)
    print(f"peak RSS {peak_rss_mb()} MB")
    print(json.dumps({
        "benchmark": "delta",
        "corpus": str(args.corpus),
        "quick": args.quick,
        "delta_from": args.delta_from,
        "median_peer": overall if args.delta_from == "peer" else None,
        "median_mirror": (
            table["overall"].get("opendistro_mirror") if args.delta_from == "peer" else overall
        ),
        "mirror_rtt_ms": args.mirror_rtt_ms,
        "pairs": results,
        "skipped": skipped,
        "medians": table,
        "seed_requirement": SEED_REQUIREMENT,
        "seed_requirement_met": seed_met,
        "goal": GOAL,
        "goal_met": goal_met,
        "better_than_zsync_by_format": beats_zsync,
        "better_than_zsync_on_every_format": every_format,
        "chunking": chunking,
        "peak_rss_mb": peak_rss_mb(),
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"the {QUICK_PAIRS} smallest pairs")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="where fetch.py puts the corpus (default %(default)s)")
    parser.add_argument("--manifest", type=Path, default=CORPUS_TOOLS / "dev.tsv",
                        help="the pair list; baselines.tsv and fetch.py are beside it")
    parser.add_argument("--pairs", help="only these pairs, e.g. numpy_wheel,lodash_npm")
    parser.add_argument("--no-fetch", action="store_true", help="skip what is not already there")
    parser.add_argument("--explain", action="store_true",
                        help="break each update's traffic down (one more chunking pass)")
    parser.add_argument("--verbose", action="store_true", help="print each update's traffic")
    parser.add_argument("--no-pack", action="store_true",
                        help="publish without the previous release's index (no .odpack)")
    parser.add_argument("--no-patches", action="store_true",
                        help="a pack without binary patches (chunks only)")
    parser.add_argument("--piece-kib", type=int, help="piece length (default: create_torrent's)")
    parser.add_argument("--mirror-rtt-ms", type=float, default=0,
                        help="put the mirror behind a relay adding this round-trip time")
    parser.add_argument("--delta-from", choices=("mirror", "peer"), default="mirror",
                        help="where the rebuild gets the index and content: the mirror, or the"
                        " seeder over od_delta (segments fetched whole still come from the mirror)")
    parser.add_argument("--no-compare", action="store_true",
                        help="with --delta-from peer, skip the run over the mirror beside it")
    trio.run(main, parser.parse_args())
