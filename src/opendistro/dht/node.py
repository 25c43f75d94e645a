"""DHTNode: one Mainline DHT node (BEP 5) as a sans-I/O state machine.

The node never touches a socket or a clock. A driver hands it datagrams with
:meth:`DHTNode.datagram_received`, takes what it wants to send from
:meth:`DHTNode.datagrams_to_send`, and calls :meth:`DHTNode.advance` when
:meth:`DHTNode.next_deadline` comes (query time-outs, token rotation, bucket
refresh, expiry). The trio service (:mod:`opendistro.io.dht`) and the
simulator (:mod:`opendistro.sim.dht`) are two such drivers of the same code.

Incoming queries are answered from the routing table, the token issuer and
the peer store; each source IP has a query budget. Our own queries are
matched to answers by transaction id *and* address, so a stranger cannot
answer for somebody else. Lookups (:class:`~opendistro.dht.lookup.Lookup`)
run on top of :meth:`send_find_node` and :meth:`send_get_peers`.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import DHTError
from .compact import Address, NodeInfo
from .krpc import (
    ERROR_METHOD_UNKNOWN,
    ERROR_PROTOCOL,
    MAX_DATAGRAM_SIZE,
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    Message,
    Ping,
    Query,
    Response,
    UnknownQuery,
    decode_message,
    encode_message,
    error_reply_for,
)
from .lookup import ALPHA, Lookup, LookupKind
from .node_id import is_secure_id, random_id, secure_id
from .peer_store import PEER_TTL, PeerStore
from .rate_limit import SourceRateLimiter
from .routing import BUCKET_REFRESH, K, RoutingTable
from .tokens import TOKEN_ROTATION, TokenIssuer

__all__ = ["DHTConfig", "DHTNode", "DHTStats", "ReplyHandler"]

ReplyHandler = Callable[[Response | None, float], None]
"""Called with the answer to one of our queries, or None when it timed out or failed."""

VERSION = b"OD\x00\x01"


@dataclass(frozen=True)
class DHTConfig:
    """Knobs of a node; the defaults follow BEP 5 and libtorrent's."""

    k: int = K
    alpha: int = ALPHA
    query_timeout: float = 2.0
    max_lookup_queries: int = 128
    enforce_node_id: bool = True
    """BEP 42: keep nodes whose id does not match their public IPv4 out of the routing table."""
    external_ip: str | None = None
    """Our address as others see it: the BEP 42 id is derived from it, and our own
    announces are stored under it. Learned from answers (``ip``) when not given."""
    read_only: bool = False
    query_rate: float = 50.0
    query_burst: float = 100.0
    max_sources: int = 4096
    max_info_hashes: int = 2000
    max_peers_per_hash: int = 200
    max_values_per_reply: int = 50
    peer_ttl: float = PEER_TTL
    token_rotation: float = TOKEN_ROTATION
    bucket_refresh: float = BUCKET_REFRESH
    maintenance_interval: float = 60.0
    max_pending_queries: int = 2048
    max_datagram_size: int = MAX_DATAGRAM_SIZE
    max_refresh_lookups: int = 2


@dataclass
class DHTStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    queries_answered: int = 0
    malformed: int = 0
    rate_limited: int = 0
    unexpected_replies: int = 0
    bad_tokens: int = 0
    timeouts: int = 0


class _Pending:
    __slots__ = ("address", "deadline", "handler", "node_id")

    def __init__(
        self, address: Address, node_id: bytes | None, deadline: float, handler: ReplyHandler
    ) -> None:
        self.address = address
        self.node_id = node_id
        self.deadline = deadline
        self.handler = handler


class DHTNode:
    """A DHT node; ``rng`` makes it deterministic (pass ``random.SystemRandom()`` for real use)."""

    def __init__(
        self,
        now: float,
        *,
        config: DHTConfig | None = None,
        node_id: bytes | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or DHTConfig()
        self.rng = rng or random.SystemRandom()
        if node_id is None:
            ip = self.config.external_ip
            node_id = secure_id(ip, self.rng) if ip else random_id(self.rng)
        if len(node_id) != 20:
            raise DHTError("a node id is 20 bytes")
        self.node_id = node_id
        self.node_id_int = int.from_bytes(node_id, "big")
        self.table = RoutingTable(node_id, now, k=self.config.k)
        self.tokens = TokenIssuer(self.rng, now, rotation=self.config.token_rotation)
        self.peer_store = PeerStore(
            max_info_hashes=self.config.max_info_hashes,
            max_peers_per_hash=self.config.max_peers_per_hash,
            ttl=self.config.peer_ttl,
        )
        self.limiter = SourceRateLimiter(
            rate=self.config.query_rate,
            burst=self.config.query_burst,
            max_sources=self.config.max_sources,
        )
        self.stats = DHTStats()
        self.external_ip = self.config.external_ip
        self._ip_votes: Counter[str] = Counter()
        self._outbox: deque[tuple[bytes, Address]] = deque()
        self._pending: dict[bytes, _Pending] = {}
        self._timeouts: list[tuple[float, int, bytes]] = []
        self._timeout_seq = 0
        self._next_tid = self.rng.randrange(1 << 16)
        self._next_maintenance = now + self.config.maintenance_interval
        self._refreshing = 0

    # -- driver interface ---------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Take every datagram queued since the last call (payload, destination)."""
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def next_deadline(self) -> float:
        """When :meth:`advance` must be called next, at the latest."""
        timeouts = self._timeouts
        while timeouts and timeouts[0][2] not in self._pending:
            heapq.heappop(timeouts)
        if timeouts and timeouts[0][0] < self._next_maintenance:
            return timeouts[0][0]
        return self._next_maintenance

    def advance(self, now: float) -> None:
        """Let time pass: time out queries, and do periodic upkeep when it is due."""
        timeouts = self._timeouts
        while timeouts and timeouts[0][0] <= now:
            _, _, tid = heapq.heappop(timeouts)
            pending = self._pending.pop(tid, None)
            if pending is None:
                continue
            self.stats.timeouts += 1
            if pending.node_id is not None:
                self.table.node_failed(pending.node_id, now)
            pending.handler(None, now)
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.config.maintenance_interval
            self._maintain(now)

    def datagram_received(self, data: bytes, address: Address, now: float) -> None:
        """Handle one datagram from ``address``; bad ones are counted and dropped."""
        self.stats.datagrams_received += 1
        try:
            message = decode_message(data, max_size=self.config.max_datagram_size)
        except DHTError as exc:
            self.stats.malformed += 1
            reply = error_reply_for(data, str(exc))
            if reply is not None and self.limiter.allow(address[0], now):
                self._send(reply, address)
            return
        if isinstance(message, Response | ErrorReply):
            self._reply_received(message, address, now)
        else:
            self._query_received(message, address, now)

    # -- public actions -----------------------------------------------------

    def ping(self, address: Address, now: float, handler: ReplyHandler | None = None) -> None:
        """Ping an address (a node learned out of band, e.g. a BEP 5 PORT message)."""
        self._query(
            lambda tid: Ping(tid, self.node_id, read_only=self.config.read_only),
            address,
            None,
            now,
            handler or _ignore,
        )

    def bootstrap(self, addresses: Iterable[Address], now: float) -> Lookup:
        """Join the network: find the nodes closest to our own id (BEP 5)."""
        return self.find_node(self.node_id, now, extra=addresses)

    def find_node(self, target: bytes, now: float, *, extra: Iterable[Address] = ()) -> Lookup:
        return self._lookup(LookupKind.FIND_NODE, target, now, extra=extra)

    def get_peers(
        self,
        info_hash: bytes,
        now: float,
        *,
        announce_port: int | None = None,
        implied_port: bool = False,
        extra: Iterable[Address] = (),
    ) -> Lookup:
        """Look up peers of ``info_hash``; with ``announce_port``, announce us afterwards."""
        if len(info_hash) != 20:
            raise DHTError("an info-hash for the DHT is 20 bytes (truncate a v2 hash)")
        return self._lookup(
            LookupKind.GET_PEERS,
            info_hash,
            now,
            extra=extra,
            announce_port=announce_port,
            implied_port=implied_port,
        )

    def store_own_announce(self, info_hash: bytes, port: int, now: float) -> None:
        """Keep our own announce (we are among the closest nodes to ``info_hash``)."""
        if self.external_ip is not None and port:
            self.peer_store.add(info_hash, (self.external_ip, port), now)

    # -- queries we send (used by lookups) ----------------------------------

    def send_find_node(
        self,
        address: Address,
        target: bytes,
        now: float,
        handler: ReplyHandler,
        node_id: bytes | None = None,
    ) -> None:
        self._query(
            lambda tid: FindNode(tid, self.node_id, target, read_only=self.config.read_only),
            address,
            node_id,
            now,
            handler,
        )

    def send_get_peers(
        self,
        address: Address,
        info_hash: bytes,
        now: float,
        handler: ReplyHandler,
        node_id: bytes | None = None,
    ) -> None:
        self._query(
            lambda tid: GetPeers(tid, self.node_id, info_hash, read_only=self.config.read_only),
            address,
            node_id,
            now,
            handler,
        )

    def send_announce(
        self,
        address: Address,
        info_hash: bytes,
        port: int,
        token: bytes,
        implied_port: bool,
        now: float,
    ) -> None:
        self._query(
            lambda tid: AnnouncePeer(
                tid, self.node_id, info_hash, port, token, implied_port,
                read_only=self.config.read_only,
            ),
            address,
            None,
            now,
            _ignore,
        )

    # -- internals: sending -------------------------------------------------

    def _send(self, message: Message, address: Address) -> None:
        self._outbox.append((encode_message(message, version=VERSION), address))
        self.stats.datagrams_sent += 1

    def _new_tid(self) -> bytes | None:
        for _ in range(16):
            self._next_tid = (self._next_tid + 1) & 0xFFFF
            tid = self._next_tid.to_bytes(2, "big")
            if tid not in self._pending:
                return tid
        return None

    def _query(
        self,
        build: Callable[[bytes], Query],
        address: Address,
        node_id: bytes | None,
        now: float,
        handler: ReplyHandler,
    ) -> None:
        tid = self._new_tid() if len(self._pending) < self.config.max_pending_queries else None
        if tid is None:
            # Too much in flight: fail the query at the next advance() rather than
            # re-entering the caller now.
            tid = b"\x00\x00\x00" + self._timeout_seq.to_bytes(8, "big")
            deadline = now
        else:
            deadline = now + self.config.query_timeout
            self._send(build(tid), address)
        self._pending[tid] = _Pending(address, node_id, deadline, handler)
        self._timeout_seq += 1
        heapq.heappush(self._timeouts, (deadline, self._timeout_seq, tid))

    # -- internals: replies -------------------------------------------------

    def _reply_received(self, message: Response | ErrorReply, address: Address, now: float) -> None:
        pending = self._pending.get(message.transaction_id)
        if pending is None or pending.address != address:
            self.stats.unexpected_replies += 1
            return
        del self._pending[message.transaction_id]
        if isinstance(message, ErrorReply):
            pending.handler(None, now)
            return
        if message.sender_id == self.node_id:
            pending.handler(None, now)  # our own id: a reflection, or an impostor
            return
        self._learn_external_ip(message)
        self._node_responded(message.sender_id, address, now)
        pending.handler(message, now)

    def _learn_external_ip(self, message: Response) -> None:
        if message.your_address is None or self.config.external_ip is not None:
            return
        votes = self._ip_votes
        votes[message.your_address[0]] += 1
        if len(votes) > 64:  # bounded: keep the front-runners
            self._ip_votes = votes = Counter(dict(votes.most_common(32)))
        self.external_ip = votes.most_common(1)[0][0]

    def _node_responded(self, node_id: bytes, address: Address, now: float) -> None:
        if self.config.enforce_node_id and not is_secure_id(node_id, address[0]):
            return
        for questionable in self.table.node_responded(node_id, address, now):
            self._query(
                lambda tid: Ping(tid, self.node_id, read_only=self.config.read_only),
                questionable.address,
                questionable.node_id,
                now,
                _ignore,
            )

    # -- internals: queries from others -------------------------------------

    def _query_received(self, query: Query, address: Address, now: float) -> None:
        if not self.limiter.allow(address[0], now):
            self.stats.rate_limited += 1
            return
        if self.config.read_only:
            return  # BEP 43: a read-only node answers nothing
        self.stats.queries_answered += 1
        tid = query.transaction_id
        reply: Message
        if isinstance(query, Ping):
            reply = Response(tid, self.node_id, your_address=address)
        elif isinstance(query, FindNode):
            reply = Response(tid, self.node_id, nodes=self._nodes_near(query.target),
                             your_address=address)
        elif isinstance(query, GetPeers):
            values = self.peer_store.get(
                query.info_hash, now, self.rng, self.config.max_values_per_reply
            )
            reply = Response(
                tid,
                self.node_id,
                nodes=self._nodes_near(query.info_hash),
                values=tuple(values),
                token=self.tokens.issue(address[0], now),
                your_address=address,
            )
        elif isinstance(query, AnnouncePeer):
            if not self.tokens.is_valid(query.token, address[0], now):
                self.stats.bad_tokens += 1
                reply = ErrorReply(tid, ERROR_PROTOCOL, "bad token")
            else:
                port = address[1] if query.implied_port else query.port
                self.peer_store.add(query.info_hash, (address[0], port), now)
                reply = Response(tid, self.node_id, your_address=address)
        else:
            assert isinstance(query, UnknownQuery)
            reply = ErrorReply(tid, ERROR_METHOD_UNKNOWN, "Method Unknown")
        self._send(reply, address)
        if not query.read_only:
            self._consider_querier(query.sender_id, address, now)

    def _nodes_near(self, target: bytes) -> tuple[NodeInfo, ...]:
        return tuple(
            NodeInfo(entry.node_id, entry.address) for entry in self.table.closest(target)
        )

    def _consider_querier(self, node_id: bytes, address: Address, now: float) -> None:
        """A node queried us: refresh it if known, else ping it if it could get in.

        It is inserted only when it answers our ping, from the address it used:
        a forged source address never makes it into the table.
        """
        if node_id in self.table:
            self.table.node_queried(node_id, address, now)
            return
        if self.config.enforce_node_id and not is_secure_id(node_id, address[0]):
            return
        if not self.table.would_accept(node_id, now):
            return
        if any(p.address == address for p in self._pending.values()):
            return
        self.ping(address, now)

    # -- internals: upkeep --------------------------------------------------

    def _maintain(self, now: float) -> None:
        self.peer_store.expire(now)
        self.limiter.prune(now)
        if len(self.table) == 0 or self._refreshing >= self.config.max_refresh_lookups:
            return
        for bucket in self.table.stale_buckets(now, self.config.bucket_refresh):
            if self._refreshing >= self.config.max_refresh_lookups:
                break
            bucket.last_changed = now
            self._refreshing += 1
            lookup = self.find_node(self.table.refresh_target(bucket, self.rng), now)
            lookup.add_done_callback(self._refresh_done)

    def _refresh_done(self, _lookup: Lookup) -> None:
        self._refreshing -= 1

    def _lookup(
        self,
        kind: LookupKind,
        target: bytes,
        now: float,
        *,
        extra: Iterable[Address] = (),
        announce_port: int | None = None,
        implied_port: bool = False,
    ) -> Lookup:
        lookup = Lookup(
            self,
            kind,
            target,
            now,
            announce_port=announce_port,
            implied_port=implied_port,
            k=self.config.k,
            alpha=self.config.alpha,
            max_queries=self.config.max_lookup_queries,
        )
        for entry in self.table.closest(target, self.config.k * 2):
            lookup.add_candidate(entry.node_id, entry.address, 1)
        for address in extra:
            lookup.add_candidate(None, address, 1)
        if kind is LookupKind.GET_PEERS:  # we may be one of the nodes that hold them
            limit = self.config.max_values_per_reply
            for peer in self.peer_store.get(target, now, self.rng, limit):
                lookup.peers[peer] = None
        lookup.start(now)
        return lookup


def _ignore(_response: Response | None, _now: float) -> None:
    """Handler for queries whose answer only matters to the routing table."""
