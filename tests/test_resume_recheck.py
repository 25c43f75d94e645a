"""Resume after the data changed underneath: only the damaged pieces are fetched again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client

LOOPBACK = "127.0.0.1"
PIECE = 32768


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
async def test_damaged_staged_data_is_found_and_only_bad_pieces_fetched_again(
    make_release: Callable[..., Path], tmp_path: Path, damage: str
) -> None:
    release = make_release(sizes=(4_000_000,))
    metainfo = create_torrent(release, version="hybrid", piece_length=PIECE)
    target = tmp_path / "dl"
    async with Client(host=LOOPBACK) as seeder:
        await seeder.seed(metainfo, release.parent)
        async with Client(host=LOOPBACK) as leecher:
            torrent = await leecher.add_torrent(metainfo, target, peers=[(LOOPBACK, seeder.port)])
            with trio.fail_after(30):
                while torrent.have is None or torrent.have.count < metainfo.num_pieces // 2:
                    await trio.sleep(0)
        assert torrent.have is not None
        had = {i for i in range(metainfo.num_pieces) if torrent.have.has(i)}
        staged = target / f".{release.name}.opendistro" / release.name
        assert staged.is_file()
        verified_piece = min(had)
        if damage == "corrupted":
            with staged.open("r+b") as handle:
                handle.seek(verified_piece * PIECE + 100)
                handle.write(b"\x00rot\x00")
            damaged = {verified_piece}
        else:
            cut = (max(had) - 2) * PIECE + 5
            with staged.open("r+b") as handle:
                handle.truncate(cut)
            damaged = {i for i in had if (i + 1) * PIECE > cut}
        async with Client(host=LOOPBACK) as leecher:
            again = await leecher.add_torrent(metainfo, target, peers=[(LOOPBACK, seeder.port)])
            assert again.have is not None
            kept = {i for i in range(metainfo.num_pieces) if again.have.has(i)}
            # Every damaged piece is dropped; every other verified piece is kept (a piece
            # written while the first run was stopping is found by the re-check too).
            assert damaged.isdisjoint(kept)
            assert had - damaged <= kept
            with trio.fail_after(60):
                await again.complete.wait()
            fetched = sum(again.bytes_from_peer.values())
    assert (target / release.name).read_bytes() == release.read_bytes()
    missing = set(range(metainfo.num_pieces)) - kept
    assert fetched == sum(metainfo.piece_size(i) for i in missing)


async def test_a_peer_that_connects_while_the_seeder_checks_its_data_is_served(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(64_000_000,))
    metainfo = create_torrent(release, version="hybrid")
    async with (
        Client(host=LOOPBACK) as seeder,
        Client(host=LOOPBACK) as leecher,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(seeder.seed, metainfo, release.parent)  # hashes 64 MB first
        await trio.sleep(0.01)
        torrent = await leecher.add_torrent(
            metainfo, tmp_path / "dl", peers=[(LOOPBACK, seeder.port)]
        )
        # Well before the 30 s a refused dial would wait to try again.
        with trio.fail_after(20):
            await torrent.complete.wait()
    assert torrent.error is None
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
