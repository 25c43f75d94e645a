"""The DHT over real UDP on 127.0.0.1: a small network of our nodes, and a trackerless download."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.dht.node import DHTConfig
from opendistro.io.client import Client
from opendistro.io.dht import DHTService, dht_info_hashes
from opendistro.metainfo import Metainfo

LOOPBACK = "127.0.0.1"
INFO_HASH = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")


def same_tree(a: Path, b: Path) -> bool:
    if a.is_file():
        return b.is_file() and a.read_bytes() == b.read_bytes()
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


async def test_ten_nodes_find_a_peer_for_a_torrent_without_tracker() -> None:
    config = DHTConfig(query_timeout=1.0)
    async with DHTService(host=LOOPBACK, config=config) as first:
        services = [first]
        async with trio.open_nursery() as nursery:
            for _ in range(9):
                service = DHTService(
                    host=LOOPBACK, bootstrap=[(LOOPBACK, first.port)], config=config
                )
                await nursery.start(service.run)
                services.append(service)
            with trio.fail_after(20):
                for service in services:
                    await service.bootstrapped.wait()
                found_before = await services[8].get_peers(INFO_HASH)
                assert found_before == []
                await services[3].announce(INFO_HASH, 51413)
                # the announce is fire-and-forget; wait until a node stored it
                while not any(INFO_HASH in s.node.peer_store for s in services[:3] + services[4:]):
                    await trio.sleep(0.01)
                peers = await services[8].get_peers(INFO_HASH)
            assert (LOOPBACK, 51413) in peers
            assert all(len(s.node.table) >= 1 for s in services)
            nursery.cancel_scope.cancel()


async def test_an_idle_node_sleeps_until_its_next_deadline() -> None:
    """Two idle nodes wake only for their deadlines (minutes apart), so they cost no CPU.

    A timer loop that woke itself after every send once spun here at ~70% of a core.
    """
    first = DHTService(host=LOOPBACK)
    async with first, DHTService(host=LOOPBACK, bootstrap=[(LOOPBACK, first.port)]) as second:
        with trio.fail_after(10):
            await second.bootstrapped.wait()
        await trio.sleep(0.1)  # let the bootstrap's last answers arrive
        cpu_before = time.thread_time()
        await trio.sleep(1.0)
        cpu_spent = time.thread_time() - cpu_before
    assert cpu_spent < 0.2


async def test_node_id_persists_in_id_file(tmp_path: Path) -> None:
    id_file = tmp_path / "dht.id"
    async with DHTService(host=LOOPBACK, id_file=id_file) as service:
        first_id = service.node.node_id
    assert id_file.read_text().strip() == first_id.hex()
    async with DHTService(host=LOOPBACK, id_file=id_file) as service:
        assert service.node.node_id == first_id


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
async def test_magnet_without_tracker_downloads_with_peers_from_dht_only(
    make_release: Callable[..., Path], tmp_path: Path, version: str
) -> None:
    release = make_release(sizes=(70_000, 150_000))
    metainfo = create_torrent(release, version=version, piece_length=32768)  # type: ignore[arg-type]
    assert metainfo.announce_tiers == []
    link = metainfo.magnet_link()
    assert link.trackers == () and link.peers == ()
    if version == "v2":
        assert link.info_hash_v1 is None  # found under the truncated v2 hash (BEP 52)
    # what both clients say is printed, so a failure shows where the download stalled
    async with Client(host=LOOPBACK, dht_bootstrap=[], log=lambda m: print("seeder:", m)) as seeder:
        assert seeder.dht is not None
        await seeder.seed(metainfo, release.parent)
        keys = dht_info_hashes(seeder.torrents[0])
        with trio.fail_after(10):
            while not all(key in seeder.dht.node.peer_store for key in keys):
                await trio.sleep(0.01)
        async with Client(
            host=LOOPBACK,
            dht_bootstrap=[(LOOPBACK, seeder.dht.port)],
            log=lambda m: print("leecher:", m),
        ) as leecher:
            torrent = await leecher.add_magnet(link.to_uri(), tmp_path / "m")
            with trio.fail_after(30):
                await torrent.complete.wait()
            assert torrent.error is None
            assert torrent.metainfo is not None
            assert torrent.metainfo.info_bytes == metainfo.info_bytes
            assert sum(torrent.bytes_from_peer.values()) > 0
    assert same_tree(release, tmp_path / "m" / release.name)


async def test_private_torrent_is_never_put_on_the_dht(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(50_000,))
    metainfo: Metainfo = create_torrent(release, version="v1", piece_length=32768, private=True)
    assert metainfo.private
    async with Client(host=LOOPBACK, dht_bootstrap=[]) as seeder:
        assert seeder.dht is not None
        await seeder.seed(metainfo, release.parent)
        async with DHTService(host=LOOPBACK, bootstrap=[(LOOPBACK, seeder.dht.port)]) as other:
            with trio.fail_after(10):
                await other.bootstrapped.wait()
                peers = await other.get_peers(metainfo.wire_info_hash)
        assert peers == []
        assert len(seeder.dht.node.peer_store) == 0
