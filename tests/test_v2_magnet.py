"""A v2-only magnet download: piece layers come from peers, proved against the file roots."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import trio

from opendistro.create import create_torrent
from opendistro.integrity.hash_exchange import HashServer
from opendistro.io.client import Client
from opendistro.io.torrent import TorrentState
from opendistro.wire import messages as m
from opendistro.wire.mse import EncryptionPolicy

from .adversaries import LyingSeeder, flip_bit

LOOPBACK = "127.0.0.1"


async def test_a_v2_magnet_gets_its_piece_layers_from_our_seeder(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    # 700 pieces in the big file: more than one 512-hash chunk, so proofs are needed.
    release = make_release(sizes=(700 * 16384 - 5, 40_000, 3 * 16384))
    metainfo = create_torrent(release, version="v2", piece_length=16384)
    magnet = metainfo.magnet_link()
    assert magnet.info_hash_v1 is None
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        await seeder.seed(metainfo, release.parent)
        torrent = await leecher.add_magnet(magnet, tmp_path / "dl", peers=[(LOOPBACK, seeder.port)])
        with trio.fail_after(60):
            await torrent.complete.wait()
        answered = seeder.torrents[0].v2_hashes.requests_answered
    assert torrent.error is None, torrent.error
    assert torrent.state is TorrentState.SEEDING
    assert torrent.metainfo is not None
    # A magnet carries no piece layers: these came from the seeder, chunk by chunk.
    assert torrent.metainfo.piece_layers == metainfo.piece_layers
    assert answered >= 2
    for original in sorted(release.rglob("*.bin")):
        copy = tmp_path / "dl" / release.name / original.relative_to(release)
        assert copy.read_bytes() == original.read_bytes()


async def test_a_peer_answering_with_forged_hashes_is_banned_and_the_layers_come_from_others(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    # Nine 512-hash chunks: more than the four one peer may be asked at once, so the
    # liar is asked too.
    release = make_release(sizes=(9 * 512 * 16384 - 77,))
    metainfo = create_torrent(release, version="v2", piece_length=16384)
    honest_server = HashServer(metainfo)

    def forge(request: m.HashRequest) -> m.Hashes | m.HashReject:
        answer = honest_server.answer(request)
        if isinstance(answer, m.Hashes):
            forged = bytearray(answer.hashes)
            forged[0] ^= 0x01
            return dataclasses.replace(answer, hashes=bytes(forged))
        return answer

    liar = LyingSeeder(
        metainfo,
        release.read_bytes(),
        lambda request, truth: m.Piece(request.index, request.begin, truth),
        hash_answer=forge,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        async with (
            Client(host=LOOPBACK) as seeder,
            Client(host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT) as leecher,
        ):
            await seeder.seed(metainfo, release.parent)
            torrent = await leecher.add_magnet(
                metainfo.magnet_link(),
                tmp_path / "dl",
                peers=[(LOOPBACK, liar.port), (LOOPBACK, seeder.port)],
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
        nursery.cancel_scope.cancel()
    assert torrent.error is None, torrent.error
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
    assert f"{LOOPBACK}:{liar.port}" in leecher.banned
    assert "piece hashes" in leecher.banned[f"{LOOPBACK}:{liar.port}"]


async def test_a_bad_block_in_a_v2_piece_is_pinned_on_its_sender_by_leaf_hashes(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    piece_length = 4 * 16384
    release = make_release(sizes=(64 * piece_length,))
    metainfo = create_torrent(release, version="v2", piece_length=piece_length)

    def corrupt_first_blocks(request: m.Request, truth: bytes) -> m.Piece | None:
        # Only the first block of each piece, corrupted; the rest must come from the
        # honest seeder, so every bad piece has two senders.
        if request.begin != 0:
            return None
        return m.Piece(request.index, 0, flip_bit(truth))

    liar = LyingSeeder(metainfo, release.read_bytes(), corrupt_first_blocks)
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        async with (
            Client(host=LOOPBACK) as seeder,
            Client(host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT) as leecher,
        ):
            await seeder.seed(metainfo, release.parent)
            torrent = await leecher.add_torrent(
                metainfo,
                tmp_path / "dl",
                peers=[(LOOPBACK, liar.port), (LOOPBACK, seeder.port)],
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
            leaves_served = seeder.torrents[0].v2_hashes.requests_answered
        nursery.cancel_scope.cancel()
    assert torrent.error is None, torrent.error
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
    assert f"{LOOPBACK}:{liar.port}" in leecher.banned
    assert f"{LOOPBACK}:{seeder.port}" not in leecher.banned
    assert torrent.hash_failures >= 1
    # The full torrent has every piece layer: what the seeder answered were leaf requests.
    assert leaves_served >= 1
