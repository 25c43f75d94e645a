"""opendistro.limits: defaults, validation, and each limit enforced where it applies.

Over real TCP and UDP on 127.0.0.1, with real clients and a real tracker; the
memory test floods a running client and watches the process's resident set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.errors import ConfigError, MetainfoError, TrackerError
from opendistro.io.client import Client
from opendistro.limits import MIN_MESSAGE_SIZE, Limits, is_loopback
from opendistro.metainfo import MAX_FILES, MAX_PATH_DEPTH, Metainfo
from opendistro.tracker import client as tracker_client
from opendistro.tracker.protocol import AnnounceRequest
from opendistro.tracker.server import TrackerServer
from opendistro.wire import messages as m
from opendistro.wire.codec import DEFAULT_MAX_MESSAGE_SIZE, encode
from opendistro.wire.extensions.handshake import MAX_METADATA_SIZE
from opendistro.wire.mse import EncryptionPolicy

from .adversaries import LOOPBACK, ClaimingPeer, RawPeer, close_reason

PIECE = 32768
BLOCK = 16384


def seed_files(make_release: Callable[..., Path]) -> tuple[Path, Metainfo]:
    release = make_release(sizes=(600_000,))
    return release, create_torrent(release, version="v1", piece_length=PIECE)


# -- the dataclass -------------------------------------------------------------------


def test_defaults_are_the_module_limits_they_gather() -> None:
    limits = Limits()
    assert limits.max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    assert limits.max_metadata_size == MAX_METADATA_SIZE
    assert (limits.max_files, limits.max_path_depth) == (MAX_FILES, MAX_PATH_DEPTH)
    assert limits.max_pending_peer_requests == 500
    assert limits.max_peers_per_torrent == 50
    assert limits.loopback_exempt
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_files = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "change",
    [
        {"max_message_size": MIN_MESSAGE_SIZE - 1},
        {"max_metadata_size": 0},
        {"max_metadata_size": MAX_METADATA_SIZE + 1},
        {"max_pending_peer_requests": 0},
        {"max_peers_per_torrent": -1},
        {"max_connections_per_ip": 0},
        {"max_announces_per_ip_per_minute": 0},
        {"max_files": 0},
        {"max_path_depth": 0},
        {"max_rejects_without_block": 0},
        {"max_files": 2.5},
        {"max_files": True},
        {"peer_stall_timeout": 0},
        {"peer_stall_timeout": float("nan")},
    ],
)
def test_out_of_range_limits_are_a_config_error(change: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(change))):
        Limits(**change)


def test_client_keeps_its_max_peers_parameter_on_top_of_limits() -> None:
    client = Client(limits=Limits(max_peers_per_torrent=9, max_files=3), max_peers_per_torrent=4)
    assert client.max_peers_per_torrent == 4 == client.limits.max_peers_per_torrent
    assert client.limits.max_files == 3
    assert Client().limits == Limits()
    with pytest.raises(ConfigError):
        Client(max_peers_per_torrent=0)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("example.org", False),
    ],
)
def test_loopback_is_exempt_from_per_ip_limits_unless_asked(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert Limits().limits_ip(host) is not loopback
    assert Limits(loopback_exempt=False).limits_ip(host)


# -- metainfo -----------------------------------------------------------------------


def test_file_count_and_depth_limits_apply_to_torrent_files(
    make_release: Callable[..., Path],
) -> None:
    folder = make_release(sizes=(1000, 2000, 3000))  # dir0/file0, dir1/file1, dir0/file2
    for version in ("v1", "v2", "hybrid"):
        data = create_torrent(folder, version=version, piece_length=BLOCK).to_bytes()
        assert len(Metainfo.from_bytes(data).data_files()) == 3
        exact = Limits(max_files=3, max_path_depth=2)
        if version != "hybrid":  # (whose v1 file list also names its pad files)
            assert len(Metainfo.from_bytes(data, limits=exact).data_files()) == 3
        with pytest.raises(MetainfoError, match="more than 2 files"):
            Metainfo.from_bytes(data, limits=Limits(max_files=2))
        with pytest.raises(MetainfoError, match="deeper than 1"):
            Metainfo.from_bytes(data, limits=Limits(max_path_depth=1))


def deep_v2_torrent(depth: int) -> bytes:
    """A v2 torrent whose one small file sits ``depth`` directories down."""
    content = b"deep"
    leaf = {b"": {b"length": len(content), b"pieces root": hashlib.sha256(content).digest()}}
    tree: dict[bytes, Any] = {b"file": leaf}
    for level in range(depth):
        tree = {f"d{level}".encode(): tree}
    info = {b"file tree": tree, b"meta version": 2, b"name": b"deep", b"piece length": BLOCK}
    return bencode.encode({b"info": info})


def test_a_path_deeper_than_the_default_parses_only_with_a_higher_limit() -> None:
    data = deep_v2_torrent(MAX_PATH_DEPTH + 5)
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(data)
    metainfo = Metainfo.from_bytes(data, limits=Limits(max_path_depth=MAX_PATH_DEPTH + 10))
    assert len(metainfo.data_files()[0].path) == MAX_PATH_DEPTH + 6
    info = bencode.encode(bencode.decode(data, max_depth=200)[b"info"])
    with pytest.raises(MetainfoError):
        Metainfo.from_info_bytes(info)
    deep = Limits(max_path_depth=MAX_PATH_DEPTH + 6)
    assert Metainfo.from_info_bytes(info, limits=deep).name == "deep"


# -- the client: connections, messages, metadata --------------------------------------


async def test_connections_per_ip_are_refused_beyond_the_limit(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = seed_files(make_release)
    strict = Limits(max_connections_per_ip=2, loopback_exempt=False)
    async with Client(host=LOOPBACK, limits=strict) as seeder:
        await seeder.seed(metainfo, release.parent)
        with trio.fail_after(20):
            first = await RawPeer.dial(seeder.port, metainfo, peer_id=b"-XX0001-first0000000")
            second = await RawPeer.dial(seeder.port, metainfo, peer_id=b"-XX0001-second000000")
            third = await trio.open_tcp_stream(LOOPBACK, seeder.port)
            assert await third.receive_some(100) == b""  # closed before any handshake
            await third.aclose()
            await first.aclose()
            while len(seeder.torrents[0].peers) > 1:
                await trio.sleep(0.01)
            # A slot is free again: a new connection gets its handshake.
            again = await RawPeer.dial(seeder.port, metainfo, peer_id=b"-XX0001-again0000000")
            assert again.connection.remote_peer_id == seeder.peer_id
            while len(seeder.torrents[0].peers) < 2:
                await trio.sleep(0.01)
        await second.aclose()
        await again.aclose()


async def test_loopback_connections_are_not_limited_per_ip_by_default(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = seed_files(make_release)
    async with Client(host=LOOPBACK, limits=Limits(max_connections_per_ip=1)) as seeder:
        await seeder.seed(metainfo, release.parent)
        with trio.fail_after(20):
            peers = [
                await RawPeer.dial(seeder.port, metainfo, peer_id=f"-XX0001-{n:012d}".encode())
                for n in range(3)
            ]
        assert all(peer.connection.remote_peer_id == seeder.peer_id for peer in peers)
        for peer in peers:
            await peer.aclose()


async def test_dialling_respects_the_per_ip_limit(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    _, metainfo = seed_files(make_release)
    peers = [ClaimingPeer(metainfo, peer_id=f"-XX0001-{n:012d}".encode()) for n in range(3)]
    async with trio.open_nursery() as nursery:
        for peer in peers:
            await nursery.start(peer.run)
        addresses = [(LOOPBACK, peer.port) for peer in peers]
        strict = Limits(max_connections_per_ip=1, loopback_exempt=False)
        async with Client(
            host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT, limits=strict
        ) as one:
            torrent = await one.add_torrent(metainfo, tmp_path / "one", peers=addresses)
            with trio.fail_after(20):
                while not torrent.peers:
                    await trio.sleep(0.01)
            await trio.sleep(0.3)  # time to dial more, were it allowed
            assert sum(peer.connections for peer in peers) == 1
        async with Client(host=LOOPBACK, encryption=EncryptionPolicy.PLAINTEXT) as many:
            torrent = await many.add_torrent(metainfo, tmp_path / "many", peers=addresses)
            with trio.fail_after(20):
                while len(torrent.peers) < 3:
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_incoming_peers_beyond_the_torrent_limit_are_refused(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = seed_files(make_release)
    async with Client(host=LOOPBACK, max_peers_per_torrent=1) as seeder:
        await seeder.seed(metainfo, release.parent)
        with trio.fail_after(20):
            first = await RawPeer.dial(seeder.port, metainfo, peer_id=b"-XX0001-first0000000")
            await first.send_raw(encode(m.HaveNone()) + encode(m.Interested()))
            await first.receive_until(lambda: not first.connection.peer_choking)
            extra = await RawPeer.dial(seeder.port, metainfo, peer_id=b"-XX0001-extra0000000")
            await extra.drain()  # handshake answered, then closed
            # The first is still served.
            await first.send_raw(first.connection.send(m.Request(0, 0, BLOCK)))
            await first.receive_until(
                lambda: any(isinstance(event, m.Piece) for event in first.events)
            )
        assert [peer.connection.remote_peer_id for peer in seeder.torrents[0].peers] == [
            b"-XX0001-first0000000"
        ]
        await first.aclose()
        await extra.aclose()


async def test_messages_over_the_size_limit_close_the_connection(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = seed_files(make_release)
    logs: list[str] = []
    small = Limits(max_message_size=MIN_MESSAGE_SIZE)
    async with Client(host=LOOPBACK, limits=small, log=logs.append) as seeder:
        await seeder.seed(metainfo, release.parent)
        with trio.fail_after(20):
            peer = await RawPeer.dial(seeder.port, metainfo)
            within = m.Extended(99, b"x" * (MIN_MESSAGE_SIZE - 2))  # an unknown extension
            await peer.send_raw(encode(m.HaveNone()) + encode(within) + encode(m.Interested()))
            await peer.receive_until(lambda: not peer.connection.peer_choking)
            await peer.send_raw(encode(m.Extended(99, b"x" * MIN_MESSAGE_SIZE)))
            await peer.drain()
        assert "exceeds the limit" in await close_reason(logs, peer.label)
        await peer.aclose()


async def test_our_request_queue_limit_is_advertised_and_enforced(
    make_release: Callable[..., Path],
) -> None:
    release, metainfo = seed_files(make_release)
    logs: list[str] = []
    limits = Limits(max_pending_peer_requests=7)
    async with Client(host=LOOPBACK, limits=limits, log=logs.append) as seeder:
        await seeder.seed(metainfo, release.parent)
        with trio.fail_after(20):
            peer = await RawPeer.dial(seeder.port, metainfo)
            await peer.send_raw(encode(m.HaveNone()) + encode(m.Interested()))
            await peer.receive_until(
                lambda: (
                    peer.connection.remote_extensions is not None
                    and not peer.connection.peer_choking
                )
            )
            assert peer.connection.remote_extensions is not None
            assert peer.connection.remote_extensions.reqq == 7
            # Eight at once, in one write: more than it may queue, whatever is served.
            requests = b"".join(encode(m.Request(0, begin, BLOCK)) for begin in range(8))
            await peer.send_raw(requests)
            await peer.drain()
        assert "more than 7 outstanding requests" in await close_reason(logs, peer.label)
        await peer.aclose()


async def test_metadata_over_the_limit_is_not_fetched(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = seed_files(make_release)
    logs: list[str] = []
    refused = trio.Event()

    def log(line: str) -> None:
        logs.append(line)
        if "metadata_size" in line:
            refused.set()

    small = Limits(max_metadata_size=64)
    async with (
        Client(host=LOOPBACK) as seeder,
        Client(host=LOOPBACK, limits=small, log=log) as leecher,
    ):
        await seeder.seed(metainfo, release.parent)
        torrent = await leecher.add_magnet(
            metainfo.magnet_link(), tmp_path / "dl", peers=[(LOOPBACK, seeder.port)]
        )
        with trio.fail_after(20):
            await refused.wait()
        assert torrent.metainfo is None
    assert any("outside 1..64 bytes" in line for line in logs)


# -- the tracker ----------------------------------------------------------------------


def announce_request(n: int) -> AnnounceRequest:
    return AnnounceRequest(
        info_hash=b"\xaa" * 20, peer_id=f"-OD0001-{n:012d}".encode(), port=20_000 + n, left=1
    )


@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_the_tracker_limits_announces_per_ip(transport: str) -> None:
    strict = Limits(max_announces_per_ip_per_minute=3, loopback_exempt=False)
    async with trio.open_nursery() as nursery:
        server = TrackerServer(limits=strict)
        await nursery.start(server.serve)
        url = server.announce_url if transport == "http" else server.udp_url
        for n in range(3):
            await tracker_client.announce(url, announce_request(n))
        with pytest.raises(TrackerError, match="announcing too often"):
            await tracker_client.announce(url, announce_request(3))
        relaxed = TrackerServer(limits=Limits(max_announces_per_ip_per_minute=3))
        await nursery.start(relaxed.serve)
        url = relaxed.announce_url if transport == "http" else relaxed.udp_url
        for n in range(6):  # loopback: exempt by default
            await tracker_client.announce(url, announce_request(n))
        nursery.cancel_scope.cancel()


# -- memory under floods ------------------------------------------------------------


def resident_bytes() -> int:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        pytest.skip("no /proc/self/status to read the resident set size from")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("/proc/self/status has no VmRSS line")


def distinct_requests(metainfo: Metainfo, batch: int) -> Iterator[bytes]:
    """Batches of requests for ever new (index, begin) pairs of full blocks: no repeats."""
    requests = (
        encode(m.Request(index, begin, BLOCK))
        for index in range(metainfo.num_pieces - 1)
        for begin in range(PIECE - BLOCK + 1)
    )
    while chunk := b"".join(itertools.islice(requests, batch)):
        yield chunk


FLOOD = 4_000_000
"""Requests each flooder tries to send: 68 MB, more than the memory bound below."""
RSS_BOUND = 48 << 20


async def test_request_floods_and_huge_length_prefixes_do_not_grow_memory(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release, metainfo = seed_files(make_release)
    choked_request = encode(m.Request(0, 0, BLOCK))
    peak = 0

    async def watch_memory() -> None:
        nonlocal peak
        while True:
            peak = max(peak, resident_bytes())
            await trio.sleep(0.01)

    async def choked_flood(port: int) -> int:
        flooder = await RawPeer.dial(port, metainfo)
        await flooder.send_raw(encode(m.HaveNone()))  # never interested: always choked
        sent = await flooder.flood(choked_request, FLOOD)  # and never reads
        await flooder.aclose()
        return sent

    async def unchoked_flood(port: int) -> int:
        flooder = await RawPeer.dial(port, metainfo)
        await flooder.send_raw(encode(m.HaveNone()) + encode(m.Interested()))
        await flooder.receive_until(lambda: not flooder.connection.peer_choking)
        sent = 0
        for requests in distinct_requests(metainfo, 64):  # never reads what it asked for
            if sent >= FLOOD or not await flooder.send_raw(requests):
                break
            sent += 64
        await flooder.aclose()
        return sent

    async def request_and_cancel(port: int) -> int:
        flooder = await RawPeer.dial(port, metainfo)
        await flooder.send_raw(encode(m.HaveNone()) + encode(m.Interested()))
        await flooder.receive_until(lambda: not flooder.connection.peer_choking)
        churn = encode(m.Request(0, 0, BLOCK)) + encode(m.Cancel(0, 0, BLOCK))
        sent = await flooder.flood(churn, FLOOD // 2, batch=2048)  # a reject owed for each
        await flooder.aclose()
        return sent

    async def huge_prefix(port: int) -> bool:
        flooder = await RawPeer.dial(port, metainfo)
        await flooder.send_raw(b"\xff\xff\xff\xff" + b"\x14" * 1000)
        await flooder.drain()
        await flooder.aclose()
        return True

    async with Client(host=LOOPBACK) as seeder:
        await seeder.seed(metainfo, release.parent)
        with trio.fail_after(60):
            await choked_flood(seeder.port)  # warm up every code path once
            await unchoked_flood(seeder.port)
            baseline = resident_bytes()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_memory)
                choked = [await choked_flood(seeder.port) for _ in range(3)]
                unchoked = [await unchoked_flood(seeder.port) for _ in range(2)]
                churned = await request_and_cancel(seeder.port)
                assert all([await huge_prefix(seeder.port) for _ in range(3)])
                nursery.cancel_scope.cancel()
            # Every flooder was cut off long before it was done.
            assert max(choked) < FLOOD and max(unchoked) < FLOOD and churned < FLOOD // 2
            assert peak - baseline < RSS_BOUND, (baseline, peak)
            # And the client still serves an honest peer.
            async with Client(host=LOOPBACK) as leecher:
                torrent = await leecher.add_torrent(
                    metainfo, tmp_path / "dl", peers=[(LOOPBACK, seeder.port)]
                )
                await torrent.complete.wait()
            assert torrent.final_path is not None
            assert torrent.final_path.read_bytes() == release.read_bytes()
