"""The trio tracker: HTTP announce/scrape over h11, BEP 15 over UDP, swarms in SQLite.

This module only moves bytes. Parsing and encoding live in
:mod:`~opendistro.tracker.protocol` and :mod:`~opendistro.tracker.udp`, the swarm
policy in :class:`~opendistro.tracker.registry.TrackerRegistry`, persistence in
:class:`~opendistro.tracker.store.TrackerStore`. The server's own jobs are the
ones that need a socket or a clock: taking the peer's address from the
connection (a query parameter is not trusted, except a loopback ``ip`` so local
test swarms work), bounding what one connection may cost (request size, time to
send a request, number of connections) and saving the swarms periodically and
on shutdown. With a credit database it also takes signed credit receipts
(``POST /credit``) and answers standings (``GET /credit?identity=HEX``), see
:mod:`~opendistro.tracker.credit`.

Announces may prove a credit identity (``spec/od-credit.md``). The server
checks the proof *before* an announce waits for its turn, looks up the
standing of an identity it has not seen yet (in a worker thread), and keeps
the registry's standings fresh and the seeding time it observed saved, every
``standing_refresh`` seconds. With ``max_announce_rate`` announces beyond that
rate wait in a queue ordered by standing, so in a flash crowd contributors
are answered first. Observers get ``/stats.json`` (tracker totals),
``/health.json`` (tracker counters and per-torrent health,
:mod:`~opendistro.tracker.metrics`) and
``/metrics`` (Prometheus text format).
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

import h11
import trio

from ..dht.rate_limit import SourceRateLimiter
from ..errors import ConfigError, OpenDistroError, TrackerError
from ..http_request import receive_request_with_body
from ..limits import Limits
from . import udp as udp_protocol
from .credit import (
    MAX_SUBMISSION_BODY,
    CreditStore,
    Standing,
    SubmitResult,
    decode_submission,
)
from .metrics import (
    PROMETHEUS_CONTENT_TYPE,
    ServerCounters,
    largest_swarms,
    render_prometheus,
    torrent_health,
    tracker_summary,
)
from .protocol import (
    AnnounceRequest,
    encode_failure,
    encode_scrape_response,
    parse_query,
    parse_scrape_query,
)
from .registry import Swarm, TrackerRegistry
from .store import TrackerStore, snapshot_registry

__all__ = ["TrackerServer"]

logger = logging.getLogger(__name__)

_MAX_REQUEST_HEAD = 8 * 1024  # an announce query is ~300 bytes; headers stay small
_MAX_REQUEST_BODY = 16 * 1024  # GET requests have none; refuse anything large
_UDP_PACKET_SIZE = 2048
_CREDIT_PATH = b"/credit"
_ANNOUNCE_PATH = b"/announce"
_STATS_KEYS: Final = ("torrents", "seeders", "leechers", "completed")
_MAX_HEALTH_TORRENTS: Final = 100  # listed by /health.json when none is named
_MAX_HEALTH_QUERY: Final = 32  # info-hashes one /health.json request may name
_CONNECTION_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_MAX_RATE_LIMITED_IPS: Final = 16384  # addresses whose announce rate is tracked at once
_TOO_OFTEN: Final = "announcing too often from this address; slow down"


def _normalise_ip(text: str) -> str:
    """Canonical text of an address; IPv4-mapped IPv6 becomes plain IPv4."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _trusted_ip(claimed: str | None, seen: str) -> str:
    """The address to hand out for a peer: what the socket saw, or a loopback ``ip`` claim.

    Honouring arbitrary claims would let anyone point a swarm at a third party;
    a loopback claim can only ever point peers at themselves.
    """
    if claimed:
        try:
            address = ipaddress.ip_address(claimed)
        except ValueError:
            return seen
        if address.is_loopback:
            return str(address)
    return seen


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _health_query(query: bytes) -> list[bytes]:
    """The info-hashes a ``/health.json`` query names: 40 hex digits or 20 raw bytes each."""
    hashes: list[bytes] = []
    for name, value in parse_query(query):
        if name != b"info_hash":
            continue
        if len(value) == 40:
            try:
                value = bytes.fromhex(value.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise TrackerError("info_hash is neither 40 hex digits nor 20 bytes") from None
        if len(value) != 20:
            raise TrackerError("info_hash is neither 40 hex digits nor 20 bytes")
        if value not in hashes:
            hashes.append(value)
        if len(hashes) > _MAX_HEALTH_QUERY:
            raise TrackerError(f"at most {_MAX_HEALTH_QUERY} info_hash values per request")
    return hashes


def _body_limit(request: h11.Request) -> int:
    """How much body a request may carry: a credit submission, or next to nothing."""
    path = request.target.partition(b"?")[0]
    if request.method == b"POST" and path == _CREDIT_PATH:
        return MAX_SUBMISSION_BODY
    return _MAX_REQUEST_BODY


@dataclass(eq=False)
class _Waiter:
    event: trio.Event
    admitted: bool = False
    cancelled: bool = False


class _AnnounceGate:
    """Lets announces through at most ``rate`` per second, the highest priority first.

    A token bucket of ``burst`` tokens refilled at ``rate`` per second. An
    announce that finds no token waits in a priority queue (priority: the
    identity's score; equal ones first come, first served), so when a flash
    crowd outruns the tracker, contributors are answered first and newcomers
    as capacity allows. At most ``max_waiting`` wait; beyond that an announce
    is refused at once with "tracker is busy" (BitTorrent clients retry later),
    which bounds the memory a crowd can take.
    """

    def __init__(
        self, rate: float, burst: int, max_waiting: int, counters: ServerCounters
    ) -> None:
        if rate <= 0 or burst < 1 or max_waiting < 0:
            raise ConfigError("announce rate and burst must be positive, the queue not negative")
        self._rate = rate
        self._burst = float(burst)
        self._max_waiting = max_waiting
        self._counters = counters
        self._tokens = float(burst)
        self._updated: float | None = None
        self._queue: list[tuple[int, int, _Waiter]] = []
        self._order = itertools.count()
        self._wake = trio.Event()

    def _refill(self) -> None:
        now = trio.current_time()
        if self._updated is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def admit(self, priority: int) -> None:
        """Return when this announce may be served; TrackerError if the queue is full."""
        self._refill()
        if not self._queue and self._tokens >= 1:
            self._tokens -= 1
            await trio.lowlevel.checkpoint()
            return
        if self._counters.announces_waiting >= self._max_waiting:
            self._counters.announces_shed += 1
            raise TrackerError("tracker is busy; announce again later")
        waiter = _Waiter(trio.Event())
        heapq.heappush(self._queue, (-priority, next(self._order), waiter))
        self._counters.announces_waiting += 1
        self._wake.set()
        try:
            await waiter.event.wait()
        finally:
            if not waiter.admitted:
                waiter.cancelled = True
                self._counters.announces_waiting -= 1

    async def run(self) -> None:
        """Hand out tokens to waiting announces as they accrue."""
        while True:
            self._refill()
            while self._queue and self._tokens >= 1:
                _, _, waiter = heapq.heappop(self._queue)
                if waiter.cancelled:
                    continue
                waiter.admitted = True
                self._counters.announces_waiting -= 1
                self._tokens -= 1
                waiter.event.set()
            if self._queue:
                await trio.sleep((1 - self._tokens) / self._rate)
            else:
                await self._wake.wait()
                self._wake = trio.Event()


class TrackerServer:
    """A BitTorrent tracker serving HTTP and UDP on one port number.

    ``interval``/``min_interval`` are what peers are told; peers silent for
    ``peer_ttl`` seconds (default two intervals) are forgotten. With ``db_path``
    the swarms are loaded at start and saved every ``persist_interval`` seconds
    and on shutdown. ``request_timeout`` bounds how long one connection may take
    to send a request, so a slow or silent client cannot hold a connection slot.
    ``on_announce(request, ip)`` is called after every accepted announce (HTTP
    or UDP) with the address the peer was recorded under; it is meant for
    metrics, logs and tests, and must not raise. With ``credit_db_path`` the
    tracker keeps the credit ledger there and serves ``/credit``; without it
    ``/credit`` answers 404. ``standing_refresh`` is how often (seconds) the
    standings of the identities in the swarms are re-read and observed seeding
    time saved. With ``max_announce_rate`` (announces per second, bursts of
    ``announce_burst``) HTTP announces beyond the rate wait, contributors
    first, at most ``max_waiting_announces`` of them. That rate is the whole
    tracker's; ``limits`` (:class:`~opendistro.limits.Limits`) bounds each IP
    address to ``max_announces_per_ip_per_minute`` (HTTP and UDP together, loopback
    exempt by default): beyond it an announce is refused before any work is done.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | os.PathLike[str] | None = None,
        allow_list: Collection[bytes] | None = None,
        interval: int = 1800,
        min_interval: int = 60,
        peer_ttl: float | None = None,
        udp: bool = True,
        persist_interval: float = 60.0,
        request_timeout: float = 10.0,
        max_connections: int = 512,
        on_announce: Callable[[AnnounceRequest, str], None] | None = None,
        credit_db_path: str | os.PathLike[str] | None = None,
        standing_refresh: float = 30.0,
        max_announce_rate: float | None = None,
        announce_burst: int = 32,
        max_waiting_announces: int = 1024,
        limits: Limits | None = None,
    ) -> None:
        self.host = host
        self.limits = limits or Limits()
        per_minute = self.limits.max_announces_per_ip_per_minute
        self._announces_by_ip = SourceRateLimiter(
            rate=per_minute / 60, burst=per_minute, max_sources=_MAX_RATE_LIMITED_IPS
        )
        self.port = port
        self.registry = TrackerRegistry(
            interval=interval, min_interval=min_interval, peer_ttl=peer_ttl, allow_list=allow_list
        )
        self._store = TrackerStore(db_path) if db_path is not None else None
        self._credit_db_path = credit_db_path
        self.credit: CreditStore | None = None
        self._udp_enabled = udp
        self._persist_interval = persist_interval
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._on_announce = on_announce
        self._open_connections = 0
        self._standing_refresh = standing_refresh
        self.counters = ServerCounters()
        self._gate = (
            _AnnounceGate(max_announce_rate, announce_burst, max_waiting_announces, self.counters)
            if max_announce_rate is not None
            else None
        )
        # A fresh secret per process: connection ids need not survive a restart.
        self._issuer = udp_protocol.ConnectionIdIssuer(secrets.token_bytes(32))

    # ------------------------------------------------------------ addresses

    @property
    def announce_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/announce"

    @property
    def scrape_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/scrape"

    @property
    def udp_url(self) -> str:
        return f"udp://{_url_host(self.host)}:{self.port}/announce"

    @property
    def stats_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/stats.json"

    @property
    def credit_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/credit"

    @property
    def health_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/health.json"

    @property
    def metrics_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/metrics"

    # ------------------------------------------------------------ lifecycle

    async def serve(
        self, *, task_status: trio.TaskStatus[TrackerServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load saved swarms, bind TCP and UDP, report ``self`` as started, serve until cancel."""
        if self._store is not None:
            saved = await trio.to_thread.run_sync(self._store.load)
            TrackerStore.restore_into(self.registry, saved)
            self.registry.expire(time.time())
        if self._credit_db_path is not None:
            self.credit = CreditStore(self._credit_db_path, is_allowed=self.registry.is_allowed)
        listeners, udp_socket = await self._bind()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self._handle_tcp, listeners)
                if udp_socket is not None:
                    nursery.start_soon(self._serve_udp, udp_socket)
                nursery.start_soon(self._housekeeping)
                nursery.start_soon(self._standings_upkeep)
                if self._gate is not None:
                    nursery.start_soon(self._gate.run)
                task_status.started(self)
        finally:
            if udp_socket is not None:
                udp_socket.close()
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
            if self._store is not None:
                with trio.CancelScope(shield=True):
                    await self._persist()
            if self.credit is not None:
                with trio.CancelScope(shield=True):
                    await self._save_seeding_credit()
                self.credit.close()

    async def _bind(self) -> tuple[list[trio.SocketListener], trio.socket.SocketType | None]:
        """Bind TCP, then UDP on the same port number; with port 0, retry until both fit."""
        for _ in range(50):
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            bound = listeners[0].socket.getsockname()
            if not self._udp_enabled:
                self.port = bound[1]
                return listeners, None
            udp_socket = trio.socket.socket(listeners[0].socket.family, socket.SOCK_DGRAM)
            try:
                await udp_socket.bind(bound)
            except OSError:
                udp_socket.close()
                for listener in listeners:
                    await listener.aclose()
                if self.port != 0:
                    raise
                continue  # pragma: no cover - port 0: the kernel's TCP pick was taken for UDP
            self.port = bound[1]
            return listeners, udp_socket
        raise OSError("could not bind TCP and UDP on one port number")  # pragma: no cover

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(self._persist_interval)
            self.registry.expire(time.time())
            if self._store is not None:
                await self._persist()

    async def _standings_upkeep(self) -> None:
        while True:
            await trio.sleep(self._standing_refresh)
            await self.refresh_standings()

    async def refresh_standings(self) -> None:
        """Save the seeding time observed so far and re-read the swarms' standings.

        Runs every ``standing_refresh`` seconds; tests call it to make a new
        standing count at once. Without a credit database the observed
        seeding time is dropped (there is nowhere to keep it).
        """
        seeding = self.registry.take_seeding_credit()
        store = self.credit
        if store is None:
            return
        identities = sorted(self.registry.identities())

        def work() -> list[Standing]:
            store.add_seeding_time(seeding)
            return store.standings(identities)

        try:
            standings = await trio.to_thread.run_sync(work)
        except OpenDistroError:
            logger.exception("could not refresh credit standings")
            return
        self.registry.set_standings(standings)

    async def _save_seeding_credit(self) -> None:
        seeding = self.registry.take_seeding_credit()
        if self.credit is not None and seeding:
            try:
                await trio.to_thread.run_sync(self.credit.add_seeding_time, seeding)
            except OpenDistroError:
                logger.exception("could not save observed seeding time")

    async def _persist(self) -> None:
        assert self._store is not None
        snapshot = snapshot_registry(self.registry)
        try:
            await trio.to_thread.run_sync(self._store.save, snapshot)
        except OpenDistroError:
            logger.exception("could not save tracker state")

    # ------------------------------------------------------------ HTTP

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        if self._open_connections >= self._max_connections:
            await stream.aclose()
            return
        self._open_connections += 1
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_HEAD)
        try:
            peer_ip = _normalise_ip(stream.socket.getpeername()[0])
            while True:
                received = await receive_request_with_body(
                    stream, connection, timeout=self._request_timeout, body_limit=_body_limit
                )
                if received is None:
                    break
                request, request_body = received
                path, _, query = request.target.partition(b"?")
                if path == _CREDIT_PATH:
                    status, content_type, body = await self._safe_credit(request, request_body)
                elif path == _ANNOUNCE_PATH and request.method == b"GET":
                    status, content_type, body = await self._safe_announce(query, peer_ip)
                else:
                    status, content_type, body = self._safe_route(request, peer_ip)
                await self._send_response(stream, connection, status, content_type, body)
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    break
                connection.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._send_error(
                stream, connection, exc.error_status_hint, "malformed HTTP request"
            )
        except (*_CONNECTION_ERRORS, h11.LocalProtocolError):
            pass  # the client went away or broke off mid-request: nothing to answer
        finally:
            self._open_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _send_response(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        status: int,
        content_type: str,
        body: bytes,
        *,
        close: bool = False,
    ) -> None:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Server", "opendistro-tracker"),
        ]
        if close:
            headers.append(("Connection", "close"))
        data = connection.send(h11.Response(status_code=status, headers=headers))
        data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
        data += connection.send(h11.EndOfMessage()) or b""
        with trio.move_on_after(self._request_timeout):
            await stream.send_all(data)

    async def _send_error(
        self, stream: trio.SocketStream, connection: h11.Connection, status: int, reason: str
    ) -> None:
        """Answer a request h11 could not parse, if the connection still allows a response."""
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # pragma: no cover
            return  # (h11 raises only before our response starts; kept as a guard)
        with contextlib.suppress(*_CONNECTION_ERRORS, h11.ProtocolError):
            await self._send_response(
                stream, connection, status, "text/plain", encode_failure(reason), close=True
            )

    def _safe_route(self, request: h11.Request, peer_ip: str) -> tuple[int, str, bytes]:
        """Route, answering 500 on a bug instead of letting it escape.

        An exception leaving a connection handler would cancel the whole
        server's nursery, so one bad request would take down every swarm.
        """
        try:
            return self._route(request, peer_ip)
        except Exception:  # pragma: no cover - no known request makes a route raise
            logger.exception("tracker request handler failed")
            return 500, "text/plain", encode_failure("internal tracker error")

    def _route(self, request: h11.Request, peer_ip: str) -> tuple[int, str, bytes]:
        path, _, query = request.target.partition(b"?")
        if request.method != b"GET":
            return 405, "text/plain", encode_failure("only GET is supported")
        if path == b"/scrape":
            self.counters.scrapes += 1
            return 200, "text/plain", self._http_scrape(query)
        if path == b"/stats.json":
            # Exactly the four totals it always had: clients may compare it whole.
            # Everything newer is in /health.json's "tracker" section.
            summary = tracker_summary(self.registry, self.counters)
            body = json.dumps({key: summary[key] for key in _STATS_KEYS}).encode()
            return 200, "application/json", body
        if path == b"/health.json":
            return self._health(query)
        if path == b"/metrics":
            text = render_prometheus(self.registry, self.counters)
            return 200, PROMETHEUS_CONTENT_TYPE, text.encode()
        return 404, "text/plain", encode_failure("not found")

    def _health(self, query: bytes) -> tuple[int, str, bytes]:
        """``/health.json[?info_hash=…]``: tracker totals and per-torrent health.

        ``info_hash`` (up to 32, repeated) is 40 hex digits or the raw 20 bytes
        percent-encoded as in a scrape; with none, the largest swarms are listed.
        """
        try:
            wanted = _health_query(query)
        except TrackerError as exc:
            return 400, "application/json", json.dumps({"error": str(exc)}).encode()
        if wanted:
            chosen = [
                (info_hash, self.registry.swarm(info_hash) or Swarm())
                for info_hash in wanted
                if self.registry.is_allowed(info_hash)
            ]
        else:
            chosen = largest_swarms(self.registry, _MAX_HEALTH_TORRENTS)
        document = {
            "tracker": tracker_summary(self.registry, self.counters),
            "torrents": [
                torrent_health(self.registry, info_hash, swarm).to_json()
                for info_hash, swarm in chosen
            ],
        }
        return 200, "application/json", json.dumps(document).encode()

    async def _safe_credit(self, request: h11.Request, body: bytes) -> tuple[int, str, bytes]:
        """``/credit``: submit receipts (POST) or read a standing (GET), in a worker thread."""
        try:
            status, content_type, answer, result = await trio.to_thread.run_sync(
                self._credit, request, body
            )
        except Exception:
            logger.exception("tracker credit handler failed")
            return 500, "text/plain", encode_failure("internal tracker error")
        # Counted here, in the trio thread: worker threads may run side by side.
        if result is not None:
            self.counters.credit_accepted += result.accepted
            self.counters.credit_stale += result.stale
            self.counters.credit_rejected += result.rejected
        elif request.method == b"POST" and status in (400, 413):
            self.counters.credit_refused_submissions += 1
        return status, content_type, answer

    def _credit(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, str, bytes, SubmitResult | None]:
        store = self.credit
        if store is None:
            return 404, "text/plain", encode_failure("this tracker keeps no credit"), None
        if request.method == b"POST":
            try:
                receipts = decode_submission(body)
            except TrackerError as exc:
                return 400, "text/plain", encode_failure(str(exc)), None
            result = store.submit(receipts)
            return 200, "text/plain", result.encode(), result
        status, content_type, answer = self._standing(store, request)
        return status, content_type, answer, None

    def _standing(self, store: CreditStore, request: h11.Request) -> tuple[int, str, bytes]:
        """``GET /credit?identity=HEX``: one identity's standing."""
        if request.method == b"GET":
            query = request.target.partition(b"?")[2].decode("latin-1")
            values = parse_qs(query).get("identity", [])
            try:
                identity = bytes.fromhex(values[0]) if len(values) == 1 else b""
            except ValueError:
                identity = b""
            if len(identity) != 32:
                return 400, "text/plain", encode_failure("identity must be 64 hex digits")
            return 200, "text/plain", store.standing(identity).encode()
        return 405, "text/plain", encode_failure("/credit takes GET or POST")

    async def _safe_announce(self, query: bytes, peer_ip: str) -> tuple[int, str, bytes]:
        try:
            return 200, "text/plain", await self._http_announce(query, peer_ip)
        except Exception:
            logger.exception("tracker announce handler failed")
            return 500, "text/plain", encode_failure("internal tracker error")

    def _announce_allowed(self, ip: str) -> bool:
        """Spend one of ``ip``'s announces (see ``limits``); False when it has none left."""
        if not self.limits.limits_ip(ip):
            return True
        return self._announces_by_ip.allow(ip, time.monotonic())

    async def _http_announce(self, query: bytes, peer_ip: str) -> bytes:
        """Parse, check the identity proof, wait for a turn if rate-limited, then answer."""
        if not self._announce_allowed(peer_ip):
            return encode_failure(_TOO_OFTEN)
        try:
            request = AnnounceRequest.from_query(query)
            check = self.registry.check_identity(request, time.time())
            if check.identity is not None and not self.registry.knows_standing(check.identity):
                await self._learn_standing(check.identity)
            if self._gate is not None:
                await self._gate.admit(self.registry.priority(check.identity))
            ip = _trusted_ip(request.ip, peer_ip)
            response = self.registry.announce(request, ip, time.time(), identity_check=check)
            if self._on_announce is not None:
                self._on_announce(request, ip)
        except TrackerError as exc:
            return encode_failure(str(exc))
        return response.encode(compact=request.compact)

    async def _learn_standing(self, identity: bytes) -> None:
        """Read a newly seen identity's standing, so its first announce already counts it."""
        store = self.credit
        if store is None:
            return
        try:
            standing = await trio.to_thread.run_sync(store.standing, identity)
        except OpenDistroError:
            logger.exception("could not read a credit standing")
            return
        self.registry.remember_standing(standing)

    def _http_scrape(self, query: bytes) -> bytes:
        try:
            info_hashes = parse_scrape_query(query)
        except TrackerError as exc:
            return encode_failure(str(exc))
        return encode_scrape_response(self.registry.scrape(info_hashes))

    # ------------------------------------------------------------ UDP

    async def _serve_udp(self, udp_socket: trio.socket.SocketType) -> None:
        ipv6 = udp_socket.family == socket.AF_INET6
        while True:
            try:
                data, address = await udp_socket.recvfrom(_UDP_PACKET_SIZE)
            except OSError:  # pragma: no cover - Windows: ICMP errors of earlier replies
                continue
            # On a dual-stack socket an IPv4 sender appears as ::ffff:a.b.c.d; it
            # announced over IPv4, so it gets IPv4 peers in the IPv4 format.
            sender_ipv6 = ipv6 and ":" in _normalise_ip(address[0])
            try:
                reply = self._udp_reply(data, (address[0], address[1]), ipv6=sender_ipv6)
            except Exception:  # a bug must not stop the UDP service for everyone
                logger.exception("UDP tracker handler failed")
                continue
            if reply is not None:
                with contextlib.suppress(OSError):
                    await udp_socket.sendto(reply, address)

    def _udp_reply(self, data: bytes, address: tuple[str, int], *, ipv6: bool) -> bytes | None:
        """The reply to one datagram, or None to drop it (malformed packets get no answer)."""
        now = time.time()
        try:
            packet = udp_protocol.parse_request(data)
        except TrackerError:
            return None
        if isinstance(packet, udp_protocol.ConnectRequest):
            return udp_protocol.encode_connect_response(
                packet.transaction_id, self._issuer.issue(address, now)
            )
        if not self._issuer.is_valid(packet.connection_id, address, now):
            return udp_protocol.encode_error(
                packet.transaction_id, "connection id expired or invalid"
            )
        if isinstance(packet, udp_protocol.UdpScrapeRequest):
            stats = self.registry.scrape(packet.info_hashes)
            return udp_protocol.encode_scrape_response(
                packet.transaction_id, packet.info_hashes, stats
            )
        request = packet.request
        if not self._announce_allowed(_normalise_ip(address[0])):
            return udp_protocol.encode_error(packet.transaction_id, _TOO_OFTEN)
        try:
            ip = _trusted_ip(request.ip, _normalise_ip(address[0]))
            response = self.registry.announce(request, ip, now)
            if self._on_announce is not None:
                self._on_announce(request, ip)
        except TrackerError as exc:
            return udp_protocol.encode_error(packet.transaction_id, str(exc))
        return udp_protocol.encode_announce_response(packet.transaction_id, response, ipv6=ipv6)
