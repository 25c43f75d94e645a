"""The mirror scheduler when the swarm comes and goes, over real TCP and HTTP on 127.0.0.1.

Under the default ``prefer-p2p`` policy mirrors fill in only while the swarm
falls short: these scenarios take the peers away mid-download, bring them
back while a slow mirror carries the download, put a real nginx behind the
scheduler, and break every mirror so that the next run has to resume.
Assertions are on bytes (who delivered what, and the files themselves),
never on how long anything took.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.torrent import Torrent, TorrentState, TorrentStatus

from .mirror_server import MirrorServer
from .test_mirror_nginx import CONFIG, NGINX, free_port
from .test_mirror_sources import with_webseeds

LOOPBACK = "127.0.0.1"
SAFETY = 60
"""Seconds after which a download that has not finished counts as hung."""


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself), by relative path."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def describe(torrent: Torrent) -> str:
    """What a stuck download looks like, for the failure message."""
    status = torrent.status()
    gate = torrent.mirrors.gate.mirrors_wanted() if torrent.mirrors else None
    return (
        f"state={status.state.value} verified={status.verified_bytes}/{status.total_bytes} "
        f"from_peers={status.bytes_from_peers} from_mirrors={status.bytes_from_mirrors} "
        f"peers={status.peers} mirrors_wanted={gate} error={status.error!r}"
    )


async def wait_until(torrent: Torrent, condition: Callable[[TorrentStatus], bool]) -> TorrentStatus:
    """Poll the torrent's status until ``condition`` holds; fail (not hang) if it never does."""
    with trio.move_on_after(SAFETY):
        while True:
            status = torrent.status()
            if condition(status):
                return status
            await trio.sleep(0.02)
    pytest.fail(f"condition never held: {describe(torrent)}")


async def finish(torrent: Torrent) -> TorrentStatus:
    """Wait for the download to end (done or failed); a hang fails with the torrent's state."""
    with trio.move_on_after(SAFETY):
        await torrent.complete.wait()
    assert torrent.complete.is_set(), f"download hung: {describe(torrent)}"
    return torrent.status()


async def test_when_the_peers_vanish_midway_the_mirror_finishes_the_download(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(12_000_000,))
    metainfo = create_torrent(release, version="hybrid", piece_length=65536)
    total = metainfo.total_length
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        # Slower than loopback, so the peer's share before it leaves is not a race.
        mirror.faults.rate = 4_000_000
        await nursery.start(mirror.serve)
        async with Client(host=LOOPBACK) as leecher:
            async with Client(host=LOOPBACK, upload_limit=2_000_000) as seeder:
                await seeder.seed(metainfo, release.parent)
                torrent = await leecher.add_torrent(
                    metainfo,
                    tmp_path / "dl",
                    peers=[(LOOPBACK, seeder.port)],
                    mirrors=[mirror.url],
                )
                await wait_until(torrent, lambda status: status.bytes_from_peers >= 500_000)
            # The seeder's client is closed: every connection to it is gone.
            vanished = torrent.status()
            status = await finish(torrent)
        nursery.cancel_scope.cancel()
    assert vanished.verified_bytes < total, "the peer left only after the download had finished"
    assert torrent.error is None and torrent.state is TorrentState.SEEDING
    assert status.bytes_from_peers >= 500_000
    assert status.bytes_from_mirrors > vanished.bytes_from_mirrors
    assert status.bytes_from_peers + status.bytes_from_mirrors >= total
    assert status.peers == 0
    assert tree_bytes(tmp_path / "dl" / release.name) == tree_bytes(release)


async def test_when_peers_return_they_take_over_from_a_slow_mirror(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(16_000_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        mirror.faults.rate = 500_000  # far slower than the seeder will be
        await nursery.start(mirror.serve)
        metainfo = with_webseeds(release, mirror.url)
        total = metainfo.total_length
        async with Client(host=LOOPBACK) as leecher, Client(host=LOOPBACK) as seeder:
            torrent = await leecher.add_torrent(metainfo, tmp_path / "dl")
            # No peer at all: prefer-p2p opens the mirror, which carries the download alone.
            stalled = await wait_until(
                torrent, lambda status: status.bytes_from_mirrors >= 500_000
            )
            await seeder.seed(metainfo, release.parent)
            recovered = torrent.status()
            leecher.connect_soon(torrent, (LOOPBACK, seeder.port))
            status = await finish(torrent)
        nursery.cancel_scope.cancel()
    assert torrent.error is None and torrent.state is TorrentState.SEEDING
    assert stalled.bytes_from_peers == 0 and recovered.bytes_from_peers == 0
    remainder = total - recovered.verified_bytes
    assert remainder > total // 2
    from_peers = status.bytes_from_peers - recovered.bytes_from_peers
    from_mirror = status.bytes_from_mirrors - recovered.bytes_from_mirrors
    # Before the peers came back the mirror delivered everything; afterwards, the minority.
    assert from_peers > remainder // 2, (from_peers, from_mirror, remainder)
    assert from_mirror < from_peers, (from_peers, from_mirror, remainder)
    assert tree_bytes(tmp_path / "dl" / release.name) == tree_bytes(release)


@contextmanager
def running_nginx(root: Path, state: Path) -> Iterator[str]:
    """nginx on 127.0.0.1 serving ``root`` (its files and logs in ``state``); yields its URL."""
    if NGINX is None:
        pytest.skip("nginx is not installed")
    state.mkdir()
    port = free_port()
    config = state / "nginx.conf"
    config.write_text(CONFIG.format(tmp=state, port=port, root=root))
    process = subprocess.Popen(
        [NGINX, "-p", str(state), "-e", str(state / "error.log"), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"nginx exited with {process.returncode}"
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield f"http://{LOOPBACK}:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_nginx_as_the_only_source_of_a_multi_file_release(
    make_release: Callable[..., Path],
    tmp_path: Path,
) -> None:
    release = make_release(name="release 2.0", sizes=(1_000_000, 0, 700_001, 65536, 333_333))
    with running_nginx(release.parent, tmp_path / "nginx") as url:
        metainfo = with_webseeds(release, url)
        async with Client(host=LOOPBACK) as client:
            torrent = await client.add_torrent(metainfo, tmp_path / "dl")
            status = await finish(torrent)
    assert torrent.error is None and torrent.state is TorrentState.SEEDING
    assert status.bytes_from_peers == 0
    assert status.bytes_from_mirrors >= sum(f.length for f in metainfo.data_files())
    assert tree_bytes(tmp_path / "dl" / release.name) == tree_bytes(release)


async def test_when_every_mirror_breaks_the_next_run_resumes_what_was_verified(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    # Far more than one range request: the mirror breaks once its first piece has arrived,
    # so the request under way finishes and every later one fails.
    release = make_release(sizes=(12_000_000,))
    metainfo = create_torrent(release, version="hybrid", piece_length=65536)
    total = metainfo.total_length
    download = tmp_path / "dl"
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        mirror.faults.rate = 8_000_000
        await nursery.start(mirror.serve)
        async with Client(host=LOOPBACK, mirror_retries=2) as client:
            torrent = await client.add_torrent(metainfo, download, mirrors=[mirror.url])
            await wait_until(torrent, lambda status: status.bytes_from_mirrors > 0)
            mirror.faults.status = 503
            first = await finish(torrent)
        assert torrent.state is TorrentState.FAILED, describe(torrent)
        assert torrent.error is not None
        assert mirror.url in torrent.error and "503" in torrent.error
        assert 0 < first.verified_bytes < total
        assert not (download / release.name).exists()

        mirror.faults.status = None
        mirror.faults.rate = None
        async with Client(host=LOOPBACK, mirror_retries=2) as client:
            again = await client.add_torrent(metainfo, download, mirrors=[mirror.url])
            second = await finish(again)
        nursery.cancel_scope.cancel()
    assert again.error is None and again.state is TorrentState.SEEDING
    assert second.bytes_from_peers == 0
    assert 0 < second.bytes_from_mirrors <= total - first.verified_bytes
    assert second.bytes_from_mirrors < total
    assert tree_bytes(download / release.name) == tree_bytes(release)
