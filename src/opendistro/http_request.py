"""Reading one HTTP request on the server side, for the bundled tracker and mirror.

Both servers answer strangers, so a request is read under a deadline and its
body (GET and HEAD have none) is counted against a cap and dropped, or kept
for the few endpoints that take one: a client
that is slow, leaves, or sends a large body costs a bounded amount of time
and no memory.
"""

from __future__ import annotations

from collections.abc import Callable

import h11
import trio

__all__ = ["receive_request", "receive_request_with_body"]

_RECEIVE_SIZE = 64 * 1024


async def receive_request(
    stream: trio.SocketStream,
    connection: h11.Connection,
    *,
    timeout: float,
    max_body: int,
) -> h11.Request | None:
    """One whole request, its body dropped; None when the client closed or was too slow.

    A body over ``max_body`` bytes raises :class:`h11.RemoteProtocolError`
    with status hint 413, which the caller answers like any malformed request.
    """
    received = await receive_request_with_body(
        stream, connection, timeout=timeout, body_limit=lambda _request: max_body, keep=False
    )
    return None if received is None else received[0]


async def receive_request_with_body(
    stream: trio.SocketStream,
    connection: h11.Connection,
    *,
    timeout: float,
    body_limit: Callable[[h11.Request], int],
    keep: bool = True,
) -> tuple[h11.Request, bytes] | None:
    """One whole request and its body (empty unless ``keep``), or None as above.

    ``body_limit(request)`` caps the body per request, so one endpoint (a
    tracker's credit submissions) may take a body while every other takes
    next to nothing; over the cap raises :class:`h11.RemoteProtocolError`
    with status hint 413.
    """
    request: h11.Request | None = None
    chunks: list[bytes] = []
    body_size = 0
    with trio.move_on_after(timeout):
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(_RECEIVE_SIZE))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body_size += len(event.data)
                if request is None or body_size > body_limit(request):
                    raise h11.RemoteProtocolError("request body too large", 413)
                if keep:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return None if request is None else (request, b"".join(chunks))
            else:  # ConnectionClosed (or PAUSED, which a server never asks for)
                return None
    return None
