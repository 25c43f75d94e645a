"""One peer connection driven over a trio stream.

The protocol lives in :class:`~opendistro.wire.connection.PeerConnection` and the
decisions in :class:`~opendistro.swarm.session.SwarmSession`; this module only
moves bytes between the connection and the socket. Two tasks share a
connection: a reader that decodes and hands events to the torrent, and a
writer that drains an outbox and serves upload requests. Keeping writes off the
reader task means two peers that both upload at full speed can never deadlock
each other on full socket buffers.

It also watches what the peer costs us, where the wire state alone cannot
tell (the bounds are the client's :class:`~opendistro.limits.Limits`):

* a peer that holds our requests and delivers no block for
  ``peer_stall_timeout`` seconds is dropped (the swarm logic took most of its
  requests back earlier, when it snubbed the peer);
* a peer that unchokes us but keeps rejecting requests for pieces it claims
  (``max_rejects_without_block`` in a row) is dropped;
* a peer that keeps sending bytes but nothing we act on for
  ``peer_stall_timeout`` seconds is dropped: a slow drip (a message trickled
  a byte at a time keeps the idle timer quiet but never completes), or a
  stream of messages that are dropped unseen (requests while we choke it);
* a peer that keeps requesting while we choke it, making us queue a reject
  for each (BEP 6), is dropped after twice the requests it may queue;
* a peer that does not read what we send, so our queue of control messages
  grows past :data:`MAX_OUTBOX`, is dropped.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..errors import OpenDistroError, ProtocolError
from ..swarm.picker import BLOCK_SIZE
from ..wire.connection import Event, PeerConnection
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.messages import KeepAlive, Message, Piece, RejectRequest, Unchoke

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["PeerSession"]

RECEIVE_SIZE = 256 * 1024
WRITE_BATCH = 512 * 1024
KEEPALIVE_INTERVAL = 60.0
IDLE_TIMEOUT = 180.0
MAX_OUTBOX = 2 << 20
"""Bytes of control messages (not blocks: those wait in the upload queue) we hold
unsent for one peer; more means it stopped reading, and it is dropped."""
DRIP_READS = 8
"""Reads with nothing to act on, since the last message that had, that make a peer
suspect of dripping; a sporadic message dropped unseen (a block that crossed our
cancel) is not a drip."""
CHOKED_REQUEST_SLACK = 64
"""Requests beyond twice ``max_pending_peer_requests`` a choked peer may still send:
what was in flight when we choked it is honest, a stream of them is not."""


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
        now = trio.current_time()
        self._last_received = now
        self._last_message_at = now
        """When a read last gave the torrent something to act on."""
        self._reads_since_message = 0
        self.last_block_at = now
        """When the peer last delivered a block we asked for (or connected)."""
        self._waiting_since: float | None = None
        """Since when (as the watchdog saw it) we have had requests at the peer."""
        self.rejects_without_block = 0
        """Requests it rejected while unchoking us since it last delivered a block."""
        self.choked_rejects = 0
        """Rejects we sent while choking it, since we last unchoked it."""
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
        if self.closed or self.error is not None:
            return
        connection = self.connection
        try:
            self._outbox += connection.send(message)
            rejects = connection.pending_rejects()
            for reject in rejects:
                self._outbox += connection.send(reject)
        except ProtocolError as exc:
            # A decision that breaks the protocol is our bug; it costs this
            # connection, not the whole client (the reason is logged).
            self.close(f"internal error, {type(exc).__name__}: {exc}")
            return
        if isinstance(message, Unchoke):
            self.choked_rejects = 0
        elif connection.am_choking:
            self.choked_rejects += len(rejects) + (1 if isinstance(message, RejectRequest) else 0)
            if self.choked_rejects > self._max_choked_rejects():
                self.close(f"sent {self.choked_rejects} requests while choked")
                return
        if len(self._outbox) > MAX_OUTBOX:
            self.close(f"left {len(self._outbox)} bytes of our messages unread")
            return
        self._wakeup.set()

    def _max_choked_rejects(self) -> int:
        return 2 * self.connection.max_peer_requests + CHOKED_REQUEST_SLACK

    def queue_upload(self, index: int, begin: int, length: int) -> None:
        """Serve a block the peer requested, when the writer gets to it."""
        uploads = self._uploads
        uploads.append((index, begin, length))
        if len(uploads) > 2 * self.connection.max_peer_requests:
            # Requested and cancelled over and over while the writer is blocked: keep
            # only what the peer still waits for (at most max_peer_requests blocks).
            wanted = self.connection.peer_wants
            self._uploads = collections.deque(
                dict.fromkeys(block for block in uploads if wanted(*block))
            )
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
        events = self.connection.receive_data(data)
        if events:
            self._last_message_at = self._last_received
            self._reads_since_message = 0
            self._watch(events)
        else:
            self._reads_since_message += 1
        self.torrent.handle_events(self, events)
        # Rejects the connection queued with no decision of ours (requests while we choke
        # the peer) are sent now, also before there is a swarm session to send anything.
        rejects = self.connection.pending_rejects()
        for reject in rejects:
            self.send(reject)
        limit = self.torrent.client.limits.max_rejects_without_block
        if self.rejects_without_block > limit:
            self.close(
                f"rejected {self.rejects_without_block} requests for pieces it claims, "
                "delivering none"
            )

    def _watch(self, events: list[Event]) -> None:
        """Note deliveries and refusals, for the bounds on wasted time."""
        for event in events:
            if isinstance(event, Piece):
                self.last_block_at = self._last_received
                self.rejects_without_block = 0
            elif isinstance(event, RejectRequest) and not self.connection.peer_choking:
                self.rejects_without_block += 1

    async def _watchdog(self) -> None:
        limits = self.torrent.client.limits
        while True:
            await trio.sleep(min(IDLE_TIMEOUT, limits.peer_stall_timeout) / 4)
            now = trio.current_time()
            if now - self._last_received > IDLE_TIMEOUT:
                self.error = "idle time-out"
                return
            reason = self._wasting(now)
            if reason is not None:
                self.error = reason
                return

    def _wasting(self, now: float) -> str | None:
        """Why the peer is no longer worth its connection, if it is not."""
        patience = self._patience()
        if self._reads_since_message >= DRIP_READS:
            dripping = now - self._last_message_at
            if dripping > patience:
                return f"sent nothing usable in {dripping:.0f} s (slow drip, or ignored messages)"
        if not self.connection.requests_to_peer:
            self._waiting_since = None
            return None
        if self._waiting_since is None:
            self._waiting_since = now
        stalled = now - max(self._waiting_since, self.last_block_at)
        if stalled > patience:
            return f"delivered no block in {stalled:.0f} s while holding our requests"
        return None

    def _patience(self) -> float:
        """How long a block or message may take: ``peer_stall_timeout``, or longer when
        our own download limit makes every peer's blocks wait their turn."""
        patience = self.torrent.client.limits.peer_stall_timeout
        rate = self.torrent.download_limit()
        if rate is None:
            return patience
        queued = sum(len(peer.connection.requests_to_peer) for peer in self.torrent.peers)
        return max(patience, 2 * (queued + 1) * BLOCK_SIZE / rate)
