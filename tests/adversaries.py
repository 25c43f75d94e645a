"""Hostile peers for integrity tests, on 127.0.0.1 only.

They are not stand-ins for our own components: they play the attacker, over
real TCP, speaking the real wire protocol (through our sans-I/O
PeerConnection, or byte by byte where the point is to break it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from opendistro.bitfield import Bitfield
from opendistro.metainfo import Metainfo
from opendistro.wire import messages as m
from opendistro.wire.codec import encode
from opendistro.wire.connection import PeerConnection

LOOPBACK = "127.0.0.1"
HANDSHAKE_LENGTH = 68
PIECE_ID = 7

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
        buffer = bytearray()
        handshake_done = False
        try:
            while chunk := await source.receive_some(65536):
                buffer += chunk
                out = bytearray()
                if not handshake_done:
                    if len(buffer) < HANDSHAKE_LENGTH:
                        continue
                    out += buffer[:HANDSHAKE_LENGTH]
                    del buffer[:HANDSHAKE_LENGTH]
                    handshake_done = True
                while len(buffer) >= 4:
                    (length,) = struct.unpack(">I", buffer[:4])
                    if len(buffer) < 4 + length:
                        break
                    message = bytearray(buffer[: 4 + length])
                    del buffer[: 4 + length]
                    if length > 9 and message[4] == PIECE_ID:
                        self.pieces_seen += 1
                        if self.pieces_seen % self.every == 0:
                            message[4 + 9 + (length - 9) // 2] ^= 0x10
                            self.pieces_corrupted += 1
                    out += message
                if out:
                    await sink.send_all(bytes(out))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()
