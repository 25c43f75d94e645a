"""Bytes to messages and back, with no state beyond a partial frame.

The decoder is built for the block path. A read of a few hundred KiB holds
many whole messages; they are parsed straight out of the caller's buffer
through a memoryview, so a 16 KiB block is copied exactly once (into the
``bytes`` of its :class:`~opendistro.wire.messages.Piece`). Only the last,
incomplete frame of a read is kept, and it is topped up with just the bytes
it lacks, never by appending whole reads to a growing buffer. A frame
completed that way is handed out as a memoryview of its private buffer, so
it too is copied once.

A length prefix above ``max_message_size`` is refused as soon as its four
bytes arrive, before anything is buffered, so a hostile peer cannot make us
hold a large partial message. Every malformed input raises
:class:`~opendistro.errors.RemoteProtocolError` and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from ..errors import LocalProtocolError, RemoteProtocolError
from .messages import (
    PROTOCOL_NAME,
    AllowedFast,
    BitfieldMessage,
    Cancel,
    Choke,
    Extended,
    Handshake,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    MessageId,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
)

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HANDSHAKE_LENGTH",
    "MessageDecoder",
    "encode",
    "encode_piece_header",
    "peek_handshake_info_hash",
]

BLOCK_SIZE: Final = 16384
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
HANDSHAKE_LENGTH: Final = 68

_HANDSHAKE_PREFIX: Final = bytes([len(PROTOCOL_NAME)]) + PROTOCOL_NAME
_U32 = struct.Struct(">I")
_INDEX = struct.Struct(">I")
_PAIR = struct.Struct(">II")
_TRIPLE = struct.Struct(">III")
_PIECE_HEADER = struct.Struct(">IBII")
_PORT = struct.Struct(">H")
_HASH_FIELDS = struct.Struct(">IIII")
_HASH_REQUEST_LENGTH: Final = 1 + 32 + _HASH_FIELDS.size


# ---------------------------------------------------------------- encoding


def encode_piece_header(index: int, begin: int, length: int) -> bytes:
    """The 13 bytes that precede a block, so a driver can write header and block separately."""
    try:
        return _PIECE_HEADER.pack(9 + length, MessageId.PIECE, index, begin)
    except struct.error as exc:
        raise LocalProtocolError(f"piece header out of range: {exc}") from exc


def _simple(message_id: int) -> Callable[[Any], bytes]:
    frame = _U32.pack(1) + bytes([message_id])
    return lambda _message: frame


def _with_index(message_id: int) -> Callable[[Any], bytes]:
    prefix = _U32.pack(5) + bytes([message_id])
    return lambda message: prefix + _INDEX.pack(message.index)


def _with_triple(message_id: int) -> Callable[[Any], bytes]:
    prefix = _U32.pack(13) + bytes([message_id])
    return lambda message: prefix + _TRIPLE.pack(message.index, message.begin, message.length)


def _encode_handshake(message: Handshake) -> bytes:
    return _HANDSHAKE_PREFIX + message.reserved + message.info_hash + message.peer_id


def _encode_bitfield(message: BitfieldMessage) -> bytes:
    return _U32.pack(1 + len(message.data)) + bytes([MessageId.BITFIELD]) + message.data


def _encode_piece(message: Piece) -> bytes:
    return encode_piece_header(message.index, message.begin, len(message.data)) + message.data


def _encode_port(message: Port) -> bytes:
    return _U32.pack(3) + bytes([MessageId.PORT]) + _PORT.pack(message.port)


def _hash_fields(message: HashRequest | Hashes | HashReject) -> bytes:
    if len(message.pieces_root) != 32:
        raise LocalProtocolError("a pieces root is 32 bytes")
    return message.pieces_root + _HASH_FIELDS.pack(
        message.base_layer, message.index, message.length, message.proof_layers
    )


def _encode_hash_request(message: HashRequest | HashReject) -> bytes:
    message_id = (
        MessageId.HASH_REQUEST if isinstance(message, HashRequest) else MessageId.HASH_REJECT
    )
    return _U32.pack(_HASH_REQUEST_LENGTH) + bytes([message_id]) + _hash_fields(message)


def _encode_hashes(message: Hashes) -> bytes:
    if len(message.hashes) % 32:
        raise LocalProtocolError("hashes must be a whole number of 32-byte hashes")
    body = _hash_fields(message) + message.hashes
    return _U32.pack(1 + len(body)) + bytes([MessageId.HASHES]) + body


def _encode_extended(message: Extended) -> bytes:
    if not 0 <= message.extension_id <= 255:
        raise LocalProtocolError("an extension id is one byte")
    header = _U32.pack(2 + len(message.payload)) + bytes([MessageId.EXTENDED])
    return header + bytes([message.extension_id]) + message.payload


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Handshake: _encode_handshake,
    KeepAlive: lambda _message: _U32.pack(0),
    Choke: _simple(MessageId.CHOKE),
    Unchoke: _simple(MessageId.UNCHOKE),
    Interested: _simple(MessageId.INTERESTED),
    NotInterested: _simple(MessageId.NOT_INTERESTED),
    Have: _with_index(MessageId.HAVE),
    BitfieldMessage: _encode_bitfield,
    Request: _with_triple(MessageId.REQUEST),
    Piece: _encode_piece,
    Cancel: _with_triple(MessageId.CANCEL),
    Port: _encode_port,
    SuggestPiece: _with_index(MessageId.SUGGEST_PIECE),
    HaveAll: _simple(MessageId.HAVE_ALL),
    HaveNone: _simple(MessageId.HAVE_NONE),
    RejectRequest: _with_triple(MessageId.REJECT_REQUEST),
    AllowedFast: _with_index(MessageId.ALLOWED_FAST),
    HashRequest: _encode_hash_request,
    Hashes: _encode_hashes,
    HashReject: _encode_hash_request,
    Extended: _encode_extended,
}


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``; LocalProtocolError when a field does not fit."""
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise LocalProtocolError(f"{type(message).__name__} is not a peer wire message")
    try:
        return encoder(message)
    except struct.error as exc:
        raise LocalProtocolError(f"{type(message).__name__} field out of range: {exc}") from exc


# ---------------------------------------------------------------- decoding


def peek_handshake_info_hash(data: bytes | bytearray | memoryview) -> bytes | None:
    """The info-hash of a handshake's first bytes, or None while fewer than 48 arrived.

    A listener serving many torrents reads this to pick the torrent before it
    builds a :class:`~opendistro.wire.connection.PeerConnection`.
    """
    view = memoryview(data)
    if view[: len(_HANDSHAKE_PREFIX)] != _HANDSHAKE_PREFIX[: len(view)]:
        raise RemoteProtocolError("not a BitTorrent handshake")
    if len(view) < 48:
        return None
    return bytes(view[28:48])


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise RemoteProtocolError(what)


def _decode_handshake(frame: memoryview) -> Handshake:
    _require(frame[:20] == _HANDSHAKE_PREFIX, "not a BitTorrent handshake")
    return Handshake(
        reserved=bytes(frame[20:28]), info_hash=bytes(frame[28:48]), peer_id=bytes(frame[48:68])
    )


_SIMPLE_BY_ID: dict[int, Message] = {
    MessageId.CHOKE: Choke(),
    MessageId.UNCHOKE: Unchoke(),
    MessageId.INTERESTED: Interested(),
    MessageId.NOT_INTERESTED: NotInterested(),
    MessageId.HAVE_ALL: HaveAll(),
    MessageId.HAVE_NONE: HaveNone(),
}
_INDEX_BY_ID: dict[int, type[Have] | type[SuggestPiece] | type[AllowedFast]] = {
    MessageId.HAVE: Have,
    MessageId.SUGGEST_PIECE: SuggestPiece,
    MessageId.ALLOWED_FAST: AllowedFast,
}
_TRIPLE_BY_ID: dict[int, type[Request] | type[Cancel] | type[RejectRequest]] = {
    MessageId.REQUEST: Request,
    MessageId.CANCEL: Cancel,
    MessageId.REJECT_REQUEST: RejectRequest,
}
_KEEP_ALIVE = KeepAlive()


def _decode_message(frame: memoryview, owned: bool) -> Message | None:
    """Decode one whole length-prefixed frame; None for an unknown (skipped) message id.

    ``owned`` says the frame lives in a buffer nobody else will touch, so a
    block may be handed out as a view of it instead of a copy.
    """
    length = len(frame) - 4
    if length == 0:
        return _KEEP_ALIVE
    message_id = frame[4]
    if message_id == MessageId.PIECE:
        _require(length >= 9, "piece message too short")
        index, begin = _PAIR.unpack_from(frame, 5)
        data = frame[13:] if owned else bytes(frame[13:])
        return Piece(index, begin, data)
    simple = _SIMPLE_BY_ID.get(message_id)
    if simple is not None:
        _require(length == 1, f"message {message_id} must have no payload")
        return simple
    index_type = _INDEX_BY_ID.get(message_id)
    if index_type is not None:
        _require(length == 5, f"message {message_id} must carry one index")
        return index_type(_INDEX.unpack_from(frame, 5)[0])
    triple_type = _TRIPLE_BY_ID.get(message_id)
    if triple_type is not None:
        _require(length == 13, f"message {message_id} must carry index, begin, length")
        return triple_type(*_TRIPLE.unpack_from(frame, 5))
    if message_id == MessageId.BITFIELD:
        return BitfieldMessage(bytes(frame[5:]))
    if message_id == MessageId.EXTENDED:
        _require(length >= 2, "extended message without an extension id")
        return Extended(frame[5], bytes(frame[6:]))
    if message_id == MessageId.PORT:
        _require(length == 3, "port message must carry two bytes")
        return Port(_PORT.unpack_from(frame, 5)[0])
    if message_id in (MessageId.HASH_REQUEST, MessageId.HASH_REJECT, MessageId.HASHES):
        return _decode_hash_message(message_id, frame, length)
    return None


def _decode_hash_message(
    message_id: int, frame: memoryview, length: int
) -> HashRequest | Hashes | HashReject:
    if message_id == MessageId.HASHES:
        _require(
            length >= _HASH_REQUEST_LENGTH and (length - _HASH_REQUEST_LENGTH) % 32 == 0,
            "hashes message must carry whole 32-byte hashes",
        )
    else:
        _require(length == _HASH_REQUEST_LENGTH, "hash request/reject has a fixed size")
    root = bytes(frame[5:37])
    base_layer, index, count, proof_layers = _HASH_FIELDS.unpack_from(frame, 37)
    if message_id == MessageId.HASHES:
        return Hashes(root, base_layer, index, count, proof_layers, bytes(frame[53:]))
    if message_id == MessageId.HASH_REQUEST:
        return HashRequest(root, base_layer, index, count, proof_layers)
    return HashReject(root, base_layer, index, count, proof_layers)


class MessageDecoder:
    """Incremental decoder: feed it reads of any size, get whole messages back."""

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        expect_handshake: bool = True,
    ) -> None:
        #: The largest length prefix accepted (id byte + payload, without the prefix).
        self.max_message_size = max_message_size
        self._awaiting_handshake = expect_handshake
        self._partial = bytearray()
        self._failed = False
        #: Messages with ids we do not know, skipped as BEP 3 clients customarily do.
        self.unknown_messages = 0

    @property
    def awaiting_handshake(self) -> bool:
        """True until the 68-byte handshake has been decoded."""
        return self._awaiting_handshake

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back until the rest arrives."""
        return len(self._partial)

    def _frame_length(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int | None:
        """The size of the frame starting at ``pos``, or None until its header is in.

        Callers pass ``pos < end``, so a handshake's one-byte header is always in.
        """
        if self._awaiting_handshake:
            _require(data[pos] == len(PROTOCOL_NAME), "not a BitTorrent handshake")
            return HANDSHAKE_LENGTH
        if end - pos < 4:
            return None
        length: int = _U32.unpack_from(data, pos)[0]
        if length > self.max_message_size:
            raise RemoteProtocolError(
                f"message of {length} bytes exceeds the limit of {self.max_message_size}"
            )
        return 4 + length

    def _decode_frame(self, frame: memoryview, owned: bool) -> Message | None:
        if self._awaiting_handshake:
            self._awaiting_handshake = False
            return _decode_handshake(frame)
        message = _decode_message(frame, owned)
        if message is None:
            self.unknown_messages += 1
        return message

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Decode every whole message now available, keeping any incomplete tail.

        After a RemoteProtocolError the stream is out of sync for good, so
        every later call raises too.
        """
        if self._failed:
            raise RemoteProtocolError("the stream already failed to decode")
        try:
            return self._feed(data)
        except RemoteProtocolError:
            self._failed = True
            raise

    def _feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        end = len(view)
        messages: list[Message] = []
        pos = self._top_up(view, messages) if self._partial else 0
        while pos < end:
            total = self._frame_length(view, pos, end)
            if total is None or total > end - pos:
                self._partial += view[pos:]
                break
            message = self._decode_frame(view[pos : pos + total], owned=False)
            pos += total
            if message is not None:
                messages.append(message)
        return messages

    def _top_up(self, view: memoryview, messages: list[Message]) -> int:
        """Complete the held-back frame from the start of ``view``; return bytes consumed."""
        partial = self._partial
        end = len(view)
        pos = 0
        total = self._frame_length(partial, 0, len(partial))
        if total is None:
            # Only a length prefix can be incomplete: a held-back handshake has its header.
            pos = min(4 - len(partial), end)
            partial += view[:pos]
            total = self._frame_length(partial, 0, len(partial))
            if total is None:
                return pos
        take = min(total - len(partial), end - pos)
        partial += view[pos : pos + take]
        pos += take
        if len(partial) == total:
            # The frame owns this buffer from now on; start a fresh one for the next.
            self._partial = bytearray()
            message = self._decode_frame(memoryview(partial).toreadonly(), owned=True)
            if message is not None:
                messages.append(message)
        return pos
