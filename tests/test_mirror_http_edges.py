"""HttpMirror against a scripted server that answers with exact bytes, for the rare shapes.

Each connection to the scripted server reads one request head and answers with
the next canned reply, byte for byte, then closes (or keeps reading requests).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

import pytest
import trio

from opendistro.errors import (
    LocalProtocolError,
    MirrorDataError,
    MirrorError,
    MirrorUnavailable,
)
from opendistro.mirrors import http
from opendistro.mirrors.http import HttpMirror, Timeouts
from opendistro.mirrors.webseed import HttpSpan

QUICK = Timeouts(connect=5, first_byte=5, idle=5)
SAFETY = 30
BODY = bytes(range(100))


class Scripted:
    """Answers request number N (over all connections) with ``replies[N]``."""

    def __init__(self, replies: Sequence[bytes], *, close: bool = True) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.close = close
        self.port = 0
        self.connections = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            buffer = b""
            while self.replies:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(head)
                reply = self.replies.pop(0)
                if reply.endswith(RESET):
                    await stream.send_all(reply[: -len(RESET)])
                    stream.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    return  # closing now sends RST
                await stream.send_all(reply)
                if self.close:
                    return

    def url(self, path: str = "/f.bin") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def scripted(nursery: trio.Nursery, *replies: bytes, close: bool = True) -> Scripted:
    server = Scripted(replies, close=close)
    await nursery.start(server.serve)
    return server


def span_of(url: str, start: int = 10, length: int = 20, file_length: int = 100) -> HttpSpan:
    return HttpSpan(url, start, start + length - 1, 0, file_length)


def partial(headers: str, body: bytes = BODY[10:30]) -> bytes:
    return f"HTTP/1.1 206 Partial Content\r\n{headers}\r\n".encode() + body


async def fetch(url_or_span: str | HttpSpan) -> bytes:
    span = span_of(url_or_span) if isinstance(url_or_span, str) else url_or_span
    buffer = bytearray(span.length)
    async with HttpMirror(timeouts=QUICK) as mirror:
        with trio.fail_after(SAFETY):
            await mirror.fetch_span(span, memoryview(buffer))
    return bytes(buffer)


RESET = b"<RST>"  # a reply ending in this is followed by a connection reset
RANGE = "Content-Range: bytes 10-29/100\r\nContent-Length: 20\r\n"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (partial("Content-Length: 20\r\n"), "206 without Content-Range"),
        (partial("Content-Range: bytes ten-29/100\r\nContent-Length: 20\r\n"), "malformed"),
        (partial(RANGE + "Content-Range: bytes 10-29/100\r\n"), "2 content-range headers"),
        (partial(RANGE + "Content-Encoding: gzip\r\n"), "gzip-encoded"),
        (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-29/100\r\n\r\nabc", "ended"),
        (b"HTTP/1.1 206 Partial Content\r\n\x00bad header\r\n\r\n", "bad HTTP"),
    ],
)
async def test_malformed_partial_answers_are_data_errors(
    nursery: trio.Nursery, reply: bytes, message: str
) -> None:
    server = await scripted(nursery, reply)
    with pytest.raises(MirrorDataError, match=message):
        await fetch(server.url())


async def test_an_informational_answer_is_skipped(nursery: trio.Nursery) -> None:
    server = await scripted(nursery, b"HTTP/1.1 103 Early Hints\r\n\r\n" + partial(RANGE))
    assert await fetch(server.url()) == BODY[10:30]


async def test_identity_encoding_is_accepted_and_the_query_is_sent(nursery: trio.Nursery) -> None:
    server = await scripted(nursery, partial(RANGE + "Content-Encoding: Identity\r\n"))
    assert await fetch(server.url("/f.bin?v=2")) == BODY[10:30]
    assert server.requests[0].startswith(b"GET /f.bin?v=2 HTTP/1.1")


async def test_a_redirect_without_location_is_an_error(nursery: trio.Nursery) -> None:
    server = await scripted(nursery, b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(MirrorError, match="without a Location"):
        await fetch(server.url())


async def test_a_long_redirect_body_is_not_read_to_its_end(nursery: trio.Nursery) -> None:
    huge = 10_000_000
    redirect = (
        f"HTTP/1.1 302 Found\r\nLocation: /g.bin\r\nContent-Length: {huge}\r\n\r\n".encode()
        + b"x" * 200_000
    )
    server = await scripted(nursery, redirect, partial(RANGE))
    assert await fetch(server.url()) == BODY[10:30]
    assert server.requests[1].startswith(b"GET /g.bin ")


async def test_bytes_after_the_answer_stop_the_connection_being_reused(
    nursery: trio.Nursery,
) -> None:
    server = await scripted(nursery, partial(RANGE) + b"JUNK", partial(RANGE), close=False)
    span = span_of(server.url())
    buffer = bytearray(span.length)
    async with HttpMirror(timeouts=QUICK) as mirror:
        with trio.fail_after(SAFETY):
            first = await mirror.fetch_span(span, memoryview(buffer))
            second = await mirror.fetch_span(span, memoryview(buffer))
    assert bytes(buffer) == BODY[10:30]
    assert first.size == second.size == 20
    assert len(server.requests) == 2


async def test_a_server_that_hangs_up_mid_body_is_a_data_error(nursery: trio.Nursery) -> None:
    server = await scripted(nursery, partial(RANGE, BODY[10:15]))
    with pytest.raises(MirrorDataError, match="ended after 5 of 20"):
        await fetch(server.url())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999/f.bin", "malformed mirror URL"),
        ("ftp://127.0.0.1/f.bin", "not http or https"),
        ("http:///f.bin", "names no host"),
    ],
)
async def test_bad_mirror_urls_are_mirror_errors(url: str, message: str) -> None:
    with pytest.raises(MirrorError, match=message):
        await fetch(url)


def test_at_least_one_connection_per_mirror() -> None:
    with pytest.raises(LocalProtocolError):
        HttpMirror(max_connections=0)


async def test_overlapping_spans_are_a_local_error() -> None:
    spans = [
        HttpSpan("http://127.0.0.1:1/a", 0, 9, 0, 10),
        HttpSpan("http://127.0.0.1:1/b", 0, 9, 5, 10),
    ]
    async with HttpMirror(timeouts=QUICK) as mirror:
        with pytest.raises(LocalProtocolError, match="overlap"):
            await mirror.fetch_run(spans, memoryview(bytearray(15)), offset=0)


async def test_a_reset_before_the_answer_is_unavailable(nursery: trio.Nursery) -> None:
    server = await scripted(nursery, RESET)
    with pytest.raises(MirrorUnavailable, match="connection failed"):
        await fetch(server.url())


async def test_a_reset_during_the_body_is_unavailable(nursery: trio.Nursery) -> None:
    server = await scripted(nursery, partial(RANGE, BODY[10:15]) + RESET)
    with pytest.raises(MirrorUnavailable, match="during the body"):
        await fetch(server.url())


async def test_a_chunked_body_without_its_last_chunk_is_refused(nursery: trio.Nursery) -> None:
    chunked = (
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-29/100\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n14\r\n" + BODY[10:30] + b"\r\n"
    )
    server = await scripted(nursery, chunked)  # then the connection closes: no 0-chunk
    with pytest.raises(MirrorDataError):
        await fetch(server.url())


async def test_remembered_redirects_are_bounded(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "_MAX_REMEMBERED_REDIRECTS", 2)
    moved = b"HTTP/1.1 301 Moved\r\nLocation: /new.bin\r\nContent-Length: 0\r\n\r\n"
    server = await scripted(nursery, *[moved, partial(RANGE)] * 4, partial(RANGE), close=False)
    async with HttpMirror(timeouts=QUICK) as mirror:
        buffer = bytearray(20)
        with trio.fail_after(SAFETY):
            for name in ("a", "b", "c", "a"):
                await mirror.fetch_span(span_of(server.url(f"/{name}.bin")), memoryview(buffer))
    paths = [request.split(b" ")[1] for request in server.requests]
    # Remembering "c" forgot "a" and "b", so "a" was redirected again.
    assert paths == [b"/a.bin", b"/new.bin", b"/b.bin", b"/new.bin", b"/c.bin", b"/new.bin",
                     b"/a.bin", b"/new.bin"]


async def test_an_idle_connection_past_its_lifetime_is_replaced(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "_IDLE_LIFETIME", 0.0)
    server = await scripted(nursery, partial(RANGE), partial(RANGE), close=False)
    async with HttpMirror(timeouts=QUICK) as mirror:
        buffer = bytearray(20)
        with trio.fail_after(SAFETY):
            await mirror.fetch_span(span_of(server.url()), memoryview(buffer))
            await mirror.fetch_span(span_of(server.url()), memoryview(buffer))
    assert bytes(buffer) == BODY[10:30]
    assert server.connections == 2


async def test_a_mirror_that_never_accepts_times_out_the_connect() -> None:
    # A listener whose backlog is full drops further SYNs: the connect just hangs.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(("127.0.0.1", port))
        span = span_of(f"http://127.0.0.1:{port}/f.bin")
        async with HttpMirror(timeouts=Timeouts(connect=0.3, first_byte=5, idle=5)) as mirror:
            with trio.fail_after(SAFETY), pytest.raises(MirrorUnavailable):
                await mirror.fetch_span(span, memoryview(bytearray(span.length)))
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
