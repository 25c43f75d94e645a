"""One small HTTP exchange: tracker announces and credit submissions, documents such as a
Metalink's torrent.

Bulk data from mirrors goes through :mod:`opendistro.mirrors.http` (ranges,
keep-alive, streaming). This is for answers small enough to hold in memory,
and treats the server as a stranger: the body is capped, the whole exchange
has a deadline, redirects are followed only a few times, only to http(s) and
never from https down to http, and every failure (refused, reset, bad TLS,
malformed HTTP, time-out) comes out as the caller's own error type.
"""

from __future__ import annotations

import ssl
from urllib.parse import urljoin, urlsplit

import h11
import trio

from . import __version__
from .errors import OpenDistroError

__all__ = ["REDIRECT_STATUSES", "get", "post"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = f"opendistro/{__version__}"
_TRANSPORT_ERRORS = (
    OSError,  # includes ssl.SSLError, socket.gaierror, ConnectionRefusedError
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.ProtocolError,
)


async def get(
    url: str,
    *,
    error: type[OpenDistroError],
    what: str,
    max_body: int,
    timeout: float,
    max_redirects: int = 3,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """GET ``url``, following redirects; return the final answer's status and body.

    ``what`` names the server in error messages ("tracker", "metaurl"); every
    failure raises ``error``. A status other than a redirect is returned as it
    is: what a 404 or a 500 means is the caller's business.
    """
    try:
        with trio.fail_after(timeout):
            current = url
            for _ in range(max_redirects + 1):
                status, location, body = await _exchange(
                    current, error=error, what=what, max_body=max_body, ssl_context=ssl_context
                )
                if status not in REDIRECT_STATUSES or not location:
                    return status, body
                target = urljoin(current, location)
                scheme = _scheme(target)
                if scheme not in ("http", "https") or (
                    scheme == "http" and _scheme(current) == "https"
                ):
                    raise error(f"{what} {url} redirected to {target!r}")
                current = target
            raise error(f"{what} {url} redirected more than {max_redirects} times")
    except trio.TooSlowError as exc:
        raise error(f"{what} {url} did not answer within {timeout} s") from exc
    except _TRANSPORT_ERRORS as exc:
        raise error(f"{what} {url} failed: {exc}") from exc


async def post(
    url: str,
    body: bytes,
    *,
    content_type: str,
    error: type[OpenDistroError],
    what: str,
    max_body: int,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """POST ``body`` to ``url``; the answer's status and body.

    Redirects are not followed (a POST that moved is the caller's
    misconfiguration, and following it could resend the body elsewhere).
    Failures raise ``error`` as in :func:`get`.
    """
    try:
        with trio.fail_after(timeout):
            status, _, answer = await _exchange(
                url,
                error=error,
                what=what,
                max_body=max_body,
                ssl_context=ssl_context,
                upload=(content_type, body),
            )
            return status, answer
    except trio.TooSlowError as exc:
        raise error(f"{what} {url} did not answer within {timeout} s") from exc
    except _TRANSPORT_ERRORS as exc:
        raise error(f"{what} {url} failed: {exc}") from exc


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def host_and_port(
    url: str, default_port: int | None, *, error: type[OpenDistroError], what: str
) -> tuple[str, int]:
    """The host and port ``url`` names (``default_port`` when it names none)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise error(f"malformed {what} URL {url!r}") from exc
    if not parts.hostname:
        raise error(f"{what} URL {url!r} names no host")
    port = port if port is not None else default_port
    if port is None:
        raise error(f"{what} URL {url!r} names no port")
    return parts.hostname, port


async def _open_stream(
    url: str, ssl_context: ssl.SSLContext | None, error: type[OpenDistroError], what: str
) -> trio.abc.Stream:
    scheme = _scheme(url)
    if scheme not in ("http", "https"):
        raise error(f"{what} URL {url!r} is not http or https")
    https = scheme == "https"
    host, port = host_and_port(url, 443 if https else 80, error=error, what=what)
    if https:
        context = ssl_context or ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
    return await trio.open_tcp_stream(host, port)


async def _exchange(
    url: str,
    *,
    error: type[OpenDistroError],
    what: str,
    max_body: int,
    ssl_context: ssl.SSLContext | None,
    upload: tuple[str, bytes] | None = None,
) -> tuple[int, str | None, bytes]:
    """One request on a fresh connection: ``(status, Location header, body)``.

    A GET, or with ``upload`` (content type, body) a POST.
    """
    parts = urlsplit(url)
    target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
    headers = [
        ("Host", parts.netloc.rpartition("@")[2]),
        ("User-Agent", _USER_AGENT),
        ("Accept-Encoding", "identity"),
        ("Connection", "close"),
    ]
    if upload is not None:
        headers += [("Content-Type", upload[0]), ("Content-Length", str(len(upload[1])))]
    stream = await _open_stream(url, ssl_context, error, what)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET" if upload is None else "POST", target=target, headers=headers
        )
        outgoing = connection.send(request) or b""
        if upload is not None:
            outgoing += connection.send(h11.Data(data=upload[1])) or b""
        await stream.send_all(outgoing + (connection.send(h11.EndOfMessage()) or b""))
        status: int | None = None
        location: str | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    if name == b"location":
                        location = value.decode("latin-1")
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_body:
                    raise error(f"{what} {url} sent more than {max_body} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    if status is None:
        raise error(f"{what} {url} closed the connection without answering")
    return status, location, b"".join(chunks)
