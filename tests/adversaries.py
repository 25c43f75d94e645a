"""Hostile peers for integrity tests, on 127.0.0.1 only.

They are not stand-ins for our own components: they play the attacker, over
real TCP, speaking the real wire protocol (through our sans-I/O
PeerConnection, or byte by byte where the point is to break it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from opendistro.bitfield import Bitfield
from opendistro.errors import RemoteProtocolError
from opendistro.metainfo import Metainfo
from opendistro.wire import messages as m
from opendistro.wire.codec import encode
from opendistro.wire.connection import PeerConnection

from .wire_framing import PIECE_ID, WireFramer, is_piece

LOOPBACK = "127.0.0.1"

Answer = Callable[[m.Request, bytes], m.Piece | None]
"""Given a request and the true bytes, the Piece message a liar sends instead
(None: reject the request, BEP 6)."""

HashAnswer = Callable[[m.HashRequest], m.Hashes | m.HashReject]
"""What a liar answers to a BEP 52 hash request."""


@dataclass
class LyingSeeder:
    """A seeder of ``data`` that answers every request through ``answer``.

    ``answer`` may return the true block, a corrupted one or a block of some
    other piece. The seeder counts the requests it saw; it never dials anyone.
    """

    metainfo: Metainfo
    data: bytes
    answer: Answer
    peer_id: bytes = b"-XX0001-liarliarliar"
    hash_answer: HashAnswer | None = None
    port: int = 0
    requests_seen: int = 0
    connections: int = 0
    _listeners: list[trio.SocketListener] = field(default_factory=list)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self._listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
        self.port = self._listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve, self._listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        connection = PeerConnection(
            info_hash=self.metainfo.wire_info_hash,
            our_peer_id=self.peer_id,
            num_pieces=self.metainfo.num_pieces,
            initiator=False,
        )
        everything = Bitfield.full(self.metainfo.num_pieces).to_bytes()
        try:
            greeted = False
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                out = bytearray()
                for event in connection.receive_data(chunk):
                    if isinstance(event, m.Request):
                        self.requests_seen += 1
                        out += self._reply(connection, event)
                    elif isinstance(event, m.HashRequest) and self.hash_answer is not None:
                        out += connection.send(self.hash_answer(event))
                if not greeted and connection.remote_peer_id is not None:
                    greeted = True
                    out[:0] = (
                        connection.send_handshake()
                        + connection.send(m.BitfieldMessage(everything))
                        + connection.send(m.Unchoke())
                    )
                if out:
                    await stream.send_all(bytes(out))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return

    def _reply(self, connection: PeerConnection, request: m.Request) -> bytes:
        if not connection.peer_wants(request.index, request.begin, request.length):
            return b""  # cancelled in the same read
        start = request.index * self.metainfo.piece_length + request.begin
        truth = self.data[start : start + request.length]
        piece = self.answer(request, truth)
        if piece is None:
            return connection.send(m.RejectRequest(request.index, request.begin, request.length))
        if (piece.index, piece.begin, len(piece.data)) == (
            request.index,
            request.begin,
            request.length,
        ):
            return connection.send(piece)
        connection.discard_peer_request(request.index, request.begin, request.length)
        return encode(piece)  # a block nobody asked for: bypass our own checks


def flip_bit(data: bytes, offset: int = 0) -> bytes:
    changed = bytearray(data)
    changed[offset % len(changed)] ^= 0x01
    return bytes(changed)


@dataclass
class CorruptingProxy:
    """Relays one peer's TCP traffic and flips a bit in every ``every``-th Piece it sends.

    The upstream side (the real peer) is parsed as BEP 3 messages after its
    68-byte handshake, so only block data is touched: framing stays intact and
    the corruption is the kind only a hash check can catch.
    """

    upstream_port: int
    every: int = 3
    port: int = 0
    pieces_seen: int = 0
    pieces_corrupted: int = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, downstream: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(LOOPBACK, self.upstream_port)
        except OSError:
            await downstream.aclose()
            return
        async with upstream, downstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._copy, downstream, upstream, nursery.cancel_scope)
            nursery.start_soon(self._corrupt, upstream, downstream, nursery.cancel_scope)

    @staticmethod
    async def _copy(
        source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while chunk := await source.receive_some(65536):
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()

    async def _corrupt(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        framer = WireFramer()
        try:
            while chunk := await source.receive_some(65536):
                out = bytearray()
                for unit in framer.feed(chunk):
                    if is_piece(unit):
                        self.pieces_seen += 1
                        if self.pieces_seen % self.every == 0:
                            unit[13 + (len(unit) - 13) // 2] ^= 0x10
                            self.pieces_corrupted += 1
                    out += unit
                if out:
                    await sink.send_all(bytes(out))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()


Misdeed = Literal["ignore", "reject", "drip"]
"""What a :class:`ClaimingPeer` does with a request: nothing, a BEP 6 reject, or
answer it one byte at a time."""


@dataclass
class ClaimingPeer:
    """Claims every piece and unchokes, then does not deliver (see :data:`Misdeed`).

    ``announce`` says how it claims: one bitfield, or a Have per piece. It only
    listens; the peer under test dials it. ``closed`` is set once a connection
    ended from the other side; ``blocks_dripped`` counts block bytes it trickled.
    """

    metainfo: Metainfo
    misdeed: Misdeed = "ignore"
    announce: Literal["bitfield", "haves"] = "bitfield"
    fast: bool = True
    drip_interval: float = 0.05
    peer_id: bytes = b"-XX0001-claimclaimcl"
    port: int = 0
    connections: int = 0
    requests_seen: int = 0
    bytes_dripped: int = 0
    closed: trio.Event = field(default_factory=trio.Event)
    errors: list[str] = field(default_factory=list)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        connection = PeerConnection(
            info_hash=self.metainfo.wire_info_hash,
            our_peer_id=self.peer_id,
            num_pieces=self.metainfo.num_pieces,
            initiator=False,
            fast=self.fast,
        )
        async with trio.open_nursery() as nursery:
            try:
                await self._read(stream, connection, nursery)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            except RemoteProtocolError as exc:
                self.errors.append(str(exc))
            nursery.cancel_scope.cancel()
        self.closed.set()

    async def _read(
        self, stream: trio.SocketStream, connection: PeerConnection, nursery: trio.Nursery
    ) -> None:
        """Until the other side closes the connection (the caller stops the drip then)."""
        greeted = dripping = False
        while chunk := await stream.receive_some(65536):
            out = bytearray()
            for event in connection.receive_data(chunk):
                if not isinstance(event, m.Request):
                    continue
                self.requests_seen += 1
                if self.misdeed == "reject":
                    out += connection.send(m.RejectRequest(event.index, event.begin, event.length))
                elif self.misdeed == "drip" and not dripping:
                    dripping = True
                    nursery.start_soon(self._drip, stream, event)
            if not greeted and connection.remote_peer_id is not None:
                greeted = True
                out[:0] = connection.send_handshake() + self._claim(connection)
            if out:
                await stream.send_all(bytes(out))

    def _claim(self, connection: PeerConnection) -> bytes:
        pieces = self.metainfo.num_pieces
        if self.announce == "bitfield":
            claim = connection.send(m.BitfieldMessage(Bitfield.full(pieces).to_bytes()))
        else:
            claim = b"".join(connection.send(m.Have(index)) for index in range(pieces))
        return claim + connection.send(m.Unchoke())

    async def _drip(self, stream: trio.SocketStream, request: m.Request) -> None:
        """Answer one request a byte at a time, for as long as the connection lasts.

        Other messages must not interleave with a half-sent one, so the reader
        sends nothing in this mode.
        """
        header = struct.pack(">IBII", 9 + request.length, PIECE_ID, request.index, request.begin)
        try:
            await stream.send_all(header)
            for _ in range(request.length):
                await trio.sleep(self.drip_interval)
                await stream.send_all(b"\x00")
                self.bytes_dripped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # dropped: the reader sees the connection end too


@dataclass
class RawPeer:
    """A peer we drive message by message, dialling the client under test.

    Used to misbehave where the protocol state machine would refuse to
    (requests while choked, floods, broken framing), with a plaintext
    handshake (the client accepts one unless it requires encryption).
    """

    stream: trio.SocketStream
    connection: PeerConnection
    events: list[object] = field(default_factory=list)
    """Everything decoded from what the client sent."""

    @classmethod
    async def dial(
        cls,
        port: int,
        metainfo: Metainfo,
        *,
        peer_id: bytes = b"-XX0001-rawrawrawraw",
        fast: bool = True,
    ) -> RawPeer:
        stream = await trio.open_tcp_stream(LOOPBACK, port)
        connection = PeerConnection(
            info_hash=metainfo.wire_info_hash,
            our_peer_id=peer_id,
            num_pieces=metainfo.num_pieces,
            initiator=True,
            fast=fast,
        )
        await stream.send_all(connection.send_handshake())
        peer = cls(stream, connection)
        await peer.receive_until(lambda: connection.remote_peer_id is not None)
        return peer

    async def receive_until(self, done: Callable[[], bool]) -> None:
        """Read and decode (into :attr:`events`) until ``done()``."""
        while not done():
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise trio.BrokenResourceError("closed by the client")
            self.events.extend(self.connection.receive_data(chunk))

    async def drain(self) -> None:
        """Read and decode (into :attr:`events`) until the client closes the connection."""
        try:
            while chunk := await self.stream.receive_some(65536):
                self.events.extend(self.connection.receive_data(chunk))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    @property
    def label(self) -> str:
        """How the client names this peer (in its log and ban list)."""
        host, port, *_ = self.stream.socket.getsockname()
        return f"{host}:{port}"

    async def send_raw(self, data: bytes) -> bool:
        """Send bytes past our own checks; False once the client closed the connection."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    async def flood(self, message: bytes, count: int, *, batch: int = 4096) -> int:
        """Send ``message`` ``count`` times, ``batch`` at a time; how many went out
        before the client closed the connection."""
        sent = 0
        while sent < count:
            n = min(batch, count - sent)
            if not await self.send_raw(message * n):
                return sent
            sent += n
        return sent

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def close_reason(logs: list[str], label: str) -> str:
    """Why a client closed its connection to ``label``, once its log says (the socket
    closes just before the line is written)."""
    prefix = f"peer {label} closed: "
    with trio.fail_after(10):
        while True:
            for line in reversed(logs):
                if line.startswith(prefix):
                    return line[len(prefix) :]
            await trio.sleep(0.01)
