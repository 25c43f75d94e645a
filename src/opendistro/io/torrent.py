"""One torrent inside a running client: its data, its peers, and its trackers.

This is the trio driver of the sans-I/O pieces: the swarm session decides what
to send, request and upload; the piece verifier decides whether a piece is
good; file storage reads and writes it. Blocks are assembled in memory per
piece and written once, after the hash check, so nothing unverified ever
reaches disk and memory stays bounded by the pieces in flight.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import ipaddress
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import trio

from ..bitfield import Bitfield
from ..delta.index import MAX_INDEX_SIZE
from ..errors import (
    ConfigError,
    IntegrityError,
    MetainfoError,
    OpenDistroError,
    StorageError,
    TrackerError,
)
from ..integrity.pieces import PieceVerifier
from ..magnet import MagnetLink
from ..metainfo import Metainfo
from ..mirrors.webseed import DELTA_INDEX_SUFFIX
from ..storage.check import check_pieces
from ..storage.files import FileStorage
from ..storage.resume import ResumeStore
from ..swarm.candidates import PeerCandidates
from ..swarm.health import SwarmHealth
from ..swarm.picker import DEFAULT_PRIORITY
from ..swarm.session import (
    Action,
    DropPeer,
    PieceUnverifiable,
    SendMessage,
    ServeBlock,
    StoreBlock,
    SwarmComplete,
    SwarmSession,
    VerifyPiece,
)
from ..swarm.sources import SourcePolicy
from ..tracker.client import announce
from ..tracker.protocol import AnnounceEvent, AnnounceRequest
from ..tracker.tiers import TrackerTiers
from ..wire.connection import Event
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.extensions.ut_metadata import (
    MetadataAssembler,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
    metadata_response,
)
from ..wire.extensions.ut_pex import (
    PexPeer,
    PexReceiver,
    PexSender,
    decode_pex,
    encode_pex,
    is_local_address,
)
from ..wire.messages import (
    Extended,
    Hashes,
    HashReject,
    HashRequest,
    HaveNone,
    Interested,
    Piece,
    Request,
)
from .credit import TorrentCredit
from .delta_server import DeltaServer
from .dht import announce_torrent
from .health import HealthMonitor
from .mirrors import MirrorSource, MirrorSources
from .peer import PeerSession
from .throttle import Throttle, ThrottledStream
from .v2_hashes import V2Hashes, lacks_piece_layers

if TYPE_CHECKING:
    from .client import Client

__all__ = ["OUR_EXTENSIONS", "Source", "Torrent", "TorrentState", "TorrentStatus"]

Source: TypeAlias = PeerSession | MirrorSource
"""Who the swarm session downloads from: a peer connection or an HTTP mirror."""

OUR_EXTENSIONS = {"ut_metadata": 3, "ut_pex": 1, "od_delta": 4}
"""BEP 10 message ids we assign to the extensions we speak."""

RESUME_SAVE_INTERVAL = 5.0
HASHERS = 2
"""Worker threads hashing pieces at once: hashlib lets go of the GIL, so two cores help."""
HASH_BATCH_BYTES = 1 << 20
"""Queued pieces one worker-thread call may take, at least one piece whatever its size."""
TRACKER_RETRY = 15.0
MAX_ANNOUNCE_INTERVAL = 2 * 3600
"""A tracker may ask for rarer announces, but not for none: an interval of years
(any integer a tracker sends) would otherwise stop announcing for good."""
TICK_INTERVAL = 1.0


class TorrentState(enum.Enum):
    CHECKING = "checking"
    METADATA = "fetching metadata"
    HASHES = "fetching piece hashes"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    FAILED = "failed"


@dataclass(frozen=True)
class TorrentStatus:
    """A snapshot of a torrent's progress, for progress bars and reports."""

    name: str
    state: TorrentState
    total_bytes: int
    verified_bytes: int
    download_rate: float
    upload_rate: float
    peers: int
    bytes_from_peers: int
    bytes_uploaded: int
    hash_failures: int
    error: str | None
    bytes_from_mirrors: int = 0

    @property
    def fraction(self) -> float:
        return self.verified_bytes / self.total_bytes if self.total_bytes else 0.0


class Torrent:
    """A torrent being downloaded or seeded by a :class:`~opendistro.io.client.Client`."""

    def __init__(
        self,
        client: Client,
        *,
        info_hash: bytes,
        download_dir: Path,
        metainfo: Metainfo | None = None,
        magnet: MagnetLink | None = None,
        seed_only: bool = False,
        sequential: bool = False,
        sources: SourcePolicy = SourcePolicy.PREFER_P2P,
        mirrors: Sequence[str] = (),
        delta_index: bytes | None = None,
        observe: bool = False,
    ) -> None:
        self.client = client
        self.info_hash = info_hash
        self.download_dir = download_dir
        self.metainfo = metainfo
        self.magnet = magnet
        self.seed_only = seed_only
        self.sequential = sequential
        self.observe = observe
        """Never declare interest nor request: watch the swarm, download nothing."""
        self.sources = sources
        self.extra_mirrors = tuple(mirrors)
        """Mirror base URLs given besides the torrent's ``url-list`` (a mirror list, Metalink)."""
        self.mirrors: MirrorSources | None = None
        self._file_priorities: dict[int, int] = {}
        self.state = TorrentState.METADATA if metainfo is None else TorrentState.CHECKING
        self.storage: FileStorage | None = None
        self.session: SwarmSession[Source] | None = None
        self.verifier: PieceVerifier | None = None
        self.have: Bitfield | None = None
        self.peers: set[PeerSession] = set()
        self.bytes_from_peer: collections.Counter[str] = collections.Counter()
        self.bytes_to_peer: collections.Counter[str] = collections.Counter()
        self.bytes_by_peer_id: collections.Counter[bytes] = collections.Counter()
        self.hash_failures = 0
        self.error: str | None = None
        self.final_path: Path | None = None
        self.metadata_ready = trio.Event()
        self.complete = trio.Event()
        self.stopped = trio.Event()
        self._buffers: dict[int, bytearray] = {}
        self._assembler: MetadataAssembler | None = None
        self._unverified: collections.deque[tuple[int, bytearray]] = collections.deque()
        self._hashers = 0
        self.v2_hashes = V2Hashes(self)
        self.delta_server = DeltaServer(self)
        self.credit = TorrentCredit(self, client.credit) if client.credit is not None else None
        """od_credit on this torrent's connections (None: the client keeps no credit)."""
        self._delta_index = delta_index
        self.candidates = PeerCandidates()
        self._pex_senders: dict[PeerSession, PexSender] = {}
        self._pex_receivers: dict[PeerSession, PexReceiver] = {}
        self.upload_throttle = Throttle(None, parent=client.upload_throttle)
        self.download_throttle = Throttle(None, parent=client.download_throttle)
        self._resume: ResumeStore | None = None
        self._resume_dirty = False
        self.nursery: trio.Nursery | None = None
        self._started_at = trio.current_time()
        self.health_monitor = HealthMonitor(self)

    # -- public view ------------------------------------------------------

    @property
    def name(self) -> str:
        if self.metainfo is not None:
            return self.metainfo.name
        if self.magnet is not None and self.magnet.display_name:
            return self.magnet.display_name
        return self.info_hash.hex()

    def status(self) -> TorrentStatus:
        now = trio.current_time()
        total = self.metainfo.total_length if self.metainfo else 0
        verified = 0
        if self.have is not None and self.metainfo is not None:
            verified = sum(self.metainfo.piece_size(index) for index in self.have)
        return TorrentStatus(
            name=self.name,
            state=self.state,
            total_bytes=total,
            verified_bytes=verified,
            download_rate=self._total_rate(now, upload=False),
            upload_rate=self._total_rate(now, upload=True),
            peers=len(self.peers),
            bytes_from_peers=sum(self.bytes_from_peer.values()),
            bytes_uploaded=sum(self.bytes_to_peer.values()),
            hash_failures=self.hash_failures,
            error=self.error,
            bytes_from_mirrors=self.mirrors.bytes_received if self.mirrors else 0,
        )

    def _total_rate(self, now: float, *, upload: bool) -> float:
        session = self.session
        if session is None:
            return 0.0
        rate = session.upload_rate if upload else session.download_rate
        return sum(rate(peer, now) for peer in session.peers)

    def health(self, *, count_self: bool = True) -> SwarmHealth:
        """The swarm as we see it: copies, rarest pieces, who holds what and gives how fast.

        Raises ConfigError before the metadata (and so the pieces) is known.
        """
        return self.health_monitor.health(trio.current_time(), count_self=count_self)

    def swarm_download_rate(self, now: float) -> float:
        """Bytes/s the peers (not the mirrors) delivered lately: what the source policy watches."""
        return self._total_rate(now, upload=False)

    async def progress(self, interval: float = 0.5) -> AsyncIterator[TorrentStatus]:
        """Yield a status snapshot every ``interval`` seconds, and a last one when complete."""
        while not self.complete.is_set():
            yield self.status()
            with trio.move_on_after(interval):
                await self.complete.wait()
        yield self.status()

    def set_file_priority(self, file_index: int, priority: int) -> None:
        """Download this file's pieces earlier (up to 7) or later (down to 1); 4 is normal.

        A piece shared with another file takes the higher of the two priorities.
        Skipping a file (0) is not offered yet: the final path only ever receives
        a complete, verified release.
        """
        if not 1 <= priority <= 7:
            raise ConfigError(f"file priority must be 1..7, got {priority}")
        self._file_priorities[file_index] = priority
        if self.session is not None:
            self._apply_file_priority(file_index)

    def _apply_file_priority(self, file_index: int) -> None:
        assert self.session is not None and self.storage is not None
        layout = self.storage.layout
        for index in layout.pieces_of_file(file_index):
            shared = [
                self._file_priorities.get(other, DEFAULT_PRIORITY)
                for other in layout.files_of_piece(index)
            ]
            self.session.picker.set_priority(index, max(shared, default=DEFAULT_PRIORITY))

    @property
    def is_seeding(self) -> bool:
        return self.state is TorrentState.SEEDING

    # -- life cycle -------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Prepare data, then keep announcing; peers are driven by their own tasks."""
        self.nursery = nursery
        try:
            if self.metainfo is not None:
                self._load_delta_index()
                await self._prepare()
                self._start_mirrors()
            if not self.sources.uses_peers:
                return
            nursery.start_soon(self._tracker_loop)
            if self.client.dht is not None:
                nursery.start_soon(announce_torrent, self.client.dht, self)
            nursery.start_soon(self._resume_loop)
            nursery.start_soon(self._tick_loop)
            for address in self._initial_peers():
                self.client.connect_soon(self, address)
        except OpenDistroError as exc:
            self._fail(str(exc))

    def _load_delta_index(self) -> None:
        """Serve a delta index over ``od_delta``: the one given, or the one published beside
        the data (``NAME.odindex``, see :mod:`opendistro.delta.publish`)."""
        metainfo = self.metainfo
        assert metainfo is not None
        data = self._delta_index
        if data is None:
            beside = self.download_dir / (metainfo.name + DELTA_INDEX_SUFFIX)
            try:
                with open(beside, "rb") as handle:
                    data = handle.read(MAX_INDEX_SIZE + 1)
            except OSError:
                return
        try:
            self.delta_server.load(data)
        except OpenDistroError as exc:
            self.client.log(f"not serving the delta index: {exc}")

    def mirror_urls(self) -> list[str]:
        """Every mirror base URL of this download, without repeats, in the order given."""
        urls = list(self.extra_mirrors)
        if self.magnet is not None:
            urls.extend(self.magnet.webseeds)
        if self.metainfo is not None:
            urls.extend(self.metainfo.url_list)
        return list(dict.fromkeys(urls))

    def _start_mirrors(self) -> None:
        """Web seeds (BEP 19 ``url-list``, a magnet's ``ws``) join as sources once data is ready."""
        metainfo = self.metainfo
        if metainfo is None or self.mirrors is not None or self.seed_only or self.is_seeding:
            return
        if self.observe:
            return
        urls = self.mirror_urls()
        if not urls or not self.sources.uses_mirrors:
            return
        self.mirrors = MirrorSources(
            self, urls, self.sources, give_up_after=self.client.mirror_retries
        )
        assert self.nursery is not None
        self.nursery.start_soon(self.mirrors.run)

    def mirror_piece(self, source: MirrorSource, index: int, piece: bytearray) -> None:
        """A mirror delivered a whole piece: check it like one from a peer."""
        if self.session is None:
            return
        self._buffers[index] = piece
        actions = self.session.mirror_piece_arrived(source, index)
        if not actions:
            self._buffers.pop(index, None)
        elif self.credit is not None:
            self.credit.piece_replaced(index)
        self.execute(actions)

    def fail_with_sources(self, message: str) -> None:
        """Nothing can deliver: stop with ``message``; verified data stays for the next run."""
        self._fail(message)

    def _initial_peers(self) -> list[tuple[str, int]]:
        return list(self.magnet.peers) if self.magnet is not None else []

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = TorrentState.FAILED
        self.complete.set()

    async def _prepare(self) -> None:
        metainfo = self.metainfo
        assert metainfo is not None
        self.verifier = PieceVerifier(metainfo)
        if self.seed_only:
            await self._prepare_seed(self.download_dir)
            return
        final = self.download_dir / metainfo.name
        if final.exists():
            await self._prepare_seed(self.download_dir)
            return
        storage = self._open_storage("download")
        # Sizes before preallocation: a fresh download has nothing worth hashing.
        before = await trio.to_thread.run_sync(storage.file_stats)
        await trio.to_thread.run_sync(storage.preallocate)
        self._resume = ResumeStore(self._state_dir() / "resume.sqlite")
        stats = await trio.to_thread.run_sync(storage.file_stats)
        saved = self._resume.load(self.info_hash, metainfo.num_pieces, stats)
        if saved is not None:
            have = Bitfield(metainfo.num_pieces, saved)
        elif any(size > 0 for size, _ in before):
            good = await trio.to_thread.run_sync(check_pieces, storage, self.verifier.verify)
            have = Bitfield(metainfo.num_pieces)
            for index in good:
                have.set(index)
        else:
            have = Bitfield(metainfo.num_pieces)
        self._install(storage, have)
        if have.complete:
            await self._finish()
        else:
            self.state = TorrentState.DOWNLOADING

    async def _prepare_seed(self, data_dir: Path) -> None:
        metainfo = self.metainfo
        assert metainfo is not None and self.verifier is not None
        self.download_dir = data_dir
        storage = self._open_storage("seed")
        good = await trio.to_thread.run_sync(check_pieces, storage, self.verifier.verify)
        have = Bitfield(metainfo.num_pieces)
        for index in good:
            have.set(index)
        if not have.complete:
            raise StorageError(
                f"{storage.final_path} does not match the torrent: "
                f"{metainfo.num_pieces - have.count} of {metainfo.num_pieces} pieces "
                "fail their hash check"
            )
        self._install(storage, have)
        self.final_path = storage.final_path
        self.state = TorrentState.SEEDING
        self.complete.set()

    def _open_storage(self, mode: str) -> FileStorage:
        metainfo = self.metainfo
        assert metainfo is not None
        return FileStorage(
            download_dir=self.download_dir,
            name=metainfo.name,
            files=metainfo.files,
            piece_length=metainfo.piece_length,
            total_length=metainfo.total_length,
            is_multi_file=metainfo.is_multi_file,
            mode="seed" if mode == "seed" else "download",
        )

    def _state_dir(self) -> Path:
        path = self.download_dir / ".opendistro"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _install(self, storage: FileStorage, have: Bitfield) -> None:
        """Data is ready: start the swarm logic, and tell peers already connected what we have."""
        metainfo = self.metainfo
        assert metainfo is not None
        self.storage = storage
        self.have = have
        padding = [(f.offset, f.offset + f.length) for f in metainfo.files if f.is_padding]
        self.session = SwarmSession(
            num_pieces=metainfo.num_pieces,
            piece_length=metainfo.piece_length,
            total_length=metainfo.total_length,
            have=have,
            padding=padding,
            config=dataclasses.replace(self.client.session_config, sequential=self.sequential),
        )
        for file_index in self._file_priorities:
            self._apply_file_priority(file_index)
        now = trio.current_time()
        for peer in list(self.peers):
            peer.connection.set_num_pieces(metainfo.num_pieces)
            self.execute(self.session.peer_connected(peer, peer.connection, now, announced=True))
        if self.credit is not None:
            self.credit.install()

    async def _finish(self) -> None:
        """Everything verified: move the data to its final path and start seeding."""
        storage = self.storage
        if storage is None or self.state is TorrentState.SEEDING:
            return
        await trio.to_thread.run_sync(storage.finalize)
        final = storage.final_path
        storage.close()
        if self._resume is not None:
            self._resume.forget(self.info_hash)
        self.storage = self._open_storage("seed")
        self.final_path = final
        self.state = TorrentState.SEEDING
        self.complete.set()

    def close(self) -> None:
        """Save resume state and release files, once the peer tasks have stopped."""
        self.stopped.set()
        self.delta_server.close()
        if self._resume is not None:
            self._save_resume()
            self._resume.close()
            self._resume = None
        if self.storage is not None:
            self.storage.close()

    # -- resume -----------------------------------------------------------

    async def _resume_loop(self) -> None:
        while not self.complete.is_set():
            await trio.sleep(RESUME_SAVE_INTERVAL)
            if self._resume_dirty:
                await self._save_resume_soon()

    async def _save_resume_soon(self) -> None:
        """:meth:`_save_resume` with the fsync in a worker thread, off the event loop.

        The pieces recorded are the ones verified before the fsync began, so
        the record never claims data that is not yet on disk.
        """
        storage, have = self.storage, self.have
        if storage is None or have is None or self.state is not TorrentState.DOWNLOADING:
            return
        snapshot = have.to_bytes()
        self._resume_dirty = False
        try:
            await trio.to_thread.run_sync(storage.flush)
            metainfo, resume = self.metainfo, self._resume
            if resume is None or metainfo is None or self.state is not TorrentState.DOWNLOADING:
                return  # finished or closed meanwhile: those paths save (or forget) for themselves
            resume.save(self.info_hash, snapshot, metainfo.num_pieces, storage.file_stats())
        except StorageError as exc:
            # A failed fsync (EIO, a full disk) must not end the download: the verified
            # pieces are still in hand; the record is simply not updated this time.
            self.client.log(f"{self.name}: resume state not saved: {exc}")
            self._resume_dirty = True

    def _save_resume(self) -> None:
        if self._resume is None or self.storage is None or self.have is None:
            return
        if self.state is TorrentState.SEEDING or self.metainfo is None:
            return
        self.storage.flush()
        stats = self.storage.file_stats()
        self._resume.save(self.info_hash, self.have.to_bytes(), self.metainfo.num_pieces, stats)
        self._resume_dirty = False

    # -- trackers ---------------------------------------------------------

    def tracker_urls(self) -> list[list[str]]:
        """The announce URLs of this torrent (its own tiers, then the magnet's), by tier."""
        tiers: list[list[str]] = []
        if self.metainfo is not None:
            tiers.extend(self.metainfo.announce_tiers)
        if self.magnet is not None and self.magnet.trackers:
            tiers.extend([url] for url in self.magnet.trackers)
        return [tier for tier in tiers if tier]

    def _announce_request(self, event: AnnounceEvent) -> AnnounceRequest:
        status = self.status()
        left = max(status.total_bytes - status.verified_bytes, 0) if self.metainfo else 1
        return AnnounceRequest(
            info_hash=self.info_hash,
            peer_id=self.client.peer_id,
            port=self.client.port,
            uploaded=status.bytes_uploaded,
            downloaded=status.bytes_from_peers,
            left=left,
            event=event,
            numwant=50,
        )

    def _signed_request(self, url: str, event: AnnounceEvent) -> AnnounceRequest:
        """The announce for ``url``, proving our credit identity to HTTP trackers."""
        request = self._announce_request(event)
        if self.client.credit is not None:
            request = self.client.credit.sign_announce(url, request)
        return request

    async def _announce_once(self, tiers: TrackerTiers, event: AnnounceEvent) -> int:
        """Announce to the first tracker that answers; return the interval to wait."""
        for url in tiers.urls():
            try:
                response = await announce(url, self._signed_request(url, event), timeout=10)
            except TrackerError as exc:
                self.client.log(f"tracker {url}: {exc}")
                continue
            tiers.succeeded(url)
            for address in response.peers:
                self.client.connect_soon(self, address)
            interval = response.min_interval or response.interval
            return max(1, min(interval, response.interval, MAX_ANNOUNCE_INTERVAL))
        return int(TRACKER_RETRY)

    async def _tracker_loop(self) -> None:
        tier_urls = self.tracker_urls()
        if not tier_urls:
            return
        tiers = TrackerTiers(tier_urls)
        event = AnnounceEvent.STARTED
        completed_sent = self.complete.is_set()
        try:
            while True:
                wait = await self._announce_once(tiers, event)
                event = AnnounceEvent.NONE
                with trio.move_on_after(wait):
                    if not completed_sent:
                        await self.complete.wait()
                    else:
                        await trio.sleep_forever()
                if self.complete.is_set() and not completed_sent:
                    completed_sent = True
                    event = AnnounceEvent.COMPLETED
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                for url in tiers.urls():
                    try:
                        request = self._signed_request(url, AnnounceEvent.STOPPED)
                        await announce(url, request, timeout=2)
                        break
                    except TrackerError:
                        continue

    # -- peers ---------------------------------------------------------------

    def throttled(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        """Wrap a peer's stream in this torrent's (and the client's) bandwidth limits, if any."""
        limited = any(
            throttle.rate is not None
            for throttle in (
                self.upload_throttle,
                self.download_throttle,
                self.client.upload_throttle,
                self.client.download_throttle,
            )
        )
        if not limited:
            return stream
        return ThrottledStream(stream, upload=self.upload_throttle, download=self.download_throttle)

    def download_limit(self) -> float | None:
        """The tightest download limit on this torrent (its own or the client's), if any."""
        rates = [
            throttle.rate
            for throttle in (self.download_throttle, self.client.download_throttle)
            if throttle.rate is not None
        ]
        return min(rates) if rates else None

    def peer_ready(self, peer: PeerSession) -> None:
        """A handshake completed: say what we have and which extensions we speak."""
        self.peers.add(peer)
        connection = peer.connection
        if self.session is not None:
            self.execute(self.session.peer_connected(peer, connection, trio.current_time()))
        elif connection.fast_enabled:
            peer.send(HaveNone())  # a magnet download has nothing yet
        self.v2_hashes.request_more()
        if connection.extensions_enabled:
            size = len(self.metainfo.info_bytes) if self.metainfo is not None else None
            m, extra = dict(OUR_EXTENSIONS), self.delta_server.handshake_extra()
            if self.credit is not None:
                self.credit.add_to_handshake(peer, m, extra)
            peer.send(
                ExtensionHandshake(
                    m=m,
                    v=self.client.user_agent,
                    p=self.client.port,
                    reqq=self.client.limits.max_pending_peer_requests,
                    metadata_size=size,
                    yourip=_packed_address(peer.address[0]),
                    extra=extra,
                )
            )

    def peer_gone(self, peer: PeerSession) -> None:
        self.peers.discard(peer)
        self.v2_hashes.peer_lost(peer)
        self.delta_server.peer_gone(peer)
        self._pex_senders.pop(peer, None)
        self._pex_receivers.pop(peer, None)
        if self.credit is not None:
            self.credit.peer_gone(peer)
        if self.session is not None:
            self.execute(self.session.peer_disconnected(peer, trio.current_time()))

    def handle_events(self, peer: PeerSession, events: list[Event]) -> None:
        """Hand what a peer's connection decoded to the swarm logic, and act on its answer."""
        session = self.session
        now = trio.current_time()
        for event in events:
            if isinstance(event, ExtensionHandshake):
                self.extension_handshake(peer, event)
            elif isinstance(event, Extended):
                self.extension_message(peer, event)
            elif isinstance(event, HashRequest):
                self.v2_hashes.answer(peer, event)
            elif isinstance(event, Hashes | HashReject):
                self.v2_hashes.received(peer, event)
            elif session is not None:
                data = event.data if isinstance(event, Piece) else None
                self.execute(session.handle(peer, event, now), data)
        if session is not None:
            self.execute(session.after_events(peer, now))

    def execute(
        self, actions: list[Action[Source]], data: bytes | memoryview | None = None
    ) -> None:
        """Carry out what the session decided; ``data`` is the block a StoreBlock refers to."""
        for action in actions:
            if isinstance(action, SendMessage):
                if self.observe and isinstance(action.message, Interested | Request):
                    continue  # an observer takes nothing from the swarm
                if isinstance(action.peer, PeerSession):
                    action.peer.send(action.message)
            elif isinstance(action, StoreBlock):
                assert data is not None
                self._store_block(action, data)
            elif isinstance(action, VerifyPiece):
                self._unverified.append((action.index, self._buffers.pop(action.index)))
                if self._hashers < HASHERS:
                    assert self.nursery is not None
                    self._hashers += 1
                    self.nursery.start_soon(self._hash_pieces)
            elif isinstance(action, ServeBlock):
                if isinstance(action.peer, PeerSession):
                    action.peer.queue_upload(action.index, action.begin, action.length)
            elif isinstance(action, DropPeer):
                if action.ban and isinstance(action.peer, PeerSession):
                    self.client.ban(action.peer, action.reason)
                action.peer.close(action.reason)
            elif isinstance(action, PieceUnverifiable):
                self._fail(
                    f"piece {action.index} failed its hash check whole from several peers: "
                    "the torrent's hashes do not match what the swarm serves"
                )
            elif isinstance(action, SwarmComplete):
                assert self.nursery is not None
                self.nursery.start_soon(self._finish)

    def _store_block(self, action: StoreBlock[Source], data: bytes | memoryview) -> None:
        assert self.session is not None
        index, begin, length = action.index, action.begin, action.length
        buffer = self._buffers.get(index)
        if buffer is None:
            buffer = self._buffers[index] = bytearray(self.session.piece_size(index))
        buffer[begin : begin + length] = data
        peer = action.peer
        assert isinstance(peer, PeerSession)  # mirrors deliver whole pieces, not blocks
        self.bytes_from_peer[peer.label] += length
        self.bytes_by_peer_id[peer.connection.remote_peer_id or b""] += length
        if self.credit is not None:
            self.credit.block_stored(peer, index, begin, length)

    def block_served(self, peer: PeerSession, length: int) -> None:
        self.bytes_to_peer[peer.label] += length
        if self.credit is not None:
            self.credit.block_served(peer, length)
        if self.session is not None:
            self.session.block_served(peer, length, trio.current_time())

    async def _tick_loop(self) -> None:
        """Give the swarm logic the passing of time: choking rounds, snubbed peers, PEX."""
        while True:
            await trio.sleep(TICK_INTERVAL)
            if self.session is not None:
                self.execute(self.session.tick(trio.current_time()))
                self.health_monitor.sample(trio.current_time())
            self.v2_hashes.tick(trio.current_time())
            self._send_pex(trio.current_time())
            self.client.dial_more(self)

    # -- BEP 11 peer exchange -------------------------------------------------

    @property
    def _pex_allowed(self) -> bool:
        """BEP 27: a private torrent's peers come from its tracker only."""
        return self.metainfo is None or not self.metainfo.private

    def _listen_address(self, peer: PeerSession) -> tuple[str, int] | None:
        """Where others can dial this peer: its BEP 10 ``p``, or the port we dialed."""
        remote = peer.connection.remote_extensions
        if remote is not None and remote.p:
            return peer.address[0], remote.p
        return peer.address if peer.dialed else None

    def _send_pex(self, now: float) -> None:
        if not self._pex_allowed:
            return
        known = {peer: self._listen_address(peer) for peer in self.peers}
        for peer in list(self.peers):
            remote = peer.connection.remote_extensions
            if remote is None or "ut_pex" not in remote.m:
                continue
            sender = self._pex_senders.setdefault(
                peer, PexSender(interval=self.client.pex_interval)
            )
            others = [
                PexPeer(address[0], address[1])
                for other, address in known.items()
                if other is not peer and address is not None
            ]
            message = sender.make_message(others, now)
            if message is not None:
                peer.send(Extended(remote.m["ut_pex"], encode_pex(message)))

    def _receive_pex(self, peer: PeerSession, payload: bytes) -> None:
        if not self._pex_allowed:
            return
        receiver = self._pex_receivers.get(peer)
        if receiver is None:
            local = is_local_address(peer.address[0])
            receiver = self._pex_receivers[peer] = PexReceiver(
                min_interval=min(45.0, self.client.pex_interval / 2), accept_local=local
            )
        for address in receiver.receive(decode_pex(payload), trio.current_time()):
            self.client.connect_soon(self, address)

    def _verify_and_write(
        self, index: int, data: bytearray, block_size: int, digests_if_good: bool
    ) -> tuple[bool, dict[int, bytes] | None]:
        """Hash the piece and write it if good (in a worker thread).

        Also returns a digest of each block when smart ban needs them: always
        for a bad piece, and for a good one when ``digests_if_good``.
        """
        assert self.verifier is not None and self.storage is not None
        view = memoryview(data)
        if not self.verifier.verify(index, view):
            return False, block_digests(view, block_size)
        self.storage.write_block(index, 0, view)
        return True, block_digests(view, block_size) if digests_if_good else None

    def _verify_batch(
        self, batch: list[tuple[int, bytearray, bool]], block_size: int
    ) -> list[tuple[bool, dict[int, bytes] | None]]:
        """:meth:`_verify_and_write` for each piece of ``batch``, in one worker-thread call."""
        return [
            self._verify_and_write(index, data, block_size, wanted)
            for index, data, wanted in batch
        ]

    async def _hash_pieces(self) -> None:
        """Verify and write queued pieces until the queue is empty.

        A thread call per piece costs two passes of the event loop, and on a fast
        link the loop is busy with incoming blocks: one piece at a time, hashing
        fell behind the network and back-pressure stalled the download. So each
        call takes everything queued, up to :data:`HASH_BATCH_BYTES`: one piece
        when hashing keeps up, more (and fewer passes per piece) when it does not.
        """
        try:
            while self._unverified and self.session is not None:
                session = self.session
                batch: list[tuple[int, bytearray, bool]] = []
                size = 0
                while self._unverified and (not batch or size < HASH_BATCH_BYTES):
                    index, data = self._unverified.popleft()
                    batch.append((index, data, session.needs_block_digests(index)))
                    size += len(data)
                try:
                    results = await trio.to_thread.run_sync(
                        self._verify_batch, batch, session.config.block_size
                    )
                except (IntegrityError, StorageError) as exc:
                    self._fail(str(exc))
                    return
                for (index, data, _), (good, digests) in zip(batch, results, strict=True):
                    self._piece_verified(index, data, good, digests)
        finally:
            self._hashers -= 1

    def _piece_verified(
        self, index: int, data: bytearray, good: bool, digests: dict[int, bytes] | None
    ) -> None:
        if self.stopped.is_set() or self.session is None:
            return  # resume state is already saved; this piece is simply fetched again
        if good:
            self._resume_dirty = True
        else:
            self.hash_failures += 1
        if self.credit is not None:
            self.credit.piece_checked(index, good)
        self.execute(self.session.piece_checked(index, good, trio.current_time(), digests))
        if not good and self.session.needs_block_digests(index):
            assert self.nursery is not None
            self.nursery.start_soon(self.v2_hashes.piece_failed, index, data)

    # -- BEP 9 metadata -----------------------------------------------------

    def extension_handshake(self, peer: PeerSession, handshake: ExtensionHandshake) -> None:
        if self.credit is not None:
            self.credit.peer_handshake(peer, handshake)
        if self.metainfo is not None or "ut_metadata" not in handshake.m:
            return
        if handshake.metadata_size is None:
            return
        if self._assembler is None:
            try:
                self._assembler = MetadataAssembler(
                    metadata_size=handshake.metadata_size,
                    info_hash_v1=self.magnet.info_hash_v1 if self.magnet else None,
                    info_hash_v2=self.magnet.info_hash_v2 if self.magnet else None,
                    max_size=self.client.limits.max_metadata_size,
                )
            except OpenDistroError as exc:
                peer.close(str(exc))
                return
        self._request_metadata(peer)

    def _request_metadata(self, peer: PeerSession) -> None:
        remote = peer.connection.remote_extensions
        if self._assembler is None or remote is None or "ut_metadata" not in remote.m:
            return
        piece = self._assembler.next_request(trio.current_time())
        if piece is not None:
            payload = encode_metadata_message(MetadataRequest(piece))
            peer.send(Extended(remote.m["ut_metadata"], payload))

    def extension_message(self, peer: PeerSession, message: Extended) -> None:
        name = peer.connection.extension_name(message.extension_id)
        if name == "ut_pex":
            self._receive_pex(peer, message.payload)
            return
        if name == "od_delta":
            self.delta_server.handle(peer, message.payload)
            return
        if name == "od_credit" and self.credit is not None:
            self.credit.message(peer, message.payload)
            return
        if name != "ut_metadata":
            return
        decoded = decode_metadata_message(message.payload)
        remote = peer.connection.remote_extensions
        if isinstance(decoded, MetadataRequest):
            if remote is None or "ut_metadata" not in remote.m:
                return
            reply: MetadataData | MetadataReject
            if self.metainfo is None:
                reply = MetadataReject(decoded.piece)
            else:
                reply = metadata_response(self.metainfo.info_bytes, decoded)
            peer.send(Extended(remote.m["ut_metadata"], encode_metadata_message(reply)))
        elif isinstance(decoded, MetadataData) and self._assembler is not None:
            try:
                info_bytes = self._assembler.receive(decoded)
            except IntegrityError as exc:
                peer.close(f"metadata failed verification: {exc}")
                return
            if info_bytes is None:
                self._request_metadata(peer)
            elif self.metainfo is None:
                assert self.nursery is not None
                self.nursery.start_soon(self._metadata_arrived, info_bytes)
        elif isinstance(decoded, MetadataReject) and self._assembler is not None:
            self._assembler.rejected(decoded.piece)

    async def _metadata_arrived(self, info_bytes: bytes) -> None:
        if self.metainfo is not None:
            return
        magnet = self.magnet
        try:
            self.metainfo = Metainfo.from_info_bytes(
                info_bytes,
                announce_tiers=[[url] for url in magnet.trackers] if magnet else [],
                url_list=list(magnet.webseeds) if magnet else [],
                expected_v1=magnet.info_hash_v1 if magnet else None,
                expected_v2=magnet.info_hash_v2 if magnet else None,
                limits=self.client.limits,
            )
            if lacks_piece_layers(self.metainfo):
                self.state = TorrentState.HASHES
                self.metainfo = await self.v2_hashes.fetch_piece_layers(self.metainfo)
            self.state = TorrentState.CHECKING
            await self._prepare()
            self._start_mirrors()
        except (MetainfoError, StorageError) as exc:
            self._fail(str(exc))
            return
        self.metadata_ready.set()


def _packed_address(host: str) -> bytes | None:
    """The peer's address as BEP 10 ``yourip`` wants it (4 or 16 bytes), if it is an IP."""
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return None


def directory_of(path: os.PathLike[str] | str, name: str) -> Path:
    """The folder to seed from for ``--data PATH``.

    PATH may name the torrent's file or folder itself, or the folder containing it.
    """
    candidate = Path(path)
    if candidate.name == name and candidate.exists():
        return candidate.parent
    return candidate


def block_digests(piece: memoryview, block_size: int) -> dict[int, bytes]:
    """SHA-1 of each block of a piece, by offset: how smart ban tells two copies apart."""
    return {
        begin: hashlib.sha1(piece[begin : begin + block_size]).digest()
        for begin in range(0, len(piece), block_size)
    }
