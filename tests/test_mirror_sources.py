"""Mirrors beside peers, over real HTTP and TCP on 127.0.0.1: fallback, policies, failures."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.torrent import TorrentState
from opendistro.metainfo import Metainfo
from opendistro.swarm.sources import SourcePolicy

from .mirror_server import MirrorServer

LOOPBACK = "127.0.0.1"


def with_webseeds(release: Path, *urls: str, version: str = "hybrid") -> Metainfo:
    return create_torrent(
        release, version=version, piece_length=65536, webseeds=list(urls)  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("sizes", [(3_000_000,), (1_000_000, 0, 700_001, 65536)])
async def test_with_no_peers_at_all_the_mirror_carries_the_download(
    make_release: Callable[..., Path], tmp_path: Path, sizes: tuple[int, ...]
) -> None:
    release = make_release(sizes=sizes)
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metainfo = with_webseeds(release, mirror.url)
        async with Client(host=LOOPBACK) as client:
            torrent = await client.add_torrent(metainfo, tmp_path / "dl")
            with trio.fail_after(60):
                await torrent.complete.wait()
            status = torrent.status()
        nursery.cancel_scope.cancel()
    assert torrent.error is None and torrent.state is TorrentState.SEEDING
    assert status.bytes_from_mirrors >= sum(f.length for f in metainfo.data_files())
    assert status.bytes_from_peers == 0
    originals = [release] if release.is_file() else sorted(release.rglob("*.bin"))
    for original in originals:
        copy = tmp_path / "dl" / original.relative_to(release.parent)
        assert copy.read_bytes() == original.read_bytes()


async def test_while_the_swarm_delivers_prefer_p2p_leaves_the_mirror_idle(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(6_000_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metainfo = with_webseeds(release, mirror.url)
        async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
            await seeder.seed(metainfo, release.parent)
            torrent = await leecher.add_torrent(
                metainfo, tmp_path / "dl", peers=[(LOOPBACK, seeder.port)]
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
            status = torrent.status()
        nursery.cancel_scope.cancel()
    assert torrent.error is None
    assert status.bytes_from_peers >= metainfo.total_length // 2
    assert status.bytes_from_mirrors < metainfo.total_length // 2


@pytest.mark.parametrize("policy", [SourcePolicy.FASTEST, SourcePolicy.MIRRORS_ONLY])
async def test_fastest_and_mirrors_only_use_the_mirror_from_the_start(
    make_release: Callable[..., Path], tmp_path: Path, policy: SourcePolicy
) -> None:
    release = make_release(sizes=(2_000_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metainfo = with_webseeds(release, mirror.url)
        async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
            await seeder.seed(metainfo, release.parent)
            torrent = await leecher.add_torrent(
                metainfo, tmp_path / "dl", peers=[(LOOPBACK, seeder.port)], sources=policy
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
            status = torrent.status()
        nursery.cancel_scope.cancel()
    assert torrent.error is None
    assert status.bytes_from_mirrors > 0
    if policy is SourcePolicy.MIRRORS_ONLY:
        assert status.bytes_from_peers == 0 and not torrent.peers


async def test_p2p_only_never_asks_the_mirror(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(500_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metainfo = with_webseeds(release, mirror.url)
        async with Client(host=LOOPBACK) as client:
            torrent = await client.add_torrent(
                metainfo, tmp_path / "dl", sources=SourcePolicy.P2P_ONLY
            )
            await trio.sleep(2.5)  # well past the 1 s after which prefer-p2p would fall back
            assert not torrent.complete.is_set()
        nursery.cancel_scope.cancel()
    assert mirror.requests == []


async def test_a_mirror_serving_corrupt_data_is_dropped_and_a_good_one_finishes(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    # Forty files, each with a bad byte at the bad mirror, and more than one run's worth
    # (4 MiB) in all: whatever the bad mirror is asked for, it gets wrong.
    release = make_release(sizes=(150_000,) * 40)
    async with trio.open_nursery() as nursery:
        bad, good = MirrorServer(release.parent), MirrorServer(release.parent)
        bad.faults.corrupt_at = 100_000
        await nursery.start(bad.serve)
        await nursery.start(good.serve)
        metainfo = with_webseeds(release, bad.url, good.url)
        async with Client(host=LOOPBACK) as client:
            torrent = await client.add_torrent(metainfo, tmp_path / "dl")
            with trio.fail_after(60):
                await torrent.complete.wait()
        nursery.cancel_scope.cancel()
    assert torrent.error is None
    for original in sorted(release.rglob("*.bin")):
        copy = tmp_path / "dl" / original.relative_to(release.parent)
        assert copy.read_bytes() == original.read_bytes()
    assert torrent.mirrors is not None
    dropped = {source.url: source.dropped_reason for source in torrent.mirrors.sources}
    assert dropped[good.url] is None
    assert dropped[bad.url] is not None and "hash check" in dropped[bad.url]


async def test_with_every_source_down_the_error_names_each_one_and_verified_data_stays(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(1_000_000,))
    async with trio.open_nursery() as nursery:
        missing, broken = MirrorServer(tmp_path / "empty"), MirrorServer(release.parent)
        broken.faults.status = 503
        await nursery.start(missing.serve)
        await nursery.start(broken.serve)
        metainfo = with_webseeds(release, missing.url, broken.url)
        async with Client(host=LOOPBACK, mirror_retries=2) as client:
            torrent = await client.add_torrent(metainfo, tmp_path / "dl")
            with trio.fail_after(60):
                await torrent.complete.wait()
        nursery.cancel_scope.cancel()
    assert torrent.state is TorrentState.FAILED
    assert torrent.error is not None
    assert missing.url in torrent.error and "404" in torrent.error
    assert broken.url in torrent.error and "503" in torrent.error
    assert not (tmp_path / "dl" / release.name).exists()


async def test_a_slow_mirror_loses_the_rest_of_its_run_to_a_faster_one(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(4_000_000,))
    async with trio.open_nursery() as nursery:
        slow, fast = MirrorServer(release.parent), MirrorServer(release.parent)
        slow.faults.rate = 64 * 1024  # a first run (1 MiB) would take it 16 s
        await nursery.start(slow.serve)
        await nursery.start(fast.serve)
        metainfo = with_webseeds(release, slow.url, fast.url)
        async with Client(host=LOOPBACK) as client:
            torrent = await client.add_torrent(
                metainfo, tmp_path / "dl", sources=SourcePolicy.MIRRORS_ONLY
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
        nursery.cancel_scope.cancel()
    assert torrent.error is None
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
    assert torrent.mirrors is not None
    received = {source.url: source.bytes_received for source in torrent.mirrors.sources}
    assert slow.requests, "both mirrors were asked for work"
    assert received[slow.url] < 1 << 19  # it kept less than half of its first run
    assert received[slow.url] + received[fast.url] >= 4_000_000


async def test_get_on_the_command_line_takes_extra_mirrors_and_a_source_policy(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(1_200_000,))
    metainfo = with_webseeds(release)  # no url-list: the mirror comes from --mirror
    torrent_file = tmp_path / "release.torrent"
    torrent_file.write_bytes(metainfo.to_bytes())
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        command = [
            sys.executable, "-m", "opendistro.cli", "get", str(torrent_file),
            "-o", str(tmp_path / "dl"), "--host", LOOPBACK, "--json",
            "--mirror", mirror.url, "--sources", "mirrors-only",
        ]
        with trio.fail_after(120):
            done = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["bytes_from_mirrors"] >= 1_200_000 and result["bytes_from_peers"] == 0
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
