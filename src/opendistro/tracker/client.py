"""Talking to trackers from trio: HTTP(S) through h11, UDP through BEP 15.

Every failure a caller could meet (refused connection, DNS, TLS, time-out,
garbage, a tracker's ``failure reason``) comes out as :class:`TrackerError`, so
the announce loop has one thing to catch and can move on to the next tracker
in its :class:`~opendistro.tracker.tiers.TrackerTiers`.

UDP connection ids are cached per tracker address for a minute (BEP 15 lets a
client reuse one for that long), and requests are retransmitted with a
doubling wait, as BEP 15 asks, within the caller's overall ``timeout``.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio

from .. import http_get
from ..errors import TrackerError
from . import udp as udp_protocol
from .protocol import (
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    decode_scrape_response,
    scrape_query,
    scrape_url_for,
)

__all__ = ["ScrapeStats", "announce", "scrape"]

_MAX_BODY = 4 * 1024 * 1024
_MAX_REDIRECTS = 3
_CONNECTION_ID_LIFETIME = 60.0  # BEP 15: usable for one minute by the client
_FIRST_RETRANSMIT = 1.0
_MAX_RETRANSMIT = 8.0

_T = TypeVar("_T")
_TRANSPORT_ERRORS = (
    OSError,  # includes ssl.SSLError, socket.gaierror, ConnectionRefusedError
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)

#: What getaddrinfo gives to connect to: (host, port), or (host, port, flow, scope) for IPv6.
_SocketAddress: TypeAlias = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]

#: (host, port) -> (connection id, time.monotonic() when obtained)
_connection_ids: dict[tuple[str, int], tuple[int, float]] = {}


async def _guarded(url: str, timeout: float, operation: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``operation`` under ``timeout``, turning every transport failure into TrackerError."""
    try:
        with trio.fail_after(timeout):
            return await operation()
    except trio.TooSlowError as exc:
        raise TrackerError(f"tracker {url} did not answer within {timeout} s") from exc
    except _TRANSPORT_ERRORS as exc:
        raise TrackerError(f"tracker {url} failed: {exc}") from exc


def _host_and_port(url: str, default_port: int | None) -> tuple[str, int]:
    return http_get.host_and_port(url, default_port, error=TrackerError, what="tracker")


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


async def announce(
    url: str,
    request: AnnounceRequest,
    *,
    timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> AnnounceResponse:
    """Announce to one tracker (``http://``, ``https://`` or ``udp://``).

    ``ssl_context`` overrides the default (system CAs, hostname checked) for https.
    """
    scheme = _scheme(url)
    if scheme in ("http", "https"):
        query = request.to_query()
        body = await _http_get(url, query, ssl_context, timeout)
        return AnnounceResponse.decode(body)
    if scheme == "udp":
        return await _guarded(url, timeout, lambda: _udp_announce(url, request))
    raise TrackerError(f"unsupported tracker URL scheme in {url!r}")


async def scrape(
    url: str,
    info_hashes: Sequence[bytes],
    *,
    timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[bytes, ScrapeStats]:
    """Scrape counters for ``info_hashes`` from the tracker at ``url`` (announce or scrape URL)."""
    scheme = _scheme(url)
    if scheme in ("http", "https"):
        target = scrape_url_for(url)
        query = scrape_query(info_hashes)
        body = await _http_get(target, query, ssl_context, timeout)
        return decode_scrape_response(body)
    if scheme == "udp":
        return await _guarded(url, timeout, lambda: _udp_scrape(url, info_hashes))
    raise TrackerError(f"unsupported tracker URL scheme in {url!r}")


# ---------------------------------------------------------------- HTTP


def _with_query(url: str, query: str) -> str:
    parts = urlsplit(url)
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", joined, ""))


async def _http_get(
    url: str, query: str, ssl_context: ssl.SSLContext | None, timeout: float
) -> bytes:
    """GET ``url`` with ``query`` appended, following a few redirects; return a 200 body.

    Trackers do move (to https, to a new host); following ``Location`` for at
    most ``_MAX_REDIRECTS`` hops, and only to http(s), keeps that working
    without letting a tracker bounce us around forever.
    """
    status, body = await http_get.get(
        _with_query(url, query),
        error=TrackerError,
        what="tracker",
        max_body=_MAX_BODY,
        timeout=timeout,
        max_redirects=_MAX_REDIRECTS,
        ssl_context=ssl_context,
    )
    if status != 200:
        try:
            AnnounceResponse.decode(body)
        except TrackerError as exc:
            raise TrackerError(f"tracker {url} answered HTTP {status}: {exc}") from None
        raise TrackerError(f"tracker {url} answered HTTP {status}")
    return body


# ---------------------------------------------------------------- UDP


async def _udp_socket(url: str) -> tuple[trio.socket.SocketType, _SocketAddress]:
    """A UDP socket for the tracker, not yet connected, and the socket address to connect to.

    The caller connects it inside ``with sock``, so a failed connect closes it;
    a connected socket makes ICMP 'port unreachable' fail us fast. (getaddrinfo
    raises rather than return an empty list, so there is a first address.)
    """
    host, port = _host_and_port(url, None)
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, kind, proto, _, sockaddr = infos[0]
    return trio.socket.socket(family, kind, proto), sockaddr


async def _exchange(
    sock: trio.socket.SocketType, packet: bytes, transaction_id: int, decode: Callable[[bytes], _T]
) -> _T:
    """Send ``packet`` until a reply with our transaction id arrives, then decode it."""
    wait = _FIRST_RETRANSMIT
    expected = struct.pack(">I", transaction_id)
    while True:
        await sock.send(packet)
        with trio.move_on_after(wait):
            while True:
                data = await sock.recv(4096)
                if data[4:8] == expected:
                    return decode(data)
        wait = min(wait * 2, _MAX_RETRANSMIT)


def _new_transaction_id() -> int:
    return random.getrandbits(32)


async def _connection_id(
    sock: trio.socket.SocketType, address: tuple[str, int], *, fresh: bool = False
) -> int:
    cached = _connection_ids.get(address)
    now = time.monotonic()
    if cached is not None and not fresh and now - cached[1] < _CONNECTION_ID_LIFETIME:
        return cached[0]
    transaction_id = _new_transaction_id()
    connection_id = await _exchange(
        sock,
        udp_protocol.encode_connect_request(transaction_id),
        transaction_id,
        lambda data: udp_protocol.decode_connect_response(data, transaction_id),
    )
    _connection_ids[address] = (connection_id, now)
    return connection_id


async def _with_connection_id(
    url: str, attempt: Callable[[trio.socket.SocketType, int], Awaitable[_T]]
) -> _T:
    """Run ``attempt`` with a cached connection id, retrying once with a fresh one on error.

    A cached id can be refused when the tracker restarted or its clock window
    moved; that deserves one new connect, not a failure.
    """
    sock, sockaddr = await _udp_socket(url)
    with sock:
        await sock.connect(sockaddr)
        address = (str(sockaddr[0]), int(sockaddr[1]))
        cached = address in _connection_ids
        connection_id = await _connection_id(sock, address)
        try:
            return await attempt(sock, connection_id)
        except TrackerError:
            if not cached:
                raise
            _connection_ids.pop(address, None)
            connection_id = await _connection_id(sock, address, fresh=True)
            return await attempt(sock, connection_id)


async def _udp_announce(url: str, request: AnnounceRequest) -> AnnounceResponse:
    async def attempt(sock: trio.socket.SocketType, connection_id: int) -> AnnounceResponse:
        transaction_id = _new_transaction_id()
        ipv6 = sock.family == socket.AF_INET6
        return await _exchange(
            sock,
            udp_protocol.encode_announce_request(connection_id, transaction_id, request),
            transaction_id,
            lambda data: udp_protocol.decode_announce_response(data, transaction_id, ipv6=ipv6),
        )

    return await _with_connection_id(url, attempt)


async def _udp_scrape(url: str, info_hashes: Sequence[bytes]) -> dict[bytes, ScrapeStats]:
    result: dict[bytes, ScrapeStats] = {}
    step = udp_protocol.MAX_SCRAPE_HASHES
    for start in range(0, len(info_hashes), step):
        batch = list(info_hashes[start : start + step])

        async def attempt(
            sock: trio.socket.SocketType, connection_id: int, batch: list[bytes] = batch
        ) -> dict[bytes, ScrapeStats]:
            transaction_id = _new_transaction_id()
            return await _exchange(
                sock,
                udp_protocol.encode_scrape_request(connection_id, transaction_id, batch),
                transaction_id,
                lambda data: udp_protocol.decode_scrape_response(data, transaction_id, batch),
            )

        result.update(await _with_connection_id(url, attempt))
    return result
