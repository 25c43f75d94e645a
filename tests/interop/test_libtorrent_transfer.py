"""Transfers between opendistro and libtorrent (a real third-party client) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.metainfo import Metainfo

from .lt_helpers import lt_download, lt_seeder, require_libtorrent

pytestmark = pytest.mark.interop
LOOPBACK = "127.0.0.1"
VERSIONS = ["v1", "v2", "hybrid"]
LAYOUTS = {"single": (600_000,), "multi": (70_000, 0, 250_001, 131_072)}


def tree_bytes(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def write_torrent(metainfo: Metainfo, folder: Path) -> Path:
    path = folder / f"{metainfo.name}.torrent"
    path.write_bytes(metainfo.to_bytes())
    return path


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_libtorrent_downloads_from_us(
    make_release: Callable[..., Path], tmp_path: Path, version: str, layout: str
) -> None:
    require_libtorrent()
    release = make_release(sizes=LAYOUTS[layout])
    metainfo = create_torrent(release, version=version, piece_length=32768)  # type: ignore[arg-type]
    torrent_file = write_torrent(metainfo, tmp_path)
    async with Client(host=LOOPBACK) as seeder:
        await seeder.seed(metainfo, release.parent)
        summary = await lt_download(torrent_file, tmp_path / "lt", [seeder.port])
        uploaded = seeder.torrents[0].status().bytes_uploaded
    assert summary["done"], summary["stderr"]
    assert tree_bytes(tmp_path / "lt" / release.name) == tree_bytes(release)
    assert uploaded >= sum(f.length for f in metainfo.data_files())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_we_download_from_libtorrent(
    make_release: Callable[..., Path], tmp_path: Path, version: str, layout: str
) -> None:
    require_libtorrent()
    release = make_release(sizes=LAYOUTS[layout])
    metainfo = create_torrent(release, version=version, piece_length=32768)  # type: ignore[arg-type]
    torrent_file = write_torrent(metainfo, tmp_path)
    async with lt_seeder(torrent_file, release.parent) as port, Client(host=LOOPBACK) as client:
        torrent = await client.add_torrent(metainfo, tmp_path / "ours", peers=[(LOOPBACK, port)])
        with trio.fail_after(60):
            await torrent.complete.wait()
        assert torrent.error is None
        assert torrent.hash_failures == 0
    assert tree_bytes(tmp_path / "ours" / release.name) == tree_bytes(release)


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
async def test_magnet_download_from_libtorrent(
    make_release: Callable[..., Path], tmp_path: Path, version: str
) -> None:
    require_libtorrent()
    release = make_release(sizes=(120_000, 333_333))
    metainfo = create_torrent(release, version=version, piece_length=65536)  # type: ignore[arg-type]
    torrent_file = write_torrent(metainfo, tmp_path)
    async with lt_seeder(torrent_file, release.parent) as port, Client(host=LOOPBACK) as client:
        link = metainfo.magnet_link().to_uri() + f"&x.pe=127.0.0.1:{port}"
        torrent = await client.add_magnet(link, tmp_path / "magnet")
        with trio.fail_after(60):
            await torrent.complete.wait()
        assert torrent.error is None
        assert torrent.metainfo is not None
        assert torrent.metainfo.info_bytes == metainfo.info_bytes
    assert tree_bytes(tmp_path / "magnet" / release.name) == tree_bytes(release)
