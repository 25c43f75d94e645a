"""Fetching a delta index and content ranges from one peer over ``od_delta``.

Before the ordinary download starts, :mod:`opendistro.io.delta_update` needs
the release's delta index and the content the old version lacks. A peer that
seeds the new release serves both (``spec/od-delta.md``). :class:`DeltaPeer`
opens a plain BitTorrent connection to it for that alone: handshake, an
extension handshake naming only ``od_delta``, then index pieces and up to
:data:`~opendistro.wire.extensions.od_delta.MAX_OUTSTANDING` content requests
in flight. It uploads nothing and says it has nothing (``HaveNone``). It
accepts zlib-compressed answers (``od_delta_enc``) and inflates them, bounded.
From a peer that announces the publisher's pack it also fetches the pack's
header and ranges of its blocks, the same requests in flight. From a peer that
announces the xz-compressed index it fetches that form, decompresses it with
the 64 MiB bound and checks the result as the plain index; when the compressed
form is refused or does not check out, it fetches the plain index instead.

Everything it returns is unverified: the caller rebuilds files whose pieces
the torrent engine then checks. A peer that breaks the protocol, refuses or
stalls is dropped: the connection is closed and every later call raises
:class:`~opendistro.errors.DeltaPeerError`, so a late answer can never be
taken for the answer to another request.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from types import TracebackType

import trio

from ..delta.publish import decompress_index
from ..errors import DeltaPeerError, IntegrityError, RemoteProtocolError
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
    MAX_OUTSTANDING,
    CompressedIndex,
    ContentData,
    ContentReject,
    ContentRequest,
    ContentRequests,
    DeltaMessage,
    IndexAssembler,
    IndexData,
    IndexReject,
    PackAnnouncement,
    PackData,
    PackReject,
    Request,
    compressed_index_announcement,
    decode_delta_message,
    encode_delta_message,
    lists_zlib,
    pack_announcement,
)
from ..wire.messages import Extended, Handshake, HaveNone

__all__ = ["DeltaPeer", "PackSink"]

PackSink = Callable[[int, bytes], None]
"""Takes the bytes of pack span ``n`` as ``(n, data)``, each span's in order."""

PACK_REQUESTS_IN_FLIGHT = 16
"""Pack requests outstanding at once: 1 MiB of answers. The client inflates blocks between
reads, and a seeder drops a connection that leaves 2 MiB of its answers unread."""
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
        self.index_failures: list[str] = []
        """Why an index form fetched from this peer was not used (the plain one was asked
        for after a compressed one failed), in order."""

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

    @property
    def compressed_index(self) -> CompressedIndex | None:
        """The xz-compressed index the peer announced, if it serves one."""
        return compressed_index_announcement(self._remote.extra) if self._remote else None

    async def fetch_index(self, expected_sha256: bytes | None = None) -> bytes:
        """The peer's delta index, checked against ``expected_sha256`` or its own announcement.

        The compressed form comes first when the peer announces it; what it
        decompresses to (at most 64 MiB) must have that same SHA-256. When it is
        refused, does not decompress or does not match, the plain index is
        fetched (:attr:`index_failures` says why).
        """
        size = self.index_size
        if size is None:
            raise DeltaPeerError(f"{self.label} serves no delta index")
        sha256 = expected_sha256 or self.index_sha256
        compressed = self.compressed_index
        if compressed is not None:
            packed = await self._fetch_index_form(IndexAssembler(
                total_size=compressed.size, expected_sha256=compressed.sha256, enc="xz"
            ))
            if packed is not None:
                data = await trio.to_thread.run_sync(decompress_index, packed, MAX_INDEX_SIZE)
                if data is None:
                    self.index_failures.append("sent a compressed index that does not decompress")
                elif hashlib.sha256(data).digest() != sha256:
                    self.index_failures.append("sent a compressed index of another index")
                else:
                    return data
        whole = await self._fetch_index_form(IndexAssembler(total_size=size,
                                                            expected_sha256=sha256))
        if whole is None:
            raise DeltaPeerError(f"{self.label} {self.index_failures[-1]}")
        return whole

    async def _fetch_index_form(self, assembler: IndexAssembler) -> bytes | None:
        """Every piece of one form of the index; None (and why, in :attr:`index_failures`)
        when the peer refuses a piece or the whole does not match its SHA-256.

        After a refusal the other answers are still read, so none of them is
        taken for a piece of the form asked for next.
        """
        form = "compressed index" if assembler.enc else "index"
        asked = answered = 0
        while (request := assembler.next_request()) is not None:
            await self._send(request)
            asked += 1
        refused: int | None = None
        while refused is None or answered < asked:
            while not self._index_pieces:
                await self._wait()
            answer = self._index_pieces.pop(0)
            answered += 1
            if answer.enc != assembler.enc:
                raise DeltaPeerError(f"{self.label} answered with the other index form")
            if isinstance(answer, IndexReject):
                refused = answer.piece
                continue
            try:
                whole = assembler.receive(answer)
            except RemoteProtocolError as exc:
                raise DeltaPeerError(f"{self.label} sent a bad {form}: {exc}") from exc
            except IntegrityError as exc:
                self.index_failures.append(f"sent a bad {form}: {exc}")
                return None
            if whole is not None:
                return whole
        self.index_failures.append(f"refused {form} piece {refused}")
        return None

    @property
    def pack(self) -> PackAnnouncement | None:
        """The pack the peer announced, if it serves one."""
        return pack_announcement(self._remote.extra) if self._remote else None

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

            def write(number: int, data: bytes) -> None:
                nonlocal total
                out.seek(pieces[number][2])
                out.write(data)
                total += len(data)

            await self._fetch(
                [functools.partial(self._requests.request, *piece) for piece in pieces], write
            )
        return total

    async def fetch_pack_header(self) -> bytes:
        """The pack's header, checked against the SHA-256 the peer announced.

        Only a transfer check: the caller decodes it and uses it only if it
        names the index in use (``index-sha256``).
        """
        pack = self.pack
        if pack is None:
            raise DeltaPeerError(f"{self.label} serves no pack")
        parts: list[bytes] = []
        await self._fetch_pack([(0, pack.header_size)], lambda _, data: parts.append(data))
        header = b"".join(parts)
        if hashlib.sha256(header).digest() != pack.header_sha256:
            await self.aclose()
            raise DeltaPeerError(f"{self.label} sent a pack header other than it announced")
        return header

    async def fetch_blocks(self, spans: Sequence[tuple[int, int]], sink: PackSink) -> None:
        """Bytes ``start..end`` of the pack's blocks (``NAME.odblocks``) for every span,
        pipelined; ``sink`` gets each span's bytes in order, spans in order.

        At most :data:`MAX_OUTSTANDING` requests of 64 KiB are in flight, so at
        most that many answers wait for an earlier one.
        """
        pack = self.pack
        if pack is None:
            raise DeltaPeerError(f"{self.label} serves no pack")
        offset = pack.header_size
        if any(not 0 <= start <= end <= pack.blocks_size for start, end in spans):
            raise DeltaPeerError(f"{self.label}: a span beyond the pack it announced")
        await self._fetch_pack([(offset + start, offset + end) for start, end in spans], sink)

    async def _fetch_pack(self, spans: Sequence[tuple[int, int]], sink: PackSink) -> None:
        pieces = [
            (number, start, min(CONTENT_BLOCK_SIZE, end - start))
            for number, (first, end) in enumerate(spans)
            for start in range(first, end, CONTENT_BLOCK_SIZE)
        ]
        await self._fetch(
            [functools.partial(self._requests.request_pack, start, length)
             for _, start, length in pieces],
            lambda number, data: sink(pieces[number][0], data),
            in_flight=PACK_REQUESTS_IN_FLIGHT,
        )

    async def _fetch(
        self,
        requests: Sequence[Callable[[], Request]],
        deliver: Callable[[int, bytes], None],
        *,
        in_flight: int = MAX_OUTSTANDING,
    ) -> None:
        """Send ``requests`` (made when there is room), at most ``in_flight`` outstanding;
        ``deliver`` gets every answer's bytes as ``(request number, data)``, in request order.

        Any failure (a refusal, a protocol error, a stall, or ``deliver`` raising)
        drops the peer: its outstanding answers could not be told apart later.
        """
        try:
            sent: dict[int, int] = {}
            """Request id to its number, while outstanding."""
            early: dict[int, bytes] = {}
            """Answers that came before an earlier one."""
            position = delivered = 0
            while delivered < len(requests):
                while (
                    position < len(requests)
                    and not self._requests.full
                    and len(sent) < in_flight
                ):
                    request = requests[position]()
                    sent[request.request_id] = position
                    position += 1
                    await self._send(request)
                while not self._answers:
                    await self._wait()
                request_id, answer = self._answers.popitem()
                number = sent.pop(request_id)
                if answer is None:
                    raise DeltaPeerError(f"{self.label} refused request {number}")
                early[number] = answer
                while delivered in early:
                    deliver(delivered, early.pop(delivered))
                    delivered += 1
        except BaseException:
            await self.aclose()
            raise

    # -- the connection ------------------------------------------------------------------

    async def _send(self, message: DeltaMessage) -> None:
        if self._stream is None or self._remote is None:
            raise DeltaPeerError(f"{self.label}: the connection is closed")
        payload = encode_delta_message(message)
        data = self._connection.send(Extended(self._remote.m[EXTENSION_NAME], payload))
        try:
            async with self._send_lock:
                await self._stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise DeltaPeerError(f"{self.label}: {exc}") from exc

    async def _wait(self) -> None:
        try:
            with trio.fail_after(ANSWER_TIMEOUT):
                await self._receive()
        except trio.TooSlowError as exc:
            raise DeltaPeerError(f"{self.label} did not answer in time") from exc
        except (OSError, trio.BrokenResourceError) as exc:
            raise DeltaPeerError(f"{self.label}: {exc}") from exc

    async def _receive(self) -> None:
        if self._stream is None:
            raise DeltaPeerError(f"{self.label}: the connection is closed")
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
            if isinstance(message, ContentData | ContentReject | PackData | PackReject):
                request = self._requests.answered(message)
                if isinstance(message, ContentData):
                    assert isinstance(request, ContentRequest)  # answered() checks the kind
                    self._answers[message.request_id] = self._requests.content(request, message)
                elif isinstance(message, PackData):
                    self._answers[message.request_id] = message.data
                else:
                    self._answers[message.request_id] = None
            elif isinstance(message, IndexData | IndexReject):
                self._index_pieces.append(message)
        except RemoteProtocolError as exc:
            raise DeltaPeerError(f"{self.label}: {exc}") from exc
