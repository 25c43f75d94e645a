"""Peers that lie or stall, over real TCP on 127.0.0.1: each is found out and dropped.

In every download here an honest seeder serves the data in parallel, throttled
so that the download outlasts the time the liar needs to be found out; the
download must end bit-exact and the liar disconnected (or banned). The client
under test uses short bounds (``peer_stall_timeout``, ``snub_timeout``) so the
tests are quick; the defaults are the same mechanism with Internet timescales.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import trio

from opendistro.bitfield import Bitfield
from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.torrent import Torrent, TorrentState
from opendistro.limits import Limits
from opendistro.metainfo import Metainfo
from opendistro.swarm.session import SessionConfig
from opendistro.wire import messages as m
from opendistro.wire.codec import encode
from opendistro.wire.mse import EncryptionPolicy

from .adversaries import LOOPBACK, PIECE_ID, ClaimingPeer, Misdeed, RawPeer, close_reason

PIECE = 32768
SIZE = 450_000
HONEST_RATE = 200_000
"""Bytes/s the honest seeder uploads: the download takes about two seconds,
several times what the liar needs to be found out."""
BLOCK = 16384

QUICK_LIMITS = Limits(peer_stall_timeout=0.5)
QUICK_SESSION = SessionConfig(snub_timeout=0.3)


def release_and_torrent(make_release: Callable[..., Path]) -> tuple[Path, Metainfo]:
    release = make_release(sizes=(SIZE,))
    return release, create_torrent(release, version="v1", piece_length=PIECE)


def assert_intact(torrent: Torrent, release: Path) -> None:
    assert torrent.error is None
    assert torrent.state is TorrentState.SEEDING
    assert torrent.final_path is not None
    assert torrent.final_path.read_bytes() == release.read_bytes()


def quick_leecher(logs: list[str]) -> Client:
    return Client(
        host=LOOPBACK,
        encryption=EncryptionPolicy.PLAINTEXT,
        limits=QUICK_LIMITS,
        session_config=QUICK_SESSION,
        log=logs.append,
    )


async def download_beside(
    liar: ClaimingPeer, release: Path, metainfo: Metainfo, target: Path
) -> tuple[Torrent, Client, list[str]]:
    """Download from the liar and a throttled honest seeder; wait until the liar is gone."""
    logs: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        async with Client(host=LOOPBACK) as honest, quick_leecher(logs) as leecher:
            await honest.seed(metainfo, release.parent, upload_limit=HONEST_RATE)
            # The liar first, so it is asked for blocks before the honest seeder answers.
            torrent = await leecher.add_torrent(
                metainfo, target, peers=[(LOOPBACK, liar.port), (LOOPBACK, honest.port)]
            )
            with trio.fail_after(30):
                await torrent.complete.wait()
                await liar.closed.wait()
        nursery.cancel_scope.cancel()
    return torrent, leecher, logs


@pytest.mark.parametrize(
    ("announce", "fast"), [("bitfield", True), ("haves", False)], ids=["bitfield", "haves"]
)
async def test_a_peer_claiming_pieces_it_never_sends_is_dropped(
    make_release: Callable[..., Path],
    tmp_path: Path,
    announce: Literal["bitfield", "haves"],
    fast: bool,
) -> None:
    release, metainfo = release_and_torrent(make_release)
    liar = ClaimingPeer(metainfo, "ignore", announce=announce, fast=fast)
    torrent, leecher, logs = await download_beside(liar, release, metainfo, tmp_path / "dl")
    assert_intact(torrent, release)
    assert liar.requests_seen >= 1  # it was asked, and what it held went to the seeder
    label = f"{LOOPBACK}:{liar.port}"
    assert "delivered no block" in await close_reason(logs, label)
    assert label not in leecher.banned  # useless, not proven malicious: dropped only
    assert liar.connections == 1


async def test_a_peer_rejecting_requests_for_pieces_it_claims_is_dropped(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)
    liar = ClaimingPeer(metainfo, "reject")
    torrent, _, logs = await download_beside(liar, release, metainfo, tmp_path / "dl")
    assert_intact(torrent, release)
    reason = await close_reason(logs, f"{LOOPBACK}:{liar.port}")
    assert "rejected" in reason and "delivering none" in reason
    limit = QUICK_LIMITS.max_rejects_without_block
    # Asked again after each reject, but only until the bound: then it is gone.
    assert limit < liar.requests_seen <= limit + 1 + QUICK_SESSION.max_queue


async def test_a_slow_drip_of_a_requested_block_is_dropped(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)
    liar = ClaimingPeer(metainfo, "drip", drip_interval=0.05)
    torrent, _, logs = await download_beside(liar, release, metainfo, tmp_path / "dl")
    assert_intact(torrent, release)
    assert 0 < liar.bytes_dripped < BLOCK  # the block it dripped was fetched elsewhere
    reason = await close_reason(logs, f"{LOOPBACK}:{liar.port}")
    # Caught as a stalled request or as a message that never completes, whichever
    # bound its watchdog checked first: both measure the same wasted time.
    assert "delivered no block" in reason or "nothing usable" in reason


Misdeeds: tuple[Misdeed, ...] = ("ignore", "reject", "drip")


async def test_several_liars_at_once_are_all_dropped(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)
    liars = [
        ClaimingPeer(metainfo, misdeed, peer_id=f"-XX0001-liar{n:08d}".encode())
        for n, misdeed in enumerate(Misdeeds)
    ]
    logs: list[str] = []
    async with trio.open_nursery() as nursery:
        for liar in liars:
            await nursery.start(liar.run)
        async with Client(host=LOOPBACK) as honest, quick_leecher(logs) as leecher:
            await honest.seed(metainfo, release.parent, upload_limit=HONEST_RATE)
            peers = [(LOOPBACK, liar.port) for liar in liars] + [(LOOPBACK, honest.port)]
            torrent = await leecher.add_torrent(metainfo, tmp_path / "dl", peers=peers)
            with trio.fail_after(30):
                await torrent.complete.wait()
                for liar in liars:
                    await liar.closed.wait()
            assert [peer.address for peer in torrent.peers] == [(LOOPBACK, honest.port)]
        nursery.cancel_scope.cancel()
    assert_intact(torrent, release)
    for liar in liars:
        await close_reason(logs, f"{LOOPBACK}:{liar.port}")


async def test_a_peer_sending_blocks_nobody_asked_for_is_banned(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = release_and_torrent(make_release)
    data = release.read_bytes()
    logs: list[str] = []
    async with Client(host=LOOPBACK) as honest, quick_leecher(logs) as leecher:
        await honest.seed(metainfo, release.parent, upload_limit=HONEST_RATE)
        torrent = await leecher.add_torrent(
            metainfo, tmp_path / "dl", peers=[(LOOPBACK, honest.port)]
        )
        pusher = await RawPeer.dial(leecher.port, metainfo)
        # It claims everything but keeps choking us, so not one block is asked of it.
        everything = Bitfield.full(metainfo.num_pieces).to_bytes()
        await pusher.send_raw(encode(m.BitfieldMessage(everything)))
        with trio.fail_after(30):
            for index in range(metainfo.num_pieces):
                block = data[index * PIECE : index * PIECE + BLOCK]  # true bytes, even
                if not await pusher.send_raw(encode(m.Piece(index, 0, block))):
                    break
            await pusher.drain()
            await torrent.complete.wait()
        assert leecher.banned.get(pusher.label) == "sent too much data nobody asked for"
        assert not any(isinstance(event, m.Request) for event in pusher.events)
        await pusher.aclose()
    assert_intact(torrent, release)


async def test_requests_while_choked_are_rejected_and_a_flood_is_disconnected(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = release_and_torrent(make_release)
    logs: list[str] = []
    async with Client(host=LOOPBACK, limits=QUICK_LIMITS, log=logs.append) as seeder:
        await seeder.seed(metainfo, release.parent)
        flooder = await RawPeer.dial(seeder.port, metainfo)
        await flooder.send_raw(encode(m.HaveNone()))  # never interested: stays choked
        request = encode(m.Request(0, 0, BLOCK))
        with trio.fail_after(30):
            # A few first: each is rejected, as BEP 6 says, and the connection stays up.
            assert await flooder.flood(request, 3, batch=1)
            await flooder.receive_until(lambda: flooder.connection.unexpected_rejects >= 3)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flooder.drain)  # it reads our rejects: no backlog builds
                sent = await flooder.flood(request, 1_000_000, batch=256)
        assert sent < 1_000_000
        assert not any(isinstance(event, m.Piece) for event in flooder.events)
        reason = await close_reason(logs, flooder.label)
        assert "requests while choked" in reason
        assert int(reason.split()[1]) > 2 * QUICK_LIMITS.max_pending_peer_requests
        await flooder.aclose()


async def test_requests_while_choked_without_the_fast_extension_are_ignored_then_cut(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = release_and_torrent(make_release)
    logs: list[str] = []
    async with Client(host=LOOPBACK, limits=QUICK_LIMITS, log=logs.append) as seeder:
        await seeder.seed(metainfo, release.parent)
        flooder = await RawPeer.dial(seeder.port, metainfo, fast=False)
        request = encode(m.Request(0, 0, BLOCK))
        with trio.fail_after(30):
            # Without BEP 6 nothing is answered: the requests are dropped unseen, and a
            # peer that sends nothing else for peer_stall_timeout seconds is cut off.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flooder.drain)
                while await flooder.send_raw(request * 64):
                    await trio.sleep(0.01)
        assert not any(isinstance(event, m.Piece | m.RejectRequest) for event in flooder.events)
        assert "nothing usable" in await close_reason(logs, flooder.label)
        await flooder.aclose()


async def test_a_slow_drip_holding_no_requests_is_dropped(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = release_and_torrent(make_release)
    logs: list[str] = []
    async with Client(host=LOOPBACK, limits=QUICK_LIMITS, log=logs.append) as seeder:
        await seeder.seed(metainfo, release.parent)
        dripper = await RawPeer.dial(seeder.port, metainfo)
        await dripper.send_raw(encode(m.HaveNone()))
        # The start of a 16 KiB block, then a byte at a time: it never completes.
        header = struct.pack(">IBII", 9 + BLOCK, PIECE_ID, 0, 0)
        dripped = 0
        with trio.fail_after(30):
            if await dripper.send_raw(header):
                while await dripper.send_raw(b"\x00"):
                    dripped += 1
                    await trio.sleep(0.02)
        assert dripped < BLOCK
        assert "nothing usable" in await close_reason(logs, dripper.label)
        await dripper.aclose()
