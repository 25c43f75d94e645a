"""`opendistro get FILE.meta4`: its torrent, mirrors, hashes and signatures, on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.checksums.openpgp import Keyring
from opendistro.create import create_torrent
from opendistro.errors import IntegrityError, MetalinkError, SignatureError
from opendistro.io.client import Client
from opendistro.io.metalink_download import download_metalink, fetch_metaurl_torrent
from opendistro.metainfo import Metainfo
from opendistro.mirrors.metalink import (
    Digest,
    Metalink,
    Signature,
    build_metalink,
    parse_metalink,
    render_metalink,
)

from .mirror_server import MirrorServer

LOOPBACK = "127.0.0.1"


def client() -> Client:
    return Client(host=LOOPBACK)


def publish(release: Path, mirror: MirrorServer, *, with_torrent: bool) -> Metalink:
    """Write the release's .torrent beside it on the mirror and describe both in a Metalink."""
    metainfo = create_torrent(release, version="hybrid", piece_length=65536)
    (release.parent / "release.torrent").write_bytes(metainfo.to_bytes())
    torrent_url = f"{mirror.url}release.torrent" if with_torrent else None
    return build_metalink(
        metainfo, release.parent, mirrors=[mirror.url], torrent_url=torrent_url
    )


def originals(release: Path) -> list[Path]:
    return [release] if release.is_file() else sorted(p for p in release.rglob("*") if p.is_file())


@pytest.mark.parametrize("sizes", [(2_000_000,), (700_000, 300_001, 65536)])
async def test_get_meta4_on_the_command_line_uses_its_torrent_and_mirrors(
    make_release: Callable[..., Path], tmp_path: Path, sizes: tuple[int, ...]
) -> None:
    release = make_release(sizes=sizes)
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        document = tmp_path / "release.meta4"
        document.write_bytes(render_metalink(publish(release, mirror, with_torrent=True)))
        out = tmp_path / "out"
        command = [sys.executable, "-m", "opendistro.cli", "get", str(document),
                   "-o", str(out), "--host", LOOPBACK, "--json"]
        with trio.fail_after(120):
            done = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                          check=False)
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    total = sum(sizes)
    assert result["ok"] and result["torrent"] is True
    assert result["bytes_from_mirrors"] >= total and result["bytes_from_peers"] == 0
    assert len(result["paths"]) == len(sizes)
    assert set(result["whole_file_hashes"].values()) == {"sha-256"}
    for original in originals(release):
        assert (out / original.relative_to(release.parent)).read_bytes() == original.read_bytes()
    assert not (out / ".opendistro" / "metalink").exists() or not any(
        (out / ".opendistro" / "metalink").iterdir()
    )


async def test_without_a_torrent_the_metalink_piece_hashes_check_each_file(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(1_500_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metalink = publish(release, mirror, with_torrent=False)
        assert await fetch_metaurl_torrent(metalink) is None
        outcome = await download_metalink(client, metalink, tmp_path / "out")
        nursery.cancel_scope.cancel()
    final = tmp_path / "out" / release.name
    assert outcome.paths == [final]
    assert final.read_bytes() == release.read_bytes()
    assert outcome.bytes_from_mirrors >= 1_500_000


async def test_a_mirror_serving_bad_bytes_never_gets_them_into_the_file(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(1_000_000,))
    async with trio.open_nursery() as nursery:
        bad, good = MirrorServer(release.parent), MirrorServer(release.parent)
        bad.faults.corrupt_at = 300_000
        await nursery.start(bad.serve)
        await nursery.start(good.serve)
        metainfo = create_torrent(release, version="hybrid", piece_length=65536)
        metalink = build_metalink(metainfo, release.parent, mirrors=[bad.url, good.url])
        await download_metalink(client, metalink, tmp_path / "out")
        nursery.cancel_scope.cancel()
    assert bad.requests, "both mirrors get work: one starts a run, the other takes its tail"
    assert (tmp_path / "out" / release.name).read_bytes() == release.read_bytes()


async def test_a_metaurl_naming_another_release_is_refused(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(500_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metalink = publish(release, mirror, with_torrent=True)
        # The mirror's .torrent is replaced by one for different bytes of the same name and size.
        other = tmp_path / "other" / release.name
        other.parent.mkdir()
        other.write_bytes(bytes(500_000))
        impostor = create_torrent(other, version="hybrid", piece_length=65536)
        (release.parent / "release.torrent").write_bytes(impostor.to_bytes())
        torrent = await fetch_metaurl_torrent(metalink)
        assert torrent is not None
        with pytest.raises(MetalinkError, match="another release"):
            await download_metalink(client, metalink, tmp_path / "out", torrent=torrent)
        nursery.cancel_scope.cancel()
    assert not (tmp_path / "out" / release.name).exists()


async def test_a_missing_metaurl_torrent_is_a_clear_error(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(100_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metalink = publish(release, mirror, with_torrent=True)
        (release.parent / "release.torrent").unlink()
        with pytest.raises(MetalinkError, match="404"):
            await fetch_metaurl_torrent(metalink)
        nursery.cancel_scope.cancel()


def with_file(metalink: Metalink, **changes: object) -> Metalink:
    first = dataclasses.replace(metalink.files[0], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(metalink, files=(first, *metalink.files[1:]))


async def test_a_whole_file_hash_mismatch_leaves_nothing_at_the_final_path(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(400_000,))
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        metalink = with_file(
            publish(release, mirror, with_torrent=False), hashes=(Digest("sha-256", bytes(32)),)
        )
        with pytest.raises(IntegrityError, match="sha-256"):
            await download_metalink(client, metalink, tmp_path / "out")
        nursery.cancel_scope.cancel()
    assert not (tmp_path / "out" / release.name).exists()


def test_a_file_without_piece_hashes_or_torrent_is_refused_before_fetching(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(100_000,))
    metainfo = create_torrent(release, version="hybrid", piece_length=65536)
    metalink = build_metalink(metainfo, release.parent, mirrors=["http://127.0.0.1:9/"])
    bare = with_file(metalink, pieces=())
    with pytest.raises(MetalinkError, match="no SHA-1 piece hashes"):
        trio.run(download_metalink, client, bare, tmp_path / "out")
    assert not (tmp_path / "out").exists()


gpg_missing = shutil.which("gpg") is None


@pytest.mark.skipif(gpg_missing, reason="gpg is not installed (CI installs gnupg)")
async def test_openpgp_signatures_in_the_metalink_are_checked_with_a_keyring(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(300_000,))
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
           "--passphrase", ""]
    for who in ("publisher", "stranger"):
        subprocess.run([*gpg, "--quick-gen-key", f"{who} <{who}@example.org>", "ed25519",
                        "sign", "never"], check=True, capture_output=True)
    signature = subprocess.run(
        [*gpg, "--local-user", "publisher@example.org", "--armor", "--detach-sign",
         "--output", "-", str(release)], check=True, capture_output=True
    ).stdout.decode()

    def keyring(who: str) -> Keyring:
        exported = subprocess.run([*gpg, "--export", f"{who}@example.org"],
                                  check=True, capture_output=True).stdout
        return Keyring.parse(exported)

    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(release.parent)
        await nursery.start(mirror.serve)
        signed = with_file(
            publish(release, mirror, with_torrent=False),
            signature=Signature("application/pgp-signature", signature),
        )
        # The signature survives the trip through XML.
        signed = parse_metalink(render_metalink(signed))
        refused = tmp_path / "refused"
        with pytest.raises(SignatureError):
            await download_metalink(client, signed, refused, keyring=keyring("stranger"))
        outcome = await download_metalink(
            client, signed, tmp_path / "out", keyring=keyring("publisher")
        )
        nursery.cancel_scope.cancel()
    assert not (refused / release.name).exists()
    final = tmp_path / "out" / release.name
    assert final.read_bytes() == release.read_bytes()
    assert list(outcome.signers) == [str(final)]


def test_the_mirror_bases_of_a_multi_file_torrent_come_from_the_file_urls(
    make_release: Callable[..., Path],
) -> None:
    from opendistro.mirrors.metalink_release import plan_downloads

    release = make_release(sizes=(100_000, 200_000))
    metainfo = create_torrent(release, version="hybrid", piece_length=65536)
    metalink = build_metalink(
        metainfo, release.parent, mirrors=["http://127.0.0.1:8001/pub/", "http://127.0.0.1:8002/"]
    )
    torrent = Metainfo.from_bytes(metainfo.to_bytes())
    (download,) = plan_downloads(metalink, torrent)
    assert download.mirrors == ("http://127.0.0.1:8001/pub/", "http://127.0.0.1:8002/")
