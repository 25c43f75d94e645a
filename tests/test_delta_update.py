"""Delta updates end to end on 127.0.0.1: old version present, new one from a mirror.

The publisher indexes the new release (`publish_delta`), a mirror serves it;
the client rebuilds what it can from the old files, then the ordinary
download verifies every piece and fetches what is still missing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.delta.publish import publish_delta
from opendistro.errors import DeltaPeerError, MirrorError
from opendistro.io.client import Client
from opendistro.io.delta_update import DeltaOutcome, update_from_previous
from opendistro.metainfo import Metainfo

from .delta_mirror_update import update_over_mirror
from .mirror_server import MirrorServer

LOOPBACK = "127.0.0.1"


def text(rng: random.Random, size: int) -> bytes:
    """Compressible, source-code-like bytes."""
    words = [b"def", b"return", b"self", b"import", b"value", b"class", b"for", b"in", b"if"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + b"\n"
        out += b"%d" % rng.getrandbits(24)
    return bytes(out[:size])


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(
        filename=path.name.removesuffix(".gz"), mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as out:
        out.write(buffer.getvalue())
    return path


def wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def members(seed: int, count: int = 12, size: int = 120_000) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"pkg/module{n}.py": text(rng, size) for n in range(count)}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def update(
    new_root: Path, metainfo: Metainfo, previous: list[Path], target: Path
) -> tuple[DeltaOutcome, int]:
    """Publish, serve, rebuild, then finish with the ordinary download; returns the traffic."""
    publish_delta(metainfo, new_root)
    return await update_over_mirror(new_root, metainfo, previous, target)


def release(root: Path, name: str, build: Callable[[Path], Path]) -> tuple[Path, Metainfo]:
    path = build(root / name)
    return path, create_torrent(path, version="hybrid", piece_length=65536)


async def test_a_changed_file_in_a_tarball_costs_little_and_ends_bit_exact(tmp_path: Path) -> None:
    old_members = members(1)
    new_members = dict(old_members)
    new_members["pkg/module3.py"] = old_members["pkg/module3.py"][:5000] + b"# changed\n" + (
        old_members["pkg/module3.py"][5000:]
    )
    old = tarball(tmp_path / "old" / "pkg-1.0.tar.gz", old_members)
    old_digest = digest(old)
    new, metainfo = release(tmp_path / "new", "pkg-1.1.tar.gz", lambda p: tarball(p, new_members))
    outcome, from_mirrors = await update(new.parent, metainfo, [old], tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert digest(old) == old_digest, "the old version is never modified"
    assert from_mirrors == 0, "every piece was rebuilt from the old version"
    assert outcome.bytes_fetched < new.stat().st_size * 0.10
    assert outcome.bytes_reused > 1_000_000
    assert not outcome.failures


async def test_a_wheel_with_one_changed_member_reuses_the_others(tmp_path: Path) -> None:
    old_members = members(2)
    new_members = dict(old_members)
    new_members["pkg/module5.py"] = b"# new header\n" + old_members["pkg/module5.py"]
    old = wheel(tmp_path / "old" / "pkg-1.0-py3-none-any.whl", old_members)
    new, metainfo = release(
        tmp_path / "new", "pkg-1.1-py3-none-any.whl", lambda p: wheel(p, new_members)
    )
    outcome, from_mirrors = await update(new.parent, metainfo, [old], tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert from_mirrors == 0
    assert outcome.bytes_fetched < new.stat().st_size * 0.10


async def test_moved_and_renamed_files_of_a_multi_file_release_are_found(tmp_path: Path) -> None:
    rng = random.Random(3)
    files = {f"lib/part{n}.bin": rng.randbytes(200_000) for n in range(4)}
    old_root = tmp_path / "old" / "app-1.0"
    for name, data in files.items():
        (old_root / name).parent.mkdir(parents=True, exist_ok=True)
        (old_root / name).write_bytes(data)
    new_root = tmp_path / "new" / "app-1.1"
    renamed = {"share/renamed.bin": files["lib/part0.bin"], "lib/part1.bin": files["lib/part1.bin"],
               "lib/part2.bin": files["lib/part2.bin"][:100_000] + rng.randbytes(3000)
               + files["lib/part2.bin"][100_000:],
               "lib/new.bin": rng.randbytes(20_000)}
    for name, data in renamed.items():
        (new_root / name).parent.mkdir(parents=True, exist_ok=True)
        (new_root / name).write_bytes(data)
    metainfo = create_torrent(new_root, version="hybrid", piece_length=65536)
    outcome, _ = await update(new_root.parent, metainfo, [old_root], tmp_path / "dl")
    for name, data in renamed.items():
        assert (tmp_path / "dl" / "app-1.1" / name).read_bytes() == data
    total = sum(len(data) for data in renamed.values())
    assert outcome.bytes_fetched < 60_000  # the inserted 3,000 and the new 20,000, plus edges
    assert outcome.bytes_reused > total - 60_000


@pytest.mark.parametrize("kind", ["corrupted", "different", "unchanged", "missing"])
async def test_whatever_the_old_version_the_result_is_bit_exact(tmp_path: Path, kind: str) -> None:
    rng = random.Random(4)
    data = rng.randbytes(600_000)
    new, metainfo = release(tmp_path / "new", "blob.bin", lambda p: write(p, data))
    old = tmp_path / "old" / "blob.bin"
    if kind == "corrupted":
        broken = bytearray(data)
        for position in range(0, len(broken), 50_000):
            broken[position] ^= 0xFF
        write(old, bytes(broken))
    elif kind == "different":
        write(old, rng.randbytes(600_000))
    elif kind == "unchanged":
        write(old, data)
    outcome, from_mirrors = await update(new.parent, metainfo, [old], tmp_path / "dl")
    assert (tmp_path / "dl" / "blob.bin").read_bytes() == data
    traffic = outcome.bytes_fetched + from_mirrors
    if kind == "unchanged":
        assert traffic == 0 and outcome.bytes_reused == len(data)
    elif kind == "corrupted":
        assert traffic < len(data) // 4
    else:
        assert traffic >= len(data)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_create_get_previous_and_delta_index_on_the_command_line(tmp_path: Path) -> None:
    old_members = members(5)
    new_members = dict(old_members)
    new_members["pkg/module7.py"] = old_members["pkg/module7.py"][:-300] + b"# patched\n"
    old = tarball(tmp_path / "old" / "pkg-1.0.tar.gz", old_members)
    new = tarball(tmp_path / "pub" / "pkg-1.1.tar.gz", new_members)
    cli = [sys.executable, "-m", "opendistro.cli"]

    async def run(*args: str) -> dict[str, Any]:
        done = await trio.run_process([*cli, *args, "--json"], capture_stdout=True,
                                      capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
        result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        return result

    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(new.parent)
        await nursery.start(mirror.serve)
        torrent = tmp_path / "pkg.torrent"
        created = await run("create", str(new), "-o", str(torrent), "--webseed", mirror.url)
        assert Path(created["delta_index"]) == new.parent / "pkg-1.1.tar.gz.odindex"
        described = await run("delta-index", created["delta_index"])
        assert described["files"][0]["segments"] == {"gzip": 1}
        with trio.fail_after(120):
            result = await run("get", str(torrent), "-o", str(tmp_path / "dl"), "--host",
                               LOOPBACK, "--previous", str(old), "--sources", "mirrors-only")
        nursery.cancel_scope.cancel()
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert result["delta"]["used"] and result["bytes_reused"] > 1_000_000
    assert result["bytes_from_mirrors"] < new.stat().st_size * 0.15  # index included


async def update_from_seeder(
    new_root: Path, metainfo: Metainfo, previous: list[Path], target: Path
) -> tuple[DeltaOutcome, int, int]:
    """Publish, seed (the seeder serves the index and content over od_delta), rebuild, finish."""
    publish_delta(metainfo, new_root)
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        seeding = await seeder.seed(metainfo, new_root)
        address = (LOOPBACK, seeder.port)
        outcome = await update_from_previous(metainfo, target, previous, [], peers=[address])
        torrent = await leecher.add_torrent(metainfo, target, peers=[address])
        with trio.fail_after(60):
            await torrent.complete.wait()
        served = seeding.delta_server.requests_served
        status = torrent.status()
    assert torrent.error is None
    return outcome, status.bytes_from_peers, served


async def test_a_seeder_serves_the_index_and_changed_content_over_od_delta(
    tmp_path: Path,
) -> None:
    old_members = members(6)
    new_members = dict(old_members)
    new_members["pkg/module2.py"] = b"# moved up\n" + old_members["pkg/module2.py"]
    old = tarball(tmp_path / "old" / "pkg-1.0.tar.gz", old_members)
    new, metainfo = release(tmp_path / "new", "pkg-1.1.tar.gz", lambda p: tarball(p, new_members))
    outcome, from_peers, served = await update_from_seeder(
        new.parent, metainfo, [old], tmp_path / "dl"
    )
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert served > 0 and outcome.index_bytes > 0
    assert from_peers == 0, "every piece was rebuilt from the old version and od_delta content"
    assert outcome.bytes_fetched + outcome.index_bytes < new.stat().st_size * 0.15


async def test_over_od_delta_a_multi_file_release_with_a_wheel_inside(tmp_path: Path) -> None:
    old_members = members(7)
    new_members = dict(old_members)
    new_members["pkg/module1.py"] = old_members["pkg/module1.py"].replace(b"self", b"this", 3)
    rng = random.Random(8)
    blob = rng.randbytes(300_000)
    old_root = tmp_path / "old" / "bundle-1.0"
    wheel(old_root / "pkg-1.0-py3-none-any.whl", old_members)
    write(old_root / "data" / "blob.bin", blob)
    new_root = tmp_path / "new" / "bundle-1.1"
    wheel(new_root / "pkg-1.1-py3-none-any.whl", new_members)
    write(new_root / "data" / "blob.bin", blob[:1000] + b"!" + blob[1000:])
    metainfo = create_torrent(new_root, version="hybrid", piece_length=65536)
    outcome, from_peers, served = await update_from_seeder(
        new_root.parent, metainfo, [old_root], tmp_path / "dl"
    )
    for name in ("pkg-1.1-py3-none-any.whl", "data/blob.bin"):
        rebuilt = tmp_path / "dl" / "bundle-1.1" / name
        assert rebuilt.read_bytes() == (new_root / name).read_bytes()
    assert served > 0 and from_peers < 200_000
    assert outcome.bytes_reused > 1_000_000


async def test_an_index_the_signature_does_not_name_is_refused(tmp_path: Path) -> None:
    data = random.Random(9).randbytes(300_000)
    new, metainfo = release(tmp_path / "new", "blob.bin", lambda p: write(p, data))
    old = write(tmp_path / "old" / "blob.bin", data[:200_000])
    published = publish_delta(metainfo, new.parent)
    signed = hashlib.sha256(published.index_path.read_bytes()).digest()
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(new.parent)
        await nursery.start(mirror.serve)
        with pytest.raises(MirrorError, match="signature"):
            await update_from_previous(metainfo, tmp_path / "a", [old], [mirror.url],
                                       index_sha256=bytes(32))
        outcome = await update_from_previous(metainfo, tmp_path / "b", [old], [mirror.url],
                                             index_sha256=signed)
        nursery.cancel_scope.cancel()
    assert outcome.bytes_reused >= 190_000


async def test_a_peer_without_the_index_is_passed_over_for_the_mirror(tmp_path: Path) -> None:
    data = random.Random(10).randbytes(300_000)
    new, metainfo = release(tmp_path / "new", "blob.bin", lambda p: write(p, data))
    old = write(tmp_path / "old" / "blob.bin", data[:250_000])
    async with trio.open_nursery() as nursery, Client(host=LOOPBACK) as seeder:
        await seeder.seed(metainfo, new.parent)  # nothing published yet: it serves no index
        publish_delta(metainfo, new.parent)  # for the mirror only
        mirror = MirrorServer(new.parent)
        await nursery.start(mirror.serve)
        peer = [(LOOPBACK, seeder.port)]
        with pytest.raises(MirrorError, match="no delta index"):
            await update_from_previous(metainfo, tmp_path / "a", [old], [], peers=peer)
        outcome = await update_from_previous(metainfo, tmp_path / "b", [old], [mirror.url],
                                             peers=peer)
        nursery.cancel_scope.cancel()
    assert outcome.bytes_reused >= 200_000


async def test_a_peer_with_a_bad_index_is_dropped_for_the_next_peer_or_the_mirror(
    tmp_path: Path,
) -> None:
    data = random.Random(11).randbytes(300_000)
    new, metainfo = release(tmp_path / "new", "blob.bin", lambda p: write(p, data))
    old = write(tmp_path / "old" / "blob.bin", data[:250_000])
    publish_delta(metainfo, new.parent)
    async with trio.open_nursery() as nursery, Client(host=LOOPBACK) as liar, \
            Client(host=LOOPBACK) as honest:
        lying = (await liar.seed(metainfo, new.parent)).delta_server
        lying.index_bytes, lying.compressed_index = b"d1:xi1ee", None  # announced, not an index
        await honest.seed(metainfo, new.parent)
        mirror = MirrorServer(new.parent)
        await nursery.start(mirror.serve)
        bad, good = (LOOPBACK, liar.port), (LOOPBACK, honest.port)
        with pytest.raises(DeltaPeerError, match="bad index"):
            await update_from_previous(metainfo, tmp_path / "a", [old], [], peers=[bad])
        with pytest.raises(DeltaPeerError, match="does not match"):
            await update_from_previous(metainfo, tmp_path / "b", [old], [], peers=[good],
                                       index_sha256=bytes(32))
        outcomes = [
            await update_from_previous(metainfo, tmp_path / "c", [old], [], peers=[bad, good]),
            await update_from_previous(metainfo, tmp_path / "d", [old], [mirror.url],
                                       peers=[bad]),
        ]
        nursery.cancel_scope.cancel()
    for outcome in outcomes:
        assert outcome.index is not None and outcome.index.name == "blob.bin"
        assert outcome.bytes_reused >= 200_000
