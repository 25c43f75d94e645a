"""The peer wire state machine: which message is legal when, and what it changes.

:class:`PeerConnection` is to BitTorrent what h11's ``Connection`` is to HTTP:
it owns no socket. The driver hands it the bytes it read
(:meth:`PeerConnection.receive_data`, which returns the decoded events) and
asks it for the bytes of each message it wants to write
(:meth:`PeerConnection.send`). Both directions are checked against BEP 3, 6
and 10, and break the rules with a typed error that says who was at fault:
:class:`~opendistro.errors.RemoteProtocolError` for the peer,
:class:`~opendistro.errors.LocalProtocolError` for our own code.

The rules, and why they are here rather than in each driver:

* Bitfield, HaveAll and HaveNone are only legal as the peer's first
  message after the handshake. ``KeepAlive``, ``Port`` and extension
  messages may come before them, because real clients send those first: a
  magnet downloader (libtorrent, for one) fetches the metadata over
  ``ut_metadata`` and only then knows enough to send HaveNone or a bitfield.
* Fast-extension messages need both sides to set the BEP 6 bit, extension
  messages the BEP 10 bit.
* A Request while we choke the peer is dropped without the fast extension;
  with it, BEP 6 requires an explicit reject, which the connection queues in
  :meth:`PeerConnection.pending_rejects` for the driver to send. Such
  requests are *not* returned as events, so a driver cannot serve them by
  mistake. The same happens to pending requests when we choke the peer and
  to a cancelled request with the fast extension.
* When the peer chokes us without the fast extension, every outstanding
  request is implicitly dropped; a :class:`RequestsDropped` event lists them
  so the picker can ask someone else. With the fast extension they survive
  until answered or rejected.
* A Piece that crossed our Cancel is dropped quietly. Any other Piece nobody
  asked for is not a protocol error either (the session decides how much
  to tolerate): it is counted in :attr:`PeerConnection.unrequested_bytes`
  and not returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import Any, Final

from ..bitfield import Bitfield
from ..errors import LocalProtocolError, RemoteProtocolError
from .codec import DEFAULT_MAX_MESSAGE_SIZE, MessageDecoder, encode, encode_piece_header
from .extensions.handshake import ExtensionHandshake
from .messages import (
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
    "MAX_REQUEST_LENGTH",
    "BlockRequest",
    "Event",
    "PeerConnection",
    "RequestsDropped",
]

MAX_REQUEST_LENGTH: Final = 128 * 1024
"""The largest block a peer may ask for; bigger requests are a protocol error."""

_MAX_REMEMBERED_CANCELS: Final = 4096
_MAX_EARLY_HAVES: Final = 1 << 16
_MAX_ALLOWED_FAST: Final = 1024

BlockRequest = tuple[int, int, int]
"""``(index, begin, length)`` of one block request."""


@dataclass(frozen=True, slots=True)
class RequestsDropped:
    """The peer choked us without the fast extension: these requests will never be answered."""

    requests: frozenset[BlockRequest]


Event = Message | ExtensionHandshake | RequestsDropped
"""What :meth:`PeerConnection.receive_data` returns."""

_NO_PIECES: Final[frozenset[int]] = frozenset()
_NO_REQUESTS: Final[set[BlockRequest]] = set()
"""The empty request set every connection shares until its first request.

Never added to: the two places that add a request swap in a set of their own
first. Removing from it, or clearing it, changes nothing.
"""

# Messages that may come before the bitfield without ending the "first message" window.
_BEFORE_AVAILABILITY: Final = (KeepAlive, Port, Extended)


class PeerConnection:
    """The protocol state of one peer connection, with no I/O."""

    # Slots, a decoder made on first use and no per-connection copies of empty
    # sets, dicts or lists (shared empty sets, or None, stand in until the first
    # entry): a 10,000-peer simulation holds most of a million connections, and
    # most of them never carry a request.
    __slots__ = (
        "_allowed_fast_from_peer",
        "_allowed_fast_to_peer",
        "_am_choking",
        "_am_interested",
        "_broken",
        "_cancelled",
        "_decoder",
        "_early_bitfield",
        "_early_have_all",
        "_early_haves",
        "_extensions",
        "_fast",
        "_local_extensions",
        "_local_may_announce",
        "_max_message_size",
        "_num_pieces",
        "_open",
        "_peer_choking",
        "_peer_has",
        "_peer_interested",
        "_pending_rejects",
        "_received_handshake",
        "_remote_extensions",
        "_remote_may_announce",
        "_requests_from_peer",
        "_requests_to_peer",
        "_reserved",
        "_sent_handshake",
        "info_hash",
        "initiator",
        "max_peer_requests",
        "max_request_length",
        "our_peer_id",
        "unexpected_rejects",
        "unrequested_bytes",
    )

    def __init__(
        self,
        *,
        info_hash: bytes,
        our_peer_id: bytes,
        num_pieces: int | None,
        initiator: bool,
        fast: bool = True,
        extensions: bool = True,
        dht: bool = False,
        v2: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_peer_requests: int = 500,
        max_request_length: int = MAX_REQUEST_LENGTH,
    ) -> None:
        if len(info_hash) != 20 or len(our_peer_id) != 20:
            raise LocalProtocolError("info-hash and peer id are 20 bytes each")
        self.info_hash = info_hash
        self.our_peer_id = our_peer_id
        self.initiator = initiator
        self.max_peer_requests = max_peer_requests
        self.max_request_length = max_request_length
        self._reserved = make_reserved(fast=fast, extensions=extensions, dht=dht, v2=v2)
        self._max_message_size = max_message_size
        # Made by the first receive_data: a driver that passes message objects
        # (receive_messages, as the simulator does) never needs one.
        self._decoder: MessageDecoder | None = None
        self._num_pieces = num_pieces

        self._sent_handshake: Handshake | None = None
        self._received_handshake: Handshake | None = None
        # Fixed once both handshakes are in (see _note_handshake), and read per message.
        self._open = False
        self._fast = False
        self._extensions = False

        self._am_choking = True
        self._am_interested = False
        self._peer_choking = True
        self._peer_interested = False

        self._peer_has: Bitfield | None = Bitfield(num_pieces) if num_pieces is not None else None
        # Availability announced before num_pieces was known (magnet links).
        self._early_bitfield: bytes | None = None
        self._early_have_all: bool | None = None
        self._early_haves: set[int] | frozenset[int] = _NO_PIECES
        self._remote_may_announce = True
        self._local_may_announce = True

        self._requests_to_peer: set[BlockRequest] = _NO_REQUESTS
        self._requests_from_peer: set[BlockRequest] = _NO_REQUESTS
        self._cancelled: dict[BlockRequest, None] | None = None
        self.unexpected_rejects = 0
        """Rejects for blocks not outstanding (ignored, as libtorrent does)."""
        self._pending_rejects: list[RejectRequest] | None = None
        # The shared empty frozenset until the first AllowedFast, which most
        # connections never see.
        self._allowed_fast_from_peer: set[int] | frozenset[int] = _NO_PIECES
        self._allowed_fast_to_peer: set[int] | frozenset[int] = _NO_PIECES

        self._local_extensions: ExtensionHandshake | None = None
        self._remote_extensions: ExtensionHandshake | None = None

        #: Bytes of Piece messages that answered no outstanding request.
        self.unrequested_bytes = 0
        self._broken = False

    # ------------------------------------------------------------ read-only state

    @property
    def am_choking(self) -> bool:
        """We refuse the peer's requests (initially True)."""
        return self._am_choking

    @property
    def am_interested(self) -> bool:
        """We told the peer we want some of its pieces."""
        return self._am_interested

    @property
    def peer_choking(self) -> bool:
        """The peer refuses our requests (initially True)."""
        return self._peer_choking

    @property
    def peer_interested(self) -> bool:
        """The peer told us it wants some of our pieces."""
        return self._peer_interested

    @property
    def handshake_sent(self) -> bool:
        return self._sent_handshake is not None

    @property
    def handshake_received(self) -> bool:
        return self._received_handshake is not None

    @property
    def remote_peer_id(self) -> bytes | None:
        return self._received_handshake.peer_id if self._received_handshake else None

    @property
    def remote_reserved(self) -> bytes | None:
        return self._received_handshake.reserved if self._received_handshake else None

    @property
    def fast_enabled(self) -> bool:
        """BEP 6 is in force: both handshakes set the fast bit."""
        return self._fast

    @property
    def extensions_enabled(self) -> bool:
        """BEP 10 is in force: both handshakes set the extension-protocol bit."""
        return self._extensions

    @property
    def num_pieces(self) -> int | None:
        return self._num_pieces

    @property
    def peer_has(self) -> Bitfield | None:
        """The peer's pieces; None until the number of pieces is known."""
        return self._peer_has

    @property
    def peer_is_seed(self) -> bool:
        if self._peer_has is not None:
            return self._peer_has.complete
        return bool(self._early_have_all)

    @property
    def remote_extensions(self) -> ExtensionHandshake | None:
        """The peer's BEP 10 handshake (merged with later updates), once received."""
        return self._remote_extensions

    @property
    def local_extensions(self) -> ExtensionHandshake | None:
        """The BEP 10 handshake we sent, whose ``m`` numbers the messages we receive."""
        return self._local_extensions

    @property
    def requests_to_peer(self) -> Set[BlockRequest]:
        """What we asked for and is neither answered, cancelled, rejected nor dropped."""
        return self._requests_to_peer

    @property
    def requests_from_peer(self) -> Set[BlockRequest]:
        """What the peer asked for and we have yet to send (or reject)."""
        return self._requests_from_peer

    @property
    def allowed_fast_from_peer(self) -> Set[int]:
        """Pieces the peer lets us request while it chokes us (BEP 6)."""
        return self._allowed_fast_from_peer

    @property
    def unknown_messages(self) -> int:
        """Messages with unknown ids that were skipped."""
        return 0 if self._decoder is None else self._decoder.unknown_messages

    def peer_wants(self, index: int, begin: int, length: int) -> bool:
        """True while the peer still waits for this block (check before reading it from disk)."""
        return (index, begin, length) in self._requests_from_peer

    def discard_peer_request(self, index: int, begin: int, length: int) -> None:
        """Forget a peer request we will not serve, without telling the peer.

        For a connection without the fast extension, which has no reject
        message: the request stops counting against ``max_peer_requests``.
        With the fast extension, send a :class:`RejectRequest` instead.
        """
        self._requests_from_peer.discard((index, begin, length))

    def extension_name(self, extension_id: int) -> str | None:
        """The extension an incoming :class:`Extended` message belongs to, by our own ``m``."""
        if self._local_extensions is None or extension_id == 0:
            return None
        for name, ident in self._local_extensions.m.items():
            if ident == extension_id:
                return name
        return None

    @property
    def rejects_owed(self) -> bool:
        """Whether :meth:`pending_rejects` has anything: a check that builds no list."""
        return self._pending_rejects is not None

    def pending_rejects(self) -> list[RejectRequest]:
        """Rejects BEP 6 obliges us to send; the driver passes each to :meth:`send`."""
        rejects = self._pending_rejects
        if rejects is None:
            return []  # a fresh list all the same: the caller owns what it gets
        self._pending_rejects = None
        return rejects

    def _owe_reject(self, key: BlockRequest) -> None:
        rejects = self._pending_rejects
        if rejects is None:
            self._pending_rejects = [RejectRequest(*key)]
        else:
            rejects.append(RejectRequest(*key))

    # ------------------------------------------------------------ shared checks

    def _index_ok(self, index: int) -> bool:
        return self._num_pieces is None or 0 <= index < self._num_pieces

    def _remote_index(self, index: int) -> None:
        if not self._index_ok(index):
            raise RemoteProtocolError(f"piece index {index} out of range")

    def _remote_needs_fast(self, message: object) -> None:
        if not self._fast:
            raise RemoteProtocolError(f"{type(message).__name__} without the fast extension")

    def _local_needs_fast(self, message: object) -> None:
        if not self._fast:
            raise LocalProtocolError(f"{type(message).__name__} without the fast extension")

    def _local_index(self, index: int) -> None:
        if self._num_pieces is None or not 0 <= index < self._num_pieces:
            raise LocalProtocolError(f"piece index {index} out of range")

    # ------------------------------------------------------------ magnet support

    def set_num_pieces(self, num_pieces: int) -> None:
        """Learn the piece count (once the metadata arrived) and check what the peer announced."""
        if self._num_pieces is not None:
            if self._num_pieces != num_pieces:
                raise LocalProtocolError("the number of pieces is already known")
            return
        self._num_pieces = num_pieces
        if self._early_bitfield is not None:
            has = Bitfield(num_pieces, self._early_bitfield)
        elif self._early_have_all:
            has = Bitfield.full(num_pieces)
        else:
            has = Bitfield(num_pieces)
        for index in self._early_haves:
            self._remote_index(index)
            has.set(index)
        self._peer_has = has
        self._early_bitfield = None
        self._early_haves = _NO_PIECES
        self._allowed_fast_from_peer = {
            index for index in self._allowed_fast_from_peer if index < num_pieces
        }

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Decode ``data``, apply each message to the state and return the events.

        An empty list is normal (a partial message). RemoteProtocolError means
        the peer broke the protocol and the connection should be closed.
        """
        if self._broken:
            raise RemoteProtocolError("the peer already broke the protocol on this connection")
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = MessageDecoder(
                max_message_size=self._max_message_size, expect_handshake=True
            )
        try:
            messages = decoder.feed(data)
        except RemoteProtocolError:
            self._broken = True
            raise
        return self.receive_messages(messages)

    def receive_messages(self, messages: Iterable[Message]) -> list[Event]:
        """Apply already-decoded messages to the state and return the events.

        :meth:`receive_data` decodes bytes and comes here; the simulator comes
        here directly, so virtual peers run the same state machine without
        encoding payloads they never need.
        """
        if self._broken:
            raise RemoteProtocolError("the peer already broke the protocol on this connection")
        events: list[Event] = []
        for message in messages:
            self._receive_into(message, events)
        return events

    def receive_message(self, message: Message) -> list[Event]:
        """:meth:`receive_messages` for one message, with no list to wrap it in.

        The simulator delivers every message on its own (most of them Haves), so
        this is its entry point: the same checks and state changes.
        """
        if self._broken:
            raise RemoteProtocolError("the peer already broke the protocol on this connection")
        events: list[Event] = []
        self._receive_into(message, events)
        return events

    def _receive_into(self, message: Message, events: list[Event]) -> None:
        try:
            if self._received_handshake is None:
                assert isinstance(message, Handshake)
                self._receive_handshake(message, events)
            else:
                _RECEIVERS[type(message)](self, message, events)
        except RemoteProtocolError:
            # Like h11's ERROR state: the state no longer matches the peer's, for good.
            self._broken = True
            raise

    def _receive_handshake(self, message: Handshake, events: list[Event]) -> None:
        if message.info_hash != self.info_hash:
            raise RemoteProtocolError("the peer's handshake names another torrent")
        self._received_handshake = message
        self._note_handshake()
        events.append(message)

    def _note_handshake(self) -> None:
        """Once both handshakes are in, fix what they agreed on."""
        ours, theirs = self._sent_handshake, self._received_handshake
        if ours is not None and theirs is not None:
            self._open = True
            self._fast = ours.supports_fast and theirs.supports_fast
            self._extensions = ours.supports_extensions and theirs.supports_extensions

    def _end_remote_announce_window(self, message: object) -> None:
        if not isinstance(message, _BEFORE_AVAILABILITY):
            self._remote_may_announce = False

    def _receive_keep_alive(self, message: KeepAlive, events: list[Event]) -> None:
        events.append(message)

    def _receive_passthrough(self, message: Message, events: list[Event]) -> None:
        self._end_remote_announce_window(message)
        events.append(message)

    def _receive_choke(self, message: Choke, events: list[Event]) -> None:
        self._remote_may_announce = False
        self._peer_choking = True
        events.append(message)
        if not self._fast and self._requests_to_peer:
            dropped = frozenset(self._requests_to_peer)
            self._requests_to_peer.clear()
            for key in dropped:  # blocks already on the wire may still arrive
                self._remember_cancel(key)
            events.append(RequestsDropped(dropped))

    def _receive_unchoke(self, message: Unchoke, events: list[Event]) -> None:
        self._remote_may_announce = False
        self._peer_choking = False
        events.append(message)

    def _receive_interested(self, message: Interested, events: list[Event]) -> None:
        self._remote_may_announce = False
        self._peer_interested = True
        events.append(message)

    def _receive_not_interested(self, message: NotInterested, events: list[Event]) -> None:
        self._remote_may_announce = False
        self._peer_interested = False
        events.append(message)

    def _receive_have(self, message: Have, events: list[Event]) -> None:
        # The most frequent message of all: the range check is written out.
        self._remote_may_announce = False
        index = message.index
        has = self._peer_has
        if has is not None:
            if not 0 <= index < has.length:
                raise RemoteProtocolError(f"piece index {index} out of range")
            has.set(index)
        else:
            early = self._early_haves
            if isinstance(early, frozenset):  # the shared empty one: this is the first
                early = self._early_haves = set()
            if len(early) >= _MAX_EARLY_HAVES:
                raise RemoteProtocolError("too many have messages before the metadata")
            early.add(message.index)
        events.append(message)

    def _start_announce(self) -> bool:
        """True for the peer's first announcement; False for a late one.

        BEP 3 and 6 allow Bitfield, HaveAll and HaveNone only first, but aria2
        sends later Bitfields (and a late HaveAll) in place of batches of Have.
        A late announcement is taken as an update that adds pieces and never
        removes one, which is all a Have could have said.
        """
        first = self._remote_may_announce
        self._remote_may_announce = False
        return first

    def _merge_bits(self, update: Bitfield) -> None:
        assert self._peer_has is not None  # it is known whenever the piece count is
        for index in update:
            self._peer_has.set(index)

    def _receive_bitfield(self, message: BitfieldMessage, events: list[Event]) -> None:
        first = self._start_announce()
        if self._num_pieces is None:
            if first or self._early_bitfield is None:
                self._early_bitfield = message.data
            else:
                self._early_bitfield = bytes(
                    a | b for a, b in zip(self._early_bitfield, message.data, strict=False)
                )
        elif first:
            self._peer_has = Bitfield(self._num_pieces, message.data)
        else:
            self._merge_bits(Bitfield(self._num_pieces, message.data))
        events.append(message)

    def _receive_have_all_or_none(self, message: HaveAll | HaveNone, events: list[Event]) -> None:
        self._remote_needs_fast(message)
        first = self._start_announce()
        have_all = isinstance(message, HaveAll)
        if not first and not have_all:
            return  # a late HaveNone cannot take pieces back
        if self._num_pieces is None:
            self._early_have_all = have_all or self._early_have_all
        elif have_all:
            self._peer_has = Bitfield.full(self._num_pieces)
        events.append(message)

    def _receive_request(self, message: Request, events: list[Event]) -> None:
        self._remote_may_announce = False
        self._remote_index(message.index)
        if not 0 < message.length <= self.max_request_length:
            raise RemoteProtocolError(f"request for {message.length} bytes")
        key = (message.index, message.begin, message.length)
        if self._am_choking and message.index not in self._allowed_fast_to_peer:
            if self._fast:
                self._owe_reject(key)
            return
        requests = self._requests_from_peer
        if key in requests:
            return
        if len(requests) >= self.max_peer_requests:
            raise RemoteProtocolError(
                f"more than {self.max_peer_requests} outstanding requests from the peer"
            )
        if requests is _NO_REQUESTS:  # this is the first: a set of its own
            requests = self._requests_from_peer = set()
        requests.add(key)
        events.append(message)

    def _receive_piece(self, message: Piece, events: list[Event]) -> None:
        self._remote_may_announce = False
        key = (message.index, message.begin, len(message.data))
        if key in self._requests_to_peer:
            self._requests_to_peer.discard(key)
            events.append(message)
            return
        cancelled = self._cancelled
        if cancelled is not None and key in cancelled:
            del cancelled[key]
        else:
            self.unrequested_bytes += len(message.data)

    def _receive_cancel(self, message: Cancel, events: list[Event]) -> None:
        self._remote_may_announce = False
        key = (message.index, message.begin, message.length)
        if key not in self._requests_from_peer:
            return
        self._requests_from_peer.discard(key)
        if self._fast:
            self._owe_reject(key)
        events.append(message)

    def _receive_suggest(self, message: SuggestPiece, events: list[Event]) -> None:
        self._remote_needs_fast(message)
        self._remote_may_announce = False
        self._remote_index(message.index)
        events.append(message)

    def _receive_reject(self, message: RejectRequest, events: list[Event]) -> None:
        self._remote_needs_fast(message)
        self._remote_may_announce = False
        key = (message.index, message.begin, message.length)
        if key in self._requests_to_peer:
            self._requests_to_peer.discard(key)
            events.append(message)
        elif self._cancelled is not None and key in self._cancelled:
            del self._cancelled[key]
        else:
            # A reject may cross an answer or a cancel on the wire (for instance when a
            # block was cancelled, asked for again and served): harmless, so ignored.
            self.unexpected_rejects += 1

    def _receive_allowed_fast(self, message: AllowedFast, events: list[Event]) -> None:
        self._remote_needs_fast(message)
        self._remote_index(message.index)
        allowed = self._allowed_fast_from_peer
        if isinstance(allowed, frozenset):  # the shared empty one: this is the first
            allowed = self._allowed_fast_from_peer = set()
        if len(allowed) >= _MAX_ALLOWED_FAST:
            raise RemoteProtocolError("too many allowed-fast pieces")
        allowed.add(message.index)
        events.append(message)

    def _receive_extended(self, message: Extended, events: list[Event]) -> None:
        if not self._extensions:
            raise RemoteProtocolError("extension message without the extension protocol")
        if message.extension_id != 0:
            events.append(message)
            return
        # Merging even the first one drops names with id 0 ("disabled") from m.
        earlier = self._remote_extensions or ExtensionHandshake()
        handshake = earlier.updated_by(ExtensionHandshake.decode(message.payload))
        self._remote_extensions = handshake
        events.append(handshake)

    # ------------------------------------------------------------ sending

    def our_handshake(self) -> Handshake:
        """The handshake this connection advertises (its flags from the constructor)."""
        return Handshake(self.info_hash, self.our_peer_id, self._reserved)

    def send_handshake(self) -> bytes:
        """Send :meth:`our_handshake`; the initiator does this first."""
        return self.send(self.our_handshake())

    def send(self, message: Message | ExtensionHandshake) -> bytes:
        """Check that sending ``message`` is legal now, record it, and return its bytes.

        An :class:`ExtensionHandshake` is sent as extended message 0. A Cancel
        for a request that is no longer outstanding returns ``b""`` (it raced
        with the answer).
        """
        if not self.send_message(message):
            return b""
        if isinstance(message, ExtensionHandshake):
            return encode(Extended(0, message.encode()))
        return encode(message)

    def send_message(self, message: Message | ExtensionHandshake) -> bool:
        """:meth:`send` without the bytes: the same checks and state changes.

        For a driver that carries message objects rather than bytes (the
        simulator), so that it pays for no encoding nobody reads. False for a
        Cancel that raced with its answer (:meth:`send` returns ``b""``).
        Only what the codec checks is skipped: a field too wide for its wire
        format (which the state checks leave open only for a Request's
        ``begin``, Port, the v2 hash messages and extension payloads).
        """
        sender = _SENDERS.get(type(message))
        if sender is not None and self._open:
            sender(self, message)
            return True
        if isinstance(message, ExtensionHandshake):
            self._record_local_extensions(message)
            return True
        if isinstance(message, Handshake):
            if self._sent_handshake is not None:
                raise LocalProtocolError("handshake already sent")
            if message.info_hash != self.info_hash:
                raise LocalProtocolError("handshake for another torrent")
            self._sent_handshake = message
            self._note_handshake()
            return True
        self._check_open()
        if isinstance(message, Cancel):
            return self._send_cancel(message)
        raise LocalProtocolError(f"{type(message).__name__} is not a peer wire message")

    def send_piece_header(self, index: int, begin: int, length: int) -> bytes:
        """Like ``send(Piece(...))`` but return only the 13-byte header.

        The driver writes the header and then the block itself, so a 16 KiB
        block read from disk is never copied into a new message.
        """
        self._check_open()
        self._take_peer_request((index, begin, length))
        return encode_piece_header(index, begin, length)

    def _check_open(self) -> None:
        if not self._open:
            raise LocalProtocolError("messages must wait for both handshakes")

    def _send_passthrough(self, message: Message) -> None:
        if not isinstance(message, _BEFORE_AVAILABILITY):
            self._local_may_announce = False

    def _send_choke(self, message: Choke) -> None:
        self._local_may_announce = False
        self._am_choking = True
        if not self._fast:
            self._requests_from_peer = _NO_REQUESTS
            return
        for key in [k for k in self._requests_from_peer if k[0] not in self._allowed_fast_to_peer]:
            self._requests_from_peer.discard(key)
            self._owe_reject(key)

    def _send_unchoke(self, message: Unchoke) -> None:
        self._local_may_announce = False
        self._am_choking = False

    def _send_interested(self, message: Interested) -> None:
        self._local_may_announce = False
        self._am_interested = True

    def _send_not_interested(self, message: NotInterested) -> None:
        self._local_may_announce = False
        self._am_interested = False

    def _send_have(self, message: Have) -> None:
        self._local_may_announce = False
        self._local_index(message.index)

    def _start_local_announce(self, message: object) -> None:
        if not self._local_may_announce:
            raise LocalProtocolError(f"{type(message).__name__} is only legal as the first message")
        # HaveNone is the one announcement a magnet download can make without the metadata.
        if self._num_pieces is None and not isinstance(message, HaveNone):
            raise LocalProtocolError("cannot announce pieces before the metadata is known")
        self._local_may_announce = False

    def _send_bitfield(self, message: BitfieldMessage) -> None:
        self._start_local_announce(message)
        assert self._num_pieces is not None
        try:
            Bitfield(self._num_pieces, message.data)
        except RemoteProtocolError as exc:
            self._local_may_announce = True
            raise LocalProtocolError(str(exc)) from exc

    def _send_have_all_or_none(self, message: HaveAll | HaveNone) -> None:
        self._local_needs_fast(message)
        self._start_local_announce(message)

    def _send_request(self, message: Request) -> None:
        self._local_may_announce = False
        self._local_index(message.index)
        if not 0 < message.length <= self.max_request_length:
            raise LocalProtocolError(f"request for {message.length} bytes")
        if self._peer_has is not None and not self._peer_has.has(message.index):
            raise LocalProtocolError(f"the peer does not have piece {message.index}")
        if self._peer_choking and not (
            self._fast and message.index in self._allowed_fast_from_peer
        ):
            raise LocalProtocolError("request while the peer chokes us")
        key = (message.index, message.begin, message.length)
        requests = self._requests_to_peer
        if key in requests:
            raise LocalProtocolError("block already requested from this peer")
        if requests is _NO_REQUESTS:  # this is the first: a set of its own
            requests = self._requests_to_peer = set()
        requests.add(key)
        if self._cancelled:
            self._cancelled.pop(key, None)

    def _take_peer_request(self, key: BlockRequest) -> None:
        if key not in self._requests_from_peer:
            raise LocalProtocolError("piece the peer did not request (or cancelled)")
        self._local_may_announce = False
        self._requests_from_peer.discard(key)

    def _send_piece(self, message: Piece) -> None:
        self._take_peer_request((message.index, message.begin, len(message.data)))

    def _remember_cancel(self, key: BlockRequest) -> None:
        """A block we no longer await may still arrive: do not count it as unasked for."""
        cancelled = self._cancelled
        if cancelled is None:
            cancelled = self._cancelled = {}
        cancelled[key] = None
        if len(cancelled) > _MAX_REMEMBERED_CANCELS:
            del cancelled[next(iter(cancelled))]

    def _send_cancel(self, message: Cancel) -> bool:
        key = (message.index, message.begin, message.length)
        if key not in self._requests_to_peer:
            return False
        self._requests_to_peer.discard(key)
        self._remember_cancel(key)
        return True

    def _send_suggest(self, message: SuggestPiece) -> None:
        self._local_needs_fast(message)
        self._local_may_announce = False
        self._local_index(message.index)

    def _send_reject(self, message: RejectRequest) -> None:
        self._local_needs_fast(message)
        self._local_may_announce = False
        self._requests_from_peer.discard((message.index, message.begin, message.length))

    def _send_allowed_fast(self, message: AllowedFast) -> None:
        self._local_needs_fast(message)
        self._local_index(message.index)
        allowed = self._allowed_fast_to_peer
        if isinstance(allowed, frozenset):  # the shared empty one: this is the first
            allowed = self._allowed_fast_to_peer = set()
        allowed.add(message.index)

    def _send_extended(self, message: Extended) -> None:
        if not self._extensions:
            raise LocalProtocolError("extension message without the extension protocol")
        if message.extension_id == 0:
            try:
                handshake = ExtensionHandshake.decode(message.payload)
            except RemoteProtocolError as exc:
                raise LocalProtocolError(f"bad extension handshake: {exc}") from exc
            self._record_local_extensions(handshake)
            return
        remote = self._remote_extensions
        if remote is None or message.extension_id not in remote.m.values():
            raise LocalProtocolError(
                f"extension id {message.extension_id} is not one the peer offered"
            )

    def _record_local_extensions(self, handshake: ExtensionHandshake) -> None:
        self._check_open()
        if not self._extensions:
            raise LocalProtocolError("extension handshake without the extension protocol")
        if self._local_extensions is not None:
            handshake = self._local_extensions.updated_by(handshake)
        self._local_extensions = handshake


# Dispatch tables shared by every connection (per-instance tables of bound methods
# cost kilobytes per connection, which a 10,000-peer simulation multiplies).
_RECEIVERS: dict[type, Callable[[PeerConnection, Any, list[Event]], None]] = {
    KeepAlive: PeerConnection._receive_keep_alive,
    Choke: PeerConnection._receive_choke,
    Unchoke: PeerConnection._receive_unchoke,
    Interested: PeerConnection._receive_interested,
    NotInterested: PeerConnection._receive_not_interested,
    Have: PeerConnection._receive_have,
    BitfieldMessage: PeerConnection._receive_bitfield,
    Request: PeerConnection._receive_request,
    Piece: PeerConnection._receive_piece,
    Cancel: PeerConnection._receive_cancel,
    Port: PeerConnection._receive_passthrough,
    SuggestPiece: PeerConnection._receive_suggest,
    HaveAll: PeerConnection._receive_have_all_or_none,
    HaveNone: PeerConnection._receive_have_all_or_none,
    RejectRequest: PeerConnection._receive_reject,
    AllowedFast: PeerConnection._receive_allowed_fast,
    HashRequest: PeerConnection._receive_passthrough,
    Hashes: PeerConnection._receive_passthrough,
    HashReject: PeerConnection._receive_passthrough,
    Extended: PeerConnection._receive_extended,
}

_SENDERS: dict[type, Callable[[PeerConnection, Any], None]] = {
    KeepAlive: PeerConnection._send_passthrough,
    Choke: PeerConnection._send_choke,
    Unchoke: PeerConnection._send_unchoke,
    Interested: PeerConnection._send_interested,
    NotInterested: PeerConnection._send_not_interested,
    Have: PeerConnection._send_have,
    BitfieldMessage: PeerConnection._send_bitfield,
    Request: PeerConnection._send_request,
    Piece: PeerConnection._send_piece,
    Port: PeerConnection._send_passthrough,
    SuggestPiece: PeerConnection._send_suggest,
    HaveAll: PeerConnection._send_have_all_or_none,
    HaveNone: PeerConnection._send_have_all_or_none,
    RejectRequest: PeerConnection._send_reject,
    AllowedFast: PeerConnection._send_allowed_fast,
    HashRequest: PeerConnection._send_passthrough,
    Hashes: PeerConnection._send_passthrough,
    HashReject: PeerConnection._send_passthrough,
    Extended: PeerConnection._send_extended,
}
