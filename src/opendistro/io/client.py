"""The embeddable client: one listening socket, many torrents, many peers.

Usage::

    async with opendistro.Client(host="127.0.0.1") as client:
        torrent = await client.add_torrent(metainfo, download_dir)
        await torrent.complete.wait()

Leaving the ``async with`` block cancels every peer task, tells the trackers we
left, and closes files; cancelling the surrounding scope does the same.

With a ``state_dir`` the client keeps seeding credit (``spec/od-credit.md``):
its identity and ledger live there, peers that speak ``od_credit`` sign
receipts for what we upload, and the receipts go to the torrents' trackers.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import secrets
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

import trio

from .. import __version__
from ..errors import ConfigError, EncryptionError, OpenDistroError
from ..limits import Limits
from ..magnet import MagnetLink
from ..metainfo import Metainfo
from ..swarm.session import SessionConfig
from ..swarm.sources import SourcePolicy
from ..wire.connection import PeerConnection
from ..wire.extensions.ut_pex import PEX_INTERVAL, is_local_address
from ..wire.messages import Handshake
from ..wire.mse import EncryptionPolicy
from .credit import CreditOptions, CreditService
from .dht import DHTService
from .mse_stream import negotiate_incoming, negotiate_outgoing
from .peer import PeerSession
from .throttle import Throttle
from .torrent import Torrent

__all__ = ["Client"]

HANDSHAKE_LENGTH = 68
HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0


def make_peer_id() -> bytes:
    """An Azureus-style peer id: client code and version, then random bytes."""
    major, minor, *_ = [*__version__.split("."), "0", "0"]
    prefix = f"-OD{int(major):01d}{int(minor):02d}0-".encode()
    return prefix + secrets.token_bytes(20 - len(prefix))


class Client:
    """A BitTorrent client that downloads and seeds many torrents at once."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        encryption: EncryptionPolicy = EncryptionPolicy.PREFER,
        max_peers_per_torrent: int | None = None,
        upload_slots: int = 4,
        session_config: SessionConfig | None = None,
        upload_limit: float | None = None,
        download_limit: float | None = None,
        pex_interval: float = PEX_INTERVAL,
        peer_id: bytes | None = None,
        mirror_retries: int = 5,
        dht_bootstrap: Sequence[tuple[str, int]] | None = None,
        dht_port: int | None = None,
        log: Callable[[str], None] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        credit: bool = True,
        credit_options: CreditOptions | None = None,
        limits: Limits | None = None,
    ) -> None:
        """``limits`` bounds what peers may make us hold or do (see
        :class:`~opendistro.limits.Limits`); ``max_peers_per_torrent``, if given,
        overrides its field of that name.

        ``dht_bootstrap`` (nodes to join through; empty: be the first node) or
        ``dht_port`` turns on the Mainline DHT (BEP 5) on UDP ``host:dht_port``;
        torrents that are not private then also find peers there.

        ``state_dir`` holds what outlives a run: the credit identity and ledger.
        Credit is kept when a state folder is given and ``credit`` is true;
        without one the client writes nothing outside the torrents' folders."""
        if peer_id is not None and len(peer_id) != 20:
            raise ConfigError("peer id must be 20 bytes")
        if upload_slots < 1:
            raise ConfigError("upload slots must be positive")
        limits = limits or Limits()
        if max_peers_per_torrent is not None:
            limits = dataclasses.replace(limits, max_peers_per_torrent=max_peers_per_torrent)
        self.limits = limits
        self.host = host
        self.port = port
        self.encryption = encryption
        self.session_config = session_config or SessionConfig(upload_slots=upload_slots)
        self.pex_interval = pex_interval
        self.mirror_retries = mirror_retries
        """Failures in a row after which a mirror counts as down (with no peers: give up)."""
        self.upload_throttle = Throttle(upload_limit)
        self.download_throttle = Throttle(download_limit)
        self.peer_id = peer_id or make_peer_id()
        self.user_agent = f"opendistro {__version__}"
        self._log = log
        self._torrents: dict[bytes, Torrent] = {}
        self._dialing: set[tuple[bytes, tuple[str, int]]] = set()
        # The live session with each (info-hash, remote peer id), registered as soon as the
        # handshake is through, so a second connection to the same peer is seen at once.
        self._sessions: dict[tuple[bytes, bytes], PeerSession] = {}
        self._connections_by_host: collections.Counter[str] = collections.Counter()
        """Open connections (dialling, handshaking or running) per remote IP address."""
        self._banned_ids: set[bytes] = set()
        self._banned_addresses: set[tuple[str, int]] = set()
        self._banned_hosts: set[str] = set()
        self.banned: dict[str, str] = {}
        """Every peer banned for sending bad data: its label and why."""
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._credit_wanted = credit and state_dir is not None
        self._credit_options = credit_options
        self.credit: CreditService | None = None
        """Our credit identity and ledger while running (None: no credit kept)."""
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self.dht: DHTService | None = None
        if dht_bootstrap is not None or dht_port is not None:
            self.dht = DHTService(
                host=host, port=dht_port or 0, bootstrap=dht_bootstrap or (), log=log
            )

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    @property
    def max_peers_per_torrent(self) -> int:
        return self.limits.max_peers_per_torrent

    @property
    def torrents(self) -> list[Torrent]:
        return list(self._torrents.values())

    # -- bans ---------------------------------------------------------------

    def ban(self, peer: PeerSession, reason: str) -> None:
        """Refuse this peer from now on, for every torrent, for the client's lifetime.

        On the Internet a liar is banned by IP address, as libtorrent does
        (a new port or peer id is free to make). On loopback and private
        networks many honest peers share one address, so there the ban names
        the peer's listening address and peer id instead.
        """
        host, port = peer.address
        remote_id = peer.connection.remote_peer_id
        if remote_id is not None:
            self._banned_ids.add(remote_id)
        if peer.dialed:
            self._banned_addresses.add((host, port))
        extensions = peer.connection.remote_extensions
        if extensions is not None and extensions.p:
            self._banned_addresses.add((host, extensions.p))
        if not is_local_address(host):
            self._banned_hosts.add(host)
        self.banned[peer.label] = reason
        self.log(f"banned {peer.label}: {reason}")

    def is_banned(self, address: tuple[str, int], peer_id: bytes | None = None) -> bool:
        """Whether we refuse to talk to this address (or peer id)."""
        return (
            address in self._banned_addresses
            or address[0] in self._banned_hosts
            or (peer_id is not None and peer_id in self._banned_ids)
        )

    # -- life cycle -------------------------------------------------------

    async def __aenter__(self) -> Client:
        if self._credit_wanted:
            assert self.state_dir is not None
            self.credit = CreditService.open(
                self.state_dir, options=self._credit_options, log=self._log
            )
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            self.port = listeners[0].socket.getsockname()[1]
            self._nursery.start_soon(trio.serve_listeners, self._accept, listeners)
            if self.dht is not None:
                await self._nursery.start(self.dht.run)
            if self.credit is not None:
                await self._nursery.start(self.credit.run, lambda: self.torrents)
        except BaseException:
            await stack.__aexit__(None, None, None)
            self._close_credit()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None and self._nursery is not None
        for torrent in self.torrents:
            torrent.stopped.set()
        try:
            if self.credit is not None:
                # Peers are still connected: ask them for the receipts they owe us.
                with trio.CancelScope(shield=True):
                    await self.credit.stop(self.torrents)
        finally:
            self._nursery.cancel_scope.cancel()
            try:
                # The body's own exception is not fed to the nursery, so it reaches the
                # caller as it was raised rather than wrapped in an ExceptionGroup.
                await self._stack.__aexit__(None, None, None)
            finally:
                for torrent in self.torrents:
                    torrent.close()
                self._close_credit()
        return None

    def _close_credit(self) -> None:
        """Write the last ledger changes (peers that just left) and close the ledger."""
        if self.credit is not None:
            self.credit.close()

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise ConfigError("use the client inside 'async with'")
        return self._nursery

    # -- adding torrents --------------------------------------------------

    async def add_torrent(
        self,
        metainfo: Metainfo,
        download_dir: str | os.PathLike[str],
        *,
        peers: Sequence[tuple[str, int]] = (),
        seed_only: bool = False,
        upload_limit: float | None = None,
        download_limit: float | None = None,
        sequential: bool = False,
        sources: SourcePolicy = SourcePolicy.PREFER_P2P,
        mirrors: Sequence[str] = (),
        delta_index: bytes | None = None,
        observe: bool = False,
    ) -> Torrent:
        """Download (or, with ``seed_only``, seed from) ``download_dir``; returns at once.

        ``sequential`` fetches pieces in order (for streaming) instead of rarest first.
        ``mirrors`` are base URLs of HTTP mirrors (BEP 19 layout) used beside
        the torrent's own web seeds (``url-list``); ``sources`` says when they
        are used beside its peers (see :class:`~opendistro.swarm.sources.SourcePolicy`).
        ``observe`` joins the swarm to watch it (:meth:`Torrent.health`) without
        ever declaring interest or requesting a block: nothing is downloaded.
        ``delta_index`` (an encoded delta index of this torrent) is served to peers
        updating from an older version once the data is complete; by default the
        one published beside the data (``NAME.odindex``) is.

        ``upload_limit`` and ``download_limit`` (bytes per second) cap this
        torrent; the client's own limits apply on top.
        """
        torrent = Torrent(
            self,
            info_hash=metainfo.wire_info_hash,
            download_dir=Path(download_dir),
            metainfo=metainfo,
            seed_only=seed_only,
            sequential=sequential,
            sources=sources,
            mirrors=mirrors,
            delta_index=delta_index,
            observe=observe,
        )
        torrent.upload_throttle.set_rate(upload_limit)
        torrent.download_throttle.set_rate(download_limit)
        return await self._start(torrent, peers)

    async def seed(
        self,
        metainfo: Metainfo,
        data_dir: str | os.PathLike[str],
        *,
        peers: Sequence[tuple[str, int]] = (),
        upload_limit: float | None = None,
    ) -> Torrent:
        """Seed the data found in ``data_dir`` (the folder containing the torrent's name).

        The data is hash-checked first; a mismatch raises
        :class:`~opendistro.errors.StorageError`.
        """
        torrent = await self.add_torrent(
            metainfo, data_dir, peers=peers, seed_only=True, upload_limit=upload_limit
        )
        await torrent.complete.wait()
        if torrent.error is not None:
            raise OpenDistroError(torrent.error)
        return torrent

    async def add_magnet(
        self,
        magnet: MagnetLink | str,
        download_dir: str | os.PathLike[str],
        *,
        peers: Sequence[tuple[str, int]] = (),
        sources: SourcePolicy = SourcePolicy.PREFER_P2P,
        mirrors: Sequence[str] = (),
        observe: bool = False,
    ) -> Torrent:
        """Start from a magnet link: fetch the info dictionary from peers, then download.

        Mirrors (``mirrors`` and the link's ``ws`` web seeds) join once the
        info dictionary is known: they serve file bytes, not metadata.
        ``observe`` fetches the info dictionary only (see :meth:`add_torrent`).
        """
        link = MagnetLink.parse(magnet) if isinstance(magnet, str) else magnet
        torrent = Torrent(
            self,
            info_hash=link.wire_info_hash,
            download_dir=Path(download_dir),
            magnet=link,
            sources=sources,
            mirrors=mirrors,
            observe=observe,
        )
        return await self._start(torrent, peers)

    async def _start(self, torrent: Torrent, peers: Sequence[tuple[str, int]]) -> Torrent:
        nursery = self._require_running()
        if torrent.info_hash in self._torrents:
            raise ConfigError(f"torrent {torrent.info_hash.hex()} is already added")
        self._torrents[torrent.info_hash] = torrent
        await torrent.run(nursery)
        for address in peers:
            self.connect_soon(torrent, address)
        return torrent

    # -- connections ------------------------------------------------------

    def connect_soon(self, torrent: Torrent, address: tuple[str, int]) -> None:
        """Offer a peer address for ``torrent``; it is dialled when a connection slot is free."""
        if self._nursery is None or torrent.stopped.is_set() or not torrent.sources.uses_peers:
            return
        host, port = address
        if port == self.port and host in (self.host, "127.0.0.1", "localhost"):
            return
        if self.is_banned(address):
            return
        torrent.candidates.add((host, port))
        self.dial_more(torrent)

    def connect_now(self, torrent: Torrent, address: tuple[str, int]) -> None:
        """Dial ``address`` for ``torrent`` as soon as a slot is free, even if it failed lately.

        For a peer the user names (as libtorrent's ``connect_peer``): addresses from
        trackers, the DHT and PEX go through :meth:`connect_soon` and its back-off.
        """
        if self._nursery is None or torrent.stopped.is_set() or not torrent.sources.uses_peers:
            return
        if self.is_banned(address):
            return
        torrent.candidates.retry_now(address)
        self.dial_more(torrent)

    def dial_more(self, torrent: Torrent) -> None:
        """Dial the best candidates while the torrent has free connection slots."""
        if self._nursery is None or torrent.stopped.is_set():
            return
        dialing = sum(1 for info_hash, _ in self._dialing if info_hash == torrent.info_hash)
        free = self.max_peers_per_torrent - len(torrent.peers) - dialing
        connected = {peer.address for peer in torrent.peers}
        now = trio.current_time()
        for address in torrent.candidates.next_to_dial(now, free):
            if address in connected:
                torrent.candidates.connected(address)
                continue
            if self.is_banned(address):
                torrent.candidates.forget(address)
                continue
            if not self._take_host_slot(address[0]):
                torrent.candidates.disconnected(address, now)  # try again later
                continue
            self._dialing.add((torrent.info_hash, address))
            self._nursery.start_soon(self._dial, torrent, address)

    def _take_host_slot(self, host: str) -> bool:
        """Count a connection to or from ``host``; False (nothing counted) when it has
        :attr:`Limits.max_connections_per_ip` already."""
        count = self._connections_by_host[host]
        if count >= self.limits.max_connections_per_ip and self.limits.limits_ip(host):
            return False
        self._connections_by_host[host] = count + 1
        return True

    def _free_host_slot(self, host: str) -> None:
        self._connections_by_host[host] -= 1
        if self._connections_by_host[host] <= 0:
            del self._connections_by_host[host]

    async def _open(self, address: tuple[str, int], info_hash: bytes) -> trio.abc.Stream:
        host, port = address
        with trio.fail_after(CONNECT_TIMEOUT):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if self.encryption is EncryptionPolicy.PLAINTEXT:
            return stream
        try:
            return await negotiate_outgoing(
                stream, info_hash, self.encryption, timeout=HANDSHAKE_TIMEOUT
            )
        except EncryptionError:
            await trio.aclose_forcefully(stream)
            if self.encryption is EncryptionPolicy.REQUIRE:
                raise
        # PREFER: the peer does not speak MSE; dial again in plaintext, as libtorrent does
        with trio.fail_after(CONNECT_TIMEOUT):
            return await trio.open_tcp_stream(host, port)

    async def _dial(self, torrent: Torrent, address: tuple[str, int]) -> None:
        """Connect and run a session; the caller took a host slot, which this frees."""
        key = (torrent.info_hash, address)
        try:
            try:
                stream = await self._open(address, torrent.info_hash)
            except (OSError, trio.TooSlowError, OpenDistroError) as exc:
                self.log(f"cannot connect to {address[0]}:{address[1]}: {exc}")
                torrent.candidates.failed(address, trio.current_time())
                return
            finally:
                self._dialing.discard(key)
            ran = await self._run_connection(stream, address, torrent, initiator=True)
        finally:
            self._free_host_slot(address[0])
        if ran:
            torrent.candidates.disconnected(address, trio.current_time())
        else:
            torrent.candidates.failed(address, trio.current_time())
        self.dial_more(torrent)

    async def _accept(self, stream: trio.SocketStream) -> None:
        try:
            host, port, *_ = stream.socket.getpeername()
        except OSError:
            return
        # Refused before any work (MSE costs a Diffie-Hellman exchange): banned hosts,
        # and hosts already holding their share of connections.
        if host in self._banned_hosts or not self._take_host_slot(host):
            self.log(f"refused a connection from {host}:{port}")
            await trio.aclose_forcefully(stream)
            return
        try:
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    negotiated, _ = await negotiate_incoming(
                        stream, list(self._torrents), self.encryption, timeout=HANDSHAKE_TIMEOUT
                    )
            except (OpenDistroError, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
                self.log(f"incoming connection from {host}:{port} failed: {exc}")
                await trio.aclose_forcefully(stream)
                return
            await self._run_connection(negotiated, (host, port), None, initiator=False)
        finally:
            self._free_host_slot(host)

    async def _run_connection(
        self,
        stream: trio.abc.Stream,
        address: tuple[str, int],
        torrent: Torrent | None,
        *,
        initiator: bool,
    ) -> bool:
        """Exchange handshakes, then hand the connection to a PeerSession.

        Returns whether a session ran (False: the handshake failed or was refused).
        """
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                if initiator:
                    assert torrent is not None
                    connection = self._new_connection(torrent, initiator=True)
                    await stream.send_all(connection.send(self._handshake(torrent)))
                head, rest = await _receive_handshake(stream)
                if torrent is None:
                    torrent = self._torrents.get(head[28:48])
                    if torrent is None:
                        raise OpenDistroError("peer asked for a torrent we do not have")
                    connection = self._new_connection(torrent, initiator=False)
                    connection.receive_data(head)
                    await stream.send_all(connection.send(self._handshake(torrent)))
                else:
                    connection.receive_data(head)
        except (OpenDistroError, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            self.log(f"handshake with {address[0]}:{address[1]} failed: {exc}")
            await trio.aclose_forcefully(stream)
            return False
        remote_id = connection.remote_peer_id
        assert remote_id is not None  # known once the handshake is through
        key = (torrent.info_hash, remote_id)
        existing = self._sessions.get(key)
        banned = self.is_banned(address, remote_id)
        full = not initiator and len(torrent.peers) >= self.limits.max_peers_per_torrent
        if remote_id == self.peer_id or banned or full or torrent.stopped.is_set():
            await trio.aclose_forcefully(stream)
            return False
        if existing is not None:
            if not self._keeps_crossed_connection(existing, address, initiator, remote_id):
                await trio.aclose_forcefully(stream)
                return False
            existing.close("the peer dialled us as we dialled it; the other connection is kept")
        if initiator:
            torrent.candidates.connected(address)
        session = PeerSession(
            torrent, torrent.throttled(stream), connection, address, dialed=initiator
        )
        self._sessions[key] = session
        try:
            await session.run(rest)
        finally:
            if self._sessions.get(key) is session:
                del self._sessions[key]
        if session.error:
            self.log(f"peer {session.label} closed: {session.error}")
        return True

    def _keeps_crossed_connection(
        self, existing: PeerSession, address: tuple[str, int], initiator: bool, remote_id: bytes
    ) -> bool:
        """Whether a new connection replaces ``existing`` to the same peer.

        Two clients that learn of each other at once (from a tracker, the DHT, PEX)
        dial each other at once. If each side dropped its second connection, each
        would drop a different one and both would be gone. Both sides keep the
        connection dialled by the peer with the lower peer id instead. A second
        connection in the same direction, or from another host claiming the same
        peer id, never replaces the first.
        """
        if existing.dialed == initiator or existing.address[0] != address[0]:
            return False
        return (self.peer_id < remote_id) == initiator

    def _new_connection(self, torrent: Torrent, *, initiator: bool) -> PeerConnection:
        return PeerConnection(
            info_hash=torrent.info_hash,
            our_peer_id=self.peer_id,
            num_pieces=torrent.metainfo.num_pieces if torrent.metainfo is not None else None,
            initiator=initiator,
            max_message_size=self.limits.max_message_size,
            max_peer_requests=self.limits.max_pending_peer_requests,
        )

    def _handshake(self, torrent: Torrent) -> Handshake:
        return Handshake(info_hash=torrent.info_hash, peer_id=self.peer_id)


async def _receive_handshake(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """Read exactly the 68-byte BitTorrent handshake; return it and any bytes after it."""
    buffer = bytearray()
    while len(buffer) < HANDSHAKE_LENGTH:
        data = await stream.receive_some(HANDSHAKE_LENGTH - len(buffer) + 65536)
        if not data:
            raise OpenDistroError("connection closed during the handshake")
        buffer += data
    return bytes(buffer[:HANDSHAKE_LENGTH]), bytes(buffer[HANDSHAKE_LENGTH:])
