"""Real third-party clients (libtorrent, aria2, rtorrent) announcing to our TrackerServer.

Everything is bound to 127.0.0.1. The libtorrent peers run as subprocesses of
the shared ``lt_peer.py`` helper so that their blocking sessions do not stall
the trio loop that runs our tracker. The downloader is never told where the
seeder is: it can only find it through our tracker.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro import bencode
from opendistro.tracker.protocol import AnnounceEvent, AnnounceRequest
from opendistro.tracker.server import TrackerServer

pytestmark = pytest.mark.interop

lt = pytest.importorskip("libtorrent")

LT_PEER = Path(__file__).resolve().parents[3] / "shared" / "interop" / "lt_peer.py"
PAYLOAD_SIZE = 4 * 1024 * 1024


def make_torrent(folder: Path, announce_url: str) -> tuple[Path, Path, bytes]:
    """A v1 torrent of random data announcing to ``announce_url``: (.torrent, seed dir, hash)."""
    seed_dir = folder / "seed"
    seed_dir.mkdir()
    payload = seed_dir / "payload.bin"
    payload.write_bytes(os.urandom(PAYLOAD_SIZE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        files = lt.file_storage()
        lt.add_files(files, str(payload))
        creator = lt.create_torrent(files, 256 * 1024, flags=lt.create_torrent.v1_only)
    creator.add_tracker(announce_url)
    lt.set_piece_hashes(creator, str(seed_dir))
    blob = lt.bencode(creator.generate())
    span = bencode.dict_value_span(blob, b"info")
    assert span is not None
    torrent = folder / "payload.torrent"
    torrent.write_bytes(blob)
    return torrent, seed_dir, hashlib.sha1(blob[span[0] : span[1]]).digest()


class AnnounceLog:
    """Every announce our tracker accepted, in order, via the server's ``on_announce`` hook."""

    def __init__(self) -> None:
        self.entries: list[AnnounceRequest] = []

    def __call__(self, request: AnnounceRequest, ip: str) -> None:
        assert ip == "127.0.0.1"
        self.entries.append(request)

    def peers(self, info_hash: bytes) -> dict[bytes, list[AnnounceRequest]]:
        result: dict[bytes, list[AnnounceRequest]] = {}
        for entry in self.entries:
            if entry.info_hash == info_hash:
                result.setdefault(entry.peer_id, []).append(entry)
        return result

    def has_seeder(self, info_hash: bytes) -> bool:
        return any(e.info_hash == info_hash and e.left == 0 for e in self.entries)


@asynccontextmanager
async def tracker(log: AnnounceLog) -> AsyncIterator[TrackerServer]:
    async with trio.open_nursery() as nursery:
        server = TrackerServer(interval=5, min_interval=1, on_announce=log)
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def wait_for(condition: Any, seconds: float) -> None:
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.05)


@asynccontextmanager
async def background(command: list[str], log: Path) -> AsyncIterator[trio.Process]:
    """Run ``command`` for the duration of the block, output to ``log``; stop it afterwards."""
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(10) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    process.kill()
                    await process.wait()


def lt_peer(torrent: Path, save: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(LT_PEER),
        "--torrent",
        str(torrent),
        "--save",
        str(save),
        "--port",
        "0",
        *extra,
    ]


@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_libtorrent_peers_find_each_other_through_our_tracker(
    tmp_path: Path, transport: str
) -> None:
    if not LT_PEER.exists():
        pytest.skip("shared/interop/lt_peer.py not found")
    log = AnnounceLog()
    async with tracker(log) as server:
        url = server.announce_url if transport == "http" else server.udp_url
        torrent, seed_dir, info_hash = make_torrent(tmp_path, url)
        download_dir = tmp_path / "download"
        download_dir.mkdir()
        seeder = lt_peer(torrent, seed_dir, "--seed", "--timeout", "120")
        async with background(seeder, tmp_path / "seeder.log"):
            await wait_for(lambda: log.has_seeder(info_hash), 30)
            result = await trio.run_process(
                lt_peer(torrent, download_dir, "--timeout", "60"),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        completed = server.registry.scrape([info_hash])[info_hash].downloaded
    summary = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert summary["done"] is True
    assert (download_dir / "payload.bin").read_bytes() == (seed_dir / "payload.bin").read_bytes()
    peers = log.peers(info_hash)
    assert len(peers) == 2
    assert all(peer_id.startswith(b"-LT") for peer_id in peers)
    (downloader,) = [p for p, entries in peers.items() if entries[0].left == PAYLOAD_SIZE]
    assert AnnounceEvent.COMPLETED in [entry.event for entry in peers[downloader]]
    assert completed == 1


async def test_aria2_downloads_from_libtorrent_through_our_tracker(tmp_path: Path) -> None:
    aria2c = shutil.which("aria2c")
    if aria2c is None or not LT_PEER.exists():
        pytest.skip("aria2c or lt_peer.py not available")
    log = AnnounceLog()
    async with tracker(log) as server:
        torrent, seed_dir, info_hash = make_torrent(tmp_path, server.announce_url)
        download_dir = tmp_path / "aria2"
        download_dir.mkdir()
        seeder = lt_peer(torrent, seed_dir, "--seed", "--timeout", "120")
        async with background(seeder, tmp_path / "seeder.log"):
            await wait_for(lambda: log.has_seeder(info_hash), 30)
            with trio.fail_after(90):
                result = await trio.run_process(
                    [
                        aria2c,
                        f"--dir={download_dir}",
                        "--interface=127.0.0.1",
                        "--disable-ipv6=true",
                        f"--listen-port={free_port()}",
                        "--enable-dht=false",
                        "--enable-dht6=false",
                        "--bt-enable-lpd=false",
                        "--enable-peer-exchange=false",
                        "--seed-time=0",
                        "--file-allocation=none",
                        "--console-log-level=warn",
                        str(torrent),
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()[-2000:]
    aria2_ids = [peer_id for peer_id in log.peers(info_hash) if peer_id.startswith(b"A2-")]
    assert len(aria2_ids) == 1
    assert (download_dir / "payload.bin").read_bytes() == (seed_dir / "payload.bin").read_bytes()


async def test_rtorrent_announces_to_our_tracker(tmp_path: Path) -> None:
    rtorrent = shutil.which("rtorrent")
    if rtorrent is None:
        pytest.skip("rtorrent not installed")
    log = AnnounceLog()
    async with tracker(log) as server:
        torrent, _, info_hash = make_torrent(tmp_path, server.announce_url)
        download_dir, session_dir = tmp_path / "rt", tmp_path / "rt-session"
        download_dir.mkdir()
        session_dir.mkdir()
        port = free_port()
        config = tmp_path / "rt.rc"
        config.write_text(
            f"directory.default.set = {download_dir}\n"
            f"session.path.set = {session_dir}\n"
            f"network.port_range.set = {port}-{port}\n"
            "network.port_random.set = no\n"
            "network.bind_address.set = 127.0.0.1\n"
            "dht.mode.set = disable\n"
            "protocol.pex.set = no\n"
            "trackers.use_udp.set = no\n"
            "system.daemon.set = true\n"
        )
        command = [rtorrent, "-n", "-o", f"import={config}", str(torrent)]
        async with background(command, tmp_path / "rtorrent.log"):
            await wait_for(lambda: bool(log.peers(info_hash)), 30)
            swarm = server.registry.swarm(info_hash)
            registered = set(swarm.peers) if swarm is not None else set()
    ((peer_id, entries),) = log.peers(info_hash).items()
    assert peer_id.startswith(b"-lt")
    assert entries[0].left == PAYLOAD_SIZE  # a fresh leecher reports everything left
    assert entries[0].port == port
    assert registered == {peer_id}


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
