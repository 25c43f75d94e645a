"""Reading one HTTP request on the server side, for the bundled tracker and mirror.

Both servers answer strangers, so a request is read under a deadline and its
body (GET and HEAD have none) is counted and dropped, with a cap: a client
that is slow, leaves, or sends a large body costs a bounded amount of time
and no memory.
"""

from __future__ import annotations

import h11
import trio

__all__ = ["receive_request"]

_RECEIVE_SIZE = 64 * 1024


async def receive_request(
    stream: trio.SocketStream,
    connection: h11.Connection,
    *,
    timeout: float,
    max_body: int,
) -> h11.Request | None:
    """One whole request, or None when the client closed the connection or was too slow.

    A body over ``max_body`` bytes raises :class:`h11.RemoteProtocolError`
    with status hint 413, which the caller answers like any malformed request.
    """
    request: h11.Request | None = None
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
                if body_size > max_body:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage):
                return request
            else:  # ConnectionClosed (or PAUSED, which a server never asks for)
                return None
    return None
