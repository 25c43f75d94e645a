"""Run real swarm sessions on the virtual network: the simulator's driver.

Each virtual peer is a :class:`~opendistro.swarm.session.SwarmSession` and, per
neighbour, a :class:`~opendistro.wire.connection.PeerConnection` — the very
objects the trio client runs over TCP. Only what surrounds them differs:

* messages travel as objects, checked and recorded by
  :meth:`PeerConnection.send_message` and, after a network latency, applied by
  :meth:`PeerConnection.receive_message`, instead of as bytes through the codec;
* a block upload is a flow on the fluid network, sized like the block, and
  arrives as a :class:`~opendistro.wire.messages.Piece` whose data is a view of
  one shared zero buffer (the session never looks at data);
* a piece is verified at once (no bytes to hash), and a "tracker" hands each
  newcomer random members of the swarm to dial.

Blocks may be far larger than on the wire (a whole piece) so that a
10,000-peer, 1 GiB swarm stays within reach of a Python event loop; the
picker, choker and request logic are the same code either way.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..bitfield import Bitfield
from ..swarm.session import (
    Action,
    DropPeer,
    SendMessage,
    ServeBlock,
    SessionConfig,
    StoreBlock,
    SwarmComplete,
    SwarmSession,
    VerifyPiece,
)
from ..wire.connection import PeerConnection
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.messages import Handshake, Have, Message, Piece
from .loop import EventLoop
from .network import Flow, Host, Network

__all__ = ["SimulatedSwarm", "VirtualPeer"]


@dataclass(eq=False, slots=True)
class VirtualPeer:
    """One simulated client."""

    number: int
    host: Host
    session: SwarmSession[int]
    peer_id: bytes
    joined_at: float
    is_seed: bool
    free_rider: bool = False
    connections: dict[int, PeerConnection] = field(default_factory=dict)
    uploads: dict[int, collections.deque[tuple[int, int, int]]] = field(default_factory=dict)
    sending: dict[int, Flow] = field(default_factory=dict)
    completed_at: float | None = None
    left_at: float | None = None
    uploaded: int = 0
    downloaded: int = 0

    @property
    def online(self) -> bool:
        return self.left_at is None


class SimulatedSwarm:
    """A swarm of virtual peers sharing one torrent on a virtual network."""

    def __init__(
        self,
        *,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        config: SessionConfig,
        rng: random.Random,
        max_connections: int = 40,
        tick_interval: float = 5.0,
        on_complete: Callable[[VirtualPeer], None] | None = None,
    ) -> None:
        self.loop = EventLoop()
        self.network = Network(self.loop)
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.config = config
        self.rng = rng
        self.max_connections = max_connections
        self.tick_interval = tick_interval
        self.on_complete = on_complete
        self.peers: list[VirtualPeer] = []
        self._by_host: dict[int, VirtualPeer] = {}
        self._online: list[VirtualPeer] = []
        self._info_hash = hashlib.sha1(b"opendistro simulated release").digest()
        self._zeros = memoryview(bytes(config.block_size))
        # One handshake per peer (by number), shared by all its connections: they are immutable.
        self._handshakes: list[Handshake] = []

    # -- membership -----------------------------------------------------------

    def add_peer(
        self,
        *,
        upload: float,
        download: float,
        latency: float,
        seed: bool = False,
        super_seed: bool = False,
        free_rider: bool = False,
    ) -> VirtualPeer:
        """A peer joins now, and dials random members of the swarm.

        A ``free_rider`` runs the same session with no unchoke slots at all:
        it never lets anyone download from it.
        """
        have = Bitfield.full(self.num_pieces) if seed else Bitfield(self.num_pieces)
        config = dataclasses.replace(self.config, super_seed=super_seed)
        if free_rider:
            config = dataclasses.replace(config, upload_slots=0, optimistic_slots=0)
        session: SwarmSession[int] = SwarmSession(
            num_pieces=self.num_pieces,
            piece_length=self.piece_length,
            total_length=self.total_length,
            have=have,
            config=config,
            rng=random.Random(self.rng.getrandbits(64)),
        )
        number = len(self.peers)
        peer = VirtualPeer(
            number=number,
            host=self.network.add_host(upload, download, latency),
            session=session,
            peer_id=b"-SIM000-" + number.to_bytes(12, "big"),
            joined_at=self.loop.now,
            is_seed=seed,
            free_rider=free_rider,
            completed_at=self.loop.now if seed else None,
        )
        self.peers.append(peer)
        self._handshakes.append(Handshake(self._info_hash, peer.peer_id))
        self._by_host[peer.host.id] = peer
        candidates = [p for p in self._online if len(p.connections) < 2 * self.max_connections]
        self._online.append(peer)
        for other in self.rng.sample(candidates, min(self.max_connections, len(candidates))):
            self._connect(peer, other)
        self.loop.call_later(self.rng.uniform(0, self.tick_interval), self._tick, peer)
        return peer

    def reannounce(self, peer: VirtualPeer) -> None:
        """Ask the "tracker" again: dial random members until ``max_connections``.

        A client that lost most of its neighbours (they finished and stopped
        seeding) does the same; without it a peer could be left with nobody.
        """
        if not peer.online:
            return
        wanted = self.max_connections - len(peer.connections)
        candidates = [
            other
            for other in self._online
            if other is not peer
            and other.number not in peer.connections
            and len(other.connections) < 2 * self.max_connections
        ]
        for other in self.rng.sample(candidates, max(0, min(wanted, len(candidates)))):
            self._connect(peer, other)

    def remove_peer(self, peer: VirtualPeer) -> None:
        """A peer leaves now; its neighbours see the connection drop."""
        if not peer.online:
            return
        peer.left_at = self.loop.now
        self._online.remove(peer)
        for number in list(peer.connections):
            self._disconnect(peer, self.peers[number])
        self.network.remove_host(peer.host)

    def _connect(self, a: VirtualPeer, b: VirtualPeer) -> None:
        """Open a connection: both handshakes, then each session learns of the other."""
        if b.number in a.connections:
            return
        a_side = self._new_connection(a, initiator=True)
        b_side = self._new_connection(b, initiator=False)
        a_handshake = self._handshakes[a.number]
        b_handshake = self._handshakes[b.number]
        b_side.receive_message(a_handshake)
        a_side.send_message(a_handshake)
        a_side.receive_message(b_handshake)
        b_side.send_message(b_handshake)
        a.connections[b.number] = a_side
        b.connections[a.number] = b_side
        now = self.loop.now
        self._execute(a, a.session.peer_connected(b.number, a_side, now))
        self._execute(b, b.session.peer_connected(a.number, b_side, now))

    def _new_connection(self, peer: VirtualPeer, *, initiator: bool) -> PeerConnection:
        return PeerConnection(
            info_hash=self._info_hash,
            our_peer_id=peer.peer_id,
            num_pieces=self.num_pieces,
            initiator=initiator,
            max_request_length=max(self.config.block_size, 16384),
            max_peer_requests=4 * self.config.max_queue,
        )

    def _disconnect(self, a: VirtualPeer, b: VirtualPeer) -> None:
        for one, other in ((a, b), (b, a)):
            one.connections.pop(other.number, None)
            one.uploads.pop(other.number, None)
            flow = one.sending.pop(other.number, None)
            if flow is not None:
                self.network.cancel(flow)
            if one.online:
                self._execute(one, one.session.peer_disconnected(other.number, self.loop.now))

    # -- carrying out what sessions decide ------------------------------------

    def _execute(self, peer: VirtualPeer, actions: list[Action[int]]) -> None:
        haves: dict[int, list[int]] | None = None
        connections = peer.connections
        for action in actions:
            if isinstance(action, SendMessage):
                message = action.message
                if isinstance(message, Have):
                    connection = connections.get(action.peer)
                    if connection is not None:
                        connection.send_message(message)
                        if haves is None:
                            haves = {}
                        recipients = haves.get(message.index)
                        if recipients is None:
                            haves[message.index] = [action.peer]
                        else:
                            recipients.append(action.peer)
                else:
                    self._send(peer, action.peer, message)
            elif isinstance(action, ServeBlock):
                queue = peer.uploads.setdefault(action.peer, collections.deque())
                queue.append((action.index, action.begin, action.length))
                if action.peer not in peer.sending:
                    self._start_upload(peer, action.peer)
            elif isinstance(action, VerifyPiece):
                self.loop._post(self.loop.now, self._verified, (peer, action.index))
            elif isinstance(action, DropPeer):
                self._disconnect(peer, self.peers[action.peer])
            elif isinstance(action, SwarmComplete):
                peer.completed_at = self.loop.now
                if self.on_complete is not None:
                    self.on_complete(peer)
            elif isinstance(action, StoreBlock):
                pass  # there are no bytes to keep
        if haves is not None:
            for index, recipients in haves.items():
                self._announce(peer, index, recipients)

    def _announce(self, peer: VirtualPeer, index: int, recipients: list[int]) -> None:
        """A Have to many neighbours as one multicast: the same timing, far fewer events."""
        message = Have(index)
        sender = peer.number
        by_host = self._by_host
        receive = self._receive

        def arrived(host: Host) -> None:
            receive(by_host[host.id], sender, message)

        peers = self.peers
        self.network.multicast(peer.host, [peers[n].host for n in recipients], arrived)

    def _send(self, peer: VirtualPeer, to: int, message: Message | ExtensionHandshake) -> None:
        connection = peer.connections.get(to)
        if connection is None:
            return
        connection.send_message(message)
        if connection.rejects_owed:  # after a Choke, say; usually none are
            for reject in connection.pending_rejects():
                connection.send_message(reject)
                self._deliver_later(peer, to, reject)
        if not isinstance(message, ExtensionHandshake):
            self._deliver_later(peer, to, message)

    def _deliver_later(self, peer: VirtualPeer, to: int, message: Message) -> None:
        receiver = self.peers[to]
        self.network.message(
            peer.host, receiver.host, self._receive, receiver, peer.number, message
        )

    def _receive(self, peer: VirtualPeer, sender: int, message: Message) -> None:
        """A message from ``sender`` reaches ``peer``: the hot path (every Have comes here)."""
        connection = peer.connections.get(sender)
        if connection is None or peer.left_at is not None:
            return
        now = self.loop.now
        session = peer.session
        # Actions run before the next decision, as in the trio driver: the session
        # reads connection state (interest, choking) that executing them changes.
        for event in connection.receive_message(message):
            if isinstance(event, Piece):
                peer.downloaded += len(event.data)
            actions = session.handle(sender, event, now)
            if actions:
                self._execute(peer, actions)
        actions = session.after_events(sender, now)
        if actions:
            self._execute(peer, actions)

    def _start_upload(self, peer: VirtualPeer, to: int) -> None:
        """Send the next requested block to ``to`` as one flow on the network."""
        queue = peer.uploads.get(to)
        connection = peer.connections.get(to)
        while queue and connection is not None:
            index, begin, length = queue.popleft()
            if not connection.peer_wants(index, begin, length):
                continue
            connection.send_piece_header(index, begin, length)
            receiver = self.peers[to]
            peer.sending[to] = self.network.send(
                peer.host,
                receiver.host,
                length,
                functools.partial(self._uploaded, peer, to, index, begin, length),
            )
            return
        peer.sending.pop(to, None)

    def _uploaded(self, peer: VirtualPeer, to: int, index: int, begin: int, length: int) -> None:
        peer.sending.pop(to, None)
        peer.uploaded += length
        peer.session.block_served(to, length, self.loop.now)
        receiver = self.peers[to]
        self._receive(receiver, peer.number, Piece(index, begin, self._zeros[:length]))
        if to in peer.connections:
            self._start_upload(peer, to)

    def _verified(self, peer: VirtualPeer, index: int) -> None:
        if peer.online:
            self._execute(peer, peer.session.piece_checked(index, True, self.loop.now))

    def _tick(self, peer: VirtualPeer) -> None:
        if not peer.online:
            return
        loop = self.loop
        self._execute(peer, peer.session.tick(loop.now))
        loop._post(loop.now + self.tick_interval, self._tick, (peer,))
