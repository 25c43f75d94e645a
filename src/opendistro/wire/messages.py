"""The peer wire messages, one frozen dataclass each.

Like h11's events, these are plain values: the codec turns bytes into them and
back, and :class:`~opendistro.wire.connection.PeerConnection` decides whether a
message is legal *now*. Nothing here knows about sockets or state.

Covered: BEP 3 (core), BEP 5 (``Port``), BEP 6 (fast extension), BEP 10
(``Extended``, whose payload the extension modules decode) and the BEP 52 hash
messages used to fetch v2 merkle proofs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import LocalProtocolError

__all__ = [
    "DEFAULT_RESERVED",
    "PROTOCOL_NAME",
    "AllowedFast",
    "BitfieldMessage",
    "Cancel",
    "Choke",
    "Extended",
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
    "MessageId",
    "NotInterested",
    "Piece",
    "Port",
    "RejectRequest",
    "Request",
    "SuggestPiece",
    "Unchoke",
    "make_reserved",
]

PROTOCOL_NAME: Final = b"BitTorrent protocol"


class MessageId:
    """The one-byte message ids after the length prefix (a namespace, not an enum, for speed)."""

    CHOKE: Final = 0
    UNCHOKE: Final = 1
    INTERESTED: Final = 2
    NOT_INTERESTED: Final = 3
    HAVE: Final = 4
    BITFIELD: Final = 5
    REQUEST: Final = 6
    PIECE: Final = 7
    CANCEL: Final = 8
    PORT: Final = 9
    SUGGEST_PIECE: Final = 13
    HAVE_ALL: Final = 14
    HAVE_NONE: Final = 15
    REJECT_REQUEST: Final = 16
    ALLOWED_FAST: Final = 17
    EXTENDED: Final = 20
    HASH_REQUEST: Final = 21
    HASHES: Final = 22
    HASH_REJECT: Final = 23


# Reserved-byte flags: (byte index, mask).
_DHT = (7, 0x01)
_FAST = (7, 0x04)
_V2_UPGRADE = (7, 0x10)
_EXTENSIONS = (5, 0x10)


def make_reserved(
    *, fast: bool = True, extensions: bool = True, dht: bool = False, v2: bool = False
) -> bytes:
    """The 8 reserved handshake bytes advertising the given protocol extensions."""
    reserved = bytearray(8)
    for wanted, (index, mask) in (
        (fast, _FAST),
        (extensions, _EXTENSIONS),
        (dht, _DHT),
        (v2, _V2_UPGRADE),
    ):
        if wanted:
            reserved[index] |= mask
    return bytes(reserved)


DEFAULT_RESERVED: Final = make_reserved()


@dataclass(frozen=True, slots=True)
class Handshake:
    """The 68-byte opening of every connection (BEP 3)."""

    info_hash: bytes
    peer_id: bytes
    reserved: bytes = DEFAULT_RESERVED

    def __post_init__(self) -> None:
        if len(self.info_hash) != 20:
            raise LocalProtocolError("a handshake info-hash is 20 bytes")
        if len(self.peer_id) != 20:
            raise LocalProtocolError("a peer id is 20 bytes")
        if len(self.reserved) != 8:
            raise LocalProtocolError("the reserved field is 8 bytes")

    def _flag(self, flag: tuple[int, int]) -> bool:
        return bool(self.reserved[flag[0]] & flag[1])

    @property
    def supports_fast(self) -> bool:
        """BEP 6 fast extension advertised."""
        return self._flag(_FAST)

    @property
    def supports_extensions(self) -> bool:
        """BEP 10 extension protocol advertised."""
        return self._flag(_EXTENSIONS)

    @property
    def supports_dht(self) -> bool:
        """BEP 5 DHT advertised (the peer may send ``Port``)."""
        return self._flag(_DHT)

    @property
    def supports_v2(self) -> bool:
        """BEP 52 upgrade bit: the peer can speak v2 for a hybrid torrent."""
        return self._flag(_V2_UPGRADE)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length message that only keeps an idle connection open."""


@dataclass(frozen=True, slots=True)
class Choke:
    """The sender will not answer requests (and, without BEP 6, drops pending ones)."""


@dataclass(frozen=True, slots=True)
class Unchoke:
    """The sender will answer requests."""


@dataclass(frozen=True, slots=True)
class Interested:
    """The sender wants pieces the receiver has."""


@dataclass(frozen=True, slots=True)
class NotInterested:
    """The sender wants nothing from the receiver."""


@dataclass(frozen=True, slots=True)
class Have:
    """The sender has completed and verified piece ``index``."""

    index: int


@dataclass(frozen=True, slots=True)
class BitfieldMessage:
    """The sender's pieces, in wire bit order (see :class:`opendistro.bitfield.Bitfield`)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """Ask for ``length`` bytes of piece ``index`` at offset ``begin``."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    """A block of data; ``data`` may be a memoryview to spare a copy on the block path."""

    index: int
    begin: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw an earlier request."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    """The sender's DHT node listens on UDP ``port`` (BEP 5)."""

    port: int


@dataclass(frozen=True, slots=True)
class SuggestPiece:
    """BEP 6: the sender would find it cheap to upload piece ``index``."""

    index: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    """BEP 6: the sender is a seed (instead of a full bitfield)."""


@dataclass(frozen=True, slots=True)
class HaveNone:
    """BEP 6: the sender has no pieces."""


@dataclass(frozen=True, slots=True)
class RejectRequest:
    """BEP 6: the sender will not answer this request."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    """BEP 6: the receiver may request piece ``index`` even while choked."""

    index: int


@dataclass(frozen=True, slots=True)
class HashRequest:
    """BEP 52: ask for ``length`` hashes of a file's merkle tree plus proof layers."""

    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int


@dataclass(frozen=True, slots=True)
class Hashes:
    """BEP 52: the answer to a :class:`HashRequest`: 32-byte hashes, base layer then proofs."""

    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int
    hashes: bytes


@dataclass(frozen=True, slots=True)
class HashReject:
    """BEP 52: the sender cannot answer this :class:`HashRequest`."""

    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int


@dataclass(frozen=True, slots=True)
class Extended:
    """BEP 10: an extension message; ``extension_id`` 0 is the extension handshake."""

    extension_id: int
    payload: bytes


Message = (
    Handshake
    | KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | BitfieldMessage
    | Request
    | Piece
    | Cancel
    | Port
    | SuggestPiece
    | HaveAll
    | HaveNone
    | RejectRequest
    | AllowedFast
    | HashRequest
    | Hashes
    | HashReject
    | Extended
)
