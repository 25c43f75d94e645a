"""Peers and HTTP mirrors together, with libtorrent (a real third-party client) on one side.

Our leecher mixes a libtorrent seeder with one of our mirrors; libtorrent as
a leecher mixes our seeder with the same mirror as its BEP 19 web seed. Both
ways the data must arrive bit-exact and each kind of source must have
carried part of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.metainfo import Metainfo
from opendistro.swarm.sources import SourcePolicy

from ..mirror_server import MirrorServer
from .lt_helpers import LT_PEER, free_port, lt_seeder, require_libtorrent

pytestmark = pytest.mark.interop
LOOPBACK = "127.0.0.1"
SAFETY = 90


def write_torrent(metainfo: Metainfo, folder: Path) -> Path:
    path = folder / f"{metainfo.name}.torrent"
    path.write_bytes(metainfo.to_bytes())
    return path


async def lt_leecher(
    torrent: Path,
    save: Path,
    port: int,
    summaries: list[dict[str, Any]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """libtorrent downloads on ``port`` from the torrent's web seeds and whoever dials it.

    Started (in the ``nursery.start`` sense) once libtorrent has added the torrent, so a
    peer dialing it then is not turned away; appends lt_peer.py's JSON summary at the end.
    Peers dial libtorrent rather than the other way round: lt_peer.py dials only while it
    has no peer at all, and a web seed counts as one.
    """
    save.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(LT_PEER),
        "--torrent",
        str(torrent),
        "--save",
        str(save),
        "--port",
        str(port),
        "--no-trackers",
        "--timeout",
        str(SAFETY),
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = bytearray(), bytearray()
    started = False

    async def collect(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
        async for chunk in stream:
            into += chunk

    try:
        async with trio.open_nursery() as pipes:
            pipes.start_soon(collect, process.stdout, stdout)
            async for chunk in process.stderr:
                stderr += chunk
                if not started and b"listen_port" in stderr:
                    started = True
                    task_status.started()
        await process.wait()
    finally:
        if process.returncode is None:
            with trio.CancelScope(shield=True):
                process.kill()
                await process.wait()
    if not started:
        task_status.started()
    lines = stdout.decode().strip().splitlines()
    assert lines, stderr.decode()[-2000:]
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["stderr"] = stderr.decode()[-2000:]
    summaries.append(summary)


async def test_we_download_from_a_libtorrent_seeder_and_a_mirror_at_once(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    require_libtorrent()
    release = make_release(sizes=(16_000_000,))
    metainfo = create_torrent(release, version="hybrid", piece_length=65536)
    torrent_file = write_torrent(metainfo, tmp_path)
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        # Loopback libtorrent would otherwise finish before the mirror sent much: the mirror
        # sends at 1 MB/s, and our side takes at most 2 MB/s from peers.
        mirror.faults.rate = 1_000_000
        await nursery.start(mirror.serve)
        async with Client(host=LOOPBACK) as client:
            torrent = await client.add_torrent(
                metainfo,
                tmp_path / "ours",
                sources=SourcePolicy.FASTEST,
                mirrors=[mirror.url],
                download_limit=2_000_000,
            )
            # libtorrent dials us (again every 2 s until connected) once it is ready: dialing
            # it instead could reach it before it has added the torrent, and be turned away.
            dial_us = ("--connect", f"{LOOPBACK}:{client.port}")
            async with lt_seeder(torrent_file, release.parent, extra=dial_us):
                with trio.move_on_after(SAFETY):
                    await torrent.complete.wait()
                status = torrent.status()
        nursery.cancel_scope.cancel()
    assert torrent.complete.is_set(), f"download hung: {status}"
    assert torrent.error is None and torrent.hash_failures == 0
    assert status.bytes_from_peers > 0 and status.bytes_from_mirrors > 0, status
    assert status.bytes_from_peers + status.bytes_from_mirrors >= metainfo.total_length
    assert (tmp_path / "ours" / release.name).read_bytes() == release.read_bytes()


async def test_libtorrent_downloads_from_our_seeder_and_our_mirror_as_its_web_seed(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    require_libtorrent()
    release = make_release(sizes=(6_000_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        mirror.faults.rate = 1_000_000  # neither source is fast enough to leave the other idle
        await nursery.start(mirror.serve)
        metainfo = create_torrent(
            release, version="hybrid", piece_length=65536, webseeds=[mirror.url]
        )
        torrent_file = write_torrent(metainfo, tmp_path)
        summaries: list[dict[str, Any]] = []
        async with Client(host=LOOPBACK, upload_limit=1_000_000) as seeder:
            seeded = await seeder.seed(metainfo, release.parent)
            async with trio.open_nursery() as leechers:
                lt_port = free_port()
                await leechers.start(lt_leecher, torrent_file, tmp_path / "lt", lt_port, summaries)
                seeder.connect_soon(seeded, (LOOPBACK, lt_port))
            uploaded = seeded.status().bytes_uploaded
        [summary] = summaries
        nursery.cancel_scope.cancel()
    assert summary["done"], summary["stderr"]
    assert (tmp_path / "lt" / release.name).read_bytes() == release.read_bytes()
    assert uploaded > 0, summary["stderr"]
    # libtorrent received at least what it counts minus what we sent: the rest is the web seed's.
    assert mirror.requests and summary["downloaded"] > uploaded, (summary, uploaded)
