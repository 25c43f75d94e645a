"""BEP 9 ``ut_metadata``: fetch the info dictionary from peers, for magnet links.

A message is a bencoded dictionary (``msg_type``, ``piece``, and for data
``total_size``) directly followed, for data messages, by up to 16 KiB of the
info dictionary. :class:`MetadataAssembler` gathers those pieces from any
number of peers and only hands the result back once its hash matches the
magnet's info-hash, so a lying peer costs a retry, never a wrong torrent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from ...bencode import decode_prefix, encode
from ...errors import BencodeError, IntegrityError, LocalProtocolError, RemoteProtocolError
from .handshake import MAX_METADATA_SIZE

__all__ = [
    "EXTENSION_NAME",
    "METADATA_PIECE_SIZE",
    "REQUEST_TIMEOUT",
    "MetadataAssembler",
    "MetadataData",
    "MetadataMessage",
    "MetadataReject",
    "MetadataRequest",
    "decode_metadata_message",
    "encode_metadata_message",
    "metadata_response",
]

EXTENSION_NAME: Final = "ut_metadata"
METADATA_PIECE_SIZE: Final = 16384
REQUEST_TIMEOUT: Final = 10.0
"""Seconds after which an unanswered piece request is asked again."""

_REQUEST, _DATA, _REJECT = 0, 1, 2
_MAX_PIECES: Final = MAX_METADATA_SIZE // METADATA_PIECE_SIZE


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    """Ask for metadata piece ``piece``."""

    piece: int


@dataclass(frozen=True, slots=True)
class MetadataData:
    """Metadata piece ``piece`` of an info dictionary of ``total_size`` bytes."""

    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MetadataReject:
    """The peer will not send metadata piece ``piece``."""

    piece: int


MetadataMessage = MetadataRequest | MetadataData | MetadataReject


def encode_metadata_message(message: MetadataMessage) -> bytes:
    """The payload of an :class:`~opendistro.wire.messages.Extended` ut_metadata message."""
    if isinstance(message, MetadataRequest):
        return encode({b"msg_type": _REQUEST, b"piece": message.piece})
    if isinstance(message, MetadataReject):
        return encode({b"msg_type": _REJECT, b"piece": message.piece})
    if len(message.data) > METADATA_PIECE_SIZE:
        raise LocalProtocolError("a metadata piece is at most 16 KiB")
    header = encode(
        {b"msg_type": _DATA, b"piece": message.piece, b"total_size": message.total_size}
    )
    return header + message.data


def _checked_int(raw: dict[bytes, object], key: bytes, high: int) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or not 0 <= value <= high:
        raise RemoteProtocolError(f"ut_metadata {key.decode()} must be an integer 0..{high}")
    return value


def decode_metadata_message(payload: bytes) -> MetadataMessage:
    """Parse a ut_metadata payload; RemoteProtocolError when it is malformed."""
    try:
        raw, end = decode_prefix(payload)
    except BencodeError as exc:
        raise RemoteProtocolError(f"ut_metadata message is not bencoded: {exc}") from exc
    if not isinstance(raw, dict):
        raise RemoteProtocolError("ut_metadata message must be a dictionary")
    msg_type = raw.get(b"msg_type")
    piece = _checked_int(raw, b"piece", _MAX_PIECES)
    trailing = payload[end:]
    if msg_type == _DATA:
        total_size = _checked_int(raw, b"total_size", MAX_METADATA_SIZE)
        if len(trailing) > METADATA_PIECE_SIZE:
            raise RemoteProtocolError("ut_metadata piece larger than 16 KiB")
        return MetadataData(piece, total_size, bytes(trailing))
    if trailing:
        raise RemoteProtocolError("trailing bytes after a ut_metadata request or reject")
    if msg_type == _REQUEST:
        return MetadataRequest(piece)
    if msg_type == _REJECT:
        return MetadataReject(piece)
    raise RemoteProtocolError(f"unknown ut_metadata msg_type {msg_type!r}")


def metadata_response(info_bytes: bytes, request: MetadataRequest) -> MetadataData | MetadataReject:
    """Answer a peer's request from the info dictionary we serve."""
    start = request.piece * METADATA_PIECE_SIZE
    if not info_bytes or start >= len(info_bytes):
        return MetadataReject(request.piece)
    chunk = info_bytes[start : start + METADATA_PIECE_SIZE]
    return MetadataData(request.piece, len(info_bytes), chunk)


class MetadataAssembler:
    """Collect the pieces of one info dictionary and verify it against the info-hash.

    Shared by all peers of one magnet download: each asks ``next_request`` what
    to fetch, so pieces are spread across peers and a piece nobody answered is
    asked again after :data:`REQUEST_TIMEOUT` seconds.
    """

    def __init__(
        self,
        *,
        metadata_size: int,
        info_hash_v1: bytes | None,
        info_hash_v2: bytes | None,
        max_size: int = MAX_METADATA_SIZE,
    ) -> None:
        if info_hash_v1 is None and info_hash_v2 is None:
            raise LocalProtocolError("metadata cannot be verified without an info-hash")
        if not 0 < metadata_size <= max_size:
            raise RemoteProtocolError(f"metadata_size {metadata_size} outside 1..{max_size} bytes")
        self.metadata_size = metadata_size
        self.info_hash_v1 = info_hash_v1
        self.info_hash_v2 = info_hash_v2
        self.num_pieces = -(-metadata_size // METADATA_PIECE_SIZE)
        self._pieces: list[bytes | None] = [None] * self.num_pieces
        self._requested_at: dict[int, float] = {}
        self._received = 0

    @property
    def received_pieces(self) -> int:
        """How many distinct pieces are held."""
        return self._received

    def _expected_length(self, piece: int) -> int:
        if piece == self.num_pieces - 1:
            return self.metadata_size - piece * METADATA_PIECE_SIZE
        return METADATA_PIECE_SIZE

    def next_request(self, now: float) -> int | None:
        """The piece to ask for next, or None when all are held or recently asked for."""
        for piece, data in enumerate(self._pieces):
            if data is not None:
                continue
            asked = self._requested_at.get(piece)
            if asked is None or now - asked >= REQUEST_TIMEOUT:
                self._requested_at[piece] = now
                return piece
        return None

    def rejected(self, piece: int) -> None:
        """A peer refused ``piece``: make it available to ask someone else at once."""
        self._requested_at.pop(piece, None)

    def receive(self, message: MetadataData) -> bytes | None:
        """Store a piece; return the verified info dictionary once it is complete.

        A piece of the wrong size or for another total size is the sender's
        fault (RemoteProtocolError); a complete dictionary whose hash does not
        match raises IntegrityError and starts over, since we cannot tell which
        piece lied.
        """
        if message.total_size != self.metadata_size:
            raise RemoteProtocolError(
                f"ut_metadata total_size {message.total_size} != {self.metadata_size}"
            )
        piece = message.piece
        if not 0 <= piece < self.num_pieces:
            raise RemoteProtocolError(f"ut_metadata piece {piece} out of range")
        if len(message.data) != self._expected_length(piece):
            raise RemoteProtocolError(f"ut_metadata piece {piece} has the wrong length")
        self._requested_at.pop(piece, None)
        if self._pieces[piece] is None:
            self._pieces[piece] = bytes(message.data)
            self._received += 1
        if self._received < self.num_pieces:
            return None
        info_bytes = b"".join(piece_data or b"" for piece_data in self._pieces)
        if not self._verify(info_bytes):
            self._pieces = [None] * self.num_pieces
            self._received = 0
            raise IntegrityError("metadata does not match the info-hash")
        return info_bytes

    def _verify(self, info_bytes: bytes) -> bool:
        if self.info_hash_v1 is not None and hashlib.sha1(info_bytes).digest() != self.info_hash_v1:
            return False
        return self.info_hash_v2 is None or (
            hashlib.sha256(info_bytes).digest() == self.info_hash_v2
        )
