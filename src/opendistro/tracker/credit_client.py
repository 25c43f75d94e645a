"""Talking to a tracker's credit endpoint: submit receipts, read standings.

``POST /credit`` carries a bencoded list of receipts (``spec/od-credit.md``);
``GET /credit?identity=HEX`` answers a standing. The endpoint lives beside the
announce URL, so :func:`credit_url_for` derives it the way BEP 48 derives a
scrape URL. As with announces, every failure comes out as
:class:`~opendistro.errors.TrackerError`, and answers are size-capped and
time-limited because the tracker is a stranger.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import h11
import trio

from .. import __version__, http_get
from ..credit.receipts import Receipt
from ..errors import TrackerError
from .credit import Standing, SubmitResult, encode_submission

__all__ = ["credit_url_for", "fetch_standing", "submit_receipts"]

_MAX_ANSWER = 64 * 1024
_USER_AGENT = f"opendistro/{__version__}"
_TRANSPORT_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.ProtocolError,
)


def credit_url_for(announce_url: str) -> str:
    """The credit endpoint of an HTTP(S) tracker: ``.../announce`` becomes ``.../credit``."""
    parts = urlsplit(announce_url)
    if parts.scheme.lower() not in ("http", "https"):
        raise TrackerError(f"{announce_url!r} is not an HTTP tracker; it has no credit endpoint")
    head, _, last = parts.path.rpartition("/")
    if not last.startswith("announce"):
        raise TrackerError(f"cannot derive a credit URL from {announce_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/credit", "", ""))


async def submit_receipts(
    url: str,
    receipts: Sequence[Receipt],
    *,
    timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> SubmitResult:
    """POST ``receipts`` (at most 256) to the credit endpoint ``url``; the tracker's tally.

    Receipts counted ``accepted`` or ``stale`` are known to the tracker now,
    so the caller can mark them submitted in its ledger.
    """
    body = encode_submission(receipts)
    try:
        with trio.fail_after(timeout):
            status, answer = await _post(url, body, ssl_context)
    except trio.TooSlowError as exc:
        raise TrackerError(f"tracker {url} did not answer within {timeout} s") from exc
    except _TRANSPORT_ERRORS as exc:
        raise TrackerError(f"tracker {url} failed: {exc}") from exc
    result = SubmitResult.decode(answer)  # a failure reason raises, whatever the status
    if status != 200:
        raise TrackerError(f"tracker {url} answered {status}")
    return result


async def fetch_standing(
    url: str,
    identity: bytes,
    *,
    timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> Standing:
    """The tracker's standing of ``identity`` (a 32-byte public key)."""
    status, body = await http_get.get(
        f"{url}?identity={bytes(identity).hex()}",
        error=TrackerError,
        what="tracker",
        max_body=_MAX_ANSWER,
        timeout=timeout,
        ssl_context=ssl_context,
    )
    standing = Standing.decode(body)
    if status != 200:
        raise TrackerError(f"tracker {url} answered {status}")
    if standing.identity != identity:
        raise TrackerError(f"tracker {url} answered the standing of another identity")
    return standing


async def _post(url: str, body: bytes, ssl_context: ssl.SSLContext | None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TrackerError(f"credit URL {url!r} is not http or https")
    host, port = http_get.host_and_port(
        url, 443 if scheme == "https" else 80, error=TrackerError, what="tracker"
    )
    stream: trio.abc.Stream
    if scheme == "https":
        context = ssl_context or ssl.create_default_context()
        stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
    else:
        stream = await trio.open_tcp_stream(host, port)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="POST",
            target=parts.path or "/",
            headers=[
                ("Host", parts.netloc.rpartition("@")[2]),
                ("User-Agent", _USER_AGENT),
                ("Content-Type", "application/x-bittorrent"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        await stream.send_all(
            (connection.send(request) or b"")
            + (connection.send(h11.Data(data=body)) or b"")
            + (connection.send(h11.EndOfMessage()) or b"")
        )
        status: int | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > _MAX_ANSWER:
                    raise TrackerError(f"tracker {url} sent more than {_MAX_ANSWER} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    # h11 yields EndOfMessage, and ConnectionClosed, only after a Response: a hang-up
    # before one is a RemoteProtocolError (a transport error to the caller).
    assert status is not None
    return status, b"".join(chunks)
