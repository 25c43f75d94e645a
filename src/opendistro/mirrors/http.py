"""Fetching byte ranges from HTTP mirrors: an HTTP/1.1 ``Range`` client on trio and h11.

A mirror is a stranger's server, so every answer is checked before a byte of
it is handed on: a ``206`` must carry the exact ``Content-Range`` we asked
for (and the file size the torrent promises), a ``200`` is only acceptable
when we asked for the whole file anyway, and the body must be exactly as long
as the range. Bodies are never collected: they stream into the caller's sink
(or a buffer of exactly the right size) as they arrive, so a server that
sends too much is cut off instead of filling memory.

Failures come out as three kinds of :class:`~opendistro.errors.MirrorError`
so the caller can react to each: :class:`MirrorUnavailable` (refused, reset,
timed out, 5xx: back off and retry), :class:`MirrorNotFound` (404/410: this
mirror lacks the file) and :class:`MirrorDataError` (wrong range or length:
the mirror is broken). Redirects, bad TLS and other statuses are plain
:class:`MirrorError`.

Connections are kept alive and reused, one request after another, and at
most ``max_connections`` are open to any one origin (scheme, host, port).
Redirects are followed (at most :data:`MAX_REDIRECTS`), never from https
down to http, and remembered per file URL, as libtorrent does, so a
redirecting mirror costs one extra round trip per file rather than per piece.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote, urljoin, urlsplit

import h11
import trio

from .. import __version__
from ..errors import (
    LocalProtocolError,
    MirrorDataError,
    MirrorError,
    MirrorNotFound,
    MirrorUnavailable,
)
from .webseed import HttpSpan

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_REDIRECTS",
    "USER_AGENT",
    "HttpMirror",
    "MirrorConnection",
    "Sink",
    "Timeouts",
    "Transfer",
]

USER_AGENT = f"opendistro/{__version__}"
MAX_REDIRECTS = 5
DEFAULT_MAX_CONNECTIONS = 2

#: Receives body bytes as they arrive: (position in the torrent's piece space, data).
#: The memoryview is only valid during the call.
Sink = Callable[[int, memoryview], None]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NOT_FOUND_STATUSES = frozenset({404, 410})
_RETRY_LATER_STATUSES = frozenset({408, 429})
_RECEIVE_SIZE = 64 * 1024
_MAX_HEADER_BYTES = 32 * 1024
#: Error and redirect bodies are read (and dropped) up to this size so the
#: connection can be reused; a longer one costs the connection instead.
_MAX_DISCARDED_BODY = 64 * 1024
#: Redirect targets remembered per file URL, before the memory is reset.
_MAX_REMEMBERED_REDIRECTS = 10_000
#: Idle connections older than this are closed instead of reused (nginx drops
#: them after 75 s, many servers sooner).
_IDLE_LIFETIME = 30.0
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")
#: Characters left as they are when a URL becomes a request target: the
#: reserved set, and ``%`` so existing escapes survive. Anything else (spaces,
#: non-ASCII from a ``Location`` header) is percent-encoded.
_TARGET_SAFE = "/%:@!$&'()*+,;=?"

_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)

Origin = tuple[str, str, int]


@dataclass(frozen=True)
class Timeouts:
    """How long a mirror may keep us waiting, in seconds.

    ``first_byte`` runs from sending a request to having the whole response
    head; ``idle`` is the longest pause allowed inside a body. There is no
    limit on a whole transfer: a mirror that keeps sending is making progress.
    """

    connect: float = 10.0
    first_byte: float = 20.0
    idle: float = 20.0


@dataclass(frozen=True)
class Transfer:
    """What one successful fetch cost, for throughput and latency bookkeeping."""

    size: int
    seconds: float
    first_byte_seconds: float
    url: str


def _origin(url: str) -> Origin:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MirrorError(f"malformed mirror URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise MirrorError(f"mirror URL {url!r} is not http or https")
    if not parts.hostname:
        raise MirrorError(f"mirror URL {url!r} names no host")
    return scheme, parts.hostname, port if port is not None else (443 if scheme == "https" else 80)


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return quote(target, safe=_TARGET_SAFE)


def _header(response: h11.Response, name: bytes) -> str | None:
    values = [value for key, value in response.headers if key == name]
    if len(values) > 1:
        raise MirrorDataError(f"response has {len(values)} {name.decode()} headers")
    return values[0].decode("latin-1").strip() if values else None


def _check_content_range(url: str, span: HttpSpan, value: str | None) -> None:
    if value is None:
        raise MirrorDataError(f"{url}: HTTP 206 without Content-Range")
    match = _CONTENT_RANGE.fullmatch(value)
    if match is None:
        raise MirrorDataError(f"{url}: malformed Content-Range {value!r}")
    first, last, total = match.groups()
    if int(first) != span.start or int(last) != span.end_inclusive:
        raise MirrorDataError(
            f"{url}: Content-Range {value!r} does not match the requested {span.range_header}"
        )
    if total != "*" and int(total) != span.file_length:
        raise MirrorDataError(
            f"{url}: the mirror's file has {total} bytes, the torrent says {span.file_length}"
        )


class _StaleConnection(Exception):
    """A kept-alive connection turned out to be closed before it answered: retry on a new one."""


class _ClosedEarly(Exception):
    """The server closed the connection before sending any response."""


class _TooLong(Exception):
    """A body we only wanted to skip is longer than we are willing to read."""


class MirrorConnection:
    """One HTTP/1.1 connection to one origin, carrying one request after another.

    Not safe for concurrent use: :class:`HttpMirror` hands each connection to
    one request at a time and pools it in between.
    """

    def __init__(self, stream: trio.abc.Stream, origin: Origin, timeouts: Timeouts) -> None:
        self.origin = origin
        self.requests_sent = 0
        self._stream = stream
        self._timeouts = timeouts
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADER_BYTES)
        self._eof = False
        self._received = 0  # bytes read since the current request was sent

    @classmethod
    async def open(
        cls, origin: Origin, *, ssl_context: ssl.SSLContext | None, timeouts: Timeouts
    ) -> MirrorConnection:
        """Connect (and for https, finish the TLS handshake) within ``timeouts.connect``."""
        scheme, host, port = origin
        where = f"{scheme}://{host}:{port}"
        stream: trio.abc.Stream | None = None
        try:
            with trio.move_on_after(timeouts.connect):
                tcp = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    context = ssl_context or ssl.create_default_context()
                    tls = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(tcp)
                        raise
                    stream = tls
                else:
                    stream = tcp
        except _TRANSPORT_ERRORS as exc:
            # trio reports TLS failures as BrokenResourceError caused by the SSLError.
            reason = exc.__cause__ or exc
            raise MirrorUnavailable(f"cannot connect to {where}: {reason}") from exc
        if stream is None:
            raise MirrorUnavailable(f"cannot connect to {where} within {timeouts.connect} s")
        return cls(stream, origin, timeouts)

    @property
    def reusable(self) -> bool:
        """Whether another request may be sent on this connection."""
        return self._h11.our_state is h11.IDLE and self._h11.their_state is h11.IDLE

    async def aclose(self) -> None:
        """Close at once; also safe in a cancelled scope, after errors and twice."""
        await trio.aclose_forcefully(self._stream)

    async def get(self, url: str, span: HttpSpan, sink: Sink) -> str | None:
        """GET ``span`` of ``url`` and stream its bytes to ``sink``.

        Returns None when the span was delivered completely, or the raw
        ``Location`` of a redirect. Raises a :class:`MirrorError` otherwise;
        the connection is then only fit to be closed.
        """
        reused = self.requests_sent > 0
        self.requests_sent += 1
        self._received = 0
        parts = urlsplit(url)
        request = h11.Request(
            method="GET",
            target=_request_target(url),
            headers=[
                ("Host", parts.netloc.rpartition("@")[2]),
                ("User-Agent", USER_AGENT),
                ("Range", span.range_header),
                ("Accept-Encoding", "identity"),
            ],
        )
        try:
            data = (self._h11.send(request) or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
            await self._stream.send_all(data)
            response = await self._receive_head(url)
        except (*_TRANSPORT_ERRORS, _ClosedEarly) as exc:
            if reused:
                raise _StaleConnection from exc
            if isinstance(exc, _ClosedEarly):
                raise MirrorUnavailable(
                    f"{url}: the server closed the connection without answering"
                ) from None
            raise MirrorUnavailable(f"{url}: connection failed: {exc}") from exc
        try:
            return await self._handle(url, span, response, sink)
        except _TRANSPORT_ERRORS as exc:
            raise MirrorUnavailable(f"{url}: connection failed during the body: {exc}") from exc

    # -- receiving -----------------------------------------------------------------------

    async def _next_event(
        self, url: str, idle: float, deadline: float, waiting_for: str
    ) -> h11.Event:
        """The next h11 event, reading from the socket as needed within the time limits."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise MirrorDataError(
                    f"{url}: bad HTTP while reading {waiting_for}: {exc}"
                ) from exc
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # pragma: no cover - needs a protocol switch
                raise MirrorDataError(f"{url}: the server switched protocols")
            with trio.move_on_at(min(deadline, trio.current_time() + idle)):
                data = await self._stream.receive_some(_RECEIVE_SIZE)
                self._received += len(data)
                self._eof = not data
                self._h11.receive_data(bytes(data))
                continue
            raise MirrorUnavailable(f"{url}: no {waiting_for} within {idle} s")

    async def _receive_head(self, url: str) -> h11.Response:
        limit = self._timeouts.first_byte
        deadline = trio.current_time() + limit
        while True:
            try:
                event = await self._next_event(url, limit, deadline, "response")
            except MirrorDataError:
                if self._eof and not self._received:
                    raise _ClosedEarly from None
                raise
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):  # pragma: no cover - h11 raises instead
                raise _ClosedEarly
            # An InformationalResponse (1xx) comes before the real one: skip it.

    async def _body(self, url: str, on_data: Callable[[bytes], None]) -> None:
        """Read the body to its end, passing each chunk to ``on_data``."""
        while True:
            event = await self._next_event(url, self._timeouts.idle, float("inf"), "body data")
            if isinstance(event, h11.Data):
                on_data(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # pragma: no cover - h11 yields only Data or EndOfMessage inside a body
                raise MirrorDataError(f"{url}: unexpected {type(event).__name__} in the body")
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            if self._h11.trailing_data[0]:
                # Bytes after the end of the answer, before we asked again: the
                # server's framing is off, so the connection is not reused.
                return
            self._h11.start_next_cycle()

    async def _discard_body(self, url: str) -> None:
        """Read a small unwanted body so the connection stays usable; a big one closes it."""
        seen = 0

        def count(data: bytes) -> None:
            nonlocal seen
            seen += len(data)
            if seen > _MAX_DISCARDED_BODY:
                raise _TooLong

        try:
            await self._body(url, count)
        except (_TooLong, MirrorError, *_TRANSPORT_ERRORS):
            await self.aclose()

    # -- checking the answer ------------------------------------------------------------

    async def _handle(
        self, url: str, span: HttpSpan, response: h11.Response, sink: Sink
    ) -> str | None:
        status = response.status_code
        if status in _REDIRECT_STATUSES:
            location = _header(response, b"location")
            if not location:
                raise MirrorError(f"{url}: HTTP {status} redirect without a Location")
            await self._discard_body(url)
            return location
        if status in _NOT_FOUND_STATUSES:
            await self._discard_body(url)
            raise MirrorNotFound(f"{url}: HTTP {status}, the mirror does not have this file")
        if status >= 500 or status in _RETRY_LATER_STATUSES:
            await self._discard_body(url)
            raise MirrorUnavailable(f"{url}: HTTP {status}, the mirror is unavailable")
        if status == 416:
            raise MirrorDataError(
                f"{url}: HTTP 416, the mirror's file is shorter than {span.file_length} bytes"
            )
        if status == 206:
            _check_content_range(url, span, _header(response, b"content-range"))
        elif status == 200:
            if not span.is_whole_file:
                raise MirrorDataError(
                    f"{url}: HTTP 200 for {span.range_header}: the mirror ignored the range"
                )
        else:
            raise MirrorError(f"{url}: unexpected HTTP {status} to a range request")
        encoding = _header(response, b"content-encoding")
        if encoding is not None and encoding.lower() != "identity":
            raise MirrorDataError(f"{url}: body is {encoding}-encoded, which we did not accept")
        declared = _header(response, b"content-length")
        if declared is not None and int(declared) != span.length:
            raise MirrorDataError(
                f"{url}: Content-Length {declared} for {span.range_header} ({span.length} bytes)"
            )
        await self._deliver(url, span, sink)
        return None

    async def _deliver(self, url: str, span: HttpSpan, sink: Sink) -> None:
        """Stream exactly ``span.length`` body bytes to ``sink``, or fail."""
        received = 0

        def forward(data: bytes) -> None:
            nonlocal received
            if received + len(data) > span.length:
                raise MirrorDataError(
                    f"{url}: body for {span.range_header} is longer than {span.length} bytes"
                )
            sink(span.torrent_offset + received, memoryview(data))
            received += len(data)

        received_error: MirrorDataError | None = None
        try:
            await self._body(url, forward)
        except MirrorDataError as exc:
            if not self._eof:
                raise
            # h11 refuses a body cut short of its Content-Length or last chunk.
            received_error = exc
        if received != span.length:
            raise MirrorDataError(
                f"{url}: body for {span.range_header} ended after {received} of {span.length} bytes"
            ) from received_error
        if received_error is not None:
            raise received_error


class HttpMirror:
    """Range requests to HTTP mirrors, with pooled keep-alive connections.

    One instance can serve any number of mirrors; ``max_connections`` caps the
    connections open to each origin at once. Use as an async context manager,
    or call :meth:`aclose`, to close the idle connections it keeps.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        if max_connections < 1:
            raise LocalProtocolError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._ssl_context = ssl_context
        self._timeouts = timeouts or Timeouts()
        self._limiters: dict[Origin, trio.CapacityLimiter] = {}
        #: Idle connections per origin, with the time.monotonic() they were parked at.
        self._idle: dict[Origin, list[tuple[MirrorConnection, float]]] = {}
        self._redirected: dict[str, str] = {}

    async def __aenter__(self) -> HttpMirror:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every idle connection (ones in use close when their request ends)."""
        idle = [connection for pool in self._idle.values() for connection, _ in pool]
        self._idle.clear()
        for connection in idle:
            await connection.aclose()

    # -- fetching -------------------------------------------------------------------------

    async def fetch_span(self, span: HttpSpan, into: memoryview) -> Transfer:
        """Fetch ``span`` into ``into``, which must be exactly ``span.length`` bytes."""
        target = into.cast("B")
        if len(target) != span.length or target.readonly:
            raise LocalProtocolError(
                f"writable buffer of {span.length} bytes needed, got {len(target)} bytes"
            )

        def write(position: int, data: memoryview) -> None:
            at = position - span.torrent_offset
            target[at : at + len(data)] = data

        return await self.stream_span(span, write)

    async def fetch_run(
        self, spans: Sequence[HttpSpan], into: memoryview, *, offset: int
    ) -> Transfer:
        """Fill ``into`` with the torrent bytes from ``offset``, fetching ``spans`` in order.

        ``spans`` is what :func:`~opendistro.mirrors.webseed.spans` returned for
        that range; the bytes no span covers are padding and are zeroed. The
        spans go one after another, so they share one kept-alive connection.
        """
        target = into.cast("B")
        position = 0  # in target; everything before it is covered or zeroed
        for span in sorted(spans, key=lambda span: span.torrent_offset):
            begin = span.torrent_offset - offset
            if begin < position or begin + span.length > len(target):
                raise LocalProtocolError(
                    f"spans overlap or leave the {len(target)} bytes from offset {offset}"
                )
            target[position:begin] = bytes(begin - position)
            position = begin + span.length
        target[position:] = bytes(len(target) - position)

        started = time.monotonic()
        size = 0
        first_byte: float | None = None
        url = ""
        for span in spans:
            begin = span.torrent_offset - offset
            transfer = await self.fetch_span(span, target[begin : begin + span.length])
            size += transfer.size
            url = transfer.url
            if first_byte is None:
                first_byte = transfer.first_byte_seconds
        return Transfer(size, time.monotonic() - started, first_byte or 0.0, url)

    async def stream_span(self, span: HttpSpan, sink: Sink) -> Transfer:
        """Fetch ``span``, passing the bytes to ``sink`` as they arrive.

        On an error, ``sink`` may already have seen a prefix of the span.
        """
        started = time.monotonic()
        first_byte: list[float] = []

        def timed_sink(position: int, data: memoryview) -> None:
            if not first_byte:
                first_byte.append(time.monotonic() - started)
            sink(position, data)

        url = self._redirected.get(span.url, span.url)
        try:
            for _ in range(MAX_REDIRECTS + 1):
                location = await self._request(url, span, timed_sink)
                if location is None:
                    break
                url = self._follow(url, location)
            else:
                raise MirrorError(f"{span.url}: more than {MAX_REDIRECTS} redirects")
        except BaseException:
            self._redirected.pop(span.url, None)
            raise
        if url != span.url:
            if len(self._redirected) >= _MAX_REMEMBERED_REDIRECTS:
                self._redirected.clear()
            self._redirected[span.url] = url
        seconds = time.monotonic() - started
        return Transfer(span.length, seconds, first_byte[0] if first_byte else seconds, url)

    @staticmethod
    def _follow(url: str, location: str) -> str:
        target = urljoin(url, location)
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            raise MirrorError(f"{url}: redirected to {target!r}, which is not http or https")
        if scheme == "http" and urlsplit(url).scheme.lower() == "https":
            raise MirrorError(f"{url}: refusing a redirect from https down to {target}")
        return target

    async def _request(self, url: str, span: HttpSpan, sink: Sink) -> str | None:
        """One request on a pooled (or new) connection to ``url``'s origin."""
        origin = _origin(url)
        limiter = self._limiters.setdefault(origin, trio.CapacityLimiter(self.max_connections))
        async with limiter:
            connection = await self._connection(origin)
            try:
                try:
                    return await connection.get(url, span, sink)
                except _StaleConnection:
                    await connection.aclose()
                    connection = await self._connection(origin, fresh=True)
                    return await connection.get(url, span, sink)
            finally:
                # Error answers (404, 503, redirects) leave a connection that
                # is fine to reuse; anything cut off midway is closed.
                if connection.reusable:
                    self._idle.setdefault(origin, []).append((connection, time.monotonic()))
                else:
                    await connection.aclose()

    async def _connection(self, origin: Origin, *, fresh: bool = False) -> MirrorConnection:
        """The most recently parked idle connection to ``origin``, or a new one.

        Connections idle for longer than servers usually keep them open are
        closed rather than tried; one closed sooner than that costs a retry.
        """
        pool = self._idle.get(origin, [])
        while pool and not fresh:
            connection, parked = pool.pop()
            if time.monotonic() - parked < _IDLE_LIFETIME:
                return connection
            await connection.aclose()
        return await MirrorConnection.open(
            origin, ssl_context=self._ssl_context, timeouts=self._timeouts
        )
