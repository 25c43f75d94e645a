"""One torrent's swarm logic, sans I/O: what to say to which peer, and when.

A :class:`SwarmSession` owns the policy objects of one torrent (the picker and
the choking decision) and the :class:`~opendistro.wire.connection.PeerConnection`
of every connected peer. Drivers feed it decoded wire events, the outcome of
hash checks and the passing of time; it answers with :class:`Action` values
saying what to send, which blocks to keep, which pieces to verify, which
blocks to upload and which peers to drop.

The trio driver (:mod:`opendistro.io`) runs it over TCP with real data; the
simulator (:mod:`opendistro.sim`) runs the very same object with a virtual
network and clock. Data never passes through here: the driver keeps block
bytes when told to (:class:`StoreBlock`) and reads them back when told to
serve (:class:`ServeBlock`), so the session costs the same whatever the piece
size and works where there is no data at all.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from ..bitfield import Bitfield
from ..errors import ConfigError
from ..wire.connection import Event, PeerConnection, RequestsDropped
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.messages import (
    BitfieldMessage,
    Cancel,
    Choke,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    Message,
    NotInterested,
    Piece,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
)
from .choker import CHOKING_POLICIES, Choker, PeerStats
from .picker import BLOCK_SIZE, PiecePicker
from .rates import RateMeter
from .smartban import SmartBan
from .superseed import SuperSeeder

__all__ = [
    "Action",
    "DropPeer",
    "PieceUnverifiable",
    "SendMessage",
    "ServeBlock",
    "SessionConfig",
    "StoreBlock",
    "SwarmComplete",
    "SwarmSession",
    "VerifyPiece",
]

PeerKey = TypeVar("PeerKey", bound=Hashable)


@dataclass(frozen=True, slots=True)
class SendMessage(Generic[PeerKey]):
    """Send ``message`` to ``peer`` (through its connection's ``send``)."""

    peer: PeerKey
    message: Message | ExtensionHandshake


@dataclass(frozen=True, slots=True)
class StoreBlock(Generic[PeerKey]):
    """The block just received from ``peer`` is new: keep its bytes for the piece."""

    peer: PeerKey
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class VerifyPiece:
    """Every block of the piece arrived: hash it, write it if good, then report back."""

    index: int


@dataclass(frozen=True, slots=True)
class ServeBlock(Generic[PeerKey]):
    """Upload this block to ``peer`` (read it, then ``send_piece_header`` and the bytes)."""

    peer: PeerKey
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class DropPeer(Generic[PeerKey]):
    """Close the connection to ``peer``; with ``ban``, never accept it again."""

    peer: PeerKey
    reason: str
    ban: bool = False


@dataclass(frozen=True, slots=True)
class PieceUnverifiable:
    """A piece failed whole from several different peers: the torrent's hash must be wrong."""

    index: int


@dataclass(frozen=True, slots=True)
class SwarmComplete:
    """Every piece is verified: the driver finalises the data and starts seeding."""


Action = (
    SendMessage[PeerKey]
    | StoreBlock[PeerKey]
    | VerifyPiece
    | ServeBlock[PeerKey]
    | DropPeer[PeerKey]
    | PieceUnverifiable
    | SwarmComplete
)


SUGGESTIONS_ON_UNCHOKE = 2
"""Pieces a seed suggests to a peer it unchokes: about what one request queue holds."""
MAX_OFFERS = 1
MAX_SUGGESTIONS_KEPT = 16
"""Suggestions remembered per peer; a peer flooding them only replaces its own."""


@dataclass(frozen=True)
class SessionConfig:
    """Tunables of the swarm logic; defaults suit real networks."""

    upload_slots: int = 4
    optimistic_slots: int = 1
    block_size: int = BLOCK_SIZE
    min_queue: int = 8
    max_queue: int = 500
    queue_seconds: float = 2.0
    max_unverified_bytes: int = 32 << 20
    snub_timeout: float = 30.0
    max_unrequested_bytes: int = 64 << 10
    """A peer that sends more data than this that nobody asked for is banned."""
    super_seed: bool = False
    """BEP 16: as the initial seed, reveal pieces one by one so each is uploaded about once."""
    sequential: bool = False
    """Download pieces in order (streaming) instead of rarest first."""
    choking: str = "tit-for-tat"
    """Unchoke policy, one of :data:`~opendistro.swarm.choker.CHOKING_POLICIES`:
    ``"tit-for-tat"`` (recent rates, as mainline) or ``"deficit"`` (bytes given
    minus bytes taken, earlier credit included, as FairTorrent)."""

    def __post_init__(self) -> None:
        if self.choking not in CHOKING_POLICIES:
            raise ConfigError(
                f"unknown choking policy {self.choking!r} (use {', '.join(CHOKING_POLICIES)})"
            )


@dataclass(slots=True)
class _Peer:
    connection: PeerConnection
    connected_at: float
    downloaded: RateMeter
    uploaded: RateMeter
    counted: Bitfield | None = None
    wanted: int = 0
    """How many pieces this peer has that we lack: interest is ``wanted > 0``, in O(1)."""
    last_block_at: float = 0.0
    snubbed: bool = False
    credit: float = 0.0
    """What this peer's identity gave us, net of what we gave it, before this connection."""
    suggested: list[int] | None = None
    """Pieces it suggested (BEP 6) that we still want, oldest first; None until the
    first suggestion, which most connections never get (a list each costs memory)."""


class SwarmSession(Generic[PeerKey]):
    """The swarm logic of one torrent whose piece layout is known."""

    def __init__(
        self,
        *,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        have: Bitfield,
        padding: Iterable[tuple[int, int]] = (),
        config: SessionConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or SessionConfig()
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.have = have
        self._rng = rng or random.Random()
        self.picker: PiecePicker[PeerKey] = PiecePicker(
            num_pieces,
            piece_length=piece_length,
            total_length=total_length,
            have=Bitfield(num_pieces, have.to_bytes()),
            padding=padding,
            rng=self._rng,
            block_size=self.config.block_size,
            sequential=self.config.sequential,
        )
        self.choker = Choker(
            slots=self.config.upload_slots,
            optimistic_slots=self.config.optimistic_slots,
            policy=self.config.choking,
            rng=self._rng,
        )
        self._super: SuperSeeder | None = None
        if self.config.super_seed and have.complete:
            self._super = SuperSeeder(num_pieces, rng=self._rng)
        self._peers: dict[PeerKey, _Peer] = {}
        self._unchoked: set[PeerKey] = set()
        self._held_back = False
        """Requests were withheld while hashing was behind: refill once a piece is checked."""
        self._offered: list[int] | None = None
        """As a seed: how often each piece was suggested, to hand out the least-offered."""
        self._verifying: set[int] = set()
        self._senders: dict[int, dict[int, PeerKey]] = {}
        """Who sent each block (by offset) of the pieces in progress, for smart ban."""
        self.smart_ban: SmartBan[PeerKey] = SmartBan()
        self.hash_failures = 0

    # -- queries ----------------------------------------------------------

    @property
    def seeding(self) -> bool:
        return self.have.complete

    @property
    def peers(self) -> list[PeerKey]:
        return list(self._peers)

    def download_rate(self, key: PeerKey, now: float) -> float:
        return self._peers[key].downloaded.rate(now)

    def upload_rate(self, key: PeerKey, now: float) -> float:
        return self._peers[key].uploaded.rate(now)

    def piece_size(self, index: int) -> int:
        return self.picker.piece_size(index)

    # -- peers arriving and leaving -----------------------------------------

    def peer_connected(
        self, key: PeerKey, connection: PeerConnection, now: float, *, announced: bool = False
    ) -> list[Action[PeerKey]]:
        """Both handshakes are done: announce what we have.

        ``announced`` says the driver already sent the peer an empty piece set,
        as it does before the metadata arrives (magnet) or the data is checked;
        the pieces we have are then announced one Have at a time.
        """
        peer = _Peer(connection, now, RateMeter(now), RateMeter(now), last_block_at=now)
        self._peers[key] = peer
        actions: list[Action[PeerKey]] = []
        if self._super is not None:
            self._super.peer_joined(key, connection.peer_has)
            if connection.fast_enabled:
                actions.append(SendMessage(key, HaveNone()))  # pieces are revealed one by one
            actions.extend(self._offer(key))
        elif announced:
            # It heard "nothing" while our data was being checked: now each piece we have.
            actions.extend(SendMessage(key, Have(index)) for index in self.have)
        elif connection.fast_enabled and self.have.complete:
            actions.append(SendMessage(key, HaveAll()))
        elif connection.fast_enabled and self.have.count == 0:
            actions.append(SendMessage(key, HaveNone()))
        elif self.have.count:
            actions.append(SendMessage(key, BitfieldMessage(self.have.to_bytes())))
        actions.extend(self._count_availability(key, peer))
        return actions

    def set_peer_credit(self, key: PeerKey, credit: float) -> None:
        """Tell the choker what ``key`` contributed before (verified bytes it gave us,
        net of what we gave it, from the credit ledger: see :mod:`opendistro.credit`).

        Peers that never proved an identity keep 0, the newcomer's standing.
        """
        peer = self._peers.get(key)
        if peer is not None:
            peer.credit = credit

    def peer_disconnected(self, key: PeerKey, now: float) -> list[Action[PeerKey]]:
        peer = self._peers.pop(key, None)
        if peer is None:
            return []
        self.picker.peer_lost(key, peer.counted)
        self._unchoked.discard(key)
        actions: list[Action[PeerKey]] = []
        if self._super is not None:
            self._super.peer_left(key)
            actions.extend(self._offer_all())
        for other, other_peer in self._peers.items():
            actions.extend(self._fill_requests(other, other_peer, now))
        return actions

    # -- wire events ----------------------------------------------------------

    def handle(self, key: PeerKey, event: Event, now: float) -> list[Action[PeerKey]]:
        """React to one event the peer's connection decoded."""
        peer = self._peers.get(key)
        if peer is None:
            return []
        # Most frequent first: every verified piece is announced to every neighbour, and
        # interest comes and goes as neighbours catch up with each other.
        if isinstance(event, Have):
            return self._peer_has(key, peer, event.index)
        if isinstance(event, Piece):
            return self._block_arrived(key, peer, event, now)
        if isinstance(event, Request):
            return self._requested(key, peer, event)
        if isinstance(event, Interested):
            return self._peer_interested(key, peer, now)
        if isinstance(event, NotInterested):
            return self._peer_not_interested(key)
        if isinstance(event, BitfieldMessage | HaveAll | HaveNone):
            if self._super is not None:
                return self._super_seen_bitfield(key, peer)
            return self._count_availability(key, peer)
        if isinstance(event, RequestsDropped):
            for block in event.requests:
                self.picker.request_failed(key, block)
            return []
        if isinstance(event, RejectRequest):
            self.picker.request_failed(key, (event.index, event.begin, event.length))
            return []
        if isinstance(event, SuggestPiece):
            self._take_suggestion(peer, event.index)
        return []  # Choke, Unchoke, Cancel, KeepAlive, AllowedFast, extensions

    def after_events(self, key: PeerKey, now: float) -> list[Action[PeerKey]]:
        """Once a batch of events is handled: owed rejects, then top up requests."""
        peer = self._peers.get(key)
        if peer is None:
            return []
        connection = peer.connection
        if connection.unrequested_bytes > self.config.max_unrequested_bytes:
            return self._ban({key}, "sent too much data nobody asked for")
        if not connection.rejects_owed:
            # Usually the peer chokes us and there is nothing to do (after most Haves).
            return [] if connection.peer_choking else self._fill_requests(key, peer, now)
        actions: list[Action[PeerKey]] = [
            SendMessage(key, reject) for reject in connection.pending_rejects()
        ]
        actions.extend(self._fill_requests(key, peer, now))
        return actions

    def _count_availability(self, key: PeerKey, peer: _Peer) -> list[Action[PeerKey]]:
        has = peer.connection.peer_has
        if has is None:
            return []
        if peer.counted is None:
            peer.counted = Bitfield(len(has))
        counted = peer.counted
        for index in has:
            if counted.add(index):
                self.picker.peer_has(index)
                if not self.have.has(index):
                    peer.wanted += 1
        return self._update_interest(key, peer)

    def _offer(self, key: PeerKey) -> list[Action[PeerKey]]:
        """Super-seeding: reveal the next piece to this peer, if its last one has spread."""
        assert self._super is not None
        piece = self._super.piece_to_offer(key)
        return [] if piece is None else [SendMessage(key, Have(piece))]

    def _super_seen_bitfield(self, key: PeerKey, peer: _Peer) -> list[Action[PeerKey]]:
        assert self._super is not None
        has = peer.connection.peer_has
        for index in has if has is not None else ():
            self._super.peer_has(key, index)
        return self._offer_all()

    def _offer_all(self) -> list[Action[PeerKey]]:
        actions: list[Action[PeerKey]] = []
        for key in self._peers:
            actions.extend(self._offer(key))
        return actions

    def _peer_has(self, key: PeerKey, peer: _Peer, index: int) -> list[Action[PeerKey]]:
        if self._super is not None:
            self._super.peer_has(key, index)
            return self._offer_all()
        counted = peer.counted
        if counted is None:
            return self._count_availability(key, peer)
        if not counted.add(index):
            return []
        self.picker.peer_has(index)
        if self.have.has(index):
            return []
        peer.wanted += 1
        return self._update_interest(key, peer) if peer.wanted == 1 else []

    def _update_interest(self, key: PeerKey, peer: _Peer) -> list[Action[PeerKey]]:
        wanted = peer.wanted > 0 and not self.seeding
        if wanted and not peer.connection.am_interested:
            return [SendMessage(key, Interested())]
        if not wanted and peer.connection.am_interested:
            return [SendMessage(key, NotInterested())]
        return []

    # -- downloading ------------------------------------------------------------

    def _queue_target(self, peer: _Peer, now: float) -> int:
        """Requests to keep in flight: about ``queue_seconds`` of this peer's recent rate."""
        config = self.config
        target = int(peer.downloaded.rate(now) * config.queue_seconds / config.block_size)
        target = max(config.min_queue, min(config.max_queue, target))
        remote = peer.connection.remote_extensions
        if remote is not None and remote.reqq:
            # The peer drops requests beyond its reqq (BEP 10): that caps even our minimum.
            target = min(target, remote.reqq)
        return target

    def _may_request(self, peer: _Peer) -> bool:
        """The peer lets us download (unchoked, we are interested) and we still want pieces."""
        connection = peer.connection
        return (
            not connection.peer_choking
            and connection.am_interested
            and connection.peer_has is not None
            and not self.seeding
        )

    def _fill_requests(self, key: PeerKey, peer: _Peer, now: float) -> list[Action[PeerKey]]:
        connection = peer.connection
        # Most peers choke us most of the time: that test comes first, and alone.
        if connection.peer_choking:
            return []
        has = connection.peer_has
        if has is None or not self._may_request(peer):
            return []
        if len(self._verifying) * self.piece_length > self.config.max_unverified_bytes:
            self._held_back = True
            return []  # hashing is behind; piece_checked() refills when it catches up
        # A snubbed peer keeps one request: enough to notice when it recovers.
        target = 1 if peer.snubbed else self._queue_target(peer, now)
        wanted = target - len(connection.requests_to_peer)
        if wanted <= 0:
            return []
        picked = self.picker.pick(key, has, wanted, peer.suggested)
        if not picked and not connection.requests_to_peer and not peer.snubbed:
            return self._steal(key, has)
        return [SendMessage(key, Request(*block)) for block in picked]

    def _steal(self, key: PeerKey, has: Bitfield) -> list[Action[PeerKey]]:
        """Keep an idle unchoked connection busy with a block queued at a busier peer."""
        stolen = self.picker.steal(key, has)
        if stolen is None:
            return []
        block, holder = stolen
        actions: list[Action[PeerKey]] = [SendMessage(key, Request(*block))]
        if holder in self._peers:
            # Also when the holder's request is among the actions not yet carried out (both
            # picked in one round): left outstanding, the picker no longer knows of it, and
            # asking the holder for that block again would break the protocol (and close it).
            actions.append(SendMessage(holder, Cancel(*block)))
        return actions

    def _block_arrived(
        self, key: PeerKey, peer: _Peer, piece: Piece, now: float
    ) -> list[Action[PeerKey]]:
        length = len(piece.data)
        peer.downloaded.add(length, now)
        peer.last_block_at = now
        if peer.snubbed:
            peer.snubbed = False
        if self.have.has(piece.index):
            return []
        new, also_asked = self.picker.block_received(key, (piece.index, piece.begin, length))
        if not new:
            return []
        senders = self._senders.get(piece.index)
        if senders is None:
            senders = self._senders[piece.index] = {}
        senders[piece.begin] = key
        actions: list[Action[PeerKey]] = [StoreBlock(key, piece.index, piece.begin, length)]
        block = (piece.index, piece.begin, length)
        for other in also_asked:
            other_peer = self._peers.get(other)
            if other_peer is not None and block in other_peer.connection.requests_to_peer:
                actions.append(SendMessage(other, Cancel(*block)))
        if self.picker.piece_complete(piece.index):
            self._verifying.add(piece.index)
            actions.append(VerifyPiece(piece.index))
        return actions

    # -- mirrors (HTTP sources that have everything) ----------------------------

    def mirror_pick(self, key: PeerKey, max_pieces: int) -> list[int]:
        """Consecutive whole pieces for mirror ``key`` to fetch (see :meth:`PiecePicker.pick_run`).

        Nothing while hashing is behind, as for peers.
        """
        if self.seeding:
            return []
        if len(self._verifying) * self.piece_length > self.config.max_unverified_bytes:
            return []
        return self.picker.pick_run(key, max_pieces)

    def mirror_piece_arrived(self, key: PeerKey, index: int) -> list[Action[PeerKey]]:
        """Mirror ``key`` delivered all of piece ``index`` (the driver holds the bytes)."""
        if self.have.has(index) or index in self._verifying:
            return []
        others = self.picker.run_received(key, index)
        size = self.piece_size(index)
        block_size = self.config.block_size
        self._senders[index] = {begin: key for begin in range(0, size, block_size)}
        actions: list[Action[PeerKey]] = []
        for other in others:
            peer = self._peers.get(other)
            if peer is None:
                continue
            for block in list(peer.connection.requests_to_peer):
                if block[0] == index:
                    actions.append(SendMessage(other, Cancel(*block)))
        self._verifying.add(index)
        actions.append(VerifyPiece(index))
        return actions

    def mirror_hand_over(self, old: PeerKey, new: PeerKey, indices: Iterable[int]) -> list[int]:
        """Give pieces of slow mirror ``old``'s run to mirror ``new``; returns those moved."""
        return self.picker.hand_over(old, new, indices)

    def mirror_stopped(
        self, key: PeerKey, now: float, indices: Iterable[int] | None = None
    ) -> list[Action[PeerKey]]:
        """Mirror ``key`` failed, or stopped its run early: its untouched pieces go back to
        everyone (only ``indices`` of them, if given), and idle peers may take them."""
        self.picker.release_run(key, indices)
        actions: list[Action[PeerKey]] = []
        for other, other_peer in self._peers.items():
            actions.extend(self._fill_requests(other, other_peer, now))
        return actions

    def piece_checked(
        self,
        index: int,
        good: bool,
        now: float,
        block_digests: Mapping[int, bytes] | None = None,
    ) -> list[Action[PeerKey]]:
        """The driver hashed (and, if good, wrote) a complete piece.

        ``block_digests`` (block offset to a digest of that block's bytes) lets
        smart ban find the liar: give it for every failed piece, and for a good
        one when :meth:`needs_block_digests` said so.
        """
        self._verifying.discard(index)
        senders = self._senders.pop(index, {})
        actions: list[Action[PeerKey]] = []
        if good:
            liars = self.smart_ban.piece_passed(index, block_digests or {})
            actions.extend(self._ban(liars, f"sent bad data for piece {index}"))
            self.picker.piece_verified(index)
            self.have.set(index)
            announcement = Have(index)  # one message object for every neighbour
            for key, peer in self._peers.items():
                counted = peer.counted
                if counted is not None and counted.has(index):
                    # It has the piece: our Have could change nothing it decides, so it is
                    # not sent (most Haves late in a download are of this kind).
                    peer.wanted -= 1
                    if peer.wanted == 0:
                        actions.extend(self._update_interest(key, peer))
                else:
                    actions.append(SendMessage(key, announcement))
            if self.have.complete:
                actions.append(SwarmComplete())
                return actions
        else:
            self.picker.piece_failed(index, single_source=len(set(senders.values())) > 1)
            self.hash_failures += 1
            liars = self.smart_ban.piece_failed(index, senders, block_digests or {})
            actions.extend(self._ban(liars, f"sent piece {index}, which failed its hash check"))
            if self.smart_ban.suspect_metainfo(index):
                actions.append(PieceUnverifiable(index))
        if not good or self._held_back:
            # Blocks to fetch again, or hashing has caught up: everyone may ask for more.
            self._held_back = False
            for key, peer in self._peers.items():
                if key not in liars:
                    actions.extend(self._fill_requests(key, peer, now))
        return actions

    def blame_blocks(self, index: int, bad_offsets: Iterable[int]) -> list[Action[PeerKey]]:
        """The driver learnt which blocks of a failed piece were wrong: ban their senders."""
        return self._ban(
            self.smart_ban.blame(index, bad_offsets), f"sent bad data for piece {index}"
        )

    def needs_block_digests(self, index: int) -> bool:
        """Whether :meth:`piece_checked` wants block digests for this piece even if it passes."""
        return self.smart_ban.wants_digests(index)

    def _ban(self, liars: set[PeerKey], reason: str) -> list[Action[PeerKey]]:
        # A liar that already left is banned too: the driver remembers whom to refuse.
        return [DropPeer(key, reason, ban=True) for key in liars]

    # -- uploading -----------------------------------------------------------

    def _requested(self, key: PeerKey, peer: _Peer, request: Request) -> list[Action[PeerKey]]:
        block = (request.index, request.begin, request.length)
        piece_size = self.piece_size(request.index) if request.index < self.num_pieces else 0
        offered = self._super is None or self._super.may_upload(key, request.index)
        if (
            not self.have.has(request.index)
            or request.begin + request.length > piece_size
            or not offered
        ):
            if peer.connection.fast_enabled:
                return [SendMessage(key, RejectRequest(*block))]
            peer.connection.discard_peer_request(*block)
            return []
        if request.begin + request.length == piece_size:
            # It has the whole piece soon: tell it which one to take next from us.
            return [ServeBlock(key, *block), *self._suggest(key, peer, 1)]
        return [ServeBlock(key, *block)]

    # -- suggestions (BEP 6) ---------------------------------------------------

    def _suggest(self, key: PeerKey, peer: _Peer, count: int) -> list[Action[PeerKey]]:
        """As a seed, point a peer at the pieces we have handed out least.

        Leechers pick rarest-first by what *their* neighbours have, so early in
        a flash crowd they all ask the one seed for pieces it already sent to
        someone else, and the swarm holds a whole copy only after the seed has
        uploaded several. Suggesting the least-offered pieces a peer lacks
        spreads the seed's upload over every piece first (as super-seeding
        does, without hiding anything from anyone).
        """
        has = peer.connection.peer_has
        if not self.seeding or self._super is not None or has is None:
            return []
        if not peer.connection.fast_enabled:
            return []
        offered = self._offered
        if offered is None:
            offered = self._offered = [0] * self.num_pieces
        actions: list[Action[PeerKey]] = []
        start = self._rng.randrange(self.num_pieces)
        for _ in range(count):
            best = -1
            for index in itertools.chain(range(start, self.num_pieces), range(start)):
                if not has.has(index) and (best < 0 or offered[index] < offered[best]):
                    best = index
                    if offered[index] == 0:
                        break
            if best < 0 or offered[best] >= MAX_OFFERS:
                break
            offered[best] += 1
            actions.append(SendMessage(key, SuggestPiece(best)))
        return actions

    def _take_suggestion(self, peer: _Peer, index: int) -> None:
        """Remember a suggested piece we still want (the picker tries these first)."""
        if self.have.has(index):
            return
        suggested = peer.suggested
        if suggested is None:
            peer.suggested = [index]
            return
        if index in suggested:
            return
        suggested.append(index)
        if len(suggested) > MAX_SUGGESTIONS_KEPT:
            del suggested[0]

    def block_served(self, key: PeerKey, length: int, now: float) -> None:
        """The driver wrote a served block to the peer (for upload accounting)."""
        peer = self._peers.get(key)
        if peer is not None:
            peer.uploaded.add(length, now)

    def _peer_interested(self, key: PeerKey, peer: _Peer, now: float) -> list[Action[PeerKey]]:
        """A newcomer gets a free slot at once rather than waiting for the next round.

        Under the deficit policy a leecher lends no slot to a peer it already
        gave to that never gave back: a free rider turns interested again after
        every piece it gets, and would draw on each idle slot at once.
        """
        slots = self.config.upload_slots + self.config.optimistic_slots
        took_without_giving = (
            self.config.choking == "deficit"
            and not self.seeding
            and peer.credit <= 0
            and peer.downloaded.total == 0
            and peer.uploaded.total > 0
        )
        if peer.connection.am_choking and len(self._unchoked) < slots and not took_without_giving:
            self._unchoked.add(key)
            return [SendMessage(key, Unchoke()), *self._suggest(key, peer, SUGGESTIONS_ON_UNCHOKE)]
        return []

    def _peer_not_interested(self, key: PeerKey) -> list[Action[PeerKey]]:
        if key in self._unchoked:
            self._unchoked.discard(key)
            return [SendMessage(key, Choke())]
        return []

    # -- time -----------------------------------------------------------------

    def tick(self, now: float) -> list[Action[PeerKey]]:
        """Periodic work: choking rounds and snubbed-peer detection. Call about once a second."""
        actions = self._detect_snubbed(now)
        if self.choker.due(now):
            actions.extend(self._rechoke(now))
        return actions

    def _detect_snubbed(self, now: float) -> list[Action[PeerKey]]:
        """A peer that sits on our requests loses them to others (and its reciprocation rank).

        It keeps one request, chosen after the others refilled, so that a peer
        that recovers is noticed even if it never speaks first.
        """
        actions: list[Action[PeerKey]] = []
        snubbed: list[PeerKey] = []
        for key, peer in self._peers.items():
            requests = peer.connection.requests_to_peer
            if peer.snubbed or not requests:
                continue
            if now - peer.last_block_at < self.config.snub_timeout:
                continue
            peer.snubbed = True
            snubbed.append(key)
            for block in list(requests):
                actions.append(SendMessage(key, Cancel(*block)))
            self.picker.release_peer_requests(key)
        if not snubbed:
            return actions
        for key, peer in self._peers.items():
            if key not in snubbed:
                actions.extend(self._fill_requests(key, peer, now))
        for key in snubbed:
            peer = self._peers[key]
            has = peer.connection.peer_has
            if has is not None and self._may_request(peer):
                picked = self.picker.pick(key, has, 1)
                actions.extend(SendMessage(key, Request(*block)) for block in picked)
        return actions

    def _rechoke(self, now: float) -> list[Action[PeerKey]]:
        # Only interested peers that lack something can be unchoked, so only they get
        # stats; every meter is read all the same (reading one folds its recent bytes
        # in, and its rate must not depend on whether the peer wanted anything).
        stats: list[PeerStats] = []
        for key, peer in self._peers.items():
            download_rate = peer.downloaded.rate(now)
            upload_rate = peer.uploaded.rate(now)
            connection = peer.connection
            if connection.peer_interested and not connection.peer_is_seed:
                stats.append(
                    PeerStats(
                        key=key,
                        interested=True,
                        download_rate=download_rate,
                        upload_rate=upload_rate,
                        connected_at=peer.connected_at,
                        is_seed=False,
                        snubbed=peer.snubbed,
                        credit=peer.credit,
                        downloaded=peer.downloaded.total,
                        uploaded=peer.uploaded.total,
                    )
                )
        chosen = cast(
            frozenset[PeerKey],
            self.choker.rechoke(stats, now, seeding=self.seeding, present=self._peers),
        )
        actions: list[Action[PeerKey]] = []
        for key, peer in self._peers.items():
            if key in chosen and peer.connection.am_choking:
                actions.append(SendMessage(key, Unchoke()))
                actions.extend(self._suggest(key, peer, SUGGESTIONS_ON_UNCHOKE))
            elif key not in chosen and not peer.connection.am_choking:
                actions.append(SendMessage(key, Choke()))
        self._unchoked = set(chosen)
        return actions
