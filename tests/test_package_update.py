"""``opendistro update``: a folder of packages brought up to date on 127.0.0.1.

Each package's publisher folder is served by its own mirror, with the delta
files `publish_delta` writes; the manifest and the torrents sit in a channel
folder. The packages folder starts with the old releases and no state file,
so what is installed is found by checking files against the torrents.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import sys
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.delta.manifest import Manifest
from opendistro.delta.publish import publish_delta
from opendistro.errors import DownloadError
from opendistro.io.client import Client
from opendistro.io.delta_update import FileCost
from opendistro.io.package_update import (
    STATE_DIR,
    UpdateReport,
    choose_delta_files,
    update_packages,
)
from opendistro.metainfo import Metainfo
from opendistro.swarm.sources import SourcePolicy

from .mirror_server import MirrorServer

LOOPBACK = "127.0.0.1"
WORDS = [b"def", b"return", b"self", b"import", b"yield", b"class", b"while", b"lambda", b"None"]


def source_code(seed: int, size: int) -> bytes:
    """Compressible bytes that look like a module."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10)))
        out += b" = %d\n" % rng.getrandbits(20)
    return bytes(out[:size])


def modules(seed: int, count: int = 12, size: int = 150_000) -> dict[str, bytes]:
    return {f"src/module{n}.py": source_code(seed * 100 + n, size) for n in range(count)}


def edited(members: dict[str, bytes], name: str, at: int, text: bytes) -> dict[str, bytes]:
    changed = dict(members)
    changed[name] = members[name][:at] + text + members[name][at:]
    return changed


def write_tar_gz(path: Path, members: dict[str, bytes]) -> None:
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    with open(path, "wb") as raw, gzip.GzipFile(
        filename=path.name[: -len(".gz")], mode="wb", fileobj=raw, compresslevel=6, mtime=0
    ) as out:
        out.write(tar_bytes.getvalue())


def write_wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 5, 1, 12, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)


def write_blob(path: Path, seed: int, size: int = 100_000) -> None:
    path.write_bytes(random.Random(seed).randbytes(size))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (state included) and its digest."""
    return {
        str(path.relative_to(folder)): sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


Build = Callable[[Path], None]


@dataclass
class Package:
    name: str
    old: tuple[str, str, Build]
    """Version, file name, writer."""
    new: tuple[str, str, Build]
    depends: tuple[dict[str, str], ...] = ()
    v2_hash: bool = False


@dataclass
class Channel:
    manifest: Path
    packages: Path
    mirrors: dict[str, MirrorServer]
    new_files: dict[str, Path]
    """Package name to the new release's data as published."""


def channel_packages() -> list[Package]:
    """app needs base; data is random and changes completely, so a delta cannot pay."""
    base_old = modules(1)
    base_new = edited(base_old, "src/module4.py", 30_000, b"# fixed a bug\nvalue = 1\n")
    app_old = modules(2, count=8)
    app_new = edited(app_old, "src/module1.py", 500, b"import base\n")
    return [
        Package(
            "app",
            ("2.0", "app-2.0-py3-none-any.whl", lambda p: write_wheel(p, app_old)),
            ("2.1", "app-2.1-py3-none-any.whl", lambda p: write_wheel(p, app_new)),
            depends=({"name": "base", "min_version": "1.1"},),
        ),
        Package(
            "data",
            ("1", "data-1.bin", lambda p: write_blob(p, 1)),
            ("2", "data-2.bin", lambda p: write_blob(p, 2)),
        ),
        Package(
            "base",
            ("1.0", "base-1.0.tar.gz", lambda p: write_tar_gz(p, base_old)),
            ("1.1", "base-1.1.tar.gz", lambda p: write_tar_gz(p, base_new)),
            v2_hash=True,
        ),
    ]


def release_entry(
    package: Package, metainfo: Metainfo, version: str, sequence: int, mirror: str
) -> dict[str, Any]:
    info_hash = metainfo.info_hash_v2 if package.v2_hash else metainfo.info_hash_v1
    assert info_hash is not None
    entry: dict[str, Any] = {
        "name": package.name,
        "version": version,
        "sequence": sequence,
        "torrent": f"torrents/{metainfo.name}.torrent",
        "info_hash": info_hash.hex(),
        "mirrors": [mirror],
    }
    if package.depends:
        entry["depends"] = list(package.depends)
    return entry


@asynccontextmanager
async def published(tmp_path: Path, packages: list[Package]) -> AsyncIterator[Channel]:
    """Publisher folders on mirrors, a manifest, and a packages folder with the old releases."""
    folder = tmp_path / "packages"
    folder.mkdir()
    torrents = tmp_path / "channel" / "torrents"
    torrents.mkdir(parents=True)
    releases: list[dict[str, Any]] = []
    new_files = {}
    async with trio.open_nursery() as nursery:
        mirrors = {}
        for package in packages:
            publisher = tmp_path / "publishers" / package.name
            publisher.mkdir(parents=True)
            mirror = MirrorServer(publisher)
            await nursery.start(mirror.serve)
            mirrors[package.name] = mirror
            for sequence, (version, file_name, build) in enumerate((package.old, package.new), 1):
                path = publisher / file_name
                build(path)
                metainfo = create_torrent(path, version="hybrid", piece_length=32768)
                (torrents / f"{file_name}.torrent").write_bytes(metainfo.to_bytes())
                publish_delta(metainfo, publisher)
                entry = release_entry(package, metainfo, version, sequence, mirror.url)
                if sequence == 2:
                    entry["previous"] = package.old[0]
                    new_files[package.name] = path
                else:
                    shutil.copyfile(path, folder / file_name)
                releases.append(entry)
        manifest = tmp_path / "channel" / "manifest.json"
        manifest.write_text(json.dumps({
            "format": "opendistro-release-manifest", "version": 1, "releases": releases
        }))
        yield Channel(manifest, folder, mirrors, new_files)
        nursery.cancel_scope.cancel()


def quick_client() -> Client:
    """Gives up on a mirror at its first failure, so a failing test ends at once."""
    return Client(host=LOOPBACK, mirror_retries=1)


async def run_update(channel: Channel) -> UpdateReport:
    manifest = Manifest.decode(channel.manifest.read_bytes())
    with trio.fail_after(120):  # a guard against hanging, not a measurement
        return await update_packages(
            manifest, str(channel.manifest), channel.packages,
            sources=SourcePolicy.MIRRORS_ONLY, client=quick_client,
        )


async def test_update_brings_every_package_up_to_date_by_delta_where_it_pays(
    tmp_path: Path,
) -> None:
    async with published(tmp_path, channel_packages()) as channel:
        report = await run_update(channel)
        again = await run_update(channel)
    folder = channel.packages
    results = {result.name: result for result in report.updated}
    order = [result.name for result in report.updated]
    assert order.index("base") < order.index("app"), "dependencies come first"
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [STATE_DIR, *(path.name for path in channel.new_files.values())]
    ), "the old releases are gone, the new ones are there"
    for name, published_file in channel.new_files.items():
        assert (folder / published_file.name).read_bytes() == published_file.read_bytes()
        assert results[name].path == folder / published_file.name
    for name in ("base", "app"):
        result = results[name]
        assert (result.old_version, result.action, result.method) == (
            {"base": "1.0", "app": "2.0"}[name], "upgrade", "delta"
        )
        assert result.bytes_transferred < result.full_bytes * 0.15, result
        assert result.bytes_reused > result.full_bytes
        assert result.index_bytes > 0 and result.download_bytes == 0
    data = results["data"]
    assert data.method == "full" and "a delta would fetch" in data.reason
    assert data.delta_bytes == 0 and data.download_bytes == data.full_bytes
    assert data.bytes_transferred == data.full_bytes + data.index_bytes
    assert report.bytes_transferred < report.full_bytes * 0.3
    assert report.bytes_saved == report.full_bytes - report.bytes_transferred > 0
    state = json.loads((folder / STATE_DIR / "installed.json").read_text())
    assert {name: entry["version"] for name, entry in state["packages"].items()} == {
        "app": "2.1", "base": "1.1", "data": "2"
    }
    assert not (folder / STATE_DIR / "incoming").exists()
    assert again.updated == [] and again.bytes_transferred == 0
    assert again.current == {"app": "2.1", "base": "1.1", "data": "2"}


async def test_a_failure_half_way_changes_nothing_and_names_the_package(tmp_path: Path) -> None:
    async with published(tmp_path, channel_packages()) as channel:
        before = snapshot(channel.packages)
        channel.mirrors["app"].faults.status = 503
        with pytest.raises(DownloadError) as failure:
            await run_update(channel)
    assert channel.mirrors["base"].requests, "base was fetched before app failed"
    message = str(failure.value)
    assert message.startswith("app 2.0 -> 2.1: ") and "503" in message
    assert "nothing was changed" in message
    after = snapshot(channel.packages)
    assert after == before, "every old package is intact, nothing new is in the folder"


async def test_a_damaged_old_release_is_replaced_still_using_what_it_shares(
    tmp_path: Path,
) -> None:
    packages = [package for package in channel_packages() if package.name != "data"]
    async with published(tmp_path, packages) as channel:
        old = channel.packages / "app-2.0-py3-none-any.whl"
        damaged = bytearray(old.read_bytes())
        damaged[len(damaged) // 2] ^= 0x55  # breaks one member's deflate stream
        old.write_bytes(bytes(damaged))
        report = await run_update(channel)
    results = {result.name: result for result in report.updated}
    app = results["app"]
    assert (app.old_version, app.action, app.method) == (None, "replace", "delta")
    assert results["base"].action == "upgrade"
    new = channel.new_files["app"]
    assert (channel.packages / new.name).read_bytes() == new.read_bytes()
    assert not old.exists()
    assert app.bytes_transferred < app.full_bytes * 0.5


async def test_a_folder_release_keeping_its_name_is_swapped_in_place(tmp_path: Path) -> None:
    rng = random.Random(7)
    files = {f"docs/page{n}.html": source_code(n, 40_000) for n in range(5)}
    files["docs/logo.bin"] = rng.randbytes(30_000)
    changed = edited(files, "docs/page2.html", 100, b"<p>new paragraph</p>\n")

    def build(contents: dict[str, bytes]) -> Build:
        def write(path: Path) -> None:
            for name, data in contents.items():
                target = path.parent / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        return write

    # Each version lives in its own publisher folder: both are called "docs".
    old_root = tmp_path / "old-publisher"
    old_root.mkdir()
    build(files)(old_root / "docs")
    old_torrent = create_torrent(old_root / "docs", version="hybrid", piece_length=32768)
    package = Package("docs", ("1", "docs", build(files)), ("2", "docs", build(changed)))
    async with published(tmp_path, []) as channel:
        publisher = tmp_path / "publishers" / "docs"
        publisher.mkdir(parents=True)
        build(changed)(publisher / "docs")
        new_torrent = create_torrent(publisher / "docs", version="hybrid", piece_length=32768)
        publish_delta(new_torrent, publisher)
        shutil.copytree(old_root / "docs", channel.packages / "docs")
        torrents = channel.manifest.parent / "torrents"
        async with trio.open_nursery() as nursery:
            mirror = MirrorServer(publisher)
            await nursery.start(mirror.serve)
            entries = []
            for sequence, metainfo in enumerate((old_torrent, new_torrent), 1):
                (torrents / f"docs-{sequence}.torrent").write_bytes(metainfo.to_bytes())
                entry = release_entry(package, metainfo, str(sequence), sequence, mirror.url)
                entry["torrent"] = f"torrents/docs-{sequence}.torrent"
                entries.append(entry)
            channel.manifest.write_text(json.dumps({
                "format": "opendistro-release-manifest", "version": 1, "releases": entries
            }))
            report = await run_update(channel)
            nursery.cancel_scope.cancel()
    [result] = report.updated
    assert (result.old_version, result.new_version, result.method) == ("1", "2", "delta")
    for name, data in changed.items():
        assert (channel.packages / name).read_bytes() == data
    assert sorted(p.name for p in channel.packages.iterdir()) == [STATE_DIR, "docs"]
    assert not (channel.packages / STATE_DIR / "previous").exists()
    assert result.bytes_transferred < result.full_bytes * 0.25


async def test_the_update_command_reports_each_package_and_the_total(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "opendistro.cli", "update"]
    async with published(tmp_path, channel_packages()) as channel:
        args = [str(channel.manifest), "--dir", str(channel.packages), "--host", LOOPBACK,
                "--sources", "mirrors-only"]
        with trio.fail_after(120):
            done = await trio.run_process([*cli, *args, "--json"], capture_stdout=True,
                                          capture_stderr=True, check=False)
            assert done.returncode == 0, done.stderr.decode()
            text = await trio.run_process([*cli, *args], capture_stdout=True,
                                          capture_stderr=True, check=False)
        channel.manifest.write_text("{\"format\": \"opendistro-release-manifest\"}")
        broken = await trio.run_process([*cli, *args, "--json"], capture_stdout=True,
                                        capture_stderr=True, check=False)
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["ok"] is True
    methods = {entry["name"]: entry["method"] for entry in result["updated"]}
    assert methods == {"base": "delta", "app": "delta", "data": "full"}
    total = result["total"]
    assert total["packages"] == 3
    assert total["bytes_transferred"] < total["full_bytes"] * 0.3
    assert total["bytes_saved"] == total["full_bytes"] - total["bytes_transferred"]
    lines = text.stdout.decode().splitlines()
    assert "app: 2.1, up to date" in lines and lines[-1].startswith("total: 0 updated")
    assert broken.returncode == 1
    failure = json.loads(broken.stdout.decode().strip().splitlines()[-1])
    assert failure["ok"] is False and failure["type"] == "ManifestError"
    assert "'version' is missing" in failure["error"]


def test_a_delta_is_chosen_per_file_and_only_when_it_pays_with_the_index() -> None:
    costs = [
        FileCost(0, ("same.bin",), 50_000, 0, 50_000),
        FileCost(1, ("edited.txt",), 40_000, 3_000, 37_000),
        FileCost(2, ("new.bin",), 10_000, 10_000, 0),
    ]
    assert choose_delta_files(1_000, costs) == [0, 1], "the new file downloads in full"
    assert choose_delta_files(87_000, costs) == [], "an index this big outweighs the saving"
    assert choose_delta_files(0, costs[2:]) == []
