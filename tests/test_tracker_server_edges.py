"""TrackerServer edge cases: odd requests, failing callbacks and databases, sockets gone wrong."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest
import trio
import trio.testing

from opendistro import bencode
from opendistro.credit.identity import CreditIdentity
from opendistro.tracker import client, udp
from opendistro.tracker.metrics import ServerCounters
from opendistro.tracker.protocol import AnnounceRequest
from opendistro.tracker.server import TrackerServer, _AnnounceGate
from opendistro.tracker.store import TrackerStore

from .test_tracker_policy import NEWCOMER, TORRENT, signed, wait_for
from .test_tracker_policy import running as running_with_credit
from .test_tracker_server import HASH_A, http_get, read_response, request, running

UDP_CONNECT_MAGIC = 0x41727101980


async def http_call(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        headers = [("Host", "t"), ("Content-Length", str(len(body)))]
        await stream.send_all(
            connection.send(h11.Request(method=method, target=target, headers=headers))
            + connection.send(h11.Data(data=body))
            + connection.send(h11.EndOfMessage())
        )
        return await read_response(stream, connection)


def path_of(url: str) -> str:
    return urlsplit(url).path


def udp_connect_packet(transaction_id: int) -> bytes:
    return struct.pack(">QII", UDP_CONNECT_MAGIC, 0, transaction_id)


async def udp_exchange(sock: trio.socket.SocketType, port: int, packet: bytes) -> bytes:
    await sock.sendto(packet, ("127.0.0.1", port))
    data, _ = await sock.recvfrom(2048)
    return data


# ------------------------------------------------------------ HTTP routes


async def test_advertised_urls_serve_their_documents() -> None:
    async with running() as server:
        await client.announce(server.announce_url, request(1))
        status, body = await http_get(server.port, path_of(server.stats_url))
        assert status == 200 and json.loads(body)["torrents"] == 1
        status, body = await http_get(server.port, path_of(server.health_url))
        assert status == 200 and len(json.loads(body)["torrents"]) == 1
        status, body = await http_get(server.port, path_of(server.metrics_url))
        assert status == 200 and b"# TYPE" in body


async def test_health_query_names_each_torrent_once_and_refuses_bad_hashes() -> None:
    async with running() as server:
        await client.announce(server.announce_url, request(1))
        hex_hash = HASH_A.hex()
        target = f"/health.json?info_hash={hex_hash}&info_hash={hex_hash}&verbose=1"
        status, body = await http_get(server.port, target)
        assert status == 200
        [torrent] = json.loads(body)["torrents"]
        assert torrent["info_hash"] == hex_hash
        status, body = await http_get(server.port, "/health.json?info_hash=" + "zz" * 20)
        assert status == 400 and "40 hex digits" in json.loads(body)["error"]


async def test_methods_other_than_get_are_refused() -> None:
    async with running() as server:
        status, body = await http_call(server.port, "POST", "/announce", b"port=1")
        assert status == 405
        assert b"only GET" in bencode.decode(body)[b"failure reason"]
        status, _ = await http_call(server.port, "GET", "/scrape", b"a body on a GET")
        assert status == 200  # a small body is read and ignored
    async with running(udp=False, credit_db_path=None) as server:
        status, _ = await http_call(server.port, "PUT", "/credit", b"x")
        assert status == 404  # no credit kept here at all


async def test_credit_takes_only_get_or_post(tmp_path: Path) -> None:
    async with running_with_credit(tmp_path) as server:
        status, body = await http_call(server.port, "PUT", "/credit", b"x")
        assert status == 405
        assert b"GET or POST" in bencode.decode(body)[b"failure reason"]


async def test_a_malformed_scrape_gets_a_failure_reason() -> None:
    async with running() as server:
        status, body = await http_get(server.port, "/scrape?info_hash=short")
        assert status == 200
        assert b"failure reason" in bencode.decode(body)


async def test_an_ip_claim_that_is_no_address_is_ignored() -> None:
    async with running() as server:
        await client.announce(server.announce_url, request(1, ip="not-an-address"))
        seen = await client.announce(server.announce_url, request(2))
        assert set(seen.peers) == {("127.0.0.1", 20_001)}


# ------------------------------------------------------------ callbacks


async def test_on_announce_hears_http_and_udp_announces() -> None:
    heard: list[tuple[int, str]] = []
    async with running(on_announce=lambda ask, ip: heard.append((ask.port, ip))) as server:
        await client.announce(server.announce_url, request(1))
        await client.announce(server.udp_url, request(2))
    assert heard == [(20_001, "127.0.0.1"), (20_002, "127.0.0.1")]


async def test_a_failing_on_announce_costs_one_answer_not_the_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(ask: AnnounceRequest, ip: str) -> None:
        raise RuntimeError("callback bug")

    caplog.set_level(logging.ERROR, logger="opendistro.tracker.server")
    async with running(on_announce=explode) as server:
        status, body = await http_get(server.port, "/announce?" + request(1).to_query())
        assert status == 500
        assert b"internal tracker error" in body
        # UDP: the failed announce gets no answer; the next packet is still served.
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            reply = await udp_exchange(sock, server.port, udp_connect_packet(7))
            _, _, connection_id = struct.unpack(">IIQ", reply)
            announce = udp.encode_announce_request(connection_id, 8, request(2))
            await sock.sendto(announce, ("127.0.0.1", server.port))
            reply = await udp_exchange(sock, server.port, udp_connect_packet(9))
            assert struct.unpack(">II", reply[:8]) == (0, 9)
    assert "announce handler failed" in caplog.text
    assert "UDP tracker handler failed" in caplog.text


# ------------------------------------------------------------ sockets


async def test_udp_survives_a_reply_bounced_by_a_closed_port() -> None:
    async with running() as server:
        # Sent and closed before the server runs (no checkpoint in between): its reply
        # bounces with ICMP port-unreachable (which Windows reports on the next recvfrom).
        gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gone.sendto(udp_connect_packet(1), ("127.0.0.1", server.port))
        gone.close()
        answer = await client.announce(server.udp_url, request(1))
        assert answer.interval == 60


async def test_udp_from_an_ipv4_mapped_address_is_recorded_as_ipv4() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("IPv6 loopback is not configured")
    async with running(host="::") as server:
        # The UDP socket is dual-stack: an IPv4 sender shows up as ::ffff:127.0.0.1.
        url = f"udp://127.0.0.1:{server.port}/announce"
        await client.announce(url, request(1))
        seen = await client.announce(url, request(2))
        assert set(seen.peers) == {("127.0.0.1", 20_001)}


async def test_an_explicit_port_taken_for_udp_is_an_error() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = TrackerServer(port=port)
        with pytest.raises(OSError):
            await server.serve()


async def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    async with running(max_connections=1, request_timeout=60) as server:
        idle = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with idle:
            await idle.send_all(b"GET /announce?")  # holds the only slot
            extra = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with extra:
                assert await extra.receive_some(100) == b""
        # The slot is free again once the idle client left.
        await wait_for(lambda: server._open_connections == 0)
        assert (await client.announce(server.announce_url, request(1))).interval == 60


async def test_a_client_resetting_mid_request_is_dropped_quietly() -> None:
    async with running() as server:
        rude = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        rude.connect(("127.0.0.1", server.port))
        rude.sendall(b"GET /announce?info_hash=")
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()  # RST instead of FIN
        await wait_for(lambda: server._open_connections == 0)
        assert (await client.announce(server.announce_url, request(1))).interval == 60


# ------------------------------------------------------------ persistence and credit


async def eventually(condition: Any) -> None:
    """Poll ``condition`` while real time passes (worker threads are involved)."""
    with trio.fail_after(60):
        while not condition():
            await trio.sleep(0.01)


async def test_swarms_are_saved_periodically_and_a_failed_save_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    db = folder / "tracker.sqlite"
    caplog.set_level(logging.ERROR, logger="opendistro.tracker.server")
    async with running(db_path=db, persist_interval=0.05) as server:
        await client.announce(server.announce_url, request(1))
        await eventually(lambda: any(s.info_hash == HASH_A for s in TrackerStore(db).load()))
        db.unlink()
        folder.rmdir()  # nowhere left to save to
        await eventually(lambda: "could not save tracker state" in caplog.text)
        assert (await client.announce(server.announce_url, request(2))).interval == 60


async def test_refreshing_standings_without_a_credit_database_drops_seeding_time() -> None:
    async with running(credit_db_path=None) as server:
        await server.refresh_standings()
        assert server.registry.take_seeding_credit() == {}
        assert server.credit is None


async def test_a_broken_credit_database_is_logged_and_announces_still_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="opendistro.tracker.server")
    async with running_with_credit(tmp_path) as server:
        # Two proved seeding announces: observed seeding time waits to be saved.
        now = int(time.time())
        await client.announce(server.announce_url, signed(1, NEWCOMER, at=now - 10, left=0))
        await client.announce(server.announce_url, signed(1, NEWCOMER, at=now - 9, left=0))
        assert server.credit is not None
        server.credit.close()  # the database goes away under the running tracker
        status, body = await http_get(server.port, "/credit?identity=" + "ab" * 32)
        assert status == 500 and b"internal tracker error" in body
        await server.refresh_standings()
        assert "could not refresh credit standings" in caplog.text
        # A new identity's standing cannot be read: it is served as a stranger would be.
        other = signed(2, CreditIdentity.generate())
        assert (await client.announce(server.announce_url, other)).interval == 60
        assert "could not read a credit standing" in caplog.text
        await client.announce(server.announce_url, signed(1, NEWCOMER, at=now - 8, left=0))
    assert "could not save observed seeding time" in caplog.text


# ------------------------------------------------------------ the announce gate


async def test_an_announce_that_gives_up_waiting_takes_no_token(
    mock_clock: trio.testing.MockClock,
) -> None:
    counters = ServerCounters()
    gate = _AnnounceGate(rate=1.0, burst=1, max_waiting=10, counters=counters)
    admitted: list[str] = []

    async def admit(name: str) -> None:
        await gate.admit(0)
        admitted.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.run)
        await admit("first")  # the only token
        impatient = trio.CancelScope()
        nursery.start_soon(_cancellable, impatient, admit, "impatient")
        await wait_for(lambda: counters.announces_waiting == 1)
        impatient.cancel()
        await wait_for(lambda: counters.announces_waiting == 0)
        nursery.start_soon(admit, "patient")
        await wait_for(lambda: counters.announces_waiting == 1)
        mock_clock.jump(1.0)
        await wait_for(lambda: len(admitted) == 2)
        nursery.cancel_scope.cancel()
    assert admitted == ["first", "patient"]
    assert counters.announces_waiting == 0


async def _cancellable(scope: trio.CancelScope, function: Any, *args: Any) -> None:
    with scope:
        await function(*args)


async def test_housekeeping_forgets_silent_peers() -> None:
    async with running(peer_ttl=0.05, persist_interval=0.05) as server:
        await client.announce(server.announce_url, request(1))
        assert server.registry.swarm(HASH_A) is not None
        await eventually(lambda: server.registry.swarm(HASH_A) is None)


async def test_observed_seeding_time_is_saved_every_standing_refresh(tmp_path: Path) -> None:
    db = tmp_path / "credit.sqlite"

    def saved_seconds() -> float:
        with contextlib.closing(sqlite3.connect(db)) as connection:
            row = connection.execute("SELECT sum(seconds) FROM credit_seeding").fetchone()
        return float(row[0] or 0)

    async with running_with_credit(tmp_path, standing_refresh=0.05) as server:
        now = int(time.time())
        await client.announce(server.announce_url, signed(1, NEWCOMER, at=now - 10, left=0))
        await trio.sleep(0.01)  # some seeding time to observe
        await client.announce(server.announce_url, signed(1, NEWCOMER, at=now - 9, left=0))
        await eventually(lambda: saved_seconds() > 0)


async def test_a_credit_query_needs_exactly_one_well_formed_identity(tmp_path: Path) -> None:
    async with running_with_credit(tmp_path) as server:
        for target in ("/credit", "/credit?identity=" + "zz" * 32, "/credit?identity=abcd"):
            status, body = await http_get(server.port, target)
            assert status == 400, target
            assert b"64 hex digits" in bencode.decode(body)[b"failure reason"]


async def test_a_proved_announce_to_a_tracker_without_credit_is_served() -> None:
    async with running(udp=False) as server:
        answer = await client.announce(server.announce_url, signed(1, NEWCOMER))
        assert answer.interval == 60
        swarm = server.registry.swarm(TORRENT)
        assert swarm is not None
        assert swarm.peers[signed(1, NEWCOMER).peer_id].identity == NEWCOMER.public_key
