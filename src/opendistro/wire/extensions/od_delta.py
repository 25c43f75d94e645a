"""``od_delta``: our BEP 10 extension for delta updates (normative text: ``spec/od-delta.md``).

A peer that has a release can give another peer two things the ordinary
protocol cannot: the release's *delta index* (content-defined chunks of its
files, ``spec/delta-index.md``), fetched in 16 KiB pieces like BEP 9
metadata, and byte ranges of a file segment's *content*: for a compressed
segment (a .tar.gz, a zip member) that is the uncompressed bytes, which is
where an update's small changes are visible. A client rebuilds the new
release from its old files plus those ranges, and the ordinary piece hashes
then check every byte, so a lying peer can waste a request but never get
data in.

Each message is a bencoded dictionary, followed for the two data messages
by the bytes. Requests carry an ``id`` the answer repeats, so answers can
come in any order; :class:`ContentRequests` matches them and refuses an
answer nobody asked for or of the wrong length.

Content is what an update lacks, and for packages it compresses well (tar
headers, changed sources). Two peers that both list ``zlib`` under
``od_delta_enc`` in their extension handshakes may send content data
zlib-compressed (``enc``), when that is smaller; the receiver inflates it
with a hard bound of the requested length.

A seeder that also has the publisher's *pack* (the new chunks compressed in
blocks, and binary patches; ``spec/delta-index.md`` §5.2) announces it in
the handshake (:class:`PackAnnouncement`) and serves byte ranges of it, the
header followed by the blocks, with pack requests. Those bytes are already
compressed, so they travel as they are; what they rebuild is checked like
everything else.

A seeder that has the publisher's xz-compressed copy of the index
(``NAME.odindex.xz``) announces it too (:class:`CompressedIndex`) and serves
its pieces to index requests that ask for ``enc`` ``xz``. The requester
decompresses it, bounded, and checks the result exactly as the plain index;
when that fails it asks for the plain index instead. A peer that does not
announce it is only ever asked for the plain form.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any, Final

from ...bencode import decode_prefix, encode
from ...errors import BencodeError, IntegrityError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "CONTENT_BLOCK_SIZE",
    "ENCODING_XZ",
    "ENCODING_ZLIB",
    "EXTENSION_NAME",
    "HANDSHAKE_BLOCKS_SIZE_KEY",
    "HANDSHAKE_ENC_KEY",
    "HANDSHAKE_PACK_SHA256_KEY",
    "HANDSHAKE_PACK_SIZE_KEY",
    "HANDSHAKE_SHA256_KEY",
    "HANDSHAKE_SIZE_KEY",
    "HANDSHAKE_XZ_SHA256_KEY",
    "HANDSHAKE_XZ_SIZE_KEY",
    "INDEX_PIECE_SIZE",
    "MAX_BLOCKS_SIZE",
    "MAX_INDEX_SIZE",
    "MAX_OUTSTANDING",
    "MAX_PACK_HEADER_SIZE",
    "CompressedIndex",
    "ContentData",
    "ContentReject",
    "ContentRequest",
    "ContentRequests",
    "DeltaMessage",
    "IndexAssembler",
    "IndexData",
    "IndexReject",
    "IndexRequest",
    "PackAnnouncement",
    "PackData",
    "PackReject",
    "PackRequest",
    "compress_content",
    "compressed_index_announcement",
    "decode_delta_message",
    "encode_delta_message",
    "index_response",
    "lists_zlib",
    "pack_announcement",
]

EXTENSION_NAME: Final = "od_delta"
HANDSHAKE_SIZE_KEY: Final = b"od_delta_size"
"""Extension handshake key: the size in bytes of the delta index the sender serves."""
HANDSHAKE_SHA256_KEY: Final = b"od_delta_sha256"
"""Extension handshake key: the SHA-256 of that index."""
HANDSHAKE_ENC_KEY: Final = b"od_delta_enc"
"""Extension handshake key: the content encodings the sender accepts and sends."""
HANDSHAKE_PACK_SIZE_KEY: Final = b"od_delta_pack_size"
"""Extension handshake key: the size of the pack header (``NAME.odpack``) the sender serves."""
HANDSHAKE_PACK_SHA256_KEY: Final = b"od_delta_pack_sha256"
"""Extension handshake key: the SHA-256 of that header."""
HANDSHAKE_BLOCKS_SIZE_KEY: Final = b"od_delta_blocks_size"
"""Extension handshake key: the size of the pack's blocks (``NAME.odblocks``)."""
HANDSHAKE_XZ_SIZE_KEY: Final = b"od_delta_xz_size"
"""Extension handshake key: the size of the xz-compressed index (``NAME.odindex.xz``)."""
HANDSHAKE_XZ_SHA256_KEY: Final = b"od_delta_xz_sha256"
"""Extension handshake key: the SHA-256 of that compressed index (a transfer check only)."""
ENCODING_ZLIB: Final = b"zlib"
ENCODING_XZ: Final = b"xz"
"""The ``enc`` of index messages about the compressed index."""
_ZLIB_LEVEL: Final = 6
_MAX_ENCODINGS: Final = 16
INDEX_PIECE_SIZE: Final = 16384
MAX_INDEX_SIZE: Final = 64 << 20
CONTENT_BLOCK_SIZE: Final = 65536
"""The most content bytes one request may ask for."""
MAX_OUTSTANDING: Final = 64
"""Content requests one peer may have unanswered at a time, either way."""
MAX_SEGMENTS: Final = 1 << 24
MAX_FILES: Final = 100_000
MAX_OFFSET: Final = 1 << 50
MAX_PACK_HEADER_SIZE: Final = 64 << 20
"""The largest pack header (as ``spec/delta-index.md`` §5.2 bounds it)."""
MAX_BLOCKS_SIZE: Final = 1 << 50

_INDEX_REQUEST, _INDEX_DATA, _INDEX_REJECT = 0, 1, 2
_CONTENT_REQUEST, _CONTENT_DATA, _CONTENT_REJECT = 3, 4, 5
_PACK_REQUEST, _PACK_DATA, _PACK_REJECT = 6, 7, 8
_MAX_ID: Final = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class IndexRequest:
    """Ask for piece ``piece`` of the delta index (with ``enc`` ``"xz"``: of its xz form)."""

    piece: int
    enc: str | None = None


@dataclass(frozen=True, slots=True)
class IndexData:
    """Piece ``piece`` of a delta index of ``total_size`` bytes.

    With ``enc`` ``"xz"`` it is a piece of the xz-compressed index, and
    ``total_size`` is that form's size.
    """

    piece: int
    total_size: int
    data: bytes
    enc: str | None = None


@dataclass(frozen=True, slots=True)
class IndexReject:
    """The peer will not send index piece ``piece`` (it has no index, or not that piece),
    of the form ``enc`` names."""

    piece: int
    enc: str | None = None


@dataclass(frozen=True, slots=True)
class ContentRequest:
    """Ask for ``length`` content bytes at ``offset`` of segment ``segment`` of file ``file``.

    ``file`` counts the torrent's data files (padding excluded) in order, and
    ``segment`` the segments of that file in the delta index.
    """

    request_id: int
    file: int
    segment: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ContentData:
    """The answer to content request ``request_id``: exactly the bytes asked for.

    With ``enc`` ``"zlib"``, ``data`` is a zlib stream of those bytes
    (:meth:`ContentRequests.content` inflates it, bounded).
    """

    request_id: int
    data: bytes
    enc: str | None = None


@dataclass(frozen=True, slots=True)
class ContentReject:
    """The peer will not answer content request ``request_id``."""

    request_id: int


@dataclass(frozen=True, slots=True)
class PackRequest:
    """Ask for ``length`` bytes at ``offset`` of the pack: its header, then its blocks."""

    request_id: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class PackData:
    """The answer to pack request ``request_id``: exactly the bytes asked for, as they are."""

    request_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PackReject:
    """The peer will not answer pack request ``request_id``."""

    request_id: int


DeltaMessage = (
    IndexRequest | IndexData | IndexReject | ContentRequest | ContentData | ContentReject
    | PackRequest | PackData | PackReject
)
Request = ContentRequest | PackRequest
"""A request that :class:`ContentRequests` tracks until it is answered."""
Answer = ContentData | ContentReject | PackData | PackReject


def encode_delta_message(message: DeltaMessage) -> bytes:
    """The payload of an :class:`~opendistro.wire.messages.Extended` od_delta message."""
    match message:
        case IndexRequest(piece, enc):
            return encode(_index_fields(_INDEX_REQUEST, piece, enc))
        case IndexReject(piece, enc):
            return encode(_index_fields(_INDEX_REJECT, piece, enc))
        case IndexData(piece, total_size, data, enc):
            if len(data) > INDEX_PIECE_SIZE:
                raise LocalProtocolError("an index piece is at most 16 KiB")
            header = _index_fields(_INDEX_DATA, piece, enc)
            header[b"total_size"] = total_size
            return encode(header) + data
        case ContentRequest(request_id, file, segment, offset, length):
            if not 0 < length <= CONTENT_BLOCK_SIZE:
                raise LocalProtocolError(f"a content request is 1..{CONTENT_BLOCK_SIZE} bytes")
            return encode({
                b"msg_type": _CONTENT_REQUEST,
                b"id": request_id,
                b"file": file,
                b"segment": segment,
                b"offset": offset,
                b"length": length,
            })
        case ContentData(request_id, data, enc):
            if len(data) > CONTENT_BLOCK_SIZE:
                raise LocalProtocolError(f"content data is at most {CONTENT_BLOCK_SIZE} bytes")
            fields: dict[bytes, Any] = {b"msg_type": _CONTENT_DATA, b"id": request_id}
            if enc is not None:
                if enc.encode() != ENCODING_ZLIB:
                    raise LocalProtocolError(f"unknown od_delta content encoding {enc!r}")
                fields[b"enc"] = ENCODING_ZLIB
            return encode(fields) + data
        case ContentReject(request_id):
            return encode({b"msg_type": _CONTENT_REJECT, b"id": request_id})
        case PackRequest(request_id, offset, length):
            if not 0 < length <= CONTENT_BLOCK_SIZE:
                raise LocalProtocolError(f"a pack request is 1..{CONTENT_BLOCK_SIZE} bytes")
            return encode({
                b"msg_type": _PACK_REQUEST, b"id": request_id, b"offset": offset,
                b"length": length,
            })
        case PackData(request_id, data):
            if len(data) > CONTENT_BLOCK_SIZE:
                raise LocalProtocolError(f"pack data is at most {CONTENT_BLOCK_SIZE} bytes")
            return encode({b"msg_type": _PACK_DATA, b"id": request_id}) + data
        case PackReject(request_id):
            return encode({b"msg_type": _PACK_REJECT, b"id": request_id})
    raise LocalProtocolError(f"not an od_delta message: {message!r}")


def _index_fields(msg_type: int, piece: int, enc: str | None) -> dict[bytes, Any]:
    fields: dict[bytes, Any] = {b"msg_type": msg_type, b"piece": piece}
    if enc is not None:
        if enc.encode() != ENCODING_XZ:
            raise LocalProtocolError(f"unknown od_delta index encoding {enc!r}")
        fields[b"enc"] = ENCODING_XZ
    return fields


def _index_enc(raw: dict[bytes, Any]) -> str | None:
    """The form an index message is about: None (plain) or ``"xz"``."""
    enc = raw.get(b"enc")
    if enc is None:
        return None
    if enc != ENCODING_XZ:
        raise RemoteProtocolError(f"unknown od_delta index encoding {enc!r}")
    return "xz"


def _int(raw: dict[bytes, Any], key: bytes, low: int, high: int) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RemoteProtocolError(f"od_delta {key.decode()} must be an integer {low}..{high}")
    return value


def decode_delta_message(payload: bytes) -> DeltaMessage:
    """Parse an od_delta payload; RemoteProtocolError when it is malformed."""
    try:
        raw, end = decode_prefix(bytes(payload))
    except BencodeError as exc:
        raise RemoteProtocolError(f"od_delta message is not bencoded: {exc}") from exc
    if not isinstance(raw, dict):
        raise RemoteProtocolError("od_delta message must be a dictionary")
    msg_type = raw.get(b"msg_type")
    trailing = bytes(payload[end:])
    if msg_type == _INDEX_DATA:
        piece = _int(raw, b"piece", 0, MAX_INDEX_SIZE // INDEX_PIECE_SIZE)
        total_size = _int(raw, b"total_size", 1, MAX_INDEX_SIZE)
        if len(trailing) > INDEX_PIECE_SIZE:
            raise RemoteProtocolError("od_delta index piece larger than 16 KiB")
        return IndexData(piece, total_size, trailing, _index_enc(raw))
    if msg_type == _CONTENT_DATA:
        if len(trailing) > CONTENT_BLOCK_SIZE:
            raise RemoteProtocolError(f"od_delta content data over {CONTENT_BLOCK_SIZE} bytes")
        enc = raw.get(b"enc")
        if enc is not None and enc != ENCODING_ZLIB:
            raise RemoteProtocolError(f"unknown od_delta content encoding {enc!r}")
        return ContentData(_int(raw, b"id", 0, _MAX_ID), trailing, None if enc is None else "zlib")
    if msg_type == _PACK_DATA:
        if len(trailing) > CONTENT_BLOCK_SIZE:
            raise RemoteProtocolError(f"od_delta pack data over {CONTENT_BLOCK_SIZE} bytes")
        if b"enc" in raw:
            raise RemoteProtocolError("od_delta pack data is never re-encoded")
        return PackData(_int(raw, b"id", 0, _MAX_ID), trailing)
    if trailing:
        raise RemoteProtocolError("trailing bytes after an od_delta request or reject")
    if msg_type == _INDEX_REQUEST:
        return IndexRequest(
            _int(raw, b"piece", 0, MAX_INDEX_SIZE // INDEX_PIECE_SIZE), _index_enc(raw)
        )
    if msg_type == _INDEX_REJECT:
        return IndexReject(
            _int(raw, b"piece", 0, MAX_INDEX_SIZE // INDEX_PIECE_SIZE), _index_enc(raw)
        )
    if msg_type == _CONTENT_REQUEST:
        return ContentRequest(
            _int(raw, b"id", 0, _MAX_ID),
            _int(raw, b"file", 0, MAX_FILES - 1),
            _int(raw, b"segment", 0, MAX_SEGMENTS - 1),
            _int(raw, b"offset", 0, MAX_OFFSET),
            _int(raw, b"length", 1, CONTENT_BLOCK_SIZE),
        )
    if msg_type == _CONTENT_REJECT:
        return ContentReject(_int(raw, b"id", 0, _MAX_ID))
    if msg_type == _PACK_REQUEST:
        return PackRequest(
            _int(raw, b"id", 0, _MAX_ID),
            _int(raw, b"offset", 0, MAX_OFFSET),
            _int(raw, b"length", 1, CONTENT_BLOCK_SIZE),
        )
    if msg_type == _PACK_REJECT:
        return PackReject(_int(raw, b"id", 0, _MAX_ID))
    raise RemoteProtocolError(f"unknown od_delta msg_type {msg_type!r}")


def lists_zlib(extra: dict[bytes, Any]) -> bool:
    """Whether an extension handshake's ``od_delta_enc`` lists ``zlib`` (a bad value: no)."""
    value = extra.get(HANDSHAKE_ENC_KEY)
    return (
        isinstance(value, list)
        and len(value) <= _MAX_ENCODINGS
        and ENCODING_ZLIB in value
    )


@dataclass(frozen=True, slots=True)
class PackAnnouncement:
    """What a peer's handshake says about the pack it serves.

    Pack offsets address the header (``header_size`` bytes) followed by the
    blocks (``blocks_size`` bytes). ``header_sha256`` only guards the
    transfer: the header binds itself to the index (``index-sha256``).
    """

    header_size: int
    header_sha256: bytes
    blocks_size: int

    @property
    def total_size(self) -> int:
        return self.header_size + self.blocks_size

    def extra(self) -> dict[bytes, Any]:
        """The handshake keys announcing this pack."""
        return {
            HANDSHAKE_PACK_SIZE_KEY: self.header_size,
            HANDSHAKE_PACK_SHA256_KEY: self.header_sha256,
            HANDSHAKE_BLOCKS_SIZE_KEY: self.blocks_size,
        }


def pack_announcement(extra: dict[bytes, Any]) -> PackAnnouncement | None:
    """The pack an extension handshake announces; None when it announces none or any of
    the three keys is missing, of the wrong type or out of range (ignored, not fatal)."""
    size = extra.get(HANDSHAKE_PACK_SIZE_KEY)
    digest = extra.get(HANDSHAKE_PACK_SHA256_KEY)
    blocks = extra.get(HANDSHAKE_BLOCKS_SIZE_KEY)
    if (
        type(size) is not int
        or not 0 < size <= MAX_PACK_HEADER_SIZE
        or not isinstance(digest, bytes)
        or len(digest) != 32
        or type(blocks) is not int
        or not 0 < blocks <= MAX_BLOCKS_SIZE
    ):
        return None
    return PackAnnouncement(size, digest, blocks)


@dataclass(frozen=True, slots=True)
class CompressedIndex:
    """What a peer's handshake says about the xz-compressed index it serves.

    ``sha256`` only guards the transfer: what the compressed index
    decompresses to is checked as the plain index is.
    """

    size: int
    sha256: bytes

    def extra(self) -> dict[bytes, Any]:
        """The handshake keys announcing this compressed index."""
        return {HANDSHAKE_XZ_SIZE_KEY: self.size, HANDSHAKE_XZ_SHA256_KEY: self.sha256}


def _size_and_sha256(extra: dict[bytes, Any], size_key: bytes, sha256_key: bytes) -> bool:
    size = extra.get(size_key)
    digest = extra.get(sha256_key)
    return (
        type(size) is int
        and 0 < size <= MAX_INDEX_SIZE
        and isinstance(digest, bytes)
        and len(digest) == 32
    )


def compressed_index_announcement(extra: dict[bytes, Any]) -> CompressedIndex | None:
    """The compressed index an extension handshake announces; None when it announces none,
    either key is bad, or the plain index is not announced beside it (ignored, not fatal)."""
    if not (
        _size_and_sha256(extra, HANDSHAKE_XZ_SIZE_KEY, HANDSHAKE_XZ_SHA256_KEY)
        and _size_and_sha256(extra, HANDSHAKE_SIZE_KEY, HANDSHAKE_SHA256_KEY)
    ):
        return None
    return CompressedIndex(extra[HANDSHAKE_XZ_SIZE_KEY], extra[HANDSHAKE_XZ_SHA256_KEY])


def compress_content(request_id: int, data: bytes) -> ContentData:
    """The answer carrying ``data``: zlib-compressed (level 6) if that is smaller."""
    compressed = zlib.compress(data, _ZLIB_LEVEL)
    if len(compressed) < len(data):
        return ContentData(request_id, compressed, "zlib")
    return ContentData(request_id, data)


def index_response(
    index_bytes: bytes, request: IndexRequest, compressed: bytes = b""
) -> IndexData | IndexReject:
    """Answer a peer's index request from the index we serve (empty: we have none), or
    from its ``compressed`` form when the request asks for that (empty: we have none)."""
    served = index_bytes if request.enc is None else compressed
    start = request.piece * INDEX_PIECE_SIZE
    if not served or start >= len(served):
        return IndexReject(request.piece, request.enc)
    piece = served[start : start + INDEX_PIECE_SIZE]
    return IndexData(request.piece, len(served), piece, request.enc)


class IndexAssembler:
    """Collect the pieces of one delta index, from one or more peers.

    With ``expected_sha256`` (from the signed release or the torrent), a
    complete index that does not match is thrown away and fetched again
    (:class:`~opendistro.errors.IntegrityError`). Without it the index is
    only a hint: every byte it leads to is still checked by piece hashes.

    With ``enc`` ``"xz"`` it collects the compressed index instead (asking
    for that form, refusing pieces of the other); the caller decompresses it.
    """

    def __init__(
        self, *, total_size: int, expected_sha256: bytes | None = None, enc: str | None = None
    ) -> None:
        if not 0 < total_size <= MAX_INDEX_SIZE:
            raise RemoteProtocolError(f"od_delta index size {total_size} out of range")
        self.total_size = total_size
        self.expected_sha256 = expected_sha256
        self.enc = enc
        self.num_pieces = -(-total_size // INDEX_PIECE_SIZE)
        self._pieces: dict[int, bytes] = {}
        self._asked: set[int] = set()

    def next_request(self) -> IndexRequest | None:
        """The next piece nobody was asked for yet, or None."""
        for piece in range(self.num_pieces):
            if piece not in self._pieces and piece not in self._asked:
                self._asked.add(piece)
                return IndexRequest(piece, self.enc)
        return None

    def rejected(self, piece: int) -> None:
        """A peer refused ``piece``: it may be asked of another one."""
        self._asked.discard(piece)

    def receive(self, message: IndexData) -> bytes | None:
        """Store a piece; return the whole index once every piece is in (and matches)."""
        if message.enc != self.enc:
            raise RemoteProtocolError("od_delta index piece of a form other than asked for")
        if message.total_size != self.total_size:
            raise RemoteProtocolError(
                f"od_delta total_size {message.total_size} != {self.total_size}"
            )
        if not 0 <= message.piece < self.num_pieces:
            raise RemoteProtocolError(f"od_delta index piece {message.piece} out of range")
        last = message.piece == self.num_pieces - 1
        expected = self.total_size - message.piece * INDEX_PIECE_SIZE if last else INDEX_PIECE_SIZE
        if len(message.data) != expected:
            raise RemoteProtocolError(f"od_delta index piece {message.piece} has the wrong length")
        self._pieces.setdefault(message.piece, bytes(message.data))
        if len(self._pieces) < self.num_pieces:
            return None
        whole = b"".join(self._pieces[piece] for piece in range(self.num_pieces))
        announced = self.expected_sha256
        if announced is not None and hashlib.sha256(whole).digest() != announced:
            self._pieces.clear()
            self._asked.clear()
            raise IntegrityError("the delta index does not match its announced SHA-256")
        return whole


class ContentRequests:
    """Our unanswered content and pack requests to one peer, and the checks on its answers.

    An answer must name a request we made, be of its kind (pack data answers a
    pack request) and carry exactly the bytes asked for; anything else is the
    peer's protocol error. At most ``limit`` requests of both kinds together
    are outstanding at a time, and their ids are never the same.
    """

    def __init__(self, limit: int = MAX_OUTSTANDING, *, accept_zlib: bool = False) -> None:
        self.limit = limit
        self.accept_zlib = accept_zlib
        """Whether we announced ``zlib`` (a compressed answer is an error otherwise)."""
        self._next_id = 0
        self._pending: dict[int, Request] = {}

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.limit

    def _new_id(self) -> int:
        if self.full:
            raise LocalProtocolError(f"already {self.limit} requests outstanding")
        request_id = self._next_id
        self._next_id = (self._next_id + 1) & _MAX_ID
        return request_id

    def request(self, file: int, segment: int, offset: int, length: int) -> ContentRequest:
        """A new content request (to send), remembered until answered."""
        request = ContentRequest(self._new_id(), file, segment, offset, length)
        self._pending[request.request_id] = request
        return request

    def request_pack(self, offset: int, length: int) -> PackRequest:
        """A new pack request (to send), remembered until answered."""
        request = PackRequest(self._new_id(), offset, length)
        self._pending[request.request_id] = request
        return request

    def answered(self, message: Answer) -> Request:
        """The request ``message`` answers (data of the right length, or a reject)."""
        request = self._pending.pop(message.request_id, None)
        if request is None:
            raise RemoteProtocolError(f"od_delta answer to unknown request {message.request_id}")
        if isinstance(message, PackData | PackReject) != isinstance(request, PackRequest):
            raise RemoteProtocolError(
                f"od_delta request {request.request_id} answered with a message of another kind"
            )
        if isinstance(message, ContentData) and message.enc is not None:
            if not self.accept_zlib:
                raise RemoteProtocolError("od_delta compressed answer we did not accept")
        elif isinstance(message, ContentData | PackData) and len(message.data) != request.length:
            raise RemoteProtocolError(
                f"od_delta request {request.request_id} asked {request.length} bytes, "
                f"got {len(message.data)}"
            )
        return request

    @staticmethod
    def content(request: ContentRequest, message: ContentData) -> bytes:
        """The content ``message`` carries for ``request``, inflated if it is compressed.

        Inflating never produces more than the requested length; a stream that
        is not exactly that long, is broken or has bytes after its end is the
        sender's protocol error.
        """
        if message.enc is None:
            return message.data
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(message.data, request.length)
            if len(data) == request.length and not inflater.eof:
                # The end of the stream may still be waiting in the input: it must
                # end there, with not one byte more.
                data += inflater.decompress(inflater.unconsumed_tail, 1)
        except zlib.error as exc:
            raise RemoteProtocolError(f"od_delta answer does not inflate: {exc}") from exc
        if (
            len(data) != request.length
            or not inflater.eof
            or inflater.unused_data
            or inflater.unconsumed_tail
        ):
            raise RemoteProtocolError(
                f"od_delta request {request.request_id}: the compressed answer is not "
                f"exactly {request.length} bytes"
            )
        return data

    def abandon(self) -> list[Request]:
        """Forget every outstanding request (the peer left or choked); returns them."""
        pending = list(self._pending.values())
        self._pending.clear()
        return pending
