"""Seeding credit on live connections: od_credit sessions, the local ledger, the tracker.

The credit core is sans I/O: :class:`~opendistro.wire.extensions.od_credit.CreditSession`
speaks the protocol on one connection, :class:`~opendistro.credit.ledger.CreditLedger`
remembers totals and receipts, and :mod:`~opendistro.tracker.credit_client` posts
receipts. This module drives them from a running client:

* :class:`CreditService` (one per client) owns the identity and the ledger,
  queues ledger writes and does them in a worker thread, records live
  sessions periodically and submits held receipts to the torrents' trackers;
* :class:`TorrentCredit` (one per torrent) keeps a session per connection,
  feeds it verified bytes (per sender, once the piece passed its hash check)
  and uploads, and sends what it queues.

Ledger *reads* (a primary-key lookup when a peer proves its identity) run on
the event loop: the session must resume from the stored totals before it
counts another byte, and the lookup costs microseconds. Ledger *writes*
commit to disk, which can take milliseconds, so they are queued, merged per
(peer, torrent) and written in batches from a worker thread; reads merge in
what is still queued, so a peer that reconnects at once resumes from the
right totals. Totals only ever rise, so writes landing in any order are safe.

A peer without od_credit (libtorrent, a client run with ``--no-credit``)
leaves its session inactive: nothing is sent, nothing is counted, and the
connection goes on as usual.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import trio

from ..credit.identity import IDENTITY_FILE_NAME, CreditIdentity
from ..credit.ledger import (
    LEDGER_FILE_NAME,
    CreditLedger,
    Exchange,
    LedgerSummary,
    PeerTotals,
)
from ..credit.receipts import Receipt
from ..errors import LocalProtocolError, ReceiptError, StorageError, TrackerError
from ..tracker.credit import MAX_SUBMISSION
from ..tracker.credit_client import credit_url_for, submit_receipts
from ..tracker.protocol import AnnounceRequest, sign_announce
from ..wire.extensions.handshake import ExtensionHandshake
from ..wire.extensions.od_credit import (
    EXTENSION_NAME,
    RECEIPT_INTERVAL,
    CreditSession,
    PeerIdentified,
    ReceiptAccepted,
    ReceiptIssued,
)
from ..wire.messages import Extended

if TYPE_CHECKING:
    from .peer import PeerSession
    from .torrent import Torrent

__all__ = [
    "CREDIT_EXTENSION_ID",
    "CreditOptions",
    "CreditService",
    "CreditSummary",
    "PeerTotals",
    "TorrentCredit",
    "default_state_dir",
    "read_credit_summary",
]

CREDIT_EXTENSION_ID: Final = 5
"""The BEP 10 id under which we ask peers to send us od_credit messages."""
FLUSH_DELAY: Final = 1.0
"""Queued ledger writes wait this long for company, so a busy swarm writes in batches."""
SUBMIT_SCAN: Final = 4096
"""Held receipts of one torrent posted per submission round, at most."""
SUBMIT_TIMEOUT: Final = 10.0
FINAL_SUBMIT_TIMEOUT: Final = 3.0
"""How long a stopping client spends posting its last receipts."""
PARTING_DELAY: Final = 0.1
"""How long a stopping client lets the parting receipts it signed reach the wire."""


@dataclass(frozen=True)
class CreditOptions:
    """Timing of the credit machinery (the defaults suit real swarms; tests shorten them)."""

    submit_interval: float = 600.0
    """Seconds between posts of new receipts to the torrents' trackers."""
    record_interval: float = 30.0
    """Seconds between writes of live sessions' totals to the ledger."""
    settle_timeout: float = 2.0
    """How long a stopping client waits for the receipts it asked its peers for."""
    receipt_interval: int = RECEIPT_INTERVAL
    """Verified bytes from a peer between two receipts we sign for it."""


def default_state_dir() -> Path:
    """The per-user state folder: ``$XDG_STATE_HOME/opendistro`` or ``~/.local/state/opendistro``.

    Only the command line uses it (``get`` and ``seed`` keep credit there
    unless told ``--no-credit``): the library never writes outside the
    folders it is given.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "opendistro"


_Key = tuple[bytes, bytes]
"""(peer identity, info-hash): one row of the ledger's exchanges."""


class CreditService:
    """A client's credit identity and ledger, and the background work around them."""

    def __init__(
        self,
        identity: CreditIdentity,
        ledger: CreditLedger,
        *,
        options: CreditOptions | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.identity = identity
        self.ledger = ledger
        self.options = options or CreditOptions()
        self._log = log
        self._pending: dict[_Key, tuple[int, int]] = {}
        self._pending_receipts: list[Receipt] = []
        self._writing: dict[_Key, tuple[int, int]] = {}
        self._writing_receipts: list[Receipt] = []
        self._flush_lock = trio.Lock()
        self._dirty = trio.Event()
        self._retry_at: dict[str, float] = {}
        self._last_proof_time = 0
        self._closed = False
        self.submitted = 0
        """Receipts a tracker took from us (accepted or already held) since we started."""

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        options: CreditOptions | None = None,
        log: Callable[[str], None] | None = None,
    ) -> CreditService:
        """Load (or create) the identity in ``state_dir`` and open the ledger beside it."""
        identity = CreditIdentity.load_or_create(state_dir)
        ledger = CreditLedger.open(state_dir, owner=identity.public_key)
        return cls(identity, ledger, options=options, log=log)

    @property
    def public_key(self) -> bytes:
        return self.identity.public_key

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def sign_announce(self, url: str, request: AnnounceRequest) -> AnnounceRequest:
        """``request`` with our identity proof if ``url`` is an HTTP(S) tracker.

        The proof lets a tracker that keeps credit (ours) count our seeding
        time and serve us by our standing; others ignore the extra parameters.
        UDP announces stay anonymous: BEP 15 has no room for the proof. Proof
        times only ever rise, by a second at least, as the tracker demands of
        one peer.
        """
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return request
        proof_time = max(int(time.time()), self._last_proof_time + 1)
        self._last_proof_time = proof_time
        return sign_announce(request, self.identity, time=proof_time)

    # -- reading (on the event loop, merged with queued writes) -----------------

    def history(self, peer: bytes, torrent: bytes) -> tuple[Exchange, int]:
        """What we exchanged with ``peer`` for ``torrent`` (to resume a session from),
        and its earned credit over every torrent: verified bytes it gave us minus
        bytes we gave it."""
        stored = self.ledger.exchange(peer, torrent)
        received, sent = stored.received, stored.sent
        for table in (self._writing, self._pending):
            queued_received, queued_sent = table.get((peer, torrent), (0, 0))
            received, sent = max(received, queued_received), max(sent, queued_sent)
        held = max(
            [stored.held]
            + [
                receipt.total
                for receipt in (*self._writing_receipts, *self._pending_receipts)
                if receipt.receiver == peer and receipt.torrent == torrent
            ]
        )
        all_received, all_sent = self.ledger.totals(peer)
        # The totals are what is on disk; this torrent's queued rise is added on top.
        credit = (all_received - stored.received + received) - (all_sent - stored.sent + sent)
        return Exchange(peer, torrent, received, sent, held), credit

    # -- writing (queued, done in a worker thread) --------------------------------

    def record(self, peer: bytes, torrent: bytes, *, received: int, sent: int) -> None:
        """Raise the stored totals for ``peer`` and ``torrent`` (soon, in the background)."""
        old_received, old_sent = self._pending.get((peer, torrent), (0, 0))
        self._pending[peer, torrent] = (max(old_received, received), max(old_sent, sent))
        self._dirty.set()

    def keep(self, receipt: Receipt) -> None:
        """Hold a receipt a peer signed for us (soon, in the background)."""
        self._pending_receipts.append(receipt)
        self._dirty.set()

    def _take(self) -> tuple[dict[_Key, tuple[int, int]], list[Receipt]]:
        self._writing, self._pending = self._pending, {}
        self._writing_receipts, self._pending_receipts = self._pending_receipts, []
        return self._writing, self._writing_receipts

    def _write(self, records: dict[_Key, tuple[int, int]], receipts: list[Receipt]) -> None:
        for (peer, torrent), (received, sent) in records.items():
            self.ledger.record(peer, torrent, received=received, sent=sent)
        for receipt in receipts:
            try:
                self.ledger.keep_receipt(receipt)
            except ReceiptError as exc:  # the session verified it: a bug, not a peer's lie
                self.log(f"credit: ledger refused a receipt: {exc}")

    async def flush(self) -> None:
        """Write everything queued so far, in a worker thread."""
        async with self._flush_lock:
            records, receipts = self._take()
            if not records and not receipts:
                return
            try:
                await trio.to_thread.run_sync(self._write, records, receipts)
            except StorageError as exc:
                self.log(f"credit: cannot write the ledger: {exc}")
            finally:
                self._writing, self._writing_receipts = {}, []

    async def summary(self, torrents: Iterable[Torrent]) -> LedgerSummary:
        """The ledger's per-peer totals, live connections of ``torrents`` included."""
        for torrent in torrents:
            if torrent.credit is not None:
                torrent.credit.record_all()
        await self.flush()
        return await trio.to_thread.run_sync(self.ledger.summary)

    def close(self) -> None:
        """Write what is still queued (synchronously: the client is stopping) and close."""
        if self._closed:
            return
        self._closed = True
        try:
            self._write(*self._take())
        except StorageError as exc:
            self.log(f"credit: cannot write the ledger: {exc}")
        finally:
            self._writing, self._writing_receipts = {}, []
            self.ledger.close()

    # -- background work ------------------------------------------------------

    async def run(
        self,
        torrents: Callable[[], Iterable[Torrent]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Flush queued writes, record live sessions and submit receipts, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_loop)
            nursery.start_soon(self._record_loop, torrents)
            nursery.start_soon(self._submit_loop, torrents)
            task_status.started()

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await trio.sleep(FLUSH_DELAY)
            self._dirty = trio.Event()
            await self.flush()

    async def _record_loop(self, torrents: Callable[[], Iterable[Torrent]]) -> None:
        while True:
            await trio.sleep(self.options.record_interval)
            for torrent in torrents():
                if torrent.credit is not None:
                    torrent.credit.record_all()

    async def _submit_loop(self, torrents: Callable[[], Iterable[Torrent]]) -> None:
        while True:
            await trio.sleep(self.options.submit_interval)
            try:
                await self.submit(torrents())
            except StorageError as exc:
                self.log(f"credit: cannot read the ledger: {exc}")

    async def submit(self, torrents: Iterable[Torrent]) -> int:
        """Post held receipts the tracker lacks to the trackers of their torrents.

        Only torrents we run are served (we know their trackers); a tracker
        without ``/credit`` (every third-party one) answers an error, which is
        logged and makes us leave that tracker alone for a while. Returns how
        many receipts a tracker took.
        """
        await self.flush()
        urls = {torrent.info_hash: _credit_urls(torrent) for torrent in torrents}
        taken = 0
        for info_hash, found in urls.items():
            if not found:
                continue
            receipts = await trio.to_thread.run_sync(
                functools.partial(self.ledger.receipts_to_submit, SUBMIT_SCAN, torrent=info_hash)
            )
            for start in range(0, len(receipts), MAX_SUBMISSION):
                chunk = receipts[start : start + MAX_SUBMISSION]
                if not await self._submit_chunk(found, chunk):
                    break
                await trio.to_thread.run_sync(self.ledger.mark_submitted, chunk)
                taken += len(chunk)
        self.submitted += taken
        return taken

    async def _submit_chunk(self, urls: list[str], chunk: list[Receipt]) -> bool:
        for url in urls:
            now = trio.current_time()
            if self._retry_at.get(url, 0.0) > now:
                continue
            try:
                result = await submit_receipts(url, chunk, timeout=SUBMIT_TIMEOUT)
            except TrackerError as exc:
                self.log(f"credit: cannot submit to {url}: {exc}")
                self._retry_at[url] = now + max(4 * self.options.submit_interval, 60.0)
                continue
            self._retry_at.pop(url, None)
            self.log(
                f"credit: {url} took {result.accepted} receipts ({result.stale} stale, "
                f"{result.rejected} rejected, {result.credited} bytes credited)"
            )
            return True
        return False

    async def stop(self, torrents: list[Torrent]) -> None:
        """Before the client disconnects: sign receipts for all we received (so our
        uploaders' totals end exact), ask peers for receipts covering what we sent
        them, wait a little for the answers, and post what we hold."""
        started = trio.current_time()
        issued = [t.credit.issue_receipts() for t in torrents if t.credit is not None]
        waiting = [t.credit for t in torrents if t.credit is not None and t.credit.ask_receipts()]
        with trio.move_on_after(self.options.settle_timeout):
            for credit in waiting:
                await credit.settled.wait()
        if any(issued):  # the peer tasks write them; then we may hang up
            await trio.sleep(max(0.0, started + PARTING_DELAY - trio.current_time()))
        try:
            with trio.move_on_after(FINAL_SUBMIT_TIMEOUT):
                await self.submit(torrents)
        except StorageError as exc:
            self.log(f"credit: cannot read the ledger: {exc}")


def _credit_urls(torrent: Torrent) -> list[str]:
    """The credit endpoints of the torrent's HTTP trackers, in tier order."""
    urls: list[str] = []
    for tier in torrent.tracker_urls():
        for announce_url in tier:
            try:
                url = credit_url_for(announce_url)
            except TrackerError:
                continue  # UDP, or a path we cannot map
            if url not in urls:
                urls.append(url)
    return urls


class TorrentCredit:
    """od_credit on every connection of one torrent."""

    def __init__(self, torrent: Torrent, service: CreditService) -> None:
        self._torrent = torrent
        self._service = service
        self._sessions: dict[PeerSession, CreditSession] = {}
        self._credit: dict[PeerSession, int] = {}
        self._blocks: dict[int, dict[int, tuple[PeerSession, CreditSession, int]]] = {}
        """Who sent each stored block of the pieces in progress (by offset), and its length.

        The swarm session tracks senders too (for smart ban) but forgets them as it
        judges the piece; we keep our own, bounded the same way by the pieces in flight."""
        self._awaiting: set[PeerSession] = set()
        self.settled = trio.Event()
        """Set once every peer asked by :meth:`ask_receipts` answered or left."""

    def session(self, peer: PeerSession) -> CreditSession | None:
        """The od_credit session of ``peer``'s connection (None: we did not offer it)."""
        return self._sessions.get(peer)

    # -- connection life ----------------------------------------------------

    def add_to_handshake(
        self, peer: PeerSession, m: dict[str, int], extra: dict[bytes, Any]
    ) -> None:
        """Offer od_credit in the extension handshake we are about to send ``peer``."""
        remote_id = peer.connection.remote_peer_id
        if remote_id is None:
            return
        try:
            session = CreditSession(
                self._service.identity,
                info_hash=self._torrent.info_hash,
                our_peer_id=self._torrent.client.peer_id,
                their_peer_id=remote_id,
                receipt_interval=self._service.options.receipt_interval,
            )
        except LocalProtocolError as exc:
            self._service.log(f"credit: not offered to {peer.label}: {exc}")
            return
        self._sessions[peer] = session
        m[EXTENSION_NAME] = CREDIT_EXTENSION_ID
        extra.update(session.handshake_fields())

    def peer_handshake(self, peer: PeerSession, handshake: ExtensionHandshake) -> None:
        session = self._sessions.get(peer)
        if session is not None:
            session.on_peer_handshake(handshake)
            self._send(peer, session)

    def peer_gone(self, peer: PeerSession) -> None:
        session = self._sessions.pop(peer, None)
        self._credit.pop(peer, None)
        if session is not None:
            self._record(session)
        self._answered(peer)

    def record_all(self) -> None:
        """Queue the totals of every identified session (a crash loses at most this much)."""
        for session in self._sessions.values():
            self._record(session)

    def _record(self, session: CreditSession) -> None:
        if session.peer_identity is not None:
            self._service.record(
                session.peer_identity,
                session.info_hash,
                received=session.received,
                sent=session.sent,
            )

    # -- messages -----------------------------------------------------------

    def message(self, peer: PeerSession, payload: bytes) -> None:
        """An od_credit message from ``peer``; a bad one raises CreditProtocolError."""
        session = self._sessions.get(peer)
        if session is None:
            return  # we did not offer od_credit to it, so this id is not ours to read
        event = session.handle_message(payload)
        if isinstance(event, PeerIdentified):
            history, credit = self._service.history(event.identity, session.info_hash)
            session.resume(history)
            self._credit[peer] = credit
            if self._torrent.session is not None:
                self._torrent.session.set_peer_credit(peer, credit)
            self._service.log(
                f"credit: {peer.label} is {event.identity.hex()[:16]}, earned {credit} bytes"
            )
        elif isinstance(event, ReceiptAccepted):
            self._service.keep(event.receipt)
            self._answered(peer)
        elif isinstance(event, ReceiptIssued):
            self._record(session)
        self._send(peer, session)

    def _send(self, peer: PeerSession, session: CreditSession) -> None:
        payloads = session.outgoing()
        if not payloads:
            return
        remote = peer.connection.remote_extensions
        if remote is None or not remote.supports(EXTENSION_NAME):
            return  # a later handshake switched od_credit off
        for payload in payloads:
            peer.send(Extended(remote.m[EXTENSION_NAME], payload))

    def install(self) -> None:
        """The swarm session started (after checking, or a magnet's metadata): tell it
        the credit of peers that identified themselves before."""
        if self._torrent.session is not None:
            for peer, credit in self._credit.items():
                self._torrent.session.set_peer_credit(peer, credit)

    # -- counting -----------------------------------------------------------

    def block_stored(self, peer: PeerSession, index: int, begin: int, length: int) -> None:
        """``peer`` sent a block of piece ``index``; it counts once the piece verifies."""
        session = self._sessions.get(peer)
        blocks = self._blocks.get(index)
        if session is None:
            if blocks is not None:
                blocks.pop(begin, None)  # it replaces a block someone else sent
            return
        if blocks is None:
            blocks = self._blocks[index] = {}
        blocks[begin] = (peer, session, length)

    def piece_replaced(self, index: int) -> None:
        """A mirror delivered piece ``index`` whole: the peers' blocks of it were dropped."""
        self._blocks.pop(index, None)

    def piece_checked(self, index: int, good: bool) -> None:
        """Piece ``index`` was hashed: credit its senders if it is good, nobody if not."""
        blocks = self._blocks.pop(index, None)
        if not good or not blocks:
            return
        verified: dict[PeerSession, tuple[CreditSession, int]] = {}
        for peer, session, length in blocks.values():
            verified[peer] = (session, verified.get(peer, (session, 0))[1] + length)
        for peer, (session, count) in verified.items():
            issued = session.on_verified_bytes(count)
            if peer in self._sessions:
                if issued is not None:
                    self._record(session)
                self._send(peer, session)
            else:
                session.outgoing()  # the peer left: its receipt cannot be sent
                self._record(session)  # but our next receipt to it starts from here

    def block_served(self, peer: PeerSession, length: int) -> None:
        session = self._sessions.get(peer)
        if session is not None:
            session.on_bytes_sent(length)
            self._send(peer, session)

    # -- stopping -------------------------------------------------------------

    def issue_receipts(self) -> bool:
        """Sign each identified peer a receipt for everything it gave us (we are stopping);
        whether any was signed."""
        issued = False
        for peer, session in self._sessions.items():
            if session.issue_receipt() is not None:
                issued = True
                self._record(session)
            self._send(peer, session)
        return issued

    def peer_credit(self, peer: PeerSession) -> int | None:
        """What ``peer``'s identity earned with us before this connection (None: unknown)."""
        return self._credit.get(peer)

    def ask_receipts(self) -> bool:
        """Ask each identified peer that owes us a receipt for one; whether any was asked."""
        for peer, session in self._sessions.items():
            if session.peer_identity is not None and session.sent > session.best_held:
                session.request_receipt()
                self._send(peer, session)
                self._awaiting.add(peer)
        if not self._awaiting:
            self.settled.set()
        return bool(self._awaiting)

    def _answered(self, peer: PeerSession) -> None:
        if peer in self._awaiting:
            self._awaiting.discard(peer)
            if not self._awaiting:
                self.settled.set()


# -- a read-only view of a state folder (``opendistro credit``) -------------------


@dataclass(frozen=True)
class CreditSummary:
    """Our identity and the ledger's per-peer totals, as found in a state folder."""

    state_dir: Path
    identity: bytes | None
    """Our public key (None: no identity was made here yet)."""
    peers: tuple[PeerTotals, ...]
    unsubmitted: int
    """Held receipts no tracker has taken yet."""

    def to_json(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "identity": self.identity.hex() if self.identity is not None else None,
            "received": sum(peer.received for peer in self.peers),
            "sent": sum(peer.sent for peer in self.peers),
            "held": sum(peer.held for peer in self.peers),
            "unsubmitted": self.unsubmitted,
            "peers": [peer.to_json() for peer in self.peers],
        }


def read_credit_summary(state_dir: str | os.PathLike[str]) -> CreditSummary:
    """Read the identity and ledger in ``state_dir`` without creating or changing anything.

    A missing identity or ledger reads as empty; a corrupt one raises
    CreditError or StorageError.
    """
    directory = Path(state_dir)
    identity_path = directory / IDENTITY_FILE_NAME
    identity = CreditIdentity.load(identity_path).public_key if identity_path.exists() else None
    ledger_path = directory / LEDGER_FILE_NAME
    if not ledger_path.exists():
        return CreditSummary(directory, identity, (), 0)
    owner = identity if identity is not None else bytes(32)
    with CreditLedger(ledger_path, owner=owner, read_only=True) as ledger:
        summary = ledger.summary()
    return CreditSummary(directory, identity, summary.peers, summary.unsubmitted)
