"""The trio tracker server and client over real TCP and UDP on 127.0.0.1, real SQLite files."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from opendistro import bencode
from opendistro.errors import TrackerError
from opendistro.tracker import client, udp
from opendistro.tracker.protocol import AnnounceEvent, AnnounceRequest, ScrapeStats
from opendistro.tracker.server import TrackerServer

HASH_A = b"\xaa" * 20
HASH_B = b"\xbb" * 20


def peer_id(n: int) -> bytes:
    return f"-OD0001-{n:012d}".encode()


def request(n: int, **kwargs: Any) -> AnnounceRequest:
    kwargs.setdefault("info_hash", HASH_A)
    kwargs.setdefault("left", 1000)
    return AnnounceRequest(peer_id=peer_id(n), port=20_000 + n, **kwargs)


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[TrackerServer]:
    kwargs.setdefault("interval", 60)
    kwargs.setdefault("min_interval", 5)
    async with trio.open_nursery() as nursery:
        server = TrackerServer(**kwargs)
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def http_get(port: int, target: str) -> tuple[int, bytes]:
    """One GET with our own h11 client, to look at status codes the tracker client hides."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        await stream.send_all(
            connection.send(h11.Request(method="GET", target=target, headers=[("Host", "t")]))
            + connection.send(h11.EndOfMessage())
        )
        return await read_response(stream, connection)


async def read_response(stream: trio.SocketStream, connection: h11.Connection) -> tuple[int, bytes]:
    status = 0
    body = b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, body
        else:
            raise AssertionError(f"unexpected {event!r}")


async def test_two_http_announces_see_each_other() -> None:
    async with running() as server:
        first = await client.announce(server.announce_url, request(1))
        assert first.peers == ()
        assert first.interval == 60 and first.min_interval == 5
        second = await client.announce(server.announce_url, request(2))
        assert second.peers == (("127.0.0.1", 20_001),)
        assert (second.complete, second.incomplete) == (0, 2)
        third = await client.announce(server.announce_url, request(1, compact=False))
        assert third.peers == (("127.0.0.1", 20_002),)
        assert third.peer_ids == (peer_id(2),)


async def test_stopped_removes_and_completed_counts_in_scrape() -> None:
    async with running() as server:
        url = server.announce_url
        await client.announce(url, request(1))
        await client.announce(url, request(2))
        await client.announce(url, request(3, info_hash=HASH_B))
        await client.announce(url, request(1, left=0, event=AnnounceEvent.COMPLETED))
        await client.announce(url, request(2, event=AnnounceEvent.STOPPED))
        assert (await client.announce(url, request(4))).peers == (("127.0.0.1", 20_001),)
        stats = await client.scrape(url, [HASH_A, HASH_B])
        assert stats == {HASH_A: ScrapeStats(1, 1, 1), HASH_B: ScrapeStats(0, 0, 1)}
        everything = await client.scrape(server.scrape_url, [])
        assert set(everything) == {HASH_A, HASH_B}
        status, body = await http_get(server.port, "/stats.json")
        assert status == 200
        assert json.loads(body) == {"torrents": 2, "seeders": 1, "leechers": 2, "completed": 1}


async def test_udp_announce_and_scrape_against_our_server() -> None:
    async with running() as server:
        await client.announce(server.udp_url, request(1))
        answer = await client.announce(server.udp_url, request(2, left=0))
        assert answer.peers == (("127.0.0.1", 20_001),)
        assert (answer.complete, answer.incomplete, answer.interval) == (1, 1, 60)
        # HTTP and UDP share one registry
        http_answer = await client.announce(server.announce_url, request(3))
        assert set(http_answer.peers) == {("127.0.0.1", 20_001), ("127.0.0.1", 20_002)}
        stats = await client.scrape(server.udp_url, [HASH_A, HASH_B])
        assert stats == {HASH_A: ScrapeStats(1, 0, 2), HASH_B: ScrapeStats(0, 0, 0)}


async def test_udp_ignores_garbage_and_refuses_forged_connection_ids() -> None:
    async with running() as server:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect(("127.0.0.1", server.port))
            await sock.send(b"\x00" * 5)  # malformed: dropped without reply
            await sock.send(udp.encode_announce_request(12345, 77, request(1)))
            reply = await sock.recv(2048)
            with pytest.raises(TrackerError, match="connection id"):
                udp.decode_announce_response(reply, 77, ipv6=False)
        assert server.registry.stats().torrents == 0
        # the server still serves a well-behaved client
        assert (await client.announce(server.udp_url, request(2))).interval == 60


async def test_allow_list_refuses_unknown_info_hash() -> None:
    async with running(allow_list=[HASH_A]) as server:
        await client.announce(server.announce_url, request(1))
        with pytest.raises(TrackerError, match="not tracked"):
            await client.announce(server.announce_url, request(2, info_hash=HASH_B))
        with pytest.raises(TrackerError, match="not tracked"):
            await client.announce(server.udp_url, request(3, info_hash=HASH_B))
        assert server.registry.swarm(HASH_B) is None


async def test_bad_query_gets_failure_reason_with_http_200() -> None:
    async with running() as server:
        status, body = await http_get(server.port, "/announce?info_hash=short&port=1")
        assert status == 200
        assert b"failure reason" in bencode.decode(body)
        status, body = await http_get(server.port, "/nowhere")
        assert status == 404
        assert (await client.announce(server.announce_url, request(1))).interval == 60


async def test_ip_parameter_trusted_only_when_loopback() -> None:
    async with running() as server:
        url = server.announce_url
        await client.announce(url, request(1, ip="127.0.0.9"))
        await client.announce(url, request(2, ip="203.0.113.5"))
        seen = await client.announce(url, request(3))
        assert set(seen.peers) == {("127.0.0.9", 20_001), ("127.0.0.1", 20_002)}


async def test_restart_with_same_database_keeps_swarms(tmp_path: Path) -> None:
    db = tmp_path / "tracker.db"
    async with running(db_path=db) as server:
        await client.announce(server.announce_url, request(1, left=0))
        await client.announce(server.announce_url, request(2, event=AnnounceEvent.COMPLETED))
    assert db.exists()
    async with running(db_path=db) as server:
        answer = await client.announce(server.announce_url, request(3))
        assert set(answer.peers) == {("127.0.0.1", 20_001), ("127.0.0.1", 20_002)}
        stats = await client.scrape(server.announce_url, [HASH_A])
        assert stats[HASH_A].downloaded == 1


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with running() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            connection = h11.Connection(h11.CLIENT)
            for n in (1, 2):
                target = "/announce?" + request(n).to_query()
                await stream.send_all(
                    connection.send(
                        h11.Request(method="GET", target=target, headers=[("Host", "t")])
                    )
                    + connection.send(h11.EndOfMessage())
                )
                status, _ = await read_response(stream, connection)
                assert status == 200
                connection.start_next_cycle()
        assert server.registry.scrape([HASH_A])[HASH_A].incomplete == 2


async def test_garbage_and_huge_headers_do_not_break_the_server() -> None:
    async with running() as server:
        for junk in (
            b"\x00\xff garbage \r\n\r\n",
            b"GET /announce HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
            b"GET /" + b"a" * 50_000 + b" HTTP/1.1\r\n\r\n",
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                try:
                    await stream.send_all(junk)
                    reply = b""
                    while chunk := await stream.receive_some(65536):
                        reply += chunk
                except trio.BrokenResourceError:
                    reply = b""
                # either an HTTP 4xx answer, or a plain close
                assert reply == b"" or reply.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4"))
        assert (await client.announce(server.announce_url, request(1))).interval == 60


async def test_a_silent_connection_does_not_hold_the_server() -> None:
    async with running(request_timeout=0.5) as server:
        idle = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with idle:
            await idle.send_all(b"GET /announce?")  # and never finishes
            answer = await client.announce(server.announce_url, request(1))
            assert answer.interval == 60
            with trio.fail_after(10):
                assert await idle.receive_some(100) == b""  # the server hung up on it


async def test_client_fails_quickly_against_closed_ports() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with trio.fail_after(5):
        with pytest.raises(TrackerError):
            await client.announce(f"http://127.0.0.1:{port}/announce", request(1))
        with pytest.raises(TrackerError):
            await client.announce(f"udp://127.0.0.1:{port}/announce", request(1))
        with pytest.raises(TrackerError):
            await client.scrape(f"http://127.0.0.1:{port}/announce", [HASH_A])


async def test_client_rejects_unsupported_urls() -> None:
    with pytest.raises(TrackerError):
        await client.announce("wss://127.0.0.1/announce", request(1))
    with pytest.raises(TrackerError):
        await client.announce("udp://127.0.0.1/announce", request(1))


async def test_client_times_out_on_a_silent_udp_tracker() -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(TrackerError, match="did not answer"):
            await client.announce(f"udp://127.0.0.1:{port}/announce", request(1), timeout=0.5)


async def test_ipv6_peers_come_back_in_peers6() -> None:
    async with running() as server:
        await client.announce(server.announce_url, request(1, ip="::1"))
        answer = await client.announce(server.announce_url, request(2))
        assert answer.peers == (("::1", 20_001),)
        status, body = await http_get(server.port, "/announce?" + request(3).to_query())
        decoded = bencode.decode(body)
        assert status == 200
        assert len(decoded[b"peers6"]) == 18
        assert len(decoded[b"peers"]) == 6  # the IPv4 peer 2


async def test_udp_client_reconnects_when_its_cached_connection_id_is_refused() -> None:
    async with running() as server:
        port = server.port
        await client.announce(server.udp_url, request(1))
    # a new process on the same port: new secret, so the cached connection id is now invalid
    async with running(port=port) as restarted:
        answer = await client.announce(restarted.udp_url, request(2))
        assert answer.interval == 60
        assert restarted.registry.scrape([HASH_A])[HASH_A].incomplete == 1


def self_signed_certificate(folder: Path) -> tuple[Path, Path, str]:
    """A certificate for 127.0.0.1 made with ``cryptography``: (cert file, key file, PEM)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opendistro test tracker")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, pem.decode()


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel()


async def tls_front(
    context: ssl.SSLContext, backend_port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Terminate TLS on 127.0.0.1 and relay to our plain-HTTP tracker (a real https hop)."""
    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host="127.0.0.1")

    async def relay(front: trio.SSLStream[trio.SocketStream]) -> None:
        back = await trio.open_tcp_stream("127.0.0.1", backend_port)
        async with front, back, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, front, back, nursery.cancel_scope)
            nursery.start_soon(_pump, back, front, nursery.cancel_scope)

    transport = listeners[0].transport_listener
    assert isinstance(transport, trio.SocketListener)
    task_status.started(transport.socket.getsockname()[1])
    await trio.serve_listeners(relay, listeners)


async def test_https_announce_and_scrape(tmp_path: Path) -> None:
    cert_file, key_file, pem = self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    async with running() as server, trio.open_nursery() as nursery:
        port = await nursery.start(tls_front, server_context, server.port)
        url = f"https://127.0.0.1:{port}/announce"
        trusting = ssl.create_default_context(cadata=pem)
        await client.announce(url, request(1), ssl_context=trusting)
        answer = await client.announce(url, request(2), ssl_context=trusting)
        assert answer.peers == (("127.0.0.1", 20_001),)
        stats = await client.scrape(url, [HASH_A], ssl_context=trusting)
        assert stats[HASH_A].incomplete == 2
        # the default context does not trust a self-signed certificate
        with pytest.raises(TrackerError):
            await client.announce(url, request(3))
        nursery.cancel_scope.cancel()


async def redirector(location_for: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """A tiny real HTTP server answering every GET with a 302 to ``location_for(target)``."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            connection = h11.Connection(h11.SERVER)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    location = location_for(event.target.decode())
                    headers = [("Location", location), ("Content-Length", "0")]
                    await stream.send_all(
                        connection.send(h11.Response(status_code=302, headers=headers))
                        + connection.send(h11.EndOfMessage())
                    )
                    return

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


async def test_client_follows_redirects_but_not_forever() -> None:
    async with running() as server, trio.open_nursery() as nursery:
        moved = await nursery.start(
            redirector, lambda target: f"http://127.0.0.1:{server.port}{target}"
        )
        answer = await client.announce(f"http://127.0.0.1:{moved}/announce", request(1))
        assert answer.interval == 60
        assert server.registry.scrape([HASH_A])[HASH_A].incomplete == 1
        looping = await nursery.start(redirector, lambda target: target)
        with pytest.raises(TrackerError, match="redirected"):
            await client.announce(f"http://127.0.0.1:{looping}/announce", request(2))
        nursery.cancel_scope.cancel()
