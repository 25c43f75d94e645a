"""One peer connection driven over a trio stream.

The protocol lives in :class:`~opendistro.wire.connection.PeerConnection`; this
module only moves bytes between it and the socket and hands the decoded events
to the torrent. Two tasks share a connection: a reader that decodes and reacts,
and a writer that drains an outbox and serves upload requests. Keeping writes
off the reader task means two peers that both upload at full speed can never
deadlock each other on full socket buffers.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..errors import OpenDistroError
from ..wire.connection import Event, PeerConnection, RequestsDropped
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.messages import (
    BitfieldMessage,
    Extended,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    RejectRequest,
    Request,
)
from .rates import RateMeter

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["PeerSession"]

RECEIVE_SIZE = 256 * 1024
WRITE_BATCH = 512 * 1024
KEEPALIVE_INTERVAL = 60.0
IDLE_TIMEOUT = 180.0
MIN_QUEUE = 8
MAX_QUEUE = 500


class PeerSession:
    """The trio side of one connection to one peer of one torrent."""

    def __init__(
        self,
        torrent: Torrent,
        stream: trio.abc.Stream,
        connection: PeerConnection,
        address: tuple[str, int],
    ) -> None:
        self.torrent = torrent
        self.stream = stream
        self.connection = connection
        self.address = address
        now = trio.current_time()
        self.downloaded = RateMeter(now)
        self.uploaded = RateMeter(now)
        self._outbox = bytearray()
        self._uploads: collections.deque[tuple[int, int, int]] = collections.deque()
        self._wakeup = trio.Event()
        self._last_received = now
        self.closed = False
        self.error: str | None = None
        self._scope: trio.CancelScope | None = None

    @property
    def label(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    # -- sending ----------------------------------------------------------

    def send(self, message: Message | ExtensionHandshake) -> None:
        """Queue a control message for the writer task."""
        if self.closed:
            return
        self._outbox += self.connection.send(message)
        self._wake()

    def _wake(self) -> None:
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
                self._wake()

    def _take_batch(self) -> bytearray:
        batch, self._outbox = self._outbox, bytearray()
        storage = self.torrent.storage
        now = trio.current_time()
        while self._uploads and len(batch) < WRITE_BATCH and storage is not None:
            index, begin, length = self._uploads.popleft()
            if not self.connection.peer_wants(index, begin, length):
                continue  # cancelled meanwhile
            data = storage.read_block(index, begin, length)
            batch += self.connection.send_piece_header(index, begin, length)
            batch += data
            self.uploaded.add(length, now)
            self.torrent.record_upload(self, length)
        return batch

    def close(self, reason: str) -> None:
        """Drop this peer (for misbehaviour, or because we are shutting down)."""
        self.error = reason
        if self._scope is not None:
            self._scope.cancel()

    # -- receiving --------------------------------------------------------

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

    async def _watchdog(self) -> None:
        while True:
            await trio.sleep(IDLE_TIMEOUT / 4)
            if trio.current_time() - self._last_received > IDLE_TIMEOUT:
                self.error = "idle time-out"
                return

    def _process(self, data: bytes | bytearray) -> None:
        for event in self.connection.receive_data(data):
            self._handle(event)
        for reject in self.connection.pending_rejects():
            self.send(reject)
        self.fill_requests()

    def _handle(self, event: Event) -> None:
        torrent = self.torrent
        if isinstance(event, Piece):
            self.downloaded.add(len(event.data), trio.current_time())
            torrent.block_received(self, event.index, event.begin, event.data)
        elif isinstance(event, Request):
            self._on_request(event)
        elif isinstance(event, Have):
            torrent.peer_has_piece(self, event.index)
        elif isinstance(event, BitfieldMessage | HaveAll | HaveNone):
            torrent.peer_bitfield_known(self)
        elif isinstance(event, RequestsDropped):
            for block in event.requests:
                torrent.request_failed(self, block)
        elif isinstance(event, Interested):
            torrent.peer_interested(self)
        elif isinstance(event, NotInterested):
            torrent.peer_not_interested(self)
        elif isinstance(event, RejectRequest):
            torrent.request_failed(self, (event.index, event.begin, event.length))
        elif isinstance(event, ExtensionHandshake):
            torrent.extension_handshake(self, event)
        elif isinstance(event, Extended):
            torrent.extension_message(self, event)
        # Choke, Unchoke, Cancel, KeepAlive, Suggest and AllowedFast need no decision here:
        # the connection did the bookkeeping and fill_requests() runs after every read.

    def _on_request(self, request: Request) -> None:
        block = (request.index, request.begin, request.length)
        if not self.torrent.have_piece(request.index):
            if self.connection.fast_enabled:
                self.send(RejectRequest(*block))
            return
        self._uploads.append(block)
        self._wake()

    # -- requesting -------------------------------------------------------

    def queue_target(self) -> int:
        """How many requests to keep in flight: about two seconds of this peer's rate."""
        rate = self.downloaded.rate(trio.current_time())
        target = int(rate * 2.0 / 16384)
        limit = MAX_QUEUE
        remote = self.connection.remote_extensions
        if remote is not None and remote.reqq:
            limit = min(limit, remote.reqq)
        return max(MIN_QUEUE, min(limit, target))

    def fill_requests(self) -> None:
        """Top up the requests in flight to this peer, if it lets us download."""
        if self.closed or self.connection.peer_choking or not self.connection.am_interested:
            return
        wanted = self.queue_target() - len(self.connection.requests_to_peer)
        if wanted <= 0:
            return
        for block in self.torrent.pick_blocks(self, wanted):
            self.send(Request(*block))
