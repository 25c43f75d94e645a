"""The ``opendistro`` command: a thin layer over the public API.

Its options and its ``--json`` output are a contract other tools and tests rely
on: every command prints one clear line and exits non-zero on error, and with
``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from . import __version__
from .checksums import ChecksumList, verify_checksum_file, verify_file, verify_tree
from .create import create_torrent
from .errors import (
    ConfigError,
    CreditError,
    DeltaIndexError,
    DownloadError,
    IntegrityError,
    MagnetError,
    ManifestError,
    MetainfoError,
    MetalinkError,
    MirrorError,
    OpenDistroError,
    SignatureError,
    StorageError,
    TrackerError,
    UnsafePathError,
)
from .io.client import Client
from .io.credit import default_state_dir, read_credit_summary
from .io.delta_update import DeltaOutcome, update_from_previous
from .io.dht import PUBLIC_BOOTSTRAP_NODES
from .io.health import SwarmSurvey, survey_swarm, tracker_reports
from .io.torrent import Torrent, TorrentState, directory_of
from .limits import Limits
from .magnet import MagnetLink
from .metainfo import Metainfo
from .mirrors.server import MirrorServer
from .progress import ProgressPrinter, format_bytes
from .signing import (
    PublicKeyFile,
    Scheme,
    SigningKey,
    TrustedKey,
    TrustStore,
    VerifiedRelease,
    certify_revocation,
    certify_rotation,
    detached_path,
    embed_signature,
    read_detached,
    sign_release,
    verify_envelope,
    verify_release,
    write_detached,
)
from .swarm.seeding_policy import SeedingPolicy
from .swarm.sources import SourcePolicy
from .tracker.health_client import fetch_tracker_health
from .tracker.server import TrackerServer
from .wire.mse import EncryptionPolicy

__all__ = ["main"]


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


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


#: ``keygen --scheme`` names (short) and the signature schemes they make.
_SCHEME_OPTIONS: dict[str, Scheme] = {
    "ed25519": "ed25519",
    "ecdsa-p256": "ecdsa-p256-sha256",
    "rsa-pss": "rsa-pss-sha256",
}
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _timestamp(text: str) -> int:
    """A moment as unix seconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected unix seconds or a date like 2030-01-01, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


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
    create.add_argument(
        "--no-delta",
        action="store_true",
        help="skip the delta index (NAME.odindex and FILE.odcontent beside the data) that "
        "lets users of the previous version fetch only what changed",
    )
    create.add_argument(
        "--previous-index",
        type=Path,
        metavar="OLD.odindex",
        help="the previous release's delta index: also write NAME.odpack and NAME.odblocks, "
        "the chunks new in this release, compressed, for mirrors to serve",
    )
    create.add_argument(
        "--previous",
        action="append",
        default=[],
        type=Path,
        metavar="OLD_PATH",
        help="the previous release's files: the pack then holds exactly what their users lack",
    )
    create.add_argument("--comment")
    version = create.add_mutually_exclusive_group()
    version.add_argument("--v1", dest="version", action="store_const", const="v1")
    version.add_argument("--v2", dest="version", action="store_const", const="v2")
    version.add_argument("--hybrid", dest="version", action="store_const", const="hybrid")
    create.add_argument(
        "--meta4",
        type=Path,
        metavar="FILE",
        help="also write a Metalink 4 file listing the --webseed URLs as mirrors",
    )
    create.add_argument(
        "--torrent-url", metavar="URL", help="where the .torrent will be served (for --meta4)"
    )
    create.add_argument("--json", action="store_true")

    info = commands.add_parser("info", help="describe a .torrent file")
    info.add_argument("torrent", type=Path)
    info.add_argument("--json", action="store_true")

    delta_index = commands.add_parser("delta-index", help="describe a delta index (.odindex)")
    delta_index.add_argument("index", type=Path)
    delta_index.add_argument("--json", action="store_true")

    tracker = commands.add_parser("tracker", help="run the bundled tracker")
    tracker.add_argument("--host", default="0.0.0.0")
    tracker.add_argument("--port", type=int, default=6969)
    tracker.add_argument("--db", type=Path)
    tracker.add_argument("--interval", type=int, default=1800)
    tracker.add_argument(
        "--persist-interval", type=float, default=60.0, metavar="SECONDS",
        help="save the swarms to --db this often (and on exit)",
    )
    tracker.add_argument(
        "--credit-db", type=Path, metavar="FILE",
        help="keep the network-wide credit ledger here and serve /credit",
    )
    tracker.add_argument(
        "--allow-list", type=Path, metavar="FILE", help="serve only these info-hashes (hex)"
    )
    tracker.add_argument(
        "--max-announces-per-ip", type=_positive_int,
        default=Limits().max_announces_per_ip_per_minute, metavar="N",
        help="announces one IP address may make per minute (default: %(default)s; "
        "loopback is exempt)",
    )

    mirror = commands.add_parser(
        "mirror", help="serve a folder over HTTP as a mirror (a BEP 19 web seed)"
    )
    mirror.add_argument("dir", type=Path, help="the folder that holds the release folders")
    mirror.add_argument("--host", default="127.0.0.1")
    mirror.add_argument("--port", type=int, default=0, help="0 picks a free port")
    mirror.add_argument("--rate", type=_rate, metavar="RATE", help="upload cap, bytes/s, e.g. 8M")

    seed = commands.add_parser("seed", help="check and seed data")
    seed.add_argument("torrent", type=Path)
    seed.add_argument("--data", type=Path, required=True)
    _add_peer_options(seed)
    _add_dht_options(seed)
    _add_credit_options(seed)

    get = commands.add_parser("get", help="download a torrent, magnet link or Metalink")
    get.add_argument("source", help="a .torrent file, a magnet: URI or a .meta4 Metalink file")
    get.add_argument(
        "--sources",
        choices=[policy.value for policy in SourcePolicy],
        default=SourcePolicy.PREFER_P2P.value,
        help="peers and mirrors: mirrors fill in for the swarm (prefer-p2p, the default), "
        "all at once (fastest), or one kind only",
    )
    get.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="an HTTP mirror (web seed base URL), besides the torrent's own; repeatable",
    )
    get.add_argument(
        "--previous",
        action="append",
        default=[],
        type=Path,
        metavar="OLD_PATH",
        help="a previous version (file or folder): fetch only what changed; repeatable",
    )
    get.add_argument(
        "--keyring",
        type=Path,
        metavar="FILE",
        help="OpenPGP keys; a Metalink's files must carry a signature by one of them",
    )
    get.add_argument("-o", "--output", type=Path, default=Path("."))
    get.add_argument(
        "--seed-ratio",
        type=float,
        metavar="R",
        help="after the download, keep seeding until uploaded / downloaded reaches R "
        "(counted against the size if nothing was downloaded), then stop",
    )
    get.add_argument(
        "--seed-time",
        type=float,
        metavar="SECONDS",
        help="after the download, keep seeding for SECONDS, then stop; with --seed-ratio too, "
        "stop at whichever target is reached first (with neither, exit once downloaded)",
    )
    get.add_argument("--sequential", action="store_true", help="fetch pieces in order")
    get.add_argument(
        "--trust",
        type=Path,
        metavar="KEYFILE_OR_STORE",
        help="refuse the release unless a key here signed it (and it is not rolled back)",
    )
    get.add_argument(
        "--signature", type=Path, metavar="FILE", help="a detached signature (.torrent.sig)"
    )
    get.add_argument("--json", action="store_true")
    _add_peer_options(get)
    _add_dht_options(get)
    _add_credit_options(get)

    credit = commands.add_parser(
        "credit", help="show our seeding-credit identity and what peers gave and took"
    )
    credit.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help=f"the state folder to read (default: {default_state_dir()})",
    )
    credit.add_argument("--json", action="store_true")

    health = commands.add_parser(
        "health",
        help="how healthy a swarm is (watch it without downloading) or what a tracker says",
    )
    health.add_argument(
        "target",
        metavar="TORRENT_OR_TRACKER_URL",
        help="a .torrent file or magnet: URI (ask its trackers, then watch the swarm), "
        "or an http(s) tracker URL (show its health document)",
    )
    health.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        metavar="N",
        help="how long to watch the swarm (default 10)",
    )
    health.add_argument("--host", default="0.0.0.0", help="where the observer listens")
    health.add_argument(
        "--peer", action="append", type=_address, default=[], metavar="HOST:PORT",
        help="a peer to look at besides the trackers' ones; repeatable",
    )
    health.add_argument("-v", "--verbose", action="store_true")
    health.add_argument("--json", action="store_true")

    sums = commands.add_parser(
        "check-sums", help="check files against a signed SHA256SUMS/SHA512SUMS list"
    )
    sums.add_argument("sums", type=Path, help="the checksum list (SHA256SUMS, SHA512SUMS, ...)")
    sums.add_argument(
        "files", nargs="*", type=Path, help="files to check (default: every listed file)"
    )
    sums.add_argument(
        "--signature",
        type=Path,
        help="its detached signature (OpenPGP .gpg/.asc/.sign, minisign, signify)",
    )
    sums.add_argument(
        "--key", type=Path, help="the publisher's public key (OpenPGP, minisign or signify)"
    )
    sums.add_argument(
        "--unsigned", action="store_true", help="accept a list nobody signed (integrity only)"
    )
    sums.add_argument("--json", action="store_true")

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
    demo.add_argument(
        "--mirror-rate-mib", type=int, default=8, help="the demo mirror's upload cap, MiB/s"
    )
    demo.add_argument("--dir", type=Path)
    demo.add_argument("--json", action="store_true")
    _add_signing_commands(commands)

    update = commands.add_parser(
        "update", help="bring a folder of packages up to date from a release manifest"
    )
    update.add_argument("manifest", metavar="MANIFEST", help="the manifest: a path or a URL")
    update.add_argument(
        "--dir", type=Path, required=True, metavar="PACKAGES", help="the folder of packages"
    )
    update.add_argument(
        "--mirror", action="append", default=[], metavar="URL",
        help="an HTTP mirror for every package, besides the manifest's; repeatable",
    )
    update.add_argument(
        "--sources",
        choices=[policy.value for policy in SourcePolicy],
        default=SourcePolicy.PREFER_P2P.value,
    )
    update.add_argument("--json", action="store_true")
    _add_peer_options(update)
    return parser


def _add_signing_commands(commands: Any) -> None:
    keygen = commands.add_parser("keygen", help="make a publisher key pair for signing releases")
    keygen.add_argument(
        "--out", type=Path, required=True, metavar="KEYFILE", help="KEYFILE.pub gets the public key"
    )
    keygen.add_argument("--scheme", choices=list(_SCHEME_OPTIONS), default="ed25519")
    keygen.add_argument("--name", metavar="PUBLISHER", help="written into the public key file")
    keygen.add_argument("--not-after", type=_timestamp, metavar="TIME", help="key expiry")
    keygen.add_argument("--passphrase-file", type=Path, help="encrypt the private key")
    keygen.add_argument(
        "--rotate-from", type=Path, metavar="OLD_KEYFILE",
        help="also write KEYFILE.rotation: the old key vouching for the new one",
    )
    keygen.add_argument("--old-passphrase-file", type=Path)
    keygen.add_argument("--json", action="store_true")

    revocation = commands.add_parser(
        "revocation", help="write a signed certificate revoking a key (this one or its successor)"
    )
    revocation.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    revocation.add_argument("--out", type=Path, required=True)
    revocation.add_argument("--target", metavar="KEY_ID", help="hex key id; default: KEYFILE's")
    revocation.add_argument("--reason")
    revocation.add_argument("--passphrase-file", type=Path)
    revocation.add_argument("--json", action="store_true")

    sign = commands.add_parser("sign", help="sign a .torrent as a release")
    sign.add_argument("torrent", type=Path)
    sign.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    sign.add_argument("--version", dest="release_version", required=True, metavar="V")
    sign.add_argument("--name", help="release name; default: the torrent's name")
    sign.add_argument("--created", type=_timestamp, metavar="TIME", help="default: now")
    sign.add_argument("--detached", action="store_true", help="write TORRENT.sig instead")
    sign.add_argument(
        "--delta-index",
        type=Path,
        metavar="FILE",
        help="also vouch for this delta index (NAME.odindex from create)",
    )
    sign.add_argument("-o", "--output", type=Path)
    sign.add_argument("--passphrase-file", type=Path)
    sign.add_argument("--json", action="store_true")

    verify = commands.add_parser("verify", help="check a .torrent's release signature")
    verify.add_argument("torrent", type=Path)
    verify.add_argument("--trust", type=Path, required=True, metavar="KEYFILE_OR_STORE")
    verify.add_argument("--signature", type=Path, metavar="DETACHED")
    verify.add_argument("--json", action="store_true")

    trust = commands.add_parser("trust", help="manage a trust store of publisher keys")
    actions = trust.add_subparsers(dest="trust_command", required=True)
    add = actions.add_parser("add", help="pin a publisher's public key file")
    add.add_argument("key", type=Path, metavar="PUBLIC_KEYFILE")
    add.add_argument("--publisher", help="default: the key file's Publisher")
    add.add_argument("--not-after", type=_timestamp, metavar="TIME")
    listing = actions.add_parser("list", help="show the stored keys")
    revoke = actions.add_parser("revoke", help="stop trusting a key for good")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("key_id", nargs="?", metavar="KEY_ID")
    target.add_argument("--certificate", type=Path, help="a signed revocation certificate")
    revoke.add_argument("--reason")
    rotate = actions.add_parser("rotate", help="apply a signed key rotation certificate")
    rotate.add_argument("certificate", type=Path)
    for action in (add, listing, revoke, rotate):
        action.add_argument("--store", type=Path, required=True, metavar="DB")
        action.add_argument("--json", action="store_true")


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
    defaults = Limits()
    parser.add_argument(
        "--max-peers", type=_positive_int, default=defaults.max_peers_per_torrent, metavar="N",
        help="connections per torrent, dialled and accepted (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-ip", type=_positive_int, default=defaults.max_connections_per_ip,
        metavar="N", help="connections to or from one IP address (default: %(default)s; "
        "loopback is exempt)",
    )
    parser.add_argument(
        "--max-peer-requests", type=_positive_int, default=defaults.max_pending_peer_requests,
        metavar="N", help="block requests one peer may queue with us, advertised as reqq "
        "(default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def _add_credit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where our seeding-credit identity and ledger live "
        f"(default: {default_state_dir()})",
    )
    parser.add_argument(
        "--no-credit",
        action="store_true",
        help="keep no seeding credit: no identity, no ledger, nothing written to the state dir",
    )


def _credit_options(args: argparse.Namespace) -> dict[str, Any]:
    """Client arguments for ``--state-dir``/``--no-credit``.

    Commands that offer them keep credit by default, in the per-user state
    folder; the others (``update``) keep none.
    """
    if not hasattr(args, "no_credit") or args.no_credit:
        return {"state_dir": None, "credit": False}
    return {"state_dir": args.state_dir or default_state_dir(), "credit": True}


def _add_dht_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dht-bootstrap",
        action="append",
        type=_dht_node,
        default=None,
        metavar="HOST:PORT",
        help="join the Mainline DHT through this node (repeatable); "
        "'public' names the well-known public routers",
    )
    parser.add_argument(
        "--dht-port", type=int, metavar="N", help="UDP port of our DHT node (turns the DHT on)"
    )


def _dht_node(text: str) -> list[tuple[str, int]]:
    if text == "public":
        return list(PUBLIC_BOOTSTRAP_NODES)
    return [_address(text)]


def _dht_options(args: argparse.Namespace) -> dict[str, Any]:
    """Client arguments for ``--dht-bootstrap``/``--dht-port``: the DHT stays off without them."""
    groups = args.dht_bootstrap
    if args.dht_port is not None and not 0 <= args.dht_port < 65536:
        raise ConfigError(f"--dht-port must be 0 to 65535, got {args.dht_port}")
    return {
        "dht_bootstrap": None if groups is None else [node for group in groups for node in group],
        "dht_port": args.dht_port,
    }


def _log_to_stderr(verbose: bool) -> Any:
    if not verbose:
        return None
    return lambda message: print(message, file=sys.stderr)


# -- commands ----------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    if args.torrent_url is not None and args.meta4 is None:
        raise ConfigError("--torrent-url is only used with --meta4")
    if args.meta4 is not None and not (args.webseed or args.torrent_url):
        raise ConfigError("--meta4 needs mirrors: give --webseed URLs (or --torrent-url)")
    metainfo = create_torrent(
        args.path,
        version=args.version or "hybrid",
        piece_length=args.piece_length,
        trackers=args.tracker,
        webseeds=args.webseed,
        private=args.private,
        comment=args.comment,
    )
    meta4 = None
    if args.meta4 is not None:
        from .mirrors.metalink import write_metalink

        # Made before anything is written, so a bad mirror URL leaves no half-done output.
        # The data folder is the one create_torrent named the release after.
        meta4 = write_metalink(
            metainfo, args.path.resolve().parent, mirrors=args.webseed, torrent_url=args.torrent_url
        )
    output = args.output or Path(f"{metainfo.name}.torrent")
    output.write_bytes(metainfo.to_bytes())
    summary = _describe(metainfo) | {"torrent": str(output)}
    if meta4 is not None:
        args.meta4.write_bytes(meta4)
        summary["meta4"] = str(args.meta4)
    if not args.no_delta:
        from .delta.publish import publish_delta

        previous_index = None
        if args.previous_index is not None:
            from .delta.index import MAX_INDEX_SIZE, DeltaIndex

            with open(args.previous_index, "rb") as handle:
                previous_index = DeltaIndex.decode(handle.read(MAX_INDEX_SIZE + 1))
        published = publish_delta(
            metainfo,
            args.path.resolve().parent,
            previous_index=previous_index,
            previous_files=args.previous,
        )
        summary["delta_index"] = str(published.index_path)
        if published.pack is not None:
            summary["delta_pack_blocks"] = len(published.pack.blocks)
        summary["delta_content"] = [str(path) for path in published.content_paths]
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {output} ({metainfo.version}, {metainfo.num_pieces} pieces)")
        if args.meta4 is not None:
            print(f"wrote {args.meta4} ({len(args.webseed)} mirrors)")
        if not args.no_delta:
            print(f"wrote {summary['delta_index']} (delta index; serve it beside the release)")
        print(f"magnet: {summary['magnet']}")
    return 0


def _delta_index(args: argparse.Namespace) -> int:
    from .checksums.sums import read_bounded
    from .delta.index import MAX_INDEX_SIZE, DeltaIndex

    index = DeltaIndex.decode(read_bounded(args.index, MAX_INDEX_SIZE, "delta index"))
    files: list[dict[str, Any]] = []
    for indexed in index.files:
        kinds: dict[str, int] = {}
        for segment in indexed.segments:
            kinds[segment.kind] = kinds.get(segment.kind, 0) + 1
        files.append({
            "path": "/".join(indexed.path),
            "length": indexed.length,
            "segments": kinds,
            "content_bytes": sum(segment.content_length for segment in indexed.segments),
            "chunks": sum(len(segment.chunks) for segment in indexed.segments),
            "raw_fallbacks": [s.fallback_reason for s in indexed.segments if s.fallback_reason],
        })
    summary = {
        "name": index.name,
        "info_hash_v1": index.info_hash_v1.hex() if index.info_hash_v1 else None,
        "info_hash_v2": index.info_hash_v2.hex() if index.info_hash_v2 else None,
        "chunker": {
            "algorithm": index.params.algorithm,
            "min_size": index.params.min_size,
            "avg_size": index.params.avg_size,
            "max_size": index.params.max_size,
        },
        "files": files,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"delta index of {index.name}: {len(files)} files, chunks of "
          f"{index.params.min_size}..{index.params.max_size} bytes (average "
          f"{index.params.avg_size}, {index.params.algorithm})")
    for entry in files:
        layout = ", ".join(f"{count} {kind}" for kind, count in sorted(entry["segments"].items()))
        print(f"  {entry['path']}: {entry['length']} bytes, {layout or 'empty'}, "
              f"{entry['content_bytes']} content bytes in {entry['chunks']} chunks")
        for reason in entry["raw_fallbacks"]:
            print(f"    raw fallback: {reason}")
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


def _read_passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    return path.read_bytes().rstrip(b"\r\n") or None


def _report(args: argparse.Namespace, summary: dict[str, Any], *lines: str) -> int:
    if args.json:
        print(json.dumps({"ok": True, **summary}))
    else:
        for line in lines:
            print(line)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    public_path = args.out.with_name(args.out.name + ".pub")
    rotation_path = args.out.with_name(args.out.name + ".rotation")
    for path in (public_path, rotation_path if args.rotate_from else None):
        if path is not None and path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite it")
    old = None
    if args.rotate_from is not None:
        old = SigningKey.load(args.rotate_from, _read_passphrase(args.old_passphrase_file))
    key = SigningKey.generate(_SCHEME_OPTIONS[args.scheme])
    public = PublicKeyFile(key.public, args.name, args.not_after).to_bytes()  # checks the name
    key.save(args.out, _read_passphrase(args.passphrase_file))
    public_path.write_bytes(public)
    if old is not None:
        rotation_path.write_bytes(certify_rotation(old, key.public, not_after=args.not_after))
    summary = {
        "key_id": key.key_id.hex(),
        "scheme": key.scheme,
        "private_key": str(args.out),
        "public_key": str(public_path),
        "publisher": args.name,
        "not_after": args.not_after,
        "rotation": str(rotation_path) if old is not None else None,
        "rotated_from": old.key_id.hex() if old is not None else None,
    }
    lines = [f"wrote {args.out} (private) and {public_path}: {key.scheme} key {key.key_id.hex()}"]
    if old is not None:
        lines.append(f"wrote {rotation_path}: key {old.key_id.hex()} vouches for the new key")
    return _report(args, summary, *lines)


def _revocation(args: argparse.Namespace) -> int:
    key = SigningKey.load(args.key, _read_passphrase(args.passphrase_file))
    target = key.key_id
    if args.target is not None:
        try:
            target = bytes.fromhex(args.target)
        except ValueError:
            raise ConfigError(f"--target is not a hex key id: {args.target!r}") from None
    if args.out.exists():
        raise ConfigError(f"{args.out} exists; refusing to overwrite it")
    args.out.write_bytes(certify_revocation(key, target, reason=args.reason))
    summary = {
        "certificate": str(args.out),
        "revoked_key": target.hex(),
        "key_id": key.key_id.hex(),
    }
    return _report(args, summary, f"wrote {args.out}: revokes key {target.hex()}")


def _sign(args: argparse.Namespace) -> int:
    original = args.torrent.read_bytes()
    metainfo = Metainfo.from_bytes(original)
    key = SigningKey.load(args.key, _read_passphrase(args.passphrase_file))
    delta_index = None
    if args.delta_index is not None:
        from .checksums.sums import read_bounded
        from .delta.index import MAX_INDEX_SIZE, DeltaIndex

        delta_index = read_bounded(args.delta_index, MAX_INDEX_SIZE, "delta index")
        index = DeltaIndex.decode(delta_index)
        if (index.info_hash_v1, index.info_hash_v2) != (
            metainfo.info_hash_v1,
            metainfo.info_hash_v2,
        ):
            raise ConfigError(f"{args.delta_index} is the delta index of another release")
    envelope = sign_release(
        metainfo,
        key,
        version=args.release_version,
        name=args.name,
        created=args.created,
        delta_index=delta_index,
    )
    if args.detached:
        output = args.output or detached_path(args.torrent)
        write_detached(output, envelope)
    else:
        output = args.output or args.torrent
        partial = output.with_name(output.name + ".partial")
        partial.write_bytes(embed_signature(original, envelope))
        os.replace(partial, output)
    summary = {
        "torrent": str(args.torrent),
        "output": str(output),
        "detached": args.detached,
        "key_id": key.key_id.hex(),
        "scheme": key.scheme,
        "name": args.name or metainfo.name,
        "version": args.release_version,
        "info_hash_v1": metainfo.info_hash_v1.hex() if metainfo.info_hash_v1 else None,
        "info_hash_v2": metainfo.info_hash_v2.hex() if metainfo.info_hash_v2 else None,
    }
    how = "detached signature" if args.detached else "signed torrent"
    line = f"wrote {how} {output}: {summary['name']} {args.release_version}, key {key.key_id.hex()}"
    return _report(args, summary, line)


def _open_trust(path: Path) -> TrustStore:
    """``--trust``: a trust store file, or a public key file pinned for this run only."""
    if not path.is_file():
        raise ConfigError(f"no trust store or public key file at {path}")
    with path.open("rb") as handle:
        magic = handle.read(len(_SQLITE_MAGIC))
    if magic == _SQLITE_MAGIC:
        return TrustStore(path)
    return TrustStore.pinned(PublicKeyFile.load(path))


def _verify(args: argparse.Namespace) -> int:
    metainfo = Metainfo.from_file(args.torrent)
    detached = read_detached(args.signature) if args.signature else None
    with _open_trust(args.trust) as trust:
        verified = verify_release(metainfo, trust, detached)
    created = datetime.fromtimestamp(verified.created, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return _report(
        args,
        verified.to_json(),
        f"verified: {verified.name} {verified.version} (created {created}) signed by"
        f" {verified.publisher!r} with {verified.scheme} key {verified.key_id.hex()}",
    )


def _check_sums(args: argparse.Namespace) -> int:
    """Authenticate a distribution's checksum list, then check files against it.

    An unsigned list proves only that the files match the list; that is allowed
    only when asked for by name (``--unsigned``).
    """
    if args.key is None and not args.unsigned:
        raise ConfigError("give --key to check the list's signature, or --unsigned")
    if args.key is not None:
        checksums = verify_checksum_file(args.sums, args.signature, args.key)
    else:
        if args.signature is not None:
            raise ConfigError("--signature needs --key")
        checksums = ChecksumList.load(args.sums)
    if args.files:
        checked = [str(path) for path in args.files]
        for path in args.files:
            verify_file(path, checksums)
    else:
        checked = list(verify_tree(args.sums.parent, checksums))
    how = "signed list" if args.key is not None else "UNSIGNED list"
    return _report(
        args,
        {"checked": checked, "signed": args.key is not None},
        *(f"OK {name}" for name in checked),
        f"{len(checked)} file(s) match the {how} {args.sums.name}",
    )


def _describe_key(key: TrustedKey) -> str:
    notes = [key.scheme, repr(key.publisher)]
    if key.not_after is not None:
        notes.append(f"not after {key.not_after}")
    if key.predecessor is not None:
        notes.append(f"rotated from {key.predecessor.hex()}")
    if key.revoked_at is not None:
        notes.append(f"REVOKED at {key.revoked_at}")
    return f"{key.key_id.hex()}  {'  '.join(notes)}"


def _trust(args: argparse.Namespace) -> int:
    if args.trust_command != "add" and not args.store.is_file():
        raise ConfigError(f"no trust store at {args.store}")
    with TrustStore(args.store) as store:
        if args.trust_command == "add":
            key_file = PublicKeyFile.load(args.key)
            key = store.add_key(
                key_file.key,
                publisher=args.publisher or key_file.publisher or key_file.key.key_id.hex(),
                not_after=args.not_after if args.not_after is not None else key_file.not_after,
            )
            return _report(args, key.to_json(), f"trusting {_describe_key(key)}")
        if args.trust_command == "list":
            keys = store.keys()
            return _report(
                args, {"keys": [key.to_json() for key in keys]}, *map(_describe_key, keys)
            )
        if args.trust_command == "rotate":
            key = store.apply_rotation(args.certificate.read_bytes())
            return _report(args, key.to_json(), f"trusting {_describe_key(key)}")
        if args.certificate is not None:
            key = store.apply_revocation(args.certificate.read_bytes())
        else:
            try:
                key_id = bytes.fromhex(args.key_id)
            except ValueError:
                raise ConfigError(f"not a hex key id: {args.key_id!r}") from None
            key = store.revoke(key_id, reason=args.reason)
        return _report(args, key.to_json(), f"revoked {_describe_key(key)}")


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


def _credit(args: argparse.Namespace) -> int:
    """``credit``: our identity and the ledger's per-peer totals; reads, never writes."""
    summary = read_credit_summary(args.state_dir or default_state_dir())
    if args.json:
        print(json.dumps(summary.to_json()))
        return 0
    if summary.identity is None:
        print(f"no credit identity in {summary.state_dir} yet (get or seed makes one)")
        return 0
    view = summary.to_json()
    print(f"identity {view['identity']} ({summary.state_dir})")
    print(f"{len(summary.peers)} peers: received {view['received']} bytes, sent {view['sent']}, "
          f"receipts held for {view['held']} ({summary.unsubmitted} not yet at a tracker)")
    for peer in summary.peers:
        print(f"  {peer.identity.hex()}  received {peer.received}  sent {peer.sent}  "
              f"held {peer.held}  credit {peer.credit}  ({peer.torrents} torrents)")
    return 0


async def _health(args: argparse.Namespace) -> int:
    """``health``: a tracker's health document, or a torrent's trackers and swarm."""
    target: str = args.target
    if target.lower().startswith(("http://", "https://", "udp://")):
        document = await fetch_tracker_health(target)
        if args.json:
            print(json.dumps({"ok": True, "url": target, **document}))
        else:
            print(_format_tracker_health(target, document))
        return 0
    if not args.seconds > 0:
        raise ConfigError("--seconds must be positive")
    source: MagnetLink | Metainfo
    if target.startswith("magnet:"):
        source = MagnetLink.parse(target)
        trackers = list(source.trackers)
        name = source.display_name or source.wire_info_hash.hex()
    else:
        source = Metainfo.from_file(target)
        trackers = [url for tier in source.announce_tiers for url in tier]
        name = source.name
    info_hash = source.wire_info_hash
    # The trackers first: once we announce, they would count us among the leechers.
    reports = await tracker_reports(trackers, info_hash)
    with tempfile.TemporaryDirectory(prefix="opendistro-health-") as scratch:
        async with Client(host=args.host, credit=False, log=_log_to_stderr(args.verbose)) as client:
            survey = await survey_swarm(
                client, source, scratch, seconds=args.seconds, peers=args.peer
            )
    result = {
        "ok": True,
        "name": name,
        "info_hash": info_hash.hex(),
        "trackers": reports,
        "swarm": survey.to_json(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(_format_torrent_health(name, info_hash, reports, survey))
    return 0


def _seconds_text(value: float | None, none: str = "no end in sight") -> str:
    return none if value is None else f"{value:g} s"


def _format_tracker_health(url: str, document: dict[str, Any]) -> str:
    tracker = document["tracker"]
    lines = [
        f"tracker {url}: {tracker.get('torrents')} torrents, {tracker.get('seeders')} seeders, "
        f"{tracker.get('leechers')} leechers, {tracker.get('completed')} completed"
    ]
    for torrent in document["torrents"]:
        lines.append("  " + _describe_tracked(torrent))
    return "\n".join(lines)


def _describe_tracked(torrent: dict[str, Any]) -> str:
    """One line for a torrent entry of a tracker's health document."""
    ranking = torrent.get("contribution_ranking") or []
    top = ", ".join(
        f"{entry['identity'][:16]} (score {entry['score']}, seeded {entry['seeding_seconds']} s)"
        for entry in ranking[:3]
    )
    death = torrent.get("time_to_death_if_seeders_leave")
    return (
        f"{torrent.get('info_hash')}: {torrent.get('seeders')} seeders, "
        f"{torrent.get('leechers')} leechers, {torrent.get('completed')} completed, "
        f"distributed copies ~{torrent.get('distributed_copies_estimate')}, "
        f"time to death if seeders leave: {_seconds_text(death)}"
        + (f"; top contributors: {top}" if top else "")
    )


def _format_torrent_health(
    name: str, info_hash: bytes, reports: list[dict[str, Any]], survey: SwarmSurvey
) -> str:
    lines = [f"{name} (info-hash {info_hash.hex()})"]
    for report in reports:
        if report.get("source") == "health":
            entry = report.get("torrent")
            text = _describe_tracked(entry) if entry else "does not track this torrent"
        elif report.get("source") == "scrape":
            text = (f"{report['seeders']} seeders, {report['leechers']} leechers, "
                    f"{report['completed']} completed (scrape)")
        else:
            text = f"no answer: {report.get('error')}"
        lines.append(f"tracker {report['url']}: {text}")
    health = survey.health
    if health is None:
        lines.append(f"swarm: watched {survey.seconds:g} s, {survey.peers_seen} peers; "
                     "no peer sent the torrent's metadata")
        return "\n".join(lines)
    lines.append(
        f"swarm (watched {survey.seconds:g} s, {survey.peers_seen} peers): "
        f"{health.seeders} seeders, {health.leechers} leechers, "
        f"distributed copies {health.distributed_copies:.3f}, rarest piece held by "
        f"{health.rarest_availability} ({health.rarest_pieces} pieces), "
        f"{health.missing_pieces} pieces missing, {health.seed_only_pieces} only on seeders"
    )
    lines.append(
        f"time to death if seeders leave: {_seconds_text(health.time_to_death)}; "
        "time to independence: "
        + _seconds_text(health.time_to_independence, "unknown (no leecher is progressing)")
    )
    for peer in health.peers:
        who = f", identity {peer.identity.hex()[:16]}" if peer.identity else ""
        lines.append(
            f"  {peer.key}: {peer.completion * 100:.1f}%{' (seed)' if peer.seed else ''}, "
            f"sends us {format_bytes(peer.download_rate)}/s{who}"
        )
    if health.ranking:
        lines.append("contribution ranking: " + ", ".join(health.ranking))
    return "\n".join(lines)


async def _tracker(args: argparse.Namespace) -> int:
    allow = _read_allow_list(args.allow_list) if args.allow_list else None
    if args.persist_interval <= 0:
        raise ConfigError("--persist-interval must be positive")
    server = TrackerServer(
        host=args.host,
        port=args.port,
        db_path=args.db,
        interval=args.interval,
        allow_list=allow,
        persist_interval=args.persist_interval,
        credit_db_path=args.credit_db,
        limits=Limits(max_announces_per_ip_per_minute=args.max_announces_per_ip),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        print(f"tracker listening: {server.announce_url} and {server.udp_url}", flush=True)
        # systemd and docker stop with SIGTERM: leave the way Ctrl+C does, saving the swarms.
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0


async def _mirror(args: argparse.Namespace) -> int:
    server = MirrorServer(args.dir, host=args.host, port=args.port, rate=args.rate)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        print(f"mirror serving {server.root} at {server.url}", flush=True)
    return 0


async def _seed(args: argparse.Namespace) -> int:
    metainfo = Metainfo.from_file(args.torrent)
    data_dir = directory_of(args.data, metainfo.name)
    async with _client(args) as client:
        torrent = await client.seed(metainfo, data_dir, peers=args.peer)
        print(f"seeding {metainfo.name} on {args.host}:{client.port}", flush=True)
        if client.credit is not None:
            print(f"credit identity {client.credit.public_key.hex()}", flush=True)
        while True:
            await trio.sleep(10)
            status = torrent.status()
            print(f"{status.peers} peers, {status.bytes_uploaded} bytes uploaded", flush=True)


def _check_signature(args: argparse.Namespace, source: MagnetLink | Metainfo) -> VerifiedRelease:
    """``get --trust``: the release must be signed by a trusted key before a byte is fetched.

    A magnet link carries no signature, so it needs ``--signature``; its
    info-hashes are all the statement has to match.
    """
    detached = read_detached(args.signature) if args.signature else None
    with _open_trust(args.trust) as trust:
        if isinstance(source, Metainfo):
            return verify_release(source, trust, detached)
        if detached is None:
            raise SignatureError("missing: a magnet link carries no signature; give --signature")
        return verify_envelope(
            detached,
            trust,
            info_hash_v1=source.info_hash_v1,
            info_hash_v2=source.info_hash_v2,
        )


def _client(args: argparse.Namespace) -> Client:
    return Client(
        host=args.host,
        port=args.port,
        encryption=EncryptionPolicy(args.encryption),
        upload_limit=args.upload_limit,
        download_limit=args.download_limit,
        limits=Limits(
            max_peers_per_torrent=args.max_peers,
            max_connections_per_ip=args.max_connections_per_ip,
            max_pending_peer_requests=args.max_peer_requests,
        ),
        log=_log_to_stderr(args.verbose),
        **(_dht_options(args) if hasattr(args, "dht_port") else {}),
        **_credit_options(args),
    )


def _is_metalink(source: str) -> bool:
    return source.lower().endswith((".meta4", ".metalink"))


async def _get(args: argparse.Namespace) -> int:
    if args.signature is not None and args.trust is None:
        raise ConfigError("--signature needs --trust to say whose signatures count")
    if _is_metalink(args.source):
        return await _get_metalink(args)
    if args.keyring is not None:
        raise ConfigError("--keyring checks a Metalink's signatures; the source is no Metalink")
    started = time.monotonic()
    try:
        seeding = SeedingPolicy(ratio_target=args.seed_ratio, time_target=args.seed_time)
    except ConfigError as exc:
        raise ConfigError(f"--seed-ratio/--seed-time: {exc}") from None
    source: MagnetLink | Metainfo
    if args.source.startswith("magnet:"):
        source = MagnetLink.parse(args.source)
    else:
        source = Metainfo.from_file(args.source)
    signed = _check_signature(args, source) if args.trust is not None else None
    args.output.mkdir(parents=True, exist_ok=True)
    policy = SourcePolicy(args.sources)
    delta = None
    if args.previous:
        if not isinstance(source, Metainfo):
            raise ConfigError("--previous needs a .torrent (a magnet link has no mirrors yet)")
        delta = await _delta_update(
            args, source, signed.delta_index_sha256 if signed is not None else None
        )
    async with _client(args) as client:
        if isinstance(source, MagnetLink):
            torrent = await client.add_magnet(
                source, args.output, peers=args.peer, sources=policy, mirrors=args.mirror
            )
        else:
            torrent = await client.add_torrent(
                source,
                args.output,
                peers=args.peer,
                sequential=args.sequential,
                sources=policy,
                mirrors=args.mirror,
                # Having updated with it, we serve the index on to others doing the same.
                delta_index=(
                    delta.index.encode()
                    if isinstance(delta, DeltaOutcome) and delta.index is not None
                    else None
                ),
            )
        printer = None if args.json else ProgressPrinter(sys.stderr)
        await _wait_with_progress(torrent, printer)
        if torrent.error is not None:
            raise DownloadError(torrent.error)
        await _keep_seeding(torrent, seeding)
        status = torrent.status()
        credit = client.credit
    result = {
        "ok": True,
        "seconds": round(time.monotonic() - started, 3),
        "bytes_from_peers": status.bytes_from_peers,
        "bytes_from_mirrors": status.bytes_from_mirrors + _delta_traffic(delta),
        "bytes_reused": delta.bytes_reused if isinstance(delta, DeltaOutcome) else 0,
        "bytes_uploaded": status.bytes_uploaded,
        "verified": status.state is TorrentState.SEEDING,
        "hash_failures": status.hash_failures,
        "path": str(torrent.final_path),
        "peers": dict(torrent.bytes_from_peer),
        "signed": signed.to_json() if signed is not None else None,
        "delta": _describe_delta(delta),
        "credit_identity": credit.public_key.hex() if credit is not None else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        if isinstance(delta, DeltaOutcome):
            print(f"delta: reused {delta.bytes_reused} bytes of the previous version, fetched "
                  f"{delta.bytes_fetched + delta.index_bytes} (index included)")
        elif delta is not None:
            print(f"delta: not used ({delta}); downloaded in full")
        print(f"done: {result['path']} ({status.bytes_from_peers} bytes from peers, "
              f"{status.bytes_from_mirrors} from mirrors, {result['seconds']} s, verified)")
    return 0


async def _delta_update(
    args: argparse.Namespace, metainfo: Metainfo, index_sha256: bytes | None
) -> DeltaOutcome | str:
    """Rebuild what ``--previous`` already holds; a failure only means a full download.

    With ``--trust``, a signature that names the delta index pins it.
    """
    mirrors = list(dict.fromkeys([*args.mirror, *metainfo.url_list]))
    try:
        return await update_from_previous(
            metainfo, args.output, args.previous, mirrors, peers=args.peer,
            index_sha256=index_sha256,
        )
    except OpenDistroError as exc:
        return str(exc)


def _delta_traffic(delta: DeltaOutcome | str | None) -> int:
    if not isinstance(delta, DeltaOutcome):
        return 0
    return delta.bytes_fetched + delta.index_bytes


def _describe_delta(delta: DeltaOutcome | str | None) -> dict[str, Any] | None:
    if delta is None:
        return None
    if isinstance(delta, str):
        return {"used": False, "error": delta}
    return {
        "used": True,
        "index_bytes": delta.index_bytes,
        "bytes_fetched": delta.bytes_fetched,
        "bytes_reused": delta.bytes_reused,
        "segments": delta.segments,
        "segments_fetched_whole": delta.segments_whole,
        "raw_fallbacks": delta.raw_fallbacks,
        "failures": delta.failures,
    }


async def _update(args: argparse.Namespace) -> int:
    """``update MANIFEST --dir PACKAGES``: every package to its newest release, deltas first."""
    from .io.package_update import load_manifest, update_packages

    manifest = await load_manifest(args.manifest)
    report = await update_packages(
        manifest,
        args.manifest,
        args.dir,
        mirrors=args.mirror,
        peers=args.peer,
        sources=SourcePolicy(args.sources),
        client=lambda: _client(args),
    )
    if args.json:
        print(json.dumps({"ok": True, **report.to_json()}))
        return 0
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for result in report.updated:
        how = result.method + (f" ({result.reason})" if result.reason else "")
        print(f"{result.name}: {result.old_version or '-'} -> {result.new_version}, {how}: "
              f"{result.bytes_transferred} bytes transferred, {result.bytes_saved} saved "
              f"of {result.full_bytes}")
    for name, version in report.current.items():
        print(f"{name}: {version}, up to date")
    share = report.bytes_transferred / report.full_bytes if report.full_bytes else 0.0
    print(f"total: {len(report.updated)} updated, {report.bytes_transferred} of "
          f"{report.full_bytes} bytes transferred ({share:.0%}), {report.bytes_saved} saved")
    return 0


async def _get_metalink(args: argparse.Namespace) -> int:
    """``get FILE.meta4``: its torrent (metaurl) and mirrors, or its piece hashes and mirrors."""
    from .checksums.openpgp import Keyring
    from .checksums.sums import read_bounded
    from .io.metalink_download import download_metalink, fetch_metaurl_torrent
    from .mirrors.metalink import MAX_METALINK_SIZE, parse_metalink

    started = time.monotonic()
    if args.sequential:
        raise ConfigError("--sequential is for torrents; a Metalink's files come whole")
    metalink = parse_metalink(read_bounded(args.source, MAX_METALINK_SIZE, "Metalink"))
    keyring = Keyring.load(args.keyring) if args.keyring is not None else None
    torrent = await fetch_metaurl_torrent(metalink)
    if args.trust is not None:
        if torrent is None:
            raise SignatureError("missing: this Metalink names no torrent to carry a signature")
        signed: VerifiedRelease | None = _check_signature(args, torrent)
    else:
        signed = None
    args.output.mkdir(parents=True, exist_ok=True)
    printer = None if args.json else ProgressPrinter(sys.stderr)
    outcome = await download_metalink(
        lambda: _client(args),
        metalink,
        args.output,
        torrent=torrent,
        sources=SourcePolicy(args.sources),
        peers=args.peer,
        keyring=keyring,
        watch=lambda torrent: _wait_with_progress(torrent, printer),
    )
    result = {
        "ok": True,
        "seconds": round(time.monotonic() - started, 3),
        "bytes_from_peers": outcome.bytes_from_peers,
        "bytes_from_mirrors": outcome.bytes_from_mirrors,
        "bytes_reused": 0,
        "verified": True,
        "paths": [str(path) for path in outcome.paths],
        "whole_file_hashes": outcome.whole_file_hashes,
        "signers": outcome.signers,
        "torrent": torrent is not None,
        "signed": signed.to_json() if signed is not None else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        names = ", ".join(str(path) for path in outcome.paths)
        print(f"done: {names} ({outcome.bytes_from_peers} bytes from peers, "
              f"{outcome.bytes_from_mirrors} from mirrors, {result['seconds']} s, verified)")
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


SEEDING_CHECK_INTERVAL = 0.5
"""Seconds between checks of ``get --seed-ratio/--seed-time`` while seeding."""


async def _keep_seeding(torrent: Torrent, policy: SeedingPolicy) -> None:
    """Seed a complete torrent until ``policy`` says stop (at once if it sets no target).

    The share ratio counts what came from mirrors as downloaded too: it is
    data we took from the distribution network and give back to the swarm.
    """
    if policy.seeds_forever:
        return
    completed = trio.current_time()
    while True:
        status = torrent.status()
        if policy.should_stop(
            uploaded=status.bytes_uploaded,
            downloaded=status.bytes_from_peers + status.bytes_from_mirrors,
            total_length=status.total_bytes,
            seeding_for=trio.current_time() - completed,
        ):
            return
        await trio.sleep(SEEDING_CHECK_INTERVAL)


_ERROR_LABELS: tuple[tuple[type[BaseException], str], ...] = (
    (MagnetError, "invalid magnet link"),
    (MetalinkError, "invalid Metalink"),
    (DeltaIndexError, "invalid delta index"),
    (ManifestError, "invalid release manifest"),
    (MirrorError, "mirror failed"),
    (UnsafePathError, "unsafe path"),
    (MetainfoError, "invalid torrent"),
    (TrackerError, "tracker failed"),
    (StorageError, "storage"),
    (DownloadError, "download failed"),
    (ConfigError, "bad setting"),
    (SignatureError, "signature refused"),
    (CreditError, "credit"),
    (IntegrityError, "integrity check failed"),
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
        if args.command == "delta-index":
            return _delta_index(args)
        signing = {
            "keygen": _keygen,
            "revocation": _revocation,
            "sign": _sign,
            "verify": _verify,
            "trust": _trust,
            "check-sums": _check_sums,
            "credit": _credit,
        }
        if args.command in signing:
            return signing[args.command](args)
        if args.command == "simulate":
            from .sim.command import simulate

            return simulate(args)
        if args.command == "demo":
            from .demo import run_demo

            return trio.run(run_demo, args)
        runner = {"tracker": _tracker, "mirror": _mirror, "seed": _seed, "get": _get,
                  "update": _update, "health": _health}[
            args.command
        ]
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
