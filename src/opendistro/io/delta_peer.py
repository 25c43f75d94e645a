"""Fetching a delta index and content ranges from one peer over ``od_delta``.

Before the ordinary download starts, :mod:`opendistro.io.delta_update` needs
the release's delta index and the content the old version lacks. A peer that
seeds the new release serves both (``spec/od-delta.md``). :class:`DeltaPeer`
opens a plain BitTorrent connection to it for that alone: handshake, an
extension handshake naming only ``od_delta``, then index pieces and up to
:data:`~opendistro.wire.extensions.od_delta.MAX_OUTSTANDING` content requests
in flight. It uploads nothing and says it has nothing (``HaveNone``). It
accepts zlib-compressed answers (``od_delta_enc``) and inflates them, bounded.

Everything it returns is unverified: the caller rebuilds files whose pieces
the torrent engine then checks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType

import trio

from ..errors import DeltaPeerError, OpenDistroError, RemoteProtocolError
from ..wire.connection import PeerConnection
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.extensions.od_delta import (
    CONTENT_BLOCK_SIZE,
    ENCODING_ZLIB,
    EXTENSION_NAME,
    HANDSHAKE_ENC_KEY,
    HANDSHAKE_SHA256_KEY,
    HANDSHAKE_SIZE_KEY,
    MAX_INDEX_SIZE,
    ContentData,
    ContentReject,
    ContentRequests,
    IndexAssembler,
    IndexData,
    IndexReject,
    decode_delta_message,
    encode_delta_message,
    lists_zlib,
)
from ..wire.messages import Extended, Handshake, HaveNone

__all__ = ["DeltaPeer"]

CONNECT_TIMEOUT = 10.0
ANSWER_TIMEOUT = 30.0
_OUR_ID = 1
"""The id under which we ask the peer to send us od_delta messages."""


class DeltaPeer:
    """One connection used to fetch delta data from a peer; an async context manager."""

    def __init__(self, address: tuple[str, int], info_hash: bytes, peer_id: bytes) -> None:
        self.address = address
        self._info_hash = info_hash
        self._peer_id = peer_id
        self._stream: trio.abc.Stream | None = None
        self._connection = PeerConnection(
            info_hash=info_hash, our_peer_id=peer_id, num_pieces=None, initiator=True
        )
        self._remote: ExtensionHandshake | None = None
        self._requests = ContentRequests(accept_zlib=True)
        self._answers: dict[int, bytes | None] = {}
        """Answered request ids: their content, or None for a reject."""
        self._index_pieces: list[IndexData | IndexReject] = []
        self._send_lock = trio.Lock()
        self.bytes_received = 0

    async def __aenter__(self) -> DeltaPeer:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                self._stream = await trio.open_tcp_stream(*self.address)
                handshake = Handshake(info_hash=self._info_hash, peer_id=self._peer_id)
                await self._stream.send_all(self._connection.send(handshake))
                while self._remote is None:
                    await self._receive()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            await self.aclose()
            raise DeltaPeerError(f"{self.label}: {exc}") from exc
        except BaseException:
            await self.aclose()
            raise
        if not self._remote.supports(EXTENSION_NAME):
            await self.aclose()
            raise DeltaPeerError(f"{self.label} does not speak od_delta")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)
            self._stream = None

    @property
    def label(self) -> str:
        return f"peer {self.address[0]}:{self.address[1]}"

    @property
    def index_size(self) -> int | None:
        """The size of the index the peer announced, if it serves one."""
        value = self._remote.extra.get(HANDSHAKE_SIZE_KEY) if self._remote else None
        if isinstance(value, int) and 0 < value <= MAX_INDEX_SIZE:
            return value
        return None

    @property
    def compresses(self) -> bool:
        """Whether the peer may answer compressed (both sides list ``zlib``)."""
        return self._remote is not None and lists_zlib(self._remote.extra)

    @property
    def index_sha256(self) -> bytes | None:
        value = self._remote.extra.get(HANDSHAKE_SHA256_KEY) if self._remote else None
        return value if isinstance(value, bytes) and len(value) == 32 else None

    async def fetch_index(self, expected_sha256: bytes | None = None) -> bytes:
        """The peer's delta index, checked against ``expected_sha256`` or its own announcement."""
        size = self.index_size
        if size is None:
            raise DeltaPeerError(f"{self.label} serves no delta index")
        assembler = IndexAssembler(
            total_size=size, expected_sha256=expected_sha256 or self.index_sha256
        )
        while (request := assembler.next_request()) is not None:
            await self._send(request)
        while True:
            while not self._index_pieces:
                await self._wait()
            answer = self._index_pieces.pop(0)
            if isinstance(answer, IndexReject):
                raise DeltaPeerError(f"{self.label} refused index piece {answer.piece}")
            try:
                whole = assembler.receive(answer)
            except OpenDistroError as exc:
                raise DeltaPeerError(f"{self.label} sent a bad index: {exc}") from exc
            if whole is not None:
                return whole

    async def fetch_content(
        self, ranges: Sequence[tuple[int, int, int, int]], sink: os.PathLike[str] | str
    ) -> int:
        """Fetch content ``(file, segment, offset, length)`` ranges, written at ``offset`` of
        ``sink`` (a file, created or extended); returns the bytes received.

        Ranges are cut into requests of at most 64 KiB, pipelined. The count is of
        content bytes; :attr:`bytes_received` counts what crossed the wire.
        """
        pieces = [
            (file, segment, start, min(CONTENT_BLOCK_SIZE, offset + length - start))
            for file, segment, offset, length in ranges
            for start in range(offset, offset + length, CONTENT_BLOCK_SIZE)
        ]
        total = 0
        with open(sink, "r+b" if os.path.exists(sink) else "w+b") as out:
            pending: dict[int, tuple[int, int, int, int]] = {}
            position = 0
            while position < len(pieces) or pending:
                while position < len(pieces) and not self._requests.full:
                    request = self._requests.request(*pieces[position])
                    pending[request.request_id] = pieces[position]
                    position += 1
                    await self._send(request)
                while not self._answers:
                    await self._wait()
                request_id, answer = self._answers.popitem()
                piece = pending.pop(request_id)
                if answer is None:
                    raise DeltaPeerError(f"{self.label} refused content {piece}")
                out.seek(piece[2])
                out.write(answer)
                total += len(answer)
        return total

    # -- the connection ------------------------------------------------------------------

    async def _send(self, message: object) -> None:
        assert self._stream is not None and self._remote is not None
        payload = encode_delta_message(message)  # type: ignore[arg-type]
        data = self._connection.send(Extended(self._remote.m[EXTENSION_NAME], payload))
        async with self._send_lock:
            await self._stream.send_all(data)

    async def _wait(self) -> None:
        with trio.fail_after(ANSWER_TIMEOUT):
            await self._receive()

    async def _receive(self) -> None:
        assert self._stream is not None
        data = await self._stream.receive_some(1 << 16)
        if not data:
            raise DeltaPeerError(f"{self.label} closed the connection")
        self.bytes_received += len(data)
        try:
            events = self._connection.receive_data(data)
        except RemoteProtocolError as exc:
            raise DeltaPeerError(f"{self.label}: {exc}") from exc
        for event in events:
            if isinstance(event, Handshake):
                await self._greet()
            elif isinstance(event, ExtensionHandshake):
                self._remote = event
            elif isinstance(event, Extended):
                self._extended(event)

    async def _greet(self) -> None:
        """Our side of the opening: nothing to offer, and only od_delta to speak."""
        assert self._stream is not None
        data = b""
        if self._connection.fast_enabled:
            data += self._connection.send(HaveNone())
        if self._connection.extensions_enabled:
            data += self._connection.send(ExtensionHandshake(
                m={EXTENSION_NAME: _OUR_ID}, extra={HANDSHAKE_ENC_KEY: [ENCODING_ZLIB]}
            ))
        else:
            raise DeltaPeerError(f"{self.label} does not speak the extension protocol")
        await self._stream.send_all(data)

    def _extended(self, event: Extended) -> None:
        if event.extension_id != _OUR_ID:
            return
        try:
            message = decode_delta_message(event.payload)
            if isinstance(message, ContentData | ContentReject):
                request = self._requests.answered(message)
                self._answers[message.request_id] = (
                    self._requests.content(request, message)
                    if isinstance(message, ContentData) else None
                )
            elif isinstance(message, IndexData | IndexReject):
                self._index_pieces.append(message)
        except RemoteProtocolError as exc:
            raise DeltaPeerError(f"{self.label}: {exc}") from exc
