"""Deliberate corruption over real TCP: the download ends intact and the liar is banned."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.torrent import Torrent, TorrentState
from opendistro.metainfo import Metainfo
from opendistro.wire import messages as m
from opendistro.wire.mse import EncryptionPolicy

from .adversaries import LOOPBACK, Answer, LyingSeeder, flip_bit

PIECE = 32768


def release_and_torrent(make_release: Callable[..., Path]) -> tuple[Path, Metainfo]:
    release = make_release(sizes=(2_000_000,))
    return release, create_torrent(release, version="v1", piece_length=PIECE)


async def download_with_liar(
    metainfo: Metainfo, release: Path, target: Path, answer: Answer
) -> tuple[Torrent, Client, LyingSeeder, int]:
    """Download from an honest seeder and a liar at once; return what happened."""
    liar = LyingSeeder(metainfo, release.read_bytes(), answer)
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        async with (
            Client(host=LOOPBACK) as honest,
            Client(host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT) as leecher,
        ):
            await honest.seed(metainfo, release.parent)
            # The liar first, so it gets requests before the honest seeder answers.
            torrent = await leecher.add_torrent(
                metainfo, target, peers=[(LOOPBACK, liar.port), (LOOPBACK, honest.port)]
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
        nursery.cancel_scope.cancel()
    return torrent, leecher, liar, honest.port


def assert_intact(torrent: Torrent, release: Path) -> None:
    assert torrent.error is None
    assert torrent.state is TorrentState.SEEDING
    assert torrent.final_path is not None
    assert torrent.final_path.read_bytes() == release.read_bytes()


async def test_a_peer_serving_garbage_for_some_blocks_is_banned(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)

    def answer(request: m.Request, truth: bytes) -> m.Piece | None:
        lie = request.index % 2 == 0
        return m.Piece(request.index, request.begin, flip_bit(truth) if lie else truth)

    torrent, leecher, liar, honest_port = await download_with_liar(
        metainfo, release, tmp_path / "dl", answer
    )
    assert_intact(torrent, release)
    assert torrent.hash_failures >= 1
    assert f"{LOOPBACK}:{liar.port}" in leecher.banned
    assert f"{LOOPBACK}:{honest_port}" not in leecher.banned
    assert leecher.is_banned((LOOPBACK, liar.port))
    assert liar.connections == 1  # never dialled again after the ban


async def test_a_peer_poisoning_one_block_per_piece_and_refusing_the_rest_is_banned(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)

    def answer(request: m.Request, truth: bytes) -> m.Piece | None:
        # Every bad piece has two senders: the liar's block and the honest rest.
        if request.begin != 0:
            return None
        return m.Piece(request.index, 0, flip_bit(truth))

    torrent, leecher, liar, honest_port = await download_with_liar(
        metainfo, release, tmp_path / "dl", answer
    )
    assert_intact(torrent, release)
    assert f"{LOOPBACK}:{liar.port}" in leecher.banned
    assert f"{LOOPBACK}:{honest_port}" not in leecher.banned


async def test_a_peer_labelling_blocks_with_another_piece_index_is_banned(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)

    def answer(request: m.Request, truth: bytes) -> m.Piece:
        # The requested bytes, claimed to belong to the next piece.
        return m.Piece((request.index + 1) % metainfo.num_pieces, request.begin, truth)

    torrent, leecher, liar, honest_port = await download_with_liar(
        metainfo, release, tmp_path / "dl", answer
    )
    assert_intact(torrent, release)
    assert f"{LOOPBACK}:{liar.port}" in leecher.banned
    assert f"{LOOPBACK}:{honest_port}" not in leecher.banned


async def test_a_peer_sending_only_unasked_blocks_is_banned(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)

    def answer(request: m.Request, truth: bytes) -> m.Piece:
        return m.Piece(request.index, request.begin + 1, truth)  # never a block we asked for

    torrent, leecher, liar, _ = await download_with_liar(
        metainfo, release, tmp_path / "dl", answer
    )
    assert_intact(torrent, release)
    assert leecher.banned == {f"{LOOPBACK}:{liar.port}": "sent too much data nobody asked for"}


async def test_a_seeder_whose_file_rots_on_disk_is_banned(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)
    rotting = tmp_path / "rotting"
    rotting.mkdir()
    (rotting / release.name).write_bytes(release.read_bytes())
    async with (
        Client(host=LOOPBACK) as bad,
        Client(host=LOOPBACK) as good,
        Client(host=LOOPBACK) as leecher,
    ):
        await bad.seed(metainfo, rotting)  # checked and found whole
        await good.seed(metainfo, release.parent)
        with (rotting / release.name).open("r+b") as handle:  # then the disk goes bad
            for offset in range(1000, metainfo.total_length, 3 * PIECE):
                handle.seek(offset)
                handle.write(b"\xff\x00\xff")
        torrent = await leecher.add_torrent(
            metainfo, tmp_path / "dl", peers=[(LOOPBACK, bad.port), (LOOPBACK, good.port)]
        )
        with trio.fail_after(60):
            await torrent.complete.wait()
        assert_intact(torrent, release)
        assert f"{LOOPBACK}:{bad.port}" in leecher.banned
        assert f"{LOOPBACK}:{good.port}" not in leecher.banned


async def test_a_torrent_with_a_wrong_piece_hash_fails_clearly_without_banning_the_swarm(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, honest = release_and_torrent(make_release)
    hashes = bytearray(honest.info[b"pieces"])
    hashes[5 * 20] ^= 0xFF  # the torrent's hash of piece 5 is wrong
    info = dict(honest.info)
    info[b"pieces"] = bytes(hashes)
    altered = Metainfo.from_info_bytes(bencode.encode(info))
    data = release.read_bytes()

    def truthful(request: m.Request, truth: bytes) -> m.Piece:
        return m.Piece(request.index, request.begin, truth)

    # A swarm for the altered torrent whose peers all serve the true bytes.
    swarm = [
        LyingSeeder(altered, data, truthful, peer_id=b"-XX0001-" + bytes([65 + n]) * 12)
        for n in range(3)
    ]
    async with trio.open_nursery() as nursery:
        for peer in swarm:
            await nursery.start(peer.run)
        async with Client(host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT) as leecher:
            torrent = await leecher.add_torrent(
                altered, tmp_path / "dl", peers=[(LOOPBACK, peer.port) for peer in swarm]
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
        nursery.cancel_scope.cancel()
    assert torrent.state is TorrentState.FAILED
    assert torrent.error is not None and "piece 5" in torrent.error
    assert len(leecher.banned) <= 1  # at most the first sole sender, never the whole swarm
    assert not (tmp_path / "dl" / release.name).exists()


@pytest.mark.parametrize("seed", [1, 2])
async def test_nothing_unverified_reaches_the_final_path(
    make_release: Callable[..., Path], tmp_path: Path, seed: int
) -> None:
    release, metainfo = release_and_torrent(make_release)
    rng = random.Random(seed)

    def answer(request: m.Request, truth: bytes) -> m.Piece:
        data = rng.randbytes(len(truth)) if rng.random() < 0.3 else truth
        return m.Piece(request.index, request.begin, data)

    final = tmp_path / "dl" / release.name
    liar = LyingSeeder(metainfo, release.read_bytes(), answer)
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        async with (
            Client(host=LOOPBACK) as honest,
            Client(host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT) as leecher,
        ):
            await honest.seed(metainfo, release.parent)
            torrent = await leecher.add_torrent(
                metainfo, tmp_path / "dl", peers=[(LOOPBACK, liar.port), (LOOPBACK, honest.port)]
            )
            with trio.fail_after(60):
                while not torrent.complete.is_set():
                    if final.exists():  # only once every piece is verified
                        assert torrent.have is not None and torrent.have.complete
                    await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert_intact(torrent, release)
