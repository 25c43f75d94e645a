"""BEP 52 with libtorrent: it fetches the piece layers of a v2 torrent from us."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.metainfo import Metainfo

from .lt_helpers import lt_download, require_libtorrent

pytestmark = pytest.mark.interop
LOOPBACK = "127.0.0.1"


@pytest.mark.parametrize("sizes", [(700_000,), (300_000, 1_200_000)])
async def test_libtorrent_gets_piece_layers_it_lacks_from_our_seeder(
    make_release: Callable[..., Path], tmp_path: Path, sizes: tuple[int, ...]
) -> None:
    require_libtorrent()
    release = make_release(sizes=sizes)
    metainfo = create_torrent(release, version="v2", piece_length=32768)
    assert metainfo.piece_layers
    # What a v2 magnet link gives libtorrent: the info dictionary, no piece layers.
    bare = Metainfo.from_info_bytes(metainfo.info_bytes)
    assert not bare.piece_layers
    torrent_file = tmp_path / "bare.torrent"
    torrent_file.write_bytes(bare.to_bytes())
    async with Client(host=LOOPBACK) as seeder:
        await seeder.seed(metainfo, release.parent)
        summary = await lt_download(torrent_file, tmp_path / "lt", [seeder.port])
        answered = seeder.torrents[0].v2_hashes.requests_answered
    assert summary["done"], summary["stderr"]
    assert answered >= 1  # libtorrent asked for the layers it lacked, and we answered
    downloaded = tmp_path / "lt" / release.name
    originals = [release] if release.is_file() else sorted(release.rglob("*.bin"))
    for original in originals:
        copy = downloaded if release.is_file() else downloaded / original.relative_to(release)
        assert copy.read_bytes() == original.read_bytes()
