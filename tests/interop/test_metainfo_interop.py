"""Our torrents against real third-party tools: libtorrent, mktorrent, transmission-create.

Each tool makes torrents we must parse to the same info-hash the tool itself
reports, and libtorrent must accept the torrents we make: same hashes, same
files and padding, and its own check of the data on disk finds every piece valid.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from opendistro.create import create_torrent
from opendistro.integrity import PieceVerifier
from opendistro.metainfo import Metainfo
from tests.lt_session import loopback_session

pytestmark = pytest.mark.interop
lt: Any = pytest.importorskip("libtorrent")

KIB = 1024
LT_PAD_FLAG = 1  # file_storage.flag_pad_file


def build_release(root: Path) -> Path:
    release = root / "release"
    (release / "sub").mkdir(parents=True)
    (release / "a.bin").write_bytes(os.urandom(100_000))
    (release / "empty").write_bytes(b"")
    (release / "sub" / "b.bin").write_bytes(os.urandom(32 * KIB))
    (release / "sub" / "c.bin").write_bytes(os.urandom(5_000))
    (release / "z.bin").write_bytes(os.urandom(20_001))
    return release


@pytest.fixture(params=["single", "multi"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    release = build_release(tmp_path)
    return release / "a.bin" if request.param == "single" else release


def lt_files(info: Any) -> Any:
    """The file list; libtorrent 2.1 renamed ``files()`` to ``layout()``."""
    return info.layout() if hasattr(info, "layout") else info.files()


def lt_layout(info: Any) -> list[tuple[int, int, bool]]:
    files = lt_files(info)
    return [
        (files.file_offset(i), files.file_size(i), bool(files.file_flags(i) & LT_PAD_FLAG))
        for i in range(files.num_files())
    ]


def our_layout(metainfo: Metainfo) -> list[tuple[int, int, bool]]:
    return [(entry.offset, entry.length, entry.is_padding) for entry in metainfo.files]


def lt_hashes_of(hashes: Any) -> tuple[bytes | None, bytes | None]:
    return (
        hashes.v1.to_bytes() if hashes.has_v1() else None,
        hashes.v2.to_bytes() if hashes.has_v2() else None,
    )


def lt_hashes(info: Any) -> tuple[bytes | None, bytes | None]:
    return lt_hashes_of(info.info_hashes())


def piece_space(metainfo: Metainfo, target: Path) -> bytes:
    parts = []
    for entry in metainfo.files:
        if entry.is_padding:
            parts.append(bytes(entry.length))
        elif metainfo.is_multi_file:
            parts.append(target.joinpath(*entry.path).read_bytes())
        else:
            parts.append(target.read_bytes())
    return b"".join(parts)


def assert_we_verify_every_piece(metainfo: Metainfo, target: Path) -> None:
    data = memoryview(piece_space(metainfo, target))
    verifier = PieceVerifier(metainfo)
    for index in range(metainfo.num_pieces):
        start = index * metainfo.piece_length
        assert verifier.verify(index, data[start : start + metainfo.piece_size(index)])


LT_FLAGS = {"v1": "v1_only", "v2": "v2_only", "hybrid": None}


@pytest.mark.parametrize("piece_length", [16 * KIB, 64 * KIB])
@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_libtorrent_made_torrents_parse_to_the_same_hashes(
    target: Path, version: str, piece_length: int
) -> None:
    flag_name = LT_FLAGS[version]
    flags = getattr(lt.create_torrent, flag_name) if flag_name else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        storage = lt.file_storage()
        lt.add_files(storage, str(target))
        maker = lt.create_torrent(storage, piece_length, flags=flags)
        maker.add_tracker("http://127.0.0.1:1/announce", 0)
        maker.add_url_seed("http://127.0.0.1:2/seed/")
        maker.set_comment("made by libtorrent")
        lt.set_piece_hashes(maker, str(target.parent))
        data = lt.bencode(maker.generate())
    reference = lt.torrent_info(data)

    ours = Metainfo.from_bytes(data)
    assert ours.version == version
    assert (ours.info_hash_v1, ours.info_hash_v2) == lt_hashes(reference)
    assert ours.name == reference.name()
    assert ours.num_pieces == reference.num_pieces()
    assert ours.total_length == reference.total_size()
    assert our_layout(ours) == lt_layout(reference)
    assert ours.announce_tiers == [["http://127.0.0.1:1/announce"]]
    assert ours.url_list == ["http://127.0.0.1:2/seed/"]
    assert ours.comment == "made by libtorrent"
    assert_we_verify_every_piece(ours, target)


def libtorrent_checks_all_pieces(torrent: bytes, save_path: Path) -> Any:
    session = loopback_session()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = str(save_path)
    # Not auto-managed and not paused: check at once, no queueing. There are no
    # trackers, DHT or LSD, so nothing leaves the machine.
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    handle = session.add_torrent(params)
    settled = (lt.torrent_status.seeding, lt.torrent_status.downloading, lt.torrent_status.finished)
    deadline = time.monotonic() + 30
    status = handle.status()
    while time.monotonic() < deadline:
        status = handle.status()
        if status.state in settled or status.errc.value():
            break
        time.sleep(0.05)
    session.remove_torrent(handle)
    return status


@pytest.mark.parametrize("piece_length", [16 * KIB, 64 * KIB])
@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_libtorrent_accepts_our_torrents_and_data(
    target: Path, version: str, piece_length: int
) -> None:
    # 64 KiB pieces make files of several blocks but one piece (root without a layer).
    ours = create_torrent(
        target,
        version=version,  # type: ignore[arg-type]
        piece_length=piece_length,
        webseeds=["http://127.0.0.1:2/seed/"],
        comment="made by opendistro",
    )
    data = ours.to_bytes()
    reference = lt.torrent_info(data)
    assert lt_hashes(reference) == (ours.info_hash_v1, ours.info_hash_v2)
    assert reference.num_pieces() == ours.num_pieces
    assert reference.total_size() == ours.total_length
    assert our_layout(ours) == lt_layout(reference)
    files = lt_files(reference)
    lt_paths = sorted(
        tuple(Path(files.file_path(i)).parts)
        for i in range(files.num_files())
        if not files.file_flags(i) & LT_PAD_FLAG
    )
    prefix = (ours.name,) if ours.is_multi_file else ()
    assert lt_paths == sorted((*prefix, *entry.path) for entry in ours.data_files())
    assert reference.comment() == "made by opendistro"

    status = libtorrent_checks_all_pieces(data, target.parent)
    assert not status.errc.value(), status.errc.message()
    assert status.state == lt.torrent_status.seeding
    assert status.num_pieces == ours.num_pieces
    assert all(status.pieces)


def test_libtorrent_rejects_our_torrent_when_data_is_corrupt(tmp_path: Path) -> None:
    release = build_release(tmp_path)
    ours = create_torrent(release, version="hybrid", piece_length=16 * KIB)
    with open(release / "sub" / "b.bin", "r+b") as handle:
        handle.write(b"\xff" * 10)
    status = libtorrent_checks_all_pieces(ours.to_bytes(), tmp_path)
    assert status.state == lt.torrent_status.downloading
    assert 0 < sum(status.pieces) < ours.num_pieces


def transmission_hash(torrent: Path) -> bytes:
    shown = subprocess.run(
        ["transmission-show", str(torrent)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Hash:\s*([0-9a-f]{40})", shown)
    assert match, shown
    return bytes.fromhex(match.group(1))


@pytest.mark.skipif(shutil.which("mktorrent") is None, reason="mktorrent not installed")
def test_mktorrent_torrents_parse_to_the_same_hash(target: Path, tmp_path: Path) -> None:
    out = tmp_path / "mk.torrent"
    subprocess.run(
        [
            "mktorrent",
            "-a",
            "http://127.0.0.1:1/a",
            "-a",
            "http://127.0.0.1:3/b",
            "-w",
            "http://127.0.0.1:2/seed/",
            "-l",
            "15",
            "-p",
            "-o",
            str(out),
            str(target),
        ],
        check=True,
        capture_output=True,
    )
    ours = Metainfo.from_file(out)
    reference = lt.torrent_info(str(out))
    assert ours.info_hash_v1 == lt_hashes(reference)[0]
    if shutil.which("transmission-show"):
        assert ours.info_hash_v1 == transmission_hash(out)
    assert ours.version == "v1" and ours.private
    assert ours.announce_tiers == [["http://127.0.0.1:1/a"], ["http://127.0.0.1:3/b"]]
    assert ours.url_list == ["http://127.0.0.1:2/seed/"]
    assert our_layout(ours) == lt_layout(reference)
    assert_we_verify_every_piece(ours, target)


@pytest.mark.skipif(
    shutil.which("transmission-create") is None or shutil.which("transmission-show") is None,
    reason="transmission-cli not installed",
)
def test_transmission_torrents_parse_to_the_same_hash(target: Path, tmp_path: Path) -> None:
    out = tmp_path / "tr.torrent"
    subprocess.run(
        [
            "transmission-create",
            "-o",
            str(out),
            "-s",
            "32",
            "-t",
            "http://127.0.0.1:1/a",
            "-c",
            "made by transmission",
            str(target),
        ],
        check=True,
        capture_output=True,
    )
    ours = Metainfo.from_file(out)
    assert ours.info_hash_v1 == transmission_hash(out)
    assert ours.comment == "made by transmission"
    assert ours.piece_length == 32 * KIB
    assert_we_verify_every_piece(ours, target)


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_magnet_links_agree_with_libtorrent(tmp_path: Path, version: str) -> None:
    from opendistro.magnet import MagnetLink

    ours = create_torrent(
        build_release(tmp_path),
        version=version,  # type: ignore[arg-type]
        trackers=["http://127.0.0.1:1/announce"],
        webseeds=["http://127.0.0.1:2/seed/"],
        name="my release+1",
    )
    link = ours.magnet_link()
    link = MagnetLink(
        link.info_hash_v1,
        link.info_hash_v2,
        link.display_name,
        link.trackers,
        link.webseeds,
        (("127.0.0.1", 6881), ("::1", 6882)),
    )
    # libtorrent reads what we write ...
    params = lt.parse_magnet_uri(link.to_uri())
    assert lt_hashes_of(params.info_hashes) == (ours.info_hash_v1, ours.info_hash_v2)
    assert params.name == "my release+1"
    assert list(params.trackers) == ["http://127.0.0.1:1/announce"]
    assert list(params.url_seeds) == ["http://127.0.0.1:2/seed/"]
    assert ("127.0.0.1", 6881) in list(params.peers)
    assert ("::1", 6882) in list(params.peers)
    # ... and we read what libtorrent writes.
    theirs = MagnetLink.parse(lt.make_magnet_uri(lt.torrent_info(ours.to_bytes())))
    assert (theirs.info_hash_v1, theirs.info_hash_v2) == (ours.info_hash_v1, ours.info_hash_v2)
    assert theirs.wire_info_hash == ours.wire_info_hash
    assert theirs.display_name == "my release+1"
    assert theirs.trackers == ("http://127.0.0.1:1/announce",)
