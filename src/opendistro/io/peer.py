"""One peer connection driven over a trio stream.

The protocol lives in :class:`~opendistro.wire.connection.PeerConnection` and the
decisions in :class:`~opendistro.swarm.session.SwarmSession`; this module only
moves bytes between the connection and the socket. Two tasks share a
connection: a reader that decodes and hands events to the torrent, and a
writer that drains an outbox and serves upload requests. Keeping writes off the
reader task means two peers that both upload at full speed can never deadlock
each other on full socket buffers.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..errors import OpenDistroError, ProtocolError
from ..wire.connection import PeerConnection
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.messages import KeepAlive, Message

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["PeerSession"]

RECEIVE_SIZE = 256 * 1024
WRITE_BATCH = 512 * 1024
KEEPALIVE_INTERVAL = 60.0
IDLE_TIMEOUT = 180.0


class PeerSession:
    """The trio side of one connection to one peer of one torrent."""

    def __init__(
        self,
        torrent: Torrent,
        stream: trio.abc.Stream,
        connection: PeerConnection,
        address: tuple[str, int],
        *,
        dialed: bool = False,
    ) -> None:
        self.torrent = torrent
        self.dialed = dialed
        """We opened this connection, so ``address`` is where the peer listens."""
        self.stream = stream
        self.connection = connection
        self.address = address
        self._outbox = bytearray()
        self._uploads: collections.deque[tuple[int, int, int]] = collections.deque()
        self._wakeup = trio.Event()
        self._last_received = trio.current_time()
        self._scope: trio.CancelScope | None = None
        self.closed = False
        self.error: str | None = None

    @property
    def label(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    # -- sending ----------------------------------------------------------

    def send(self, message: Message | ExtensionHandshake) -> None:
        """Queue a message for the writer task (plus any rejects it obliges us to send)."""
        if self.closed:
            return
        try:
            self._outbox += self.connection.send(message)
            for reject in self.connection.pending_rejects():
                self._outbox += self.connection.send(reject)
        except ProtocolError as exc:
            # A decision that breaks the protocol is our bug; it costs this
            # connection, not the whole client (the reason is logged).
            self.close(f"internal error, {type(exc).__name__}: {exc}")
            return
        self._wakeup.set()

    def queue_upload(self, index: int, begin: int, length: int) -> None:
        """Serve a block the peer requested, when the writer gets to it."""
        self._uploads.append((index, begin, length))
        self._wakeup.set()

    async def _writer(self) -> None:
        while True:
            with trio.move_on_after(KEEPALIVE_INTERVAL) as idle:
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            if idle.cancelled_caught and not self._outbox:
                self._outbox += self.connection.send(KeepAlive())
            batch = self._take_batch()
            if batch:
                await self.stream.send_all(batch)
            if self._uploads or self._outbox:
                self._wakeup.set()

    def _take_batch(self) -> bytearray:
        """Control messages first, then as many requested blocks as fit one write."""
        batch, self._outbox = self._outbox, bytearray()
        storage = self.torrent.storage
        while self._uploads and len(batch) < WRITE_BATCH and storage is not None:
            index, begin, length = self._uploads.popleft()
            if not self.connection.peer_wants(index, begin, length):
                continue  # cancelled meanwhile, or choked and rejected
            data = storage.read_block(index, begin, length)
            batch += self.connection.send_piece_header(index, begin, length)
            batch += data
            self.torrent.block_served(self, length)
        return batch

    # -- receiving --------------------------------------------------------

    def close(self, reason: str) -> None:
        """Drop this peer (for misbehaviour, or because we are shutting down)."""
        self.error = reason
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, initial_data: bytes = b"") -> None:
        """Serve the connection until either side closes it or it fails."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._guarded, self._writer)
                nursery.start_soon(self._guarded, self._watchdog)
                await self._guarded(self._reader, initial_data)
        finally:
            self.closed = True
            self.torrent.peer_gone(self)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _guarded(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run one of the connection's tasks; whichever ends first ends the connection."""
        try:
            await task(*args)
        except OpenDistroError as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.error = self.error or f"connection lost: {exc}"
        if self._scope is not None:
            self._scope.cancel()

    async def _reader(self, initial_data: bytes) -> None:
        self.torrent.peer_ready(self)
        if initial_data:
            self._process(initial_data)
        while True:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                self.error = self.error or "closed by peer"
                return
            self._last_received = trio.current_time()
            self._process(data)

    def _process(self, data: bytes | bytearray) -> None:
        self.torrent.handle_events(self, self.connection.receive_data(data))

    async def _watchdog(self) -> None:
        while True:
            await trio.sleep(IDLE_TIMEOUT / 4)
            if trio.current_time() - self._last_received > IDLE_TIMEOUT:
                self.error = "idle time-out"
                return
