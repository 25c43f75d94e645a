"""The sans-I/O peer wire protocol: messages, their codec, and the connection state machine.

Nothing in this package reads a socket or a clock; the trio drivers in
``opendistro.io`` and the simulator feed it bytes and write what it returns.
"""

from __future__ import annotations

from .codec import (
    BLOCK_SIZE,
    MessageDecoder,
    encode,
    encode_piece_header,
    peek_handshake_info_hash,
)
from .connection import MAX_REQUEST_LENGTH, BlockRequest, Event, PeerConnection, RequestsDropped
from .extensions.handshake import ExtensionHandshake
from .messages import (
    DEFAULT_RESERVED,
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
    make_reserved,
)

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_RESERVED",
    "MAX_REQUEST_LENGTH",
    "AllowedFast",
    "BitfieldMessage",
    "BlockRequest",
    "Cancel",
    "Choke",
    "Event",
    "Extended",
    "ExtensionHandshake",
    "Handshake",
    "HashReject",
    "HashRequest",
    "Hashes",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "Message",
    "MessageDecoder",
    "MessageId",
    "NotInterested",
    "PeerConnection",
    "Piece",
    "Port",
    "RejectRequest",
    "Request",
    "RequestsDropped",
    "SuggestPiece",
    "Unchoke",
    "encode",
    "encode_piece_header",
    "make_reserved",
    "peek_handshake_info_hash",
]
