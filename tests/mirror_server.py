"""A small HTTP file server for tests, with faults that can be switched on.

It serves the files under ``root`` with single-range ``Range`` support, and
writes its answers by hand rather than through h11 so that it can break the
rules on purpose: lie about lengths, cut bodies short, ignore ranges. It runs
in the test's trio loop on 127.0.0.1 only and counts connections so tests
can see keep-alive and connection caps at work.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import trio

from opendistro.metainfo import Metainfo

_MAX_HEAD = 64 * 1024
_CHUNK = 16 * 1024


@dataclass
class Faults:
    """Misbehaviour to apply to every request (redirects: to the listed paths only)."""

    refuse: bool = False  # accept, then close without answering
    status: int | None = None  # answer this status (404, 500, 503, ...) instead of the file
    header_delay: float = 0.0  # seconds to wait before the status line
    rate: int | None = None  # body bytes per second
    stall_after: int | None = None  # stop sending (but keep the connection) after N body bytes
    cut_after: int | None = None  # close the connection after N body bytes
    extra: int = 0  # send N bytes more than the range, delimited by closing the connection
    content_length_delta: int = 0  # add this to the Content-Length header
    wrong_content_range: bool = False  # announce the range shifted by one byte
    ignore_range: bool = False  # answer 200 with the whole file
    corrupt_at: int | None = None  # flip the byte at this offset of every file
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length
    close: bool = False  # Connection: close after each answer
    drop_idle: bool = False  # close after each answer without saying so (a stale keep-alive)
    redirects: dict[str, str] = field(default_factory=dict)  # request path -> Location


@dataclass(frozen=True)
class SeenRequest:
    path: str
    headers: dict[str, str]


class MirrorServer:
    """Serve ``root`` over HTTP (or HTTPS with ``ssl_context``) on 127.0.0.1."""

    def __init__(self, root: Path, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.root = root
        self.faults = Faults()
        self.port = 0
        self.connections = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.requests: list[SeenRequest] = []
        self._ssl_context = ssl_context

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
        for listener in await trio.open_tcp_listeners(0, host="127.0.0.1"):
            self.port = listener.socket.getsockname()[1]
            if self._ssl_context is not None:
                listeners.append(
                    trio.SSLListener(listener, self._ssl_context, https_compatible=True)
                )
            else:
                listeners.append(listener)
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        try:
            async with stream:
                if self.faults.refuse:
                    return
                buffer = bytearray()
                while True:
                    head = await _read_head(stream, buffer)
                    if head is None:
                        return
                    if not await self._answer(stream, head):
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.open_connections -= 1

    async def _answer(self, stream: trio.abc.Stream, head: bytes) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        _, target, _ = request_line.split(" ")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        path = urlsplit(target).path
        self.requests.append(SeenRequest(path, headers))
        faults = self.faults
        if faults.header_delay:
            await trio.sleep(faults.header_delay)
        if path in faults.redirects:
            await _send_simple(stream, 302, [("Location", faults.redirects[path])])
            return not faults.close
        if faults.status is not None:
            await _send_simple(stream, faults.status, [])
            return not faults.close
        file = self._file(path)
        if file is None:
            await _send_simple(stream, 404, [])
            return not faults.close
        size = file.stat().st_size
        wanted = _parse_range(headers.get("range"), size)
        if wanted is None or faults.ignore_range:
            status, first, last = 200, 0, size - 1
            extra_headers: list[tuple[str, str]] = []
        elif isinstance(wanted, str):  # unsatisfiable
            await _send_simple(stream, 416, [("Content-Range", f"bytes */{size}")])
            return not faults.close
        else:
            first, last = wanted
            status = 206
            shift = 1 if faults.wrong_content_range else 0
            extra_headers = [("Content-Range", f"bytes {first + shift}-{last + shift}/{size}")]
        data = bytearray(_read_range(file, first, last + 1 - first))
        if faults.corrupt_at is not None and first <= faults.corrupt_at <= last:
            data[faults.corrupt_at - first] ^= 0xFF
        body = bytes(data)
        close = faults.close
        chunked = faults.chunked and not faults.extra
        if faults.extra:
            body += b"\x00" * faults.extra
            close = True
        elif chunked:
            extra_headers.append(("Transfer-Encoding", "chunked"))
        else:
            extra_headers.append(("Content-Length", str(len(body) + faults.content_length_delta)))
        if close:
            extra_headers.append(("Connection", "close"))
        await stream.send_all(_head(status, extra_headers))
        if not await self._send_body(stream, body, chunked=chunked):
            return False
        return not (close or faults.drop_idle)

    async def _send_body(self, stream: trio.abc.Stream, body: bytes, *, chunked: bool) -> bool:
        """Send ``body`` as the faults say; False when the connection must be closed."""
        faults = self.faults
        stop = len(body)
        for limit in (faults.cut_after, faults.stall_after):
            if limit is not None:
                stop = min(stop, limit)
        sent = 0
        while sent < stop:
            chunk = body[sent : min(sent + _CHUNK, stop)]
            if faults.rate:
                await trio.sleep(len(chunk) / faults.rate)
            await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if sent < len(body):
            if faults.stall_after is not None:
                await trio.sleep_forever()
            return False
        if chunked:
            await stream.send_all(b"0\r\n\r\n")
        return True

    def _file(self, path: str) -> Path | None:
        try:
            relative = unquote(path, errors="strict").lstrip("/")
        except UnicodeDecodeError:
            return None
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root.resolve()) or not candidate.is_file():
            return None
        return candidate


def _read_range(file: Path, offset: int, length: int) -> bytes:
    """Only the bytes asked for, so serving a big release stays cheap."""
    with open(file, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} Test", "Server: opendistro-test-mirror"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def _send_simple(
    stream: trio.abc.Stream, status: int, headers: list[tuple[str, str]]
) -> None:
    body = f"status {status}\n".encode()
    await stream.send_all(_head(status, [*headers, ("Content-Length", str(len(body)))]) + body)


async def _read_head(stream: trio.abc.Stream, buffer: bytearray) -> bytes | None:
    """The next request head (without the blank line), or None at the end of the connection."""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            return None
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


def _parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) of a single ``bytes=a-b`` range, "unsatisfiable", or None to send it all."""
    if value is None or not value.startswith("bytes="):
        return None
    first_text, _, last_text = value[len("bytes=") :].partition("-")
    if not first_text.isdigit():
        return None
    first = int(first_text)
    last = int(last_text) if last_text.isdigit() else size - 1
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


def piece_space(metainfo: Metainfo, folder: Path) -> bytes:
    """The torrent's piece space as the files in ``folder`` hold it (padding as zeros)."""
    return b"".join(
        bytes(entry.length) if entry.is_padding else folder.joinpath(*entry.path).read_bytes()
        for entry in metainfo.files
    )
