"""Downloads in both directions between opendistro and aria2, rtorrent, qBittorrent, Transmission.

Every client runs as a subprocess bound to 127.0.0.1 (see ``client_runners``).
The torrents are v1 (rtorrent 0.9.8 and Transmission 3.00 know nothing newer)
and announce to our own TrackerServer on 127.0.0.1. How the peers meet:

* aria2 and rtorrent find peers only through the tracker. When they download,
  our seeder seeds a tracker-less copy and is listed on the tracker on its
  behalf, so the transfer proves that they dialed us.
* qBittorrent downloads from a seeder the tracker does not know, because its
  Web API (``torrents/addPeers``) tells it to dial us.
* Transmission never dials loopback peers it hears of from a tracker, so we
  dial it, every second until it listens (it is slow to start).
* When they seed, we download: we dial the addresses the tracker gives us
  (and Transmission's and qBittorrent's ports directly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.torrent import Torrent
from opendistro.metainfo import Metainfo
from opendistro.tracker.client import announce
from opendistro.tracker.protocol import AnnounceEvent, AnnounceRequest
from opendistro.tracker.server import TrackerServer
from opendistro.wire.mse import EncryptionPolicy

from . import client_runners as runners
from .client_runners import LOOPBACK, Running

pytestmark = pytest.mark.interop

TIMEOUT = 90
LAYOUTS = {"single": (1_500_000,), "multi": (70_000, 0, 450_001, 131_072)}


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself) by relative path, with its bytes."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def files_match(root: Path, expected: dict[str, bytes]) -> bool:
    """True once ``root`` (a file, or a folder of files) holds exactly the expected bytes."""
    if list(expected) == [root.name] and not root.is_dir():
        return runners.same_bytes(root, expected[root.name])
    return all(runners.same_bytes(root / relative, data) for relative, data in expected.items())


def v1_torrent(release: Path, folder: Path, tracker: TrackerServer) -> tuple[Metainfo, Path]:
    metainfo = create_torrent(
        release, version="v1", piece_length=32768, trackers=[tracker.announce_url]
    )
    path = folder / f"{metainfo.name}.torrent"
    path.write_bytes(metainfo.to_bytes())
    return metainfo, path


def without_trackers(release: Path) -> Metainfo:
    """The same torrent (same info dictionary, so same info-hash) with no announce URL."""
    return create_torrent(release, version="v1", piece_length=32768)


@asynccontextmanager
async def listed_on(
    tracker: TrackerServer, seeder: Client, metainfo: Metainfo
) -> AsyncIterator[None]:
    """Announce ``seeder`` as a seed on ``tracker`` every second, on its behalf.

    The seeder itself seeds a tracker-less copy of the torrent, so it never learns
    the other client's address: any transfer proves that the other client found
    us through the tracker and dialed us.
    """
    request = AnnounceRequest(
        info_hash=metainfo.wire_info_hash,
        peer_id=seeder.peer_id,
        port=seeder.port,
        left=0,
        event=AnnounceEvent.STARTED,
        numwant=0,
    )

    async def keep_announcing() -> None:
        while True:
            await announce(tracker.announce_url, request, timeout=5)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_announcing)
        yield
        nursery.cancel_scope.cancel()


class PeerLog:
    """Collects our client's log lines, so a test can fail at once on a wire-protocol error.

    A protocol error closes the connection, and the other client usually dials
    again, so without this a rejected message only shows up as a slow time-out.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def check(self) -> None:
        errors = [line for line in self.lines if "ProtocolError" in line]
        assert not errors, "\n".join(errors[:5])


@pytest.fixture
def peer_log() -> PeerLog:
    return PeerLog()


@pytest.fixture
async def tracker() -> AsyncIterator[TrackerServer]:
    async with trio.open_nursery() as nursery:
        server = TrackerServer(host=LOOPBACK, port=0, interval=2, min_interval=1)
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def download_from(
    torrent: Torrent, running: Running, peer_log: PeerLog, *, dial: bool
) -> None:
    """Wait for our download to complete, dialing the third-party client every second."""
    while not torrent.complete.is_set():
        if dial:
            torrent.client.connect_now(torrent, (LOOPBACK, running.port))
        with trio.move_on_after(1):
            await torrent.complete.wait()
        peer_log.check()
        assert running.process.returncode in (None, 0), running.tail()
    status = torrent.status()
    assert torrent.error is None
    assert status.hash_failures == 0
    assert status.bytes_from_peers >= status.total_bytes


async def seed_to(
    torrent: Torrent,
    running: Running,
    peer_log: PeerLog,
    done: Callable[[], bool],
    *,
    dial: bool,
) -> None:
    """Keep seeding (and dialing, if asked) until ``done()``: the other client has every byte."""
    while not done():
        if dial:
            torrent.client.connect_now(torrent, (LOOPBACK, running.port))
        await trio.sleep(0.5)
        peer_log.check()
        assert running.process.returncode in (None, 0), running.tail()
    status = torrent.status()
    assert status.bytes_uploaded >= status.total_bytes


# ---------------------------------------------------------------- aria2

@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_aria2_downloads_from_us(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    layout: str,
) -> None:
    runners.require("aria2c")
    release = make_release(sizes=LAYOUTS[layout])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    expected = tree_bytes(release)
    target = tmp_path / "aria2"
    with trio.fail_after(TIMEOUT):
        async with Client(host=LOOPBACK, log=peer_log) as seeder:
            torrent = await seeder.seed(without_trackers(release), release.parent)
            async with (
                listed_on(tracker, seeder, metainfo),
                runners.aria2(torrent_file, target, seed=False) as aria2,
            ):
                # aria2 exits 0 once it has the whole torrent (--seed-time=0)
                await seed_to(
                    torrent, aria2, peer_log, lambda: aria2.process.returncode == 0, dial=False
                )
    assert tree_bytes(target / release.name) == expected


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_we_download_from_aria2(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    layout: str,
) -> None:
    runners.require("aria2c")
    release = make_release(sizes=LAYOUTS[layout])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    with trio.fail_after(TIMEOUT):
        async with (
            runners.aria2(torrent_file, release.parent, seed=True) as aria2,
            Client(host=LOOPBACK, log=peer_log) as client,
        ):
            # no dial: aria2 and we meet only through the tracker
            torrent = await client.add_torrent(metainfo, tmp_path / "ours")
            await download_from(torrent, aria2, peer_log, dial=False)
    assert tree_bytes(tmp_path / "ours" / release.name) == tree_bytes(release)


# ---------------------------------------------------------------- rtorrent


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_rtorrent_downloads_from_us(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    layout: str,
) -> None:
    runners.require("rtorrent")
    release = make_release(sizes=LAYOUTS[layout])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    expected = tree_bytes(release)
    target = tmp_path / "rtorrent"
    with trio.fail_after(TIMEOUT):
        async with Client(host=LOOPBACK, log=peer_log) as seeder:
            torrent = await seeder.seed(without_trackers(release), release.parent)
            async with (
                listed_on(tracker, seeder, metainfo),
                runners.rtorrent(torrent_file, target, seed=False) as rt,
            ):
                # rtorrent learns our address from the tracker and dials us
                done = partial(files_match, target / release.name, expected)
                await seed_to(torrent, rt, peer_log, done, dial=False)
    assert tree_bytes(target / release.name) == expected


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_we_download_from_rtorrent(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    layout: str,
) -> None:
    runners.require("rtorrent")
    release = make_release(sizes=LAYOUTS[layout])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    with trio.fail_after(TIMEOUT):
        async with (
            runners.rtorrent(torrent_file, release.parent, seed=True) as rt,
            Client(host=LOOPBACK, log=peer_log) as client,
        ):
            torrent = await client.add_torrent(metainfo, tmp_path / "ours")
            await download_from(torrent, rt, peer_log, dial=False)
    assert tree_bytes(tmp_path / "ours" / release.name) == tree_bytes(release)


# ---------------------------------------------------------------- Transmission


async def test_transmission_downloads_from_us(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
) -> None:
    runners.require("transmission-cli")
    release = make_release(sizes=LAYOUTS["single"])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    expected = tree_bytes(release)
    target = tmp_path / "transmission"
    with trio.fail_after(TIMEOUT):
        async with Client(host=LOOPBACK, log=peer_log) as seeder:
            torrent = await seeder.seed(metainfo, release.parent)
            async with runners.transmission(torrent_file, target, seed=False) as tr:
                # Transmission ignores loopback peers from the tracker: we dial it
                done = partial(files_match, target / release.name, expected)
                await seed_to(torrent, tr, peer_log, done, dial=True)
    assert tree_bytes(target / release.name) == expected


async def test_we_download_from_transmission(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
) -> None:
    runners.require("transmission-cli")
    release = make_release(sizes=LAYOUTS["single"])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    with trio.fail_after(TIMEOUT):
        async with (
            runners.transmission(torrent_file, release.parent, seed=True) as tr,
            Client(host=LOOPBACK, log=peer_log) as client,
        ):
            torrent = await client.add_torrent(metainfo, tmp_path / "ours")
            await download_from(torrent, tr, peer_log, dial=True)
    assert tree_bytes(tmp_path / "ours" / release.name) == tree_bytes(release)


# ---------------------------------------------------------------- qBittorrent


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_qbittorrent_downloads_from_us(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    layout: str,
) -> None:
    runners.require("qbittorrent-nox")
    release = make_release(sizes=LAYOUTS[layout])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    expected = tree_bytes(release)
    target = tmp_path / "qbittorrent"
    info_hash = metainfo.wire_info_hash.hex()
    with trio.fail_after(TIMEOUT):
        async with Client(host=LOOPBACK, log=peer_log) as seeder:
            # a seeder the tracker does not know: qBittorrent dials it because we ask it to
            torrent = await seeder.seed(without_trackers(release), release.parent)
            async with runners.qbittorrent(target) as qbt:
                await qbt.add(torrent_file, target)
                while not await qbt.info(info_hash):
                    await trio.sleep(0.2)
                await qbt.add_peer(info_hash, seeder.port)
                done = partial(files_match, target / release.name, expected)
                await seed_to(torrent, qbt.running, peer_log, done, dial=False)
                while (await qbt.info(info_hash)).get("progress") != 1:
                    await trio.sleep(0.2)
    assert tree_bytes(target / release.name) == expected


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_we_download_from_qbittorrent(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    layout: str,
) -> None:
    runners.require("qbittorrent-nox")
    release = make_release(sizes=LAYOUTS[layout])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    info_hash = metainfo.wire_info_hash.hex()
    with trio.fail_after(TIMEOUT):
        async with (
            runners.qbittorrent(tmp_path / "qbittorrent") as qbt,
            Client(host=LOOPBACK, log=peer_log) as client,
        ):
            await qbt.add(torrent_file, release.parent)
            # qBittorrent checks the data first; it seeds once progress reaches 1
            while (await qbt.info(info_hash)).get("progress") != 1:
                await trio.sleep(0.2)
            torrent = await client.add_torrent(metainfo, tmp_path / "ours")
            await download_from(torrent, qbt.running, peer_log, dial=True)
    assert tree_bytes(tmp_path / "ours" / release.name) == tree_bytes(release)


# ---------------------------------------------------------------- MSE with RC4 only


@asynccontextmanager
async def rc4_seeder(name: str, torrent_file: Path, release: Path) -> AsyncIterator[Running]:
    """A third-party client seeding ``release`` that accepts only RC4-encrypted connections."""
    if name == "aria2":
        async with runners.aria2(torrent_file, release.parent, seed=True, rc4_only=True) as aria2:
            yield aria2
    elif name == "rtorrent":
        async with runners.rtorrent(torrent_file, release.parent, seed=True, rc4_only=True) as rt:
            yield rt
    else:
        profile = torrent_file.parent / "qbittorrent"
        async with runners.qbittorrent(profile, rc4_only=True) as qbt:
            await qbt.add(torrent_file, release.parent)
            info_hash = Metainfo.from_bytes(torrent_file.read_bytes()).wire_info_hash.hex()
            while (await qbt.info(info_hash)).get("progress") != 1:
                await trio.sleep(0.2)
            yield qbt.running


@pytest.mark.parametrize("name", ["aria2", "rtorrent", "qbittorrent"])
async def test_we_download_rc4_only(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    name: str,
) -> None:
    """Both sides insist on MSE with RC4: their MSE implementations against ours."""
    runners.require({"aria2": "aria2c", "qbittorrent": "qbittorrent-nox"}.get(name, name))
    release = make_release(sizes=LAYOUTS["single"])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    with trio.fail_after(TIMEOUT):
        async with (
            rc4_seeder(name, torrent_file, release) as seeder,
            Client(host=LOOPBACK, encryption=EncryptionPolicy.REQUIRE, log=peer_log) as client,
        ):
            torrent = await client.add_torrent(metainfo, tmp_path / "ours")
            await download_from(torrent, seeder, peer_log, dial=True)
    assert tree_bytes(tmp_path / "ours" / release.name) == tree_bytes(release)


@pytest.mark.parametrize("name", ["rtorrent", "qbittorrent"])
async def test_they_download_rc4_only(
    make_release: Callable[..., Path],
    tmp_path: Path,
    tracker: TrackerServer,
    peer_log: PeerLog,
    name: str,
) -> None:
    """They dial us and must encrypt: our MSE responder against their MSE initiator."""
    runners.require("qbittorrent-nox" if name == "qbittorrent" else name)
    release = make_release(sizes=LAYOUTS["single"])
    metainfo, torrent_file = v1_torrent(release, tmp_path, tracker)
    expected = tree_bytes(release)
    target = tmp_path / name
    done = partial(files_match, target / release.name, expected)
    with trio.fail_after(TIMEOUT):
        async with Client(
            host=LOOPBACK, encryption=EncryptionPolicy.REQUIRE, log=peer_log
        ) as seeder:
            torrent = await seeder.seed(without_trackers(release), release.parent)
            if name == "rtorrent":
                async with (
                    listed_on(tracker, seeder, metainfo),
                    runners.rtorrent(torrent_file, target, seed=False, rc4_only=True) as rt,
                ):
                    await seed_to(torrent, rt, peer_log, done, dial=False)
            else:
                async with runners.qbittorrent(target, rc4_only=True) as qbt:
                    await qbt.add(torrent_file, target)
                    info_hash = metainfo.wire_info_hash.hex()
                    while not await qbt.info(info_hash):
                        await trio.sleep(0.2)
                    await qbt.add_peer(info_hash, seeder.port)
                    await seed_to(torrent, qbt.running, peer_log, done, dial=False)
    assert tree_bytes(target / release.name) == expected
