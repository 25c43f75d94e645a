"""A static-file HTTP mirror on trio and h11: what a publisher or mirror operator runs.

BitTorrent clients use a plain web server as a BEP 19 web seed, and our own
:class:`~opendistro.mirrors.http.HttpMirror` falls back to one when the swarm
cannot deliver. Any web server will do, but shipping one means ``opendistro
mirror DIR`` (and the demo) work with nothing else installed.

It serves the files under one root folder with ``GET`` and ``HEAD``, and
exactly what range clients need: a single ``Range: bytes=a-b``, ``a-`` or
``-n`` gets ``206`` with ``Content-Range``, a range past the end gets
``416``, anything else the whole file with ``200``. Every answer carries a
``Content-Length`` (never chunked), so a client knows exactly how much is
coming and the connection can be kept alive for the next piece.

Because it faces strangers, it is strict about what it will open: the path is
percent-decoded, split at ``/``, and any ``..`` segment, a path that resolves
(through symlinks) outside the root, a folder or a missing file is a ``404``.
Malformed HTTP gets ``400`` (or h11's better status) and the connection is
closed; one bad client never takes the server down. Bodies are read from disk
a chunk at a time, so memory stays flat however big the release is, and an
optional upload cap (bytes/s, shared by every connection) makes a mirror on
loopback behave like one across the internet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import h11
import trio

from .. import __version__
from ..errors import ConfigError
from ..http_request import receive_request
from ..io.throttle import Throttle

__all__ = ["CHUNK_SIZE", "UNSATISFIABLE", "ByteRange", "MirrorServer", "parse_range"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
"""Body bytes read from disk and sent at a time: small enough that memory stays flat."""
SERVER_NAME = f"opendistro-mirror/{__version__}"
_MAX_REQUEST_HEAD = 16 * 1024
_MAX_REQUEST_BODY = 64 * 1024
"""GET and HEAD carry no meaningful body; a small one is read and dropped, a big one refused."""
_RECEIVE_SIZE = 64 * 1024
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.IGNORECASE)
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20
_CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``first..last`` (inclusive) of a file, as one ``206`` answer sends them."""

    first: int
    last: int

    @property
    def length(self) -> int:
        """Number of bytes the range covers."""
        return self.last - self.first + 1


UNSATISFIABLE = "unsatisfiable"


def parse_range(value: str, size: int) -> ByteRange | str | None:
    """The single range ``value`` asks of a ``size``-byte file.

    Returns a :class:`ByteRange`, :data:`UNSATISFIABLE` (answer ``416``), or
    ``None`` when the header is to be ignored and the whole file sent: RFC
    9110 lets a server ignore a ``Range`` it does not understand, which is
    safer than guessing, and covers several ranges at once (no client of a
    mirror needs ``multipart/byteranges``).
    """
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:  # "-n": the last n bytes
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, size - suffix), size - 1)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # syntactically invalid, so ignored
    if first >= size:
        return UNSATISFIABLE
    last = min(int(last_text), size - 1) if last_text else size - 1
    return ByteRange(first, last)


class _BadTarget(Exception):
    """The request target is not a path we could ever serve (answered with 400)."""


def _path_segments(target: bytes) -> list[str]:
    """The decoded path segments of a request target, without empty and ``.`` ones.

    Raises :class:`_BadTarget` for forms a file server has no use for (``*``,
    ``host:port``). A ``..`` segment is kept, so the caller refuses it; names
    are decoded the way the file system encodes them, so any file on disk can
    be asked for.
    """
    if target.startswith(b"/"):
        raw_path = target
    elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        try:
            raw_path = urlsplit(target).path or b"/"
        except ValueError as exc:
            raise _BadTarget(str(exc)) from None
    else:
        raise _BadTarget("the request target is not a path")
    raw_path = raw_path.split(b"?", 1)[0].split(b"#", 1)[0]
    decoded = os.fsdecode(unquote_to_bytes(raw_path))
    return [segment for segment in decoded.split("/") if segment not in ("", ".")]


@dataclass
class _OpenFile:
    """A file opened for one answer, with what identifies this version of it."""

    descriptor: int
    size: int
    etag: str
    last_modified: str


class MirrorServer:
    """Serve the files under ``root`` over HTTP/1.1; see the module docstring.

    Start it with ``await nursery.start(server.serve)``; :attr:`url` is then
    the base URL to list as a web seed. ``port=0`` picks a free port. ``rate``
    caps the body bytes per second of all connections together (``None``: no
    cap). ``request_timeout`` bounds how long a client may take to send a
    request (or sit idle between two), and ``send_timeout`` how long a send may
    block on a client that stopped reading, so a silent client cannot hold one
    of the ``max_connections`` slots for ever.
    """

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None = None,
        max_connections: int = 256,
        request_timeout: float = 30.0,
        send_timeout: float = 60.0,
    ) -> None:
        if not root.is_dir():
            raise ConfigError(f"mirror root {root} is not a folder")
        if rate is not None and rate <= 0:
            raise ConfigError(f"mirror rate must be positive, got {rate}")
        if not 0 <= port < 65536:
            raise ConfigError(f"port must be 0..65535, got {port}")
        self.root = root.resolve()
        self.host = host
        self.port = port
        self.rate = rate
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.bytes_served = 0
        """Body bytes sent, over every connection (headers not counted)."""
        self.requests_served = 0
        """Requests answered, whatever the status."""
        self.connections = 0
        """Connections accepted since the start."""
        self.open_connections = 0
        self._throttle = Throttle(rate) if rate is not None else None

    @property
    def url(self) -> str:
        """The base URL (ending in ``/``) under which the root's files are served.

        Listening on every interface (``0.0.0.0``, ``::``) shows as loopback
        here; the URL others should use names the machine as they reach it.
        """
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report started (with :attr:`port` set), and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host or None)
        self.port = int(listeners[0].socket.getsockname()[1])
        task_status.started()
        await trio.serve_listeners(self._handle_connection, listeners)

    # -- one connection ------------------------------------------------------------------

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        if self.open_connections >= self.max_connections:
            await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        self.open_connections += 1
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_HEAD)
        try:
            while True:
                request = await receive_request(
                    stream, connection, timeout=self.request_timeout, max_body=_MAX_REQUEST_BODY
                )
                if request is None:
                    break
                await self._answer(stream, connection, request)
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    break
                connection.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._send_error(stream, connection, exc.error_status_hint)
        except (*_CONNECTION_ERRORS, h11.LocalProtocolError, _Abort):
            pass  # the client left, stalled, or the file changed under us: just hang up
        except Exception:
            # A bug must cost this connection, not the nursery every other one runs in.
            logger.exception("mirror connection handler failed")
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _answer(
        self, stream: trio.SocketStream, connection: h11.Connection, request: h11.Request
    ) -> None:
        self.requests_served += 1
        head = request.method == b"HEAD"
        if request.method not in (b"GET", b"HEAD"):
            await self._send_simple(stream, connection, 405, [("Allow", "GET, HEAD")])
            return
        try:
            segments = _path_segments(request.target)
        except _BadTarget:
            await self._send_simple(stream, connection, 400, [("Connection", "close")], head=head)
            return
        opened = await trio.to_thread.run_sync(self._open, segments)
        if opened is None:
            await self._send_simple(stream, connection, 404, [], head=head)
            return
        try:
            await self._send_file(stream, connection, request, opened)
        finally:
            os.close(opened.descriptor)

    def _open(self, segments: Sequence[str]) -> _OpenFile | None:
        """Open the regular file ``segments`` name inside the root, or None (a 404).

        Runs in a worker thread: resolving and opening touch the disk. The
        resolved path must still be inside the root, so neither ``..`` nor a
        symlink can reach a file the operator did not put under it.
        """
        if ".." in segments:
            return None
        try:
            resolved = self.root.joinpath(*segments).resolve(strict=True)
            if not resolved.is_relative_to(self.root):
                return None
            descriptor = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, ValueError, RuntimeError):  # missing, NUL byte, symlink loop
            return None
        try:
            info = os.fstat(descriptor)
        except OSError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            os.close(descriptor)
            return None
        etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
        return _OpenFile(descriptor, info.st_size, etag, formatdate(info.st_mtime, usegmt=True))

    async def _send_file(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        request: h11.Request,
        opened: _OpenFile,
    ) -> None:
        size = opened.size
        wanted: ByteRange | str | None = None
        range_header = _header(request, b"range")
        if range_header is not None and _if_range_holds(request, opened):
            wanted = parse_range(range_header, size)
        validators = [("ETag", opened.etag), ("Last-Modified", opened.last_modified)]
        if wanted == UNSATISFIABLE:
            await self._send_simple(
                stream,
                connection,
                416,
                [("Content-Range", f"bytes */{size}")],
                head=request.method == b"HEAD",
            )
            return
        if isinstance(wanted, ByteRange):
            status, first, length = 206, wanted.first, wanted.length
            extra = [("Content-Range", f"bytes {wanted.first}-{wanted.last}/{size}")]
        else:
            status, first, length = 200, 0, size
            extra = []
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(length)),
            ("Accept-Ranges", "bytes"),
            *validators,
            *extra,
        ]
        response = h11.Response(
            status_code=status, headers=_with_common(headers), reason=_reason(status)
        )
        await self._send(stream, connection, response)
        if request.method == b"GET":
            await self._send_body(stream, connection, opened.descriptor, first, length)
        await self._send(stream, connection, h11.EndOfMessage())

    async def _send_body(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        descriptor: int,
        first: int,
        length: int,
    ) -> None:
        """Stream ``length`` bytes from ``first`` a chunk at a time, under the rate cap."""
        position, end = first, first + length
        while position < end:
            want = min(CHUNK_SIZE, end - position)
            chunk = await trio.to_thread.run_sync(os.pread, descriptor, want, position)
            if not chunk:
                # The file shrank since we promised its length: the client must see
                # a cut-off body rather than a short one passed off as complete.
                raise _Abort
            if self._throttle is not None:
                await self._throttle.acquire(len(chunk))
            self.bytes_served += len(chunk)  # counted once handed over, so readers agree
            await self._send(stream, connection, h11.Data(data=chunk))
            position += len(chunk)

    async def _send(
        self, stream: trio.SocketStream, connection: h11.Connection, event: h11.Event
    ) -> None:
        data = connection.send(event)
        if data:
            with trio.move_on_after(self.send_timeout) as scope:
                await stream.send_all(data)
            if scope.cancelled_caught:
                raise _Abort

    async def _send_simple(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        status: int,
        headers: Headers,
        *,
        head: bool = False,
    ) -> None:
        """A short plain-text answer (errors, 416), always with a Content-Length.

        A ``HEAD`` gets the same headers and no body, as RFC 9110 asks.
        """
        body = b"%d %s\n" % (status, _reason(status))
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        response = h11.Response(
            status_code=status, headers=_with_common(headers), reason=_reason(status)
        )
        await self._send(stream, connection, response)
        if not head:
            await self._send(stream, connection, h11.Data(data=body))
        await self._send(stream, connection, h11.EndOfMessage())

    async def _send_error(
        self, stream: trio.SocketStream, connection: h11.Connection, status: int
    ) -> None:
        """Answer a request h11 refused, if the connection still allows an answer, then close."""
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(*_CONNECTION_ERRORS, h11.ProtocolError, _Abort):
            await self._send_simple(stream, connection, status, [("Connection", "close")])
            await _linger(stream)


async def _linger(stream: trio.SocketStream) -> None:
    """Close gently: say we are done, then read and drop what the client is still sending.

    Closing a socket with unread input makes the kernel send a reset, and a
    reset can make the client's TCP stack drop our error answer before the
    client reads it (RFC 9112, section 9.6). The wait is bounded in time and bytes.
    """
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(_LINGER_SECONDS):
        while drained < _LINGER_BYTES:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                break
            drained += len(data)


class _Abort(Exception):
    """Stop this connection without an answer: the client stalled or the file changed."""


_REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, "Error").encode("ascii")


def _header(request: h11.Request, name: bytes) -> str | None:
    """The value of a header sent once, or None (absent, or sent twice: ambiguous, ignored)."""
    values = [value for key, value in request.headers if key == name]
    return values[0].decode("latin-1") if len(values) == 1 else None


def _if_range_holds(request: h11.Request, opened: _OpenFile) -> bool:
    """Whether a ``Range`` applies: no ``If-Range``, or one naming the file as it is now.

    A client resuming an older copy sends its validator; if the file changed,
    it must get the whole new file instead of a patchwork of two versions.
    """
    condition = _header(request, b"if-range")
    if condition is None:
        return all(key != b"if-range" for key, _ in request.headers)
    condition = condition.strip()
    return condition in (opened.etag, opened.last_modified)


def _with_common(headers: Headers) -> Headers:
    return [*headers, ("Server", SERVER_NAME), ("Date", formatdate(usegmt=True))]
