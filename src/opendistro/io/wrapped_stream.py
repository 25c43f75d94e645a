"""A trio stream that transforms another one: what encrypting and throttling share.

Subclasses say how to send and how to receive; this class supplies trio's
stream contract around them: a second concurrent sender or receiver is a
:class:`trio.BusyResourceError` (a running keystream or a multi-write send
must not interleave), ``max_bytes`` is checked as trio checks it, and
half-closing, waiting and closing go straight to the transport.
"""

from __future__ import annotations

import abc

import trio

from ..errors import LocalProtocolError

__all__ = ["WrappedStream"]


class WrappedStream(trio.abc.HalfCloseableStream, abc.ABC):  # type: ignore[misc, unused-ignore]
    """Forwards to ``transport_stream`` through the subclass's ``_send`` and ``_receive``."""

    def __init__(self, transport: trio.abc.Stream) -> None:
        self.transport_stream = transport
        self._sending = False
        self._receiving = False

    @abc.abstractmethod
    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data`` through the transport."""

    @abc.abstractmethod
    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        """Receive at most ``max_bytes`` (any amount when None); empty at end of stream."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await self._send(data)
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            return await self._receive(max_bytes)
        finally:
            self._receiving = False

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if not isinstance(self.transport_stream, trio.abc.HalfCloseableStream):
            raise LocalProtocolError("the underlying stream cannot half-close")
        await self.transport_stream.send_eof()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()
