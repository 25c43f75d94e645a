"""The ``opendistro`` command: a thin layer over the public API.

Its options and its ``--json`` output are a contract other tools and tests rely
on: every command prints one clear line and exits non-zero on error, and with
``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from . import __version__
from .create import create_torrent
from .errors import (
    ConfigError,
    DownloadError,
    MagnetError,
    MetainfoError,
    OpenDistroError,
    StorageError,
    TrackerError,
    UnsafePathError,
)
from .io.client import Client
from .io.torrent import Torrent, TorrentState, directory_of
from .magnet import MagnetLink
from .metainfo import Metainfo
from .progress import ProgressPrinter
from .tracker.server import TrackerServer
from .wire.mse import EncryptionPolicy

__all__ = ["main"]


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _rate(text: str) -> float:
    """A rate in bytes per second, with an optional K, M or G suffix (powers of 1024)."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale != 1 else text
    try:
        value = float(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate like 500K or 2M, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a rate must be positive")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opendistro", description="Distribute large releases over BitTorrent and mirrors."
    )
    parser.add_argument("--version", action="version", version=f"opendistro {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create", help="make a .torrent for a file or folder")
    create.add_argument("path", type=Path)
    create.add_argument("-o", "--output", type=Path)
    create.add_argument("--tracker", action="append", default=[], metavar="URL")
    create.add_argument("--webseed", action="append", default=[], metavar="URL")
    create.add_argument("--piece-length", type=int)
    create.add_argument("--private", action="store_true")
    create.add_argument("--comment")
    version = create.add_mutually_exclusive_group()
    version.add_argument("--v1", dest="version", action="store_const", const="v1")
    version.add_argument("--v2", dest="version", action="store_const", const="v2")
    version.add_argument("--hybrid", dest="version", action="store_const", const="hybrid")
    create.add_argument("--json", action="store_true")

    info = commands.add_parser("info", help="describe a .torrent file")
    info.add_argument("torrent", type=Path)
    info.add_argument("--json", action="store_true")

    tracker = commands.add_parser("tracker", help="run the bundled tracker")
    tracker.add_argument("--host", default="0.0.0.0")
    tracker.add_argument("--port", type=int, default=6969)
    tracker.add_argument("--db", type=Path)
    tracker.add_argument("--interval", type=int, default=1800)
    tracker.add_argument(
        "--allow-list", type=Path, metavar="FILE", help="serve only these info-hashes (hex)"
    )

    seed = commands.add_parser("seed", help="check and seed data")
    seed.add_argument("torrent", type=Path)
    seed.add_argument("--data", type=Path, required=True)
    _add_peer_options(seed)

    get = commands.add_parser("get", help="download a torrent or magnet link")
    get.add_argument("source", help="a .torrent file or a magnet: URI")
    get.add_argument("-o", "--output", type=Path, default=Path("."))
    get.add_argument("--seed-ratio", type=float)
    get.add_argument("--seed-time", type=float)
    get.add_argument("--sequential", action="store_true", help="fetch pieces in order")
    get.add_argument("--json", action="store_true")
    _add_peer_options(get)

    simulate = commands.add_parser("simulate", help="simulate a swarm with the real swarm logic")
    simulate.add_argument(
        "scenario", nargs="?", default="flash_crowd", help="a built-in name or a .toml file"
    )
    simulate.add_argument("--peers", type=int, help="scale the scenario to this many peers")
    simulate.add_argument("--file-size", type=int, metavar="BYTES", help="scale the release size")
    simulate.add_argument("--list", action="store_true", help="list the built-in scenarios")
    simulate.add_argument("--plot", type=Path, metavar="PNG", help="needs matplotlib")
    simulate.add_argument("--json", action="store_true")

    demo = commands.add_parser("demo", help="run a loopback swarm and report")
    demo.add_argument("--leechers", type=int, default=4)
    demo.add_argument("--size-mib", type=int, default=64)
    demo.add_argument(
        "--seed-rate-mib", type=int, default=8, help="the seeder's upload cap, MiB/s"
    )
    demo.add_argument("--dir", type=Path)
    demo.add_argument("--json", action="store_true")
    return parser


def _add_peer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--peer", action="append", type=_address, default=[], metavar="HOST:PORT")
    parser.add_argument(
        "--encryption",
        choices=[policy.value for policy in EncryptionPolicy],
        default=EncryptionPolicy.PREFER.value,
    )
    parser.add_argument("--upload-limit", type=_rate, metavar="RATE", help="bytes/s, e.g. 2M")
    parser.add_argument("--download-limit", type=_rate, metavar="RATE", help="bytes/s, e.g. 2M")
    parser.add_argument("-v", "--verbose", action="store_true")


def _log_to_stderr(verbose: bool) -> Any:
    if not verbose:
        return None
    return lambda message: print(message, file=sys.stderr)


# -- commands ----------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    metainfo = create_torrent(
        args.path,
        version=args.version or "hybrid",
        piece_length=args.piece_length,
        trackers=args.tracker,
        webseeds=args.webseed,
        private=args.private,
        comment=args.comment,
    )
    output = args.output or Path(f"{metainfo.name}.torrent")
    output.write_bytes(metainfo.to_bytes())
    summary = _describe(metainfo) | {"torrent": str(output)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {output} ({metainfo.version}, {metainfo.num_pieces} pieces)")
        print(f"magnet: {summary['magnet']}")
    return 0


def _describe(metainfo: Metainfo) -> dict[str, Any]:
    return {
        "name": metainfo.name,
        "version": metainfo.version,
        "info_hash_v1": metainfo.info_hash_v1.hex() if metainfo.info_hash_v1 else None,
        "info_hash_v2": metainfo.info_hash_v2.hex() if metainfo.info_hash_v2 else None,
        "piece_length": metainfo.piece_length,
        "pieces": metainfo.num_pieces,
        "total_length": sum(f.length for f in metainfo.data_files()),
        "files": [
            {"path": "/".join(f.path), "length": f.length} for f in metainfo.data_files()
        ],
        "trackers": metainfo.announce_tiers,
        "webseeds": metainfo.url_list,
        "private": metainfo.private,
        "comment": metainfo.comment,
        "created_by": metainfo.created_by,
        "creation_date": metainfo.creation_date,
        "magnet": metainfo.magnet_link().to_uri(),
    }


def _info(args: argparse.Namespace) -> int:
    summary = _describe(Metainfo.from_file(args.torrent))
    if args.json:
        print(json.dumps(summary))
        return 0
    for key in ("name", "version", "info_hash_v1", "info_hash_v2", "piece_length", "pieces"):
        print(f"{key}: {summary[key]}")
    print(f"total: {summary['total_length']} bytes in {len(summary['files'])} file(s)")
    for entry in summary["files"][:20]:
        print(f"  {entry['length']:>14}  {entry['path']}")
    if len(summary["files"]) > 20:
        print(f"  ... and {len(summary['files']) - 20} more")
    for tier in summary["trackers"]:
        print(f"tracker tier: {' '.join(tier)}")
    for url in summary["webseeds"]:
        print(f"webseed: {url}")
    print(f"magnet: {summary['magnet']}")
    return 0


def _read_allow_list(path: Path) -> set[bytes]:
    """Info-hashes from a file: 40 hex digits (v1, or a truncated v2 hash) a line, # comments."""
    hashes = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            value = bytes.fromhex(text)
        except ValueError:
            value = b""
        if len(value) not in (20, 32):
            raise ConfigError(f"{path}:{number}: not a hex info-hash: {text[:80]!r}")
        hashes.add(value[:20])
    return hashes


async def _tracker(args: argparse.Namespace) -> int:
    allow = _read_allow_list(args.allow_list) if args.allow_list else None
    server = TrackerServer(
        host=args.host, port=args.port, db_path=args.db, interval=args.interval, allow_list=allow
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        print(f"tracker listening: {server.announce_url} and {server.udp_url}", flush=True)
    return 0


async def _seed(args: argparse.Namespace) -> int:
    metainfo = Metainfo.from_file(args.torrent)
    data_dir = directory_of(args.data, metainfo.name)
    async with Client(
        host=args.host,
        port=args.port,
        encryption=EncryptionPolicy(args.encryption),
        upload_limit=args.upload_limit,
        download_limit=args.download_limit,
        log=_log_to_stderr(args.verbose),
    ) as client:
        torrent = await client.seed(metainfo, data_dir, peers=args.peer)
        print(f"seeding {metainfo.name} on {args.host}:{client.port}", flush=True)
        while True:
            await trio.sleep(10)
            status = torrent.status()
            print(f"{status.peers} peers, {status.bytes_uploaded} bytes uploaded", flush=True)


async def _get(args: argparse.Namespace) -> int:
    started = time.monotonic()
    source: MagnetLink | Metainfo
    if args.source.startswith("magnet:"):
        source = MagnetLink.parse(args.source)
    else:
        source = Metainfo.from_file(args.source)
    args.output.mkdir(parents=True, exist_ok=True)
    async with Client(
        host=args.host,
        port=args.port,
        encryption=EncryptionPolicy(args.encryption),
        upload_limit=args.upload_limit,
        download_limit=args.download_limit,
        log=_log_to_stderr(args.verbose),
    ) as client:
        if isinstance(source, MagnetLink):
            torrent = await client.add_magnet(source, args.output, peers=args.peer)
        else:
            torrent = await client.add_torrent(
                source, args.output, peers=args.peer, sequential=args.sequential
            )
        printer = None if args.json else ProgressPrinter(sys.stderr)
        await _wait_with_progress(torrent, printer)
        if torrent.error is not None:
            raise DownloadError(torrent.error)
        await _keep_seeding(torrent, args.seed_ratio, args.seed_time)
        status = torrent.status()
    result = {
        "ok": True,
        "seconds": round(time.monotonic() - started, 3),
        "bytes_from_peers": status.bytes_from_peers,
        "bytes_from_mirrors": 0,
        "bytes_reused": 0,
        "bytes_uploaded": status.bytes_uploaded,
        "verified": status.state is TorrentState.SEEDING,
        "hash_failures": status.hash_failures,
        "path": str(torrent.final_path),
        "peers": dict(torrent.bytes_from_peer),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"done: {result['path']} ({status.bytes_from_peers} bytes from peers, "
              f"{result['seconds']} s, verified)")
    return 0


async def _wait_with_progress(torrent: Torrent, printer: ProgressPrinter | None) -> None:
    while not torrent.complete.is_set():
        if printer is not None:
            printer.show(torrent.status())
        with trio.move_on_after(0.5):
            await torrent.complete.wait()
    if printer is not None:
        printer.show(torrent.status())
        printer.finish()


async def _keep_seeding(torrent: Torrent, ratio: float | None, seconds: float | None) -> None:
    if ratio is None and seconds is None:
        return
    deadline = trio.current_time() + seconds if seconds is not None else float("inf")
    total = max(torrent.status().total_bytes, 1)
    while trio.current_time() < deadline:
        if ratio is not None and torrent.status().bytes_uploaded / total >= ratio:
            return
        await trio.sleep(0.5)


_ERROR_LABELS: tuple[tuple[type[BaseException], str], ...] = (
    (MagnetError, "invalid magnet link"),
    (UnsafePathError, "unsafe path"),
    (MetainfoError, "invalid torrent"),
    (TrackerError, "tracker failed"),
    (StorageError, "storage"),
    (DownloadError, "download failed"),
    (ConfigError, "bad setting"),
)


def _describe_error(exc: BaseException) -> str:
    """One line that says what kind of thing went wrong, then the details."""
    for kind, label in _ERROR_LABELS:
        if isinstance(exc, kind):
            return f"{label}: {exc}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "create":
            return _create(args)
        if args.command == "info":
            return _info(args)
        if args.command == "simulate":
            from .sim.command import simulate

            return simulate(args)
        if args.command == "demo":
            from .demo import run_demo

            return trio.run(run_demo, args)
        runner = {"tracker": _tracker, "seed": _seed, "get": _get}[args.command]
        return trio.run(runner, args)
    except KeyboardInterrupt:
        return 130
    except (OpenDistroError, OSError) as exc:
        message = f"opendistro {args.command}: error: {_describe_error(exc)}"
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(exc), "type": type(exc).__name__}))
        print(message, file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
