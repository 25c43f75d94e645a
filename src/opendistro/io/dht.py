"""The trio driver of the DHT node: one UDP socket, a receive task and a timer task.

All protocol logic lives in :class:`~opendistro.dht.DHTNode`; this module
only moves datagrams between it and a socket, calls it when its next
deadline comes, and turns its lookups into awaitable calls. Time is
``trio.current_time()``, so tests can drive it with a mock clock.

Usage::

    async with DHTService(host="127.0.0.1", bootstrap=[("127.0.0.1", 6881)]) as dht:
        peers = await dht.announce(info_hash, port=51413)

:func:`announce_torrent` is the per-torrent loop a :class:`~opendistro.io.client.Client`
runs beside its trackers: announce every 15 minutes, sooner while nothing is found.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from ..dht.compact import Address
from ..dht.lookup import Lookup
from ..dht.node import DHTConfig, DHTNode
from ..errors import ConfigError

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = [
    "ANNOUNCE_INTERVAL",
    "PUBLIC_BOOTSTRAP_NODES",
    "DHTService",
    "announce_torrent",
    "dht_info_hashes",
]

ANNOUNCE_INTERVAL = 15 * 60.0
"""How often a torrent re-announces (libtorrent's ``dht_announce_interval``); stored
announces live twice as long."""
FIRST_RETRY = 5.0
"""While a download has found no peer, look again after this, doubling up to the interval."""
PUBLIC_BOOTSTRAP_NODES: tuple[Address, ...] = (
    ("router.bittorrent.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("dht.libtorrent.org", 25401),
)
"""Well-known entry points of the public DHT. Never used unless asked for by name
(``--dht-bootstrap public`` on the command line)."""
_RECEIVE_SIZE = 4096


def _read_node_id(path: Path) -> bytes | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        node_id = bytes.fromhex(text)
    except ValueError:
        return None
    return node_id if len(node_id) == 20 else None


class DHTService:
    """A DHT node on a UDP socket; run it with ``async with`` or ``nursery.start(service.run)``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Sequence[Address] = (),
        node_id: bytes | None = None,
        id_file: str | Path | None = None,
        config: DHTConfig | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """``id_file`` keeps the node id across runs (read if present, else written),
        so the nodes that know us keep finding us where they expect."""
        if not 0 <= port < 65536:
            raise ConfigError(f"DHT port must be 0 to 65535, got {port}")
        self.host = host
        self.port = port
        self.bootstrap_nodes = tuple(bootstrap)
        self._id_file = Path(id_file) if id_file is not None else None
        if node_id is None and self._id_file is not None:
            node_id = _read_node_id(self._id_file)
        config = config or DHTConfig()
        if config.external_ip is None and _is_loopback(host):
            # On loopback the address others see is the one we bind: no need to learn it.
            config = dataclasses.replace(config, external_ip=host)
        self.node = DHTNode(
            trio.current_time() if _in_trio() else 0.0,
            config=config,
            node_id=node_id,
            rng=random.SystemRandom(),
        )
        if self._id_file is not None and _read_node_id(self._id_file) != self.node.node_id:
            self._id_file.write_text(self.node.node_id.hex() + "\n")
        self._log = log
        self._socket: trio.socket.SocketType | None = None
        self._changed = trio.Event()
        self.bootstrapped = trio.Event()
        self._routers: list[Address] = []
        self._cancel_scope: trio.CancelScope | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    # -- running ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report started, then serve until cancelled."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            self._socket = sock
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, sock)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._bootstrap)
                task_status.started()

    async def __aenter__(self) -> DHTService:
        self._cancel_scope = trio.CancelScope()
        manager = self._nursery_cm = trio.open_nursery()
        nursery = await manager.__aenter__()
        try:
            await nursery.start(self._run_in_scope)
        except BaseException:
            self._cancel_scope.cancel()
            await manager.__aexit__(None, None, None)
            raise
        return self

    async def _run_in_scope(self, *, task_status: trio.TaskStatus[None]) -> None:
        assert self._cancel_scope is not None
        with self._cancel_scope:
            await self.run(task_status=task_status)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._cancel_scope is not None and self._nursery_cm is not None
        self._cancel_scope.cancel()
        await self._nursery_cm.__aexit__(None, None, None)
        return None

    async def _receive_loop(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, address = await sock.recvfrom(_RECEIVE_SIZE)
            except OSError:
                continue  # e.g. an ICMP port-unreachable reported on the socket
            self.node.datagram_received(data, (address[0], address[1]), trio.current_time())
            await self._flush()

    async def _timer_loop(self) -> None:
        while True:
            with trio.move_on_at(self.node.next_deadline()):
                await self._changed.wait()
            self._changed = trio.Event()
            self.node.advance(trio.current_time())
            # Sent without waking this loop: it reads the next deadline anyway,
            # and waking itself would make it spin.
            await self._send_pending()

    async def _flush(self) -> None:
        """Send what the node queued, and wake the timer loop: deadlines may have moved earlier."""
        await self._send_pending()
        self._changed.set()

    async def _send_pending(self) -> None:
        sock = self._socket
        if sock is None:
            return
        for data, address in self.node.datagrams_to_send():
            try:
                await sock.sendto(data, address)
            except OSError as exc:
                self.log(f"DHT: cannot send to {address[0]}:{address[1]}: {exc}")

    async def _resolve(self, nodes: Sequence[Address]) -> list[Address]:
        resolved: list[Address] = []
        for host, port in nodes:
            try:
                infos = await trio.socket.getaddrinfo(
                    host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
                )
            except OSError as exc:
                self.log(f"DHT: cannot resolve bootstrap node {host}:{port}: {exc}")
                continue
            for *_, sockaddr in infos[:1]:
                resolved.append((str(sockaddr[0]), int(sockaddr[1])))
        return resolved

    async def _bootstrap(self) -> None:
        addresses = self._routers = await self._resolve(self.bootstrap_nodes)
        lookup = self.node.bootstrap(addresses, trio.current_time())
        await self._flush()
        await self._wait(lookup)
        self.log(f"DHT: bootstrapped, {len(self.node.table)} nodes in the routing table")
        self.bootstrapped.set()

    # -- public API ---------------------------------------------------------

    def _fallback(self) -> list[Address]:
        """The bootstrap nodes, while our routing table is too thin to start a lookup alone
        (the network was unreachable at start-up, or everyone we knew left)."""
        return self._routers if len(self.node.table) < self.node.config.k else []

    async def _wait(self, lookup: Lookup) -> Lookup:
        done = trio.Event()
        lookup.add_done_callback(lambda _: done.set())
        await done.wait()
        return lookup

    async def add_node(self, address: Address) -> None:
        """Ping a node we heard of (a peer's BEP 5 PORT message, a saved node...)."""
        self.node.ping(address, trio.current_time())
        await self._flush()

    async def find_node(self, target: bytes) -> Lookup:
        lookup = self.node.find_node(target, trio.current_time())
        await self._flush()
        return await self._wait(lookup)

    async def get_peers(self, info_hash: bytes) -> list[Address]:
        """Peers of ``info_hash`` (20 bytes: a v1 hash or a truncated v2 hash)."""
        await self.bootstrapped.wait()
        lookup = self.node.get_peers(info_hash, trio.current_time(), extra=self._fallback())
        await self._flush()
        await self._wait(lookup)
        return list(lookup.peers)

    async def announce(
        self, info_hash: bytes, port: int, *, implied_port: bool = False
    ) -> list[Address]:
        """Look up ``info_hash``, announce that we have it on ``port``; return the peers found."""
        if not 0 < port < 65536:
            raise ConfigError(f"cannot announce port {port}")
        await self.bootstrapped.wait()
        lookup = self.node.get_peers(
            info_hash,
            trio.current_time(),
            announce_port=port,
            implied_port=implied_port,
            extra=self._fallback(),
        )
        await self._flush()
        await self._wait(lookup)
        await self._flush()  # the announces themselves
        return list(lookup.peers)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _in_trio() -> bool:
    try:
        trio.current_time()
    except RuntimeError:
        return False
    return True


# -- torrents -------------------------------------------------------------------


def dht_info_hashes(torrent: Torrent) -> list[bytes]:
    """The 20-byte keys a torrent is found under: its v1 hash, its v2 hash truncated (BEP 52)."""
    source = torrent.metainfo if torrent.metainfo is not None else torrent.magnet
    if source is None:
        return [torrent.info_hash]
    keys = []
    if source.info_hash_v1 is not None:
        keys.append(source.info_hash_v1)
    if source.info_hash_v2 is not None:
        keys.append(source.info_hash_v2[:20])
    return keys


def _is_private(torrent: Torrent) -> bool:
    return torrent.metainfo is not None and torrent.metainfo.private


async def announce_torrent(dht: DHTService, torrent: Torrent) -> None:
    """Keep ``torrent`` announced on the DHT and hand the peers found to its client.

    Private torrents (BEP 27) are never announced nor looked up; a magnet whose
    metadata turns out private stops here once it knows.
    """
    retry = FIRST_RETRY
    client = torrent.client
    while not torrent.stopped.is_set() and not _is_private(torrent):
        found = 0
        for info_hash in dht_info_hashes(torrent):
            peers = await dht.announce(info_hash, client.port)
            for address in peers:
                client.connect_soon(torrent, address)
            found += len(peers)
        if found or torrent.complete.is_set():
            wait = ANNOUNCE_INTERVAL
        else:
            wait, retry = retry, min(retry * 2, ANNOUNCE_INTERVAL)
        with trio.move_on_after(wait):
            await torrent.stopped.wait()
