"""Our client against itself over real TCP on 127.0.0.1: seed, download, magnet, resume."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.errors import ConfigError
from opendistro.io.client import Client
from opendistro.io.torrent import Torrent, TorrentState
from opendistro.metainfo import Metainfo
from opendistro.tracker.server import TrackerServer
from opendistro.wire.mse import EncryptionPolicy

LOOPBACK = "127.0.0.1"


def same_tree(original: Path, copy: Path) -> bool:
    if original.is_file():
        return copy.is_file() and original.read_bytes() == copy.read_bytes()
    names = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    copies = sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
    return names == copies and all(
        (original / n).read_bytes() == (copy / n).read_bytes() for n in names
    )


async def seed_and_get(
    metainfo: Metainfo,
    publisher: Path,
    target: Path,
    *,
    encryption: EncryptionPolicy = EncryptionPolicy.PREFER,
) -> Path:
    async with (
        Client(host=LOOPBACK, encryption=encryption) as seeder,
        Client(host=LOOPBACK, encryption=encryption) as leecher,
    ):
        await seeder.seed(metainfo, publisher)
        torrent = await leecher.add_torrent(metainfo, target, peers=[(LOOPBACK, seeder.port)])
        with trio.fail_after(60):
            await torrent.complete.wait()
        assert torrent.error is None
        assert torrent.state is TorrentState.SEEDING
        assert torrent.hash_failures == 0
        assert sum(torrent.bytes_from_peer.values()) >= metainfo.total_length - (
            sum(f.length for f in metainfo.files if f.is_padding)
        )
        assert torrent.final_path is not None
        return torrent.final_path


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize("sizes", [(700_000,), (100_000, 0, 40_000, 300_001, 16384)])
async def test_download_from_our_seeder(
    make_release: Callable[..., Path], tmp_path: Path, version: str, sizes: tuple[int, ...]
) -> None:
    release = make_release(sizes=sizes)
    metainfo = create_torrent(release, version=version, piece_length=32768)  # type: ignore[arg-type]
    final = await seed_and_get(metainfo, release.parent, tmp_path / "download")
    assert final == tmp_path / "download" / release.name
    assert same_tree(release, final)
    leftovers = [p.name for p in (tmp_path / "download").iterdir() if release.name in p.name]
    assert leftovers == [release.name]  # the staging folder is gone


def one_connection_between(a: Torrent, b: Torrent) -> bool:
    """Each side has one peer, and it is the same connection (dialled by one of them)."""
    if len(a.peers) != 1 or len(b.peers) != 1:
        return False
    return next(iter(a.peers)).dialed != next(iter(b.peers)).dialed


async def test_two_clients_dialling_each_other_at_once_keep_one_connection(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    """Each side keeps the connection dialled by the lower peer id. Dropping "the second
    connection" instead made each side drop a different one: both were gone, and the
    download waited 30 s for a redial."""
    release = make_release(sizes=(400_000,))
    metainfo = create_torrent(release, version="v1", piece_length=32768)
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        seeding = await seeder.seed(metainfo, release.parent)
        torrent = await leecher.add_torrent(metainfo, tmp_path / "d")
        seeder.connect_soon(seeding, (LOOPBACK, leecher.port))
        leecher.connect_soon(torrent, (LOOPBACK, seeder.port))
        with trio.fail_after(20):  # a redial would come after 30 s
            while not one_connection_between(seeding, torrent):
                await trio.sleep(0.01)  # the losing connection may take a moment to close
        (kept_by_seeder,) = seeding.peers
        assert kept_by_seeder.dialed == (seeder.peer_id < leecher.peer_id)
        with trio.fail_after(20):
            await torrent.complete.wait()
    assert same_tree(release, tmp_path / "d" / release.name)


@pytest.mark.parametrize("policy", list(EncryptionPolicy))
async def test_every_encryption_policy_transfers(
    make_release: Callable[..., Path], tmp_path: Path, policy: EncryptionPolicy
) -> None:
    release = make_release(sizes=(200_000,))
    metainfo = create_torrent(release, version="v1")
    final = await seed_and_get(metainfo, release.parent, tmp_path / "dl", encryption=policy)
    assert final.read_bytes() == release.read_bytes()


async def test_leechers_find_each_other_through_our_tracker(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(1_500_000,))
    tracker = TrackerServer(host=LOOPBACK, port=0, interval=2, min_interval=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        metainfo = create_torrent(release, version="hybrid", trackers=[tracker.announce_url])
        async with (
            Client(host=LOOPBACK) as seeder,
            Client(host=LOOPBACK) as first,
            Client(host=LOOPBACK) as second,
        ):
            await seeder.seed(metainfo, release.parent)
            a = await first.add_torrent(metainfo, tmp_path / "a")
            b = await second.add_torrent(metainfo, tmp_path / "b")
            with trio.fail_after(60):
                await a.complete.wait()
                await b.complete.wait()
            assert (tmp_path / "a" / release.name).read_bytes() == release.read_bytes()
            assert (tmp_path / "b" / release.name).read_bytes() == release.read_bytes()
            swarm = tracker.registry.swarm(metainfo.wire_info_hash)
            assert swarm is not None and len(swarm.peers) == 3
            assert b.bytes_by_peer_id.keys() | a.bytes_by_peer_id.keys() >= {seeder.peer_id}
        nursery.cancel_scope.cancel()


async def test_magnet_download_fetches_metadata_from_a_peer(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(90_000, 400_000))
    metainfo = create_torrent(release, version="hybrid", piece_length=65536)
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        await seeder.seed(metainfo, release.parent)
        magnet = metainfo.magnet_link().to_uri()
        torrent = await leecher.add_magnet(magnet, tmp_path / "m", peers=[(LOOPBACK, seeder.port)])
        with trio.fail_after(60):
            await torrent.complete.wait()
        assert torrent.error is None
        assert torrent.metainfo is not None
        assert torrent.metainfo.info_bytes == metainfo.info_bytes
    assert same_tree(release, tmp_path / "m" / release.name)


async def test_interrupted_download_resumes_without_refetching_verified_pieces(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(8_000_000,))
    metainfo = create_torrent(release, version="v1", piece_length=32768)
    target = tmp_path / "resume"
    async with Client(host=LOOPBACK) as seeder:
        await seeder.seed(metainfo, release.parent)
        async with Client(host=LOOPBACK) as leecher:
            torrent = await leecher.add_torrent(metainfo, target, peers=[(LOOPBACK, seeder.port)])
            with trio.fail_after(30):
                while torrent.have is None or torrent.have.count < metainfo.num_pieces // 3:
                    await trio.sleep(0)
        assert torrent.have is not None
        verified_before = torrent.have.count
        assert not (target / release.name).exists()
        async with Client(host=LOOPBACK) as leecher:
            again = await leecher.add_torrent(metainfo, target, peers=[(LOOPBACK, seeder.port)])
            assert again.have is not None and again.have.count >= verified_before
            missing = [i for i in range(metainfo.num_pieces) if not again.have.has(i)]
            with trio.fail_after(60):
                await again.complete.wait()
            second_run = sum(again.bytes_from_peer.values())
    assert (target / release.name).read_bytes() == release.read_bytes()
    assert second_run == sum(metainfo.piece_size(index) for index in missing)


async def test_seeding_wrong_data_is_refused(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(100_000,))
    metainfo = create_torrent(release, version="v1")
    release.write_bytes(b"x" * 100_000)
    async with Client(host=LOOPBACK) as seeder:
        with pytest.raises(Exception, match="does not match"):
            await seeder.seed(metainfo, release.parent)


async def test_peers_meet_through_the_udp_tracker(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(400_000,))
    tracker = TrackerServer(host=LOOPBACK, port=0, interval=2, min_interval=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        metainfo = create_torrent(release, version="v1", trackers=[tracker.udp_url])
        async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
            await seeder.seed(metainfo, release.parent)
            torrent = await leecher.add_torrent(metainfo, tmp_path / "udp")
            with trio.fail_after(30):
                await torrent.complete.wait()
            assert torrent.bytes_by_peer_id[seeder.peer_id] >= 400_000
        nursery.cancel_scope.cancel()
    assert (tmp_path / "udp" / release.name).read_bytes() == release.read_bytes()


async def test_cancelling_a_download_leaves_no_partial_file_at_the_final_path(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(6_000_000,))
    metainfo = create_torrent(release, version="hybrid", piece_length=32768)
    target = tmp_path / "cancelled"
    async with Client(host=LOOPBACK) as seeder:
        await seeder.seed(metainfo, release.parent)
        with trio.CancelScope() as scope:
            async with Client(host=LOOPBACK) as leecher:
                torrent = await leecher.add_torrent(
                    metainfo, target, peers=[(LOOPBACK, seeder.port)]
                )
                while torrent.have is None or torrent.have.count < 10:
                    await trio.sleep(0)
                scope.cancel()
        assert scope.cancelled_caught
        assert not torrent.complete.is_set()
        assert not (target / release.name).exists()
        # the seeder noticed the departure and keeps serving
        with trio.fail_after(10):
            while seeder.torrents[0].peers:
                await trio.sleep(0.01)


async def test_progress_reports_until_complete(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(3_000_000,))
    metainfo = create_torrent(release, version="v1", piece_length=32768)
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        await seeder.seed(metainfo, release.parent)
        peers = [(LOOPBACK, seeder.port)]
        torrent = await leecher.add_torrent(metainfo, tmp_path / "p", peers=peers)
        seen = []
        with trio.fail_after(30):
            async for status in torrent.progress(interval=0.01):
                seen.append(status)
    assert seen[-1].state is TorrentState.SEEDING
    assert seen[-1].verified_bytes == seen[-1].total_bytes == 3_000_000
    fractions = [status.fraction for status in seen]
    assert fractions == sorted(fractions)


@asynccontextmanager
async def seeder_and_two_leechers(
    metainfo: Metainfo, publisher: Path, downloads: Path, *, seed_rate: int
) -> AsyncIterator[tuple[Client, Torrent, Client, Torrent]]:
    """A capped seeder and two leechers that know only the seeder (PEX every 0.2 s)."""
    async with (
        Client(host=LOOPBACK, pex_interval=0.2, upload_limit=seed_rate) as seeder,
        Client(host=LOOPBACK, pex_interval=0.2) as first,
        Client(host=LOOPBACK, pex_interval=0.2) as second,
    ):
        await seeder.seed(metainfo, publisher)
        peers = [(LOOPBACK, seeder.port)]
        a = await first.add_torrent(metainfo, downloads / "a", peers=peers)
        b = await second.add_torrent(metainfo, downloads / "b", peers=peers)
        yield first, a, second, b


def knows(torrent: Torrent, client: Client) -> bool:
    return any(peer.connection.remote_peer_id == client.peer_id for peer in torrent.peers)


async def test_leechers_that_only_know_the_seeder_meet_through_pex(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(4_000_000,))
    metainfo = create_torrent(release, version="v1", piece_length=32768)
    async with seeder_and_two_leechers(
        metainfo, release.parent, tmp_path, seed_rate=2 << 20
    ) as (_, a, second, b):
        with trio.fail_after(30):
            while not knows(a, second):
                await trio.sleep(0.05)
            await a.complete.wait()
            await b.complete.wait()
    assert (tmp_path / "a" / release.name).read_bytes() == release.read_bytes()
    assert (tmp_path / "b" / release.name).read_bytes() == release.read_bytes()


async def test_private_torrents_do_not_exchange_peers(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(2_000_000,))
    metainfo = create_torrent(release, version="v1", piece_length=32768, private=True)
    async with seeder_and_two_leechers(
        metainfo, release.parent, tmp_path, seed_rate=1 << 20
    ) as (first, a, second, b):
        with trio.fail_after(30):
            await a.complete.wait()
            await b.complete.wait()
        assert not knows(a, second)
        assert not knows(b, first)


async def verification_order(torrent: Torrent) -> list[int]:
    """Poll a downloading torrent; return its pieces in the order they became verified."""
    order: list[int] = []
    seen: set[int] = set()
    with trio.fail_after(60):
        while not torrent.complete.is_set():
            if torrent.have is not None:
                for index in torrent.have:
                    if index not in seen:
                        seen.add(index)
                        order.append(index)
            await trio.sleep(0)
    assert torrent.error is None
    return order


async def test_sequential_download_verifies_pieces_roughly_in_order(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(32 << 20,))
    metainfo = create_torrent(release, version="v1", piece_length=256 << 10)
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        await seeder.seed(metainfo, release.parent)
        torrent = await leecher.add_torrent(
            metainfo, tmp_path / "seq", peers=[(LOOPBACK, seeder.port)], sequential=True
        )
        order = await verification_order(torrent)
    early = order[: len(order) // 10]
    assert max(early) < metainfo.num_pieces // 2
    assert (tmp_path / "seq" / release.name).read_bytes() == release.read_bytes()


async def test_a_high_priority_file_arrives_first(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(12 << 20, 4 << 20))
    metainfo = create_torrent(release, version="hybrid", piece_length=256 << 10)
    urgent = next(i for i, f in enumerate(metainfo.files) if f.length == 4 << 20)
    entry = metainfo.files[urgent]
    urgent_pieces = set(range(entry.offset // metainfo.piece_length,
                              -(-entry.end // metainfo.piece_length)))
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        await seeder.seed(metainfo, release.parent)
        torrent = await leecher.add_torrent(metainfo, tmp_path / "prio")
        torrent.set_file_priority(urgent, 7)
        leecher.connect_soon(torrent, (LOOPBACK, seeder.port))
        order = await verification_order(torrent)
    position = {index: rank for rank, index in enumerate(order)}
    assert max(position[i] for i in urgent_pieces) < len(order) // 2
    with pytest.raises(ConfigError):
        torrent.set_file_priority(0, 0)
