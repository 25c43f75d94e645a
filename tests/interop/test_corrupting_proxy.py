"""A real libtorrent seeder behind a proxy that flips bits: we catch it and ban the proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.torrent import TorrentState
from opendistro.wire.mse import EncryptionPolicy

from ..adversaries import LOOPBACK, CorruptingProxy
from .lt_helpers import lt_seeder, require_libtorrent

pytestmark = pytest.mark.interop


async def test_bits_flipped_between_libtorrent_and_us_are_caught_and_the_path_banned(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    require_libtorrent()
    release = make_release(sizes=(3_000_000,))
    metainfo = create_torrent(release, version="v1", piece_length=65536)
    torrent_file = tmp_path / "release.torrent"
    torrent_file.write_bytes(metainfo.to_bytes())
    async with (
        lt_seeder(torrent_file, release.parent) as lt_port,
        trio.open_nursery() as nursery,
    ):
        proxy = CorruptingProxy(upstream_port=lt_port, every=3)
        await nursery.start(proxy.run)
        async with (
            Client(host=LOOPBACK) as honest,
            # Plaintext, so the proxy can find block data in the stream.
            Client(host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT) as leecher,
        ):
            await honest.seed(metainfo, release.parent)
            torrent = await leecher.add_torrent(
                metainfo,
                tmp_path / "dl",
                peers=[(LOOPBACK, proxy.port), (LOOPBACK, honest.port)],
            )
            with trio.fail_after(90):
                await torrent.complete.wait()
        nursery.cancel_scope.cancel()
    assert torrent.state is TorrentState.SEEDING and torrent.error is None
    assert torrent.final_path is not None
    assert torrent.final_path.read_bytes() == release.read_bytes()
    assert proxy.pieces_corrupted >= 1
    assert torrent.hash_failures >= 1
    assert f"{LOOPBACK}:{proxy.port}" in leecher.banned
    assert f"{LOOPBACK}:{honest.port}" not in leecher.banned
