"""The tracker clients (announce/scrape, credit, health) against trackers that misbehave.

Each misbehaving tracker is a real server on 127.0.0.1: a TCP one that answers
every request with canned bytes (or never answers), and a UDP one that drops
or misaddresses replies on a script.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from opendistro.credit.identity import CreditIdentity
from opendistro.credit.receipts import Receipt, issue_receipt
from opendistro.errors import TrackerError
from opendistro.tracker import client, udp
from opendistro.tracker.credit import Standing, SubmitResult
from opendistro.tracker.credit_client import fetch_standing, submit_receipts
from opendistro.tracker.health_client import fetch_tracker_health
from opendistro.tracker.protocol import AnnounceResponse

from .test_tracker_server import HASH_A, request, running, self_signed_certificate, tls_front

GIVER = CreditIdentity.from_seed(bytes([71]) * 32)
TAKER = CreditIdentity.from_seed(bytes([72]) * 32)
TORRENT = b"\x73" * 20


def http_answer(status: int, body: bytes, *, reason: str = "X", head: bytes = b"") -> bytes:
    """Raw HTTP/1.1 response bytes (``head``: anything to send before it, e.g. a 100)."""
    return head + (
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def read_request(stream: trio.SocketStream) -> bytes:
    """Read one request (headers and a Content-Length body), returning its raw bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@asynccontextmanager
async def canned_http(answer: bytes | None) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 sending ``answer`` to every request (None: never answering).

    Yields its port and the raw requests it received.
    """
    seen: list[bytes] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            seen.append(await read_request(stream))
            if answer is None:
                await trio.sleep_forever()
            await stream.send_all(answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        yield listeners[0].socket.getsockname()[1], seen
        nursery.cancel_scope.cancel()


async def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    sock = trio.socket.socket()
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------ announce and scrape over HTTP


async def test_a_refusal_with_an_error_status_carries_the_reason() -> None:
    async with running(udp=False) as server:
        with pytest.raises(TrackerError, match=r"answered HTTP 404: not found"):
            await client.announce(f"http://127.0.0.1:{server.port}/nothing", request(1))


async def test_an_error_status_is_a_failure_even_with_a_well_formed_body() -> None:
    body = AnnounceResponse(interval=60, peers=(("127.0.0.9", 1),)).encode(compact=True)
    async with canned_http(http_answer(503, body)) as (port, _):
        with pytest.raises(TrackerError, match=r"answered HTTP 503$"):
            await client.announce(f"http://127.0.0.1:{port}/announce", request(1))


async def test_unsupported_schemes_are_refused_for_scrape_too() -> None:
    for url in ("ftp://127.0.0.1/announce", "wss://127.0.0.1/announce"):
        with pytest.raises(TrackerError, match="unsupported tracker URL scheme"):
            await client.scrape(url, [HASH_A])
        with pytest.raises(TrackerError, match="unsupported tracker URL scheme"):
            await client.announce(url, request(1))


# ------------------------------------------------------------ UDP: lost and stray datagrams


@asynccontextmanager
async def scripted_udp(
    script: Callable[[bytes, int], list[bytes]],
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A UDP tracker on 127.0.0.1 answering the n-th packet with ``script(packet, n)``."""
    seen: list[bytes] = []
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        while True:
            packet, address = await sock.recvfrom(2048)
            seen.append(packet)
            for reply in script(packet, len(seen) - 1):
                await sock.sendto(reply, address)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield sock.getsockname()[1], seen
            nursery.cancel_scope.cancel()


async def test_udp_retransmits_a_lost_request_and_skips_replies_to_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "_FIRST_RETRANSMIT", 0.05)
    monkeypatch.setattr(client, "_connection_ids", {})  # no id cached for a reused port
    answer = AnnounceResponse(interval=90, peers=(("127.0.0.7", 7),), complete=1, incomplete=2)

    def script(packet: bytes, n: int) -> list[bytes]:
        parsed = udp.parse_request(packet)
        if isinstance(parsed, udp.ConnectRequest):
            if n == 0:
                return []  # the first connect is "lost"
            stray = udp.encode_connect_response(parsed.transaction_id ^ 1, 5)
            return [stray, udp.encode_connect_response(parsed.transaction_id, 77)]
        assert isinstance(parsed, udp.UdpAnnounceRequest) and parsed.connection_id == 77
        return [udp.encode_announce_response(parsed.transaction_id, answer, ipv6=False)]

    async with scripted_udp(script) as (port, seen):
        got = await client.announce(f"udp://127.0.0.1:{port}/announce", request(1), timeout=30)
    assert got.peers == answer.peers and (got.complete, got.incomplete) == (1, 2)
    kinds = [type(udp.parse_request(packet)) for packet in seen]
    connects = kinds.index(udp.UdpAnnounceRequest)
    assert connects >= 2 and set(kinds[:connects]) == {udp.ConnectRequest}
    assert seen[0] == seen[1]  # the same request, sent again


async def test_a_silent_udp_tracker_times_out_as_a_tracker_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "_FIRST_RETRANSMIT", 0.01)
    monkeypatch.setattr(client, "_connection_ids", {})  # no id cached for a reused port
    async with scripted_udp(lambda packet, n: []) as (port, seen):
        with pytest.raises(TrackerError, match=r"did not answer within 0\.5 s"):
            await client.scrape(f"udp://127.0.0.1:{port}/announce", [HASH_A], timeout=0.5)
    assert len(seen) >= 2 and len(set(seen)) == 1  # retried, with the same request


# ------------------------------------------------------------ the credit client


def receipt(total: int) -> Receipt:
    return issue_receipt(TAKER, torrent=TORRENT, giver=GIVER.public_key, total=total)


async def test_receipts_go_over_https(tmp_path: Path) -> None:
    cert_file, key_file, pem = self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    async with (
        running(udp=False, credit_db_path=tmp_path / "credit.sqlite") as server,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(tls_front, server_context, server.port)
        url = f"https://127.0.0.1:{port}/credit"
        trusting = ssl.create_default_context(cadata=pem)
        result = await submit_receipts(url, [receipt(1000)], ssl_context=trusting)
        assert result == SubmitResult(accepted=1, credited=1000)
        with pytest.raises(TrackerError, match="failed"):  # self-signed: not trusted
            await submit_receipts(url, [receipt(2000)])
        nursery.cancel_scope.cancel()


async def test_a_credit_url_must_be_http() -> None:
    with pytest.raises(TrackerError, match="is not http or https"):
        await submit_receipts("udp://127.0.0.1:6969/credit", [])


async def test_a_refused_connection_and_a_silent_tracker_are_tracker_errors() -> None:
    port = await closed_port()
    with pytest.raises(TrackerError, match="failed"):
        await submit_receipts(f"http://127.0.0.1:{port}/credit", [])
    async with canned_http(None) as (port, seen):
        with pytest.raises(TrackerError, match=r"did not answer within 0\.5 s"):
            await submit_receipts(f"http://127.0.0.1:{port}/credit", [], timeout=0.5)
    assert seen and seen[0].startswith(b"POST /credit ")


async def test_a_submission_tally_with_an_error_status_is_a_failure() -> None:
    tally = SubmitResult(accepted=1, credited=5).encode()
    async with canned_http(http_answer(500, tally)) as (port, _):
        with pytest.raises(TrackerError, match="answered 500"):
            await submit_receipts(f"http://127.0.0.1:{port}/credit", [])


async def test_an_interim_100_continue_is_skipped() -> None:
    tally = SubmitResult(accepted=2, credited=9).encode()
    head = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with canned_http(http_answer(200, tally, head=head)) as (port, _):
        result = await submit_receipts(f"http://127.0.0.1:{port}/credit", [])
    assert result == SubmitResult(accepted=2, credited=9)


async def test_an_oversized_credit_answer_is_cut_off() -> None:
    async with canned_http(http_answer(200, b"x" * (64 * 1024 + 1))) as (port, _):
        with pytest.raises(TrackerError, match="more than 65536 bytes"):
            await submit_receipts(f"http://127.0.0.1:{port}/credit", [])


async def test_a_tracker_hanging_up_without_an_answer_is_a_tracker_error() -> None:
    async with canned_http(b"") as (port, seen):
        with pytest.raises(TrackerError, match="failed"):
            await submit_receipts(f"http://127.0.0.1:{port}/credit", [])
    assert len(seen) == 1


async def test_a_standing_must_be_a_200_about_the_identity_asked() -> None:
    other = Standing(GIVER.public_key, uploaded=5).encode()
    async with canned_http(http_answer(200, other)) as (port, seen):
        with pytest.raises(TrackerError, match="standing of another identity"):
            await fetch_standing(f"http://127.0.0.1:{port}/credit", TAKER.public_key)
        assert await fetch_standing(f"http://127.0.0.1:{port}/credit", GIVER.public_key) == (
            Standing(GIVER.public_key, uploaded=5)
        )
    assert f"identity={TAKER.public_key.hex()}".encode() in seen[0]
    async with canned_http(http_answer(503, other)) as (port, _):
        with pytest.raises(TrackerError, match="answered 503"):
            await fetch_standing(f"http://127.0.0.1:{port}/credit", GIVER.public_key)


# ------------------------------------------------------------ the health client


async def test_a_health_error_status_carries_the_trackers_reason() -> None:
    async with running(udp=False) as server:
        with pytest.raises(TrackerError, match=r"answered 400: .*40 hex digits"):
            await fetch_tracker_health(f"http://127.0.0.1:{server.port}/health.json?info_hash=zz")
    async with canned_http(http_answer(502, b"{}")) as (port, _):
        with pytest.raises(TrackerError, match=r"answered 502$"):
            await fetch_tracker_health(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>busy</html>", "answered 200 without a JSON document"),
        (b"\xff\xfe\xfa", "answered 200 without a JSON document"),
        (b"[1, 2]", "answered a JSON list"),
        (b"[" * 100_000, "answered 200 without a JSON document"),
        (json.dumps({"tracker": {}}).encode(), "sent no health document"),
        (json.dumps({"tracker": [], "torrents": []}).encode(), "sent no health document"),
        (json.dumps({"tracker": {}, "torrents": [1]}).encode(), "sent no health document"),
    ],
    ids=["html", "not utf-8", "a list", "nested too deep", "no torrents", "tracker not an object",
         "torrent not an object"],
)
async def test_what_is_not_a_health_document_is_refused(body: bytes, message: str) -> None:
    async with canned_http(http_answer(200, body)) as (port, _):
        with pytest.raises(TrackerError, match=message):
            await fetch_tracker_health(f"http://127.0.0.1:{port}/announce")


async def test_a_minimal_health_document_is_accepted() -> None:
    document = {"tracker": {"announces": 0}, "torrents": [{"seeders": 1}]}
    async with canned_http(http_answer(200, json.dumps(document).encode())) as (port, seen):
        assert await fetch_tracker_health(f"http://127.0.0.1:{port}/announce", HASH_A) == document
    assert seen[0].startswith(f"GET /health.json?info_hash={HASH_A.hex()} ".encode())

