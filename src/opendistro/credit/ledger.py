"""The local credit ledger: what each identity gave us and took from us, across sessions.

Two things must outlive a connection and a restart:

* per (peer identity, torrent), the verified bytes the peer gave us and the
  bytes we gave it. The first is what our receipts to it state; receipts are
  cumulative, so after a restart we must continue from the old total, or the
  peer's next receipts would sit below the ones it already holds and be worth
  nothing;
* per (receiver identity, torrent), the best (highest) receipt that peer
  signed for us, which is what we show the tracker. Only the best is kept:
  it supersedes all earlier ones.

Totals are only ever raised (``max``), so recording the same state twice, or
two connections recording out of order, cannot lose or double count bytes.

Growth is bounded by a prune that runs on open and every
:data:`PRUNE_EVERY` writes: rows untouched for ``max_age`` seconds go (a peer
not seen for that long is unlikely to come back, and if it does its receipts
restart below what it holds, which costs it credit, not us correctness), and
each table is then cut to ``max_rows`` rows, least recently used first; among
held receipts, ones the tracker already has go before ones it does not.

The ledger is synchronous and small; one connection serves every thread
behind a lock, so the caller may use it from trio directly or a worker thread.
Opened ``read_only`` it changes nothing on disk (no schema, no prune): that is
how ``opendistro credit`` looks at a ledger a running client may own.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from ..errors import ReceiptError, StorageError
from .database import LockedConnection
from .receipts import MAX_TOTAL, Receipt, verify_receipt

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_ROWS",
    "LEDGER_FILE_NAME",
    "PRUNE_EVERY",
    "CreditLedger",
    "Exchange",
    "LedgerSummary",
    "PeerTotals",
]

LEDGER_FILE_NAME: Final = "credit-ledger.sqlite"
DEFAULT_MAX_ROWS: Final = 100_000
DEFAULT_MAX_AGE: Final = 365 * 24 * 3600.0
PRUNE_EVERY: Final = 1000
_SCHEMA_VERSION: Final = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchange (
    peer BLOB NOT NULL,
    torrent BLOB NOT NULL,
    received INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (peer, torrent)
);
CREATE INDEX IF NOT EXISTS exchange_updated ON exchange (updated);
CREATE TABLE IF NOT EXISTS held_receipts (
    receiver BLOB NOT NULL,
    torrent BLOB NOT NULL,
    total INTEGER NOT NULL,
    receipt BLOB NOT NULL,
    submitted INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (receiver, torrent)
);
CREATE INDEX IF NOT EXISTS held_updated ON held_receipts (updated);
CREATE INDEX IF NOT EXISTS held_torrent ON held_receipts (torrent, updated);
"""


@dataclass(frozen=True, slots=True)
class Exchange:
    """Bytes exchanged with one identity for one torrent, over all sessions so far."""

    peer: bytes
    torrent: bytes
    received: int
    """Verified bytes the peer gave us: the total our next receipt to it starts from."""
    sent: int
    """Bytes we gave the peer (our own count; its receipts prove part of it)."""
    held: int
    """The total of the best receipt the peer signed for us (0: none)."""


@dataclass(frozen=True, slots=True)
class PeerTotals:
    """What we exchanged with one identity, over every torrent."""

    identity: bytes
    received: int
    """Verified bytes it gave us (what our receipts to it state)."""
    sent: int
    """Bytes we gave it, by our own count."""
    held: int
    """Bytes its receipts to us prove (the best receipt per torrent, summed)."""
    torrents: int

    @property
    def credit(self) -> int:
        """What the choker sees: bytes it gave us minus bytes we gave it."""
        return self.received - self.sent

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity.hex(),
            "received": self.received,
            "sent": self.sent,
            "held": self.held,
            "credit": self.credit,
            "torrents": self.torrents,
        }


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """The ledger's per-peer totals, biggest exchanges first."""

    peers: tuple[PeerTotals, ...]
    unsubmitted: int
    """Held receipts no tracker has taken yet."""

    @property
    def received(self) -> int:
        return sum(peer.received for peer in self.peers)

    @property
    def sent(self) -> int:
        return sum(peer.sent for peer in self.peers)

    @property
    def held(self) -> int:
        return sum(peer.held for peer in self.peers)


class CreditLedger:
    """A SQLite file holding our exchanges and the best receipts peers gave ``owner`` (us)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        owner: bytes,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.owner = bytes(owner)
        self.max_rows = max_rows
        self.max_age = max_age
        self.read_only = read_only
        self._clock = clock
        self._writes = 0
        try:
            if read_only:
                uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
                db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                db = sqlite3.connect(self.path, check_same_thread=False)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION) or (read_only and version == 0):
                db.close()
                raise StorageError(
                    f"{self.path}: credit ledger schema {version} is newer than this client"
                    if version else f"{self.path}: not a credit ledger"
                )
            if not read_only:
                with db:
                    db.executescript(_SCHEMA)
                    db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open credit ledger {self.path!r}: {exc}") from exc
        self._connection = LockedConnection(db, f"credit ledger {self.path!r}")
        if not read_only:
            self.prune()

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], *, owner: bytes) -> CreditLedger:
        """The ledger file in ``state_dir`` (created with the directory if needed)."""
        directory = Path(state_dir)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create state directory {directory}: {exc}") from exc
        return cls(directory / LEDGER_FILE_NAME, owner=owner)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> CreditLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self.prune()

    # ------------------------------------------------------------ exchanges

    def exchange(self, peer: bytes, torrent: bytes) -> Exchange:
        """What we exchanged with ``peer`` for ``torrent`` so far (zeros for a stranger)."""
        with self._connection.transaction() as db:
            row = db.execute(
                "SELECT received, sent FROM exchange WHERE peer = ? AND torrent = ?",
                (peer, torrent),
            ).fetchone()
            held = db.execute(
                "SELECT total FROM held_receipts WHERE receiver = ? AND torrent = ?",
                (peer, torrent),
            ).fetchone()
        received, sent = (int(row[0]), int(row[1])) if row else (0, 0)
        return Exchange(bytes(peer), bytes(torrent), received, sent, int(held[0]) if held else 0)

    def record(self, peer: bytes, torrent: bytes, *, received: int = 0, sent: int = 0) -> None:
        """Raise the stored totals for ``peer`` and ``torrent`` to at least these (never lower)."""
        if not (0 <= received <= MAX_TOTAL and 0 <= sent <= MAX_TOTAL):
            raise StorageError("credit totals must be 0..2^63-1")
        with self._connection.transaction() as db:
            db.execute(
                "INSERT INTO exchange (peer, torrent, received, sent, updated)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (peer, torrent) DO UPDATE SET"
                " received = max(received, excluded.received),"
                " sent = max(sent, excluded.sent), updated = excluded.updated",
                (peer, torrent, received, sent, self._clock()),
            )
        self._wrote()

    def totals(self, peer: bytes) -> tuple[int, int]:
        """(received from, sent to) ``peer`` over every torrent."""
        with self._connection.transaction() as db:
            row = db.execute(
                "SELECT total(received), total(sent)"
                " FROM exchange WHERE peer = ?",
                (peer,),
            ).fetchone()
        return int(row[0]), int(row[1])

    # ------------------------------------------------------------ receipts we hold

    def keep_receipt(self, receipt: Receipt) -> int:
        """Keep ``receipt`` if it beats the one held from its receiver; return the gain.

        The receipt must credit us and verify; a receipt not above the held
        one (a replay) changes nothing and gains 0.
        """
        verify_receipt(receipt, giver=self.owner)
        with self._connection.transaction() as db:
            row = db.execute(
                "SELECT total FROM held_receipts WHERE receiver = ? AND torrent = ?",
                (receipt.receiver, receipt.torrent),
            ).fetchone()
            previous = int(row[0]) if row else 0
            if receipt.total <= previous:
                return 0
            db.execute(
                "INSERT INTO held_receipts (receiver, torrent, total, receipt, submitted, updated)"
                " VALUES (?, ?, ?, ?, 0, ?)"
                " ON CONFLICT (receiver, torrent) DO UPDATE SET total = excluded.total,"
                " receipt = excluded.receipt, updated = excluded.updated",
                (receipt.receiver, receipt.torrent, receipt.total, receipt.encode(), self._clock()),
            )
        self._wrote()
        return receipt.total - previous

    def best_receipt(self, receiver: bytes, torrent: bytes) -> Receipt | None:
        with self._connection.transaction() as db:
            row = db.execute(
                "SELECT receipt FROM held_receipts WHERE receiver = ? AND torrent = ?",
                (receiver, torrent),
            ).fetchone()
        return self._parse(row[0]) if row else None

    def receipts_to_submit(
        self, limit: int = 256, *, torrent: bytes | None = None
    ) -> list[Receipt]:
        """Held receipts the tracker has not accepted yet, oldest first.

        With ``torrent``, only that torrent's: a client posts a torrent's
        receipts to that torrent's trackers, the only ones it knows.
        """
        with self._connection.transaction() as db:
            if torrent is None:
                rows = db.execute(
                    "SELECT receipt FROM held_receipts WHERE total > submitted"
                    " ORDER BY updated LIMIT ?",
                    (limit,),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT receipt FROM held_receipts WHERE torrent = ? AND total > submitted"
                    " ORDER BY updated LIMIT ?",
                    (bytes(torrent), limit),
                ).fetchall()
        return [self._parse(row[0]) for row in rows]

    def mark_submitted(self, receipts: Iterable[Receipt]) -> None:
        """The tracker has these (accepted or already had them): do not send them again."""
        with self._connection.transaction() as db:
            db.executemany(
                "UPDATE held_receipts SET submitted = max(submitted, ?)"
                " WHERE receiver = ? AND torrent = ?",
                [(r.total, r.receiver, r.torrent) for r in receipts],
            )

    def _parse(self, blob: bytes) -> Receipt:
        try:
            return Receipt.decode(bytes(blob))
        except ReceiptError as exc:
            raise StorageError(f"credit ledger {self.path!r} holds a corrupt receipt") from exc

    # ------------------------------------------------------------ views

    def summary(self) -> LedgerSummary:
        """Per-peer totals over every torrent (who gave us how much, and took), read only."""
        with self._connection.transaction() as db:
            exchanged = db.execute(
                "SELECT peer, total(received), total(sent), count(*) FROM exchange GROUP BY peer"
            ).fetchall()
            held_rows = db.execute(
                "SELECT receiver, total(total), count(*), sum(total > submitted)"
                " FROM held_receipts GROUP BY receiver"
            ).fetchall()
        held = {bytes(row[0]): (int(row[1]), int(row[2])) for row in held_rows}
        peers: dict[bytes, PeerTotals] = {}
        for peer, received, sent, torrents in exchanged:
            key = bytes(peer)
            peers[key] = PeerTotals(
                key, int(received), int(sent), held.get(key, (0, 0))[0], int(torrents)
            )
        for key, (total, torrents) in held.items():
            if key not in peers:  # only possible once a prune took the exchange row
                peers[key] = PeerTotals(key, 0, 0, total, torrents)
        ordered = sorted(
            peers.values(), key=lambda peer: (-(peer.received + peer.sent), peer.identity)
        )
        unsubmitted = sum(int(row[3] or 0) for row in held_rows)
        return LedgerSummary(tuple(ordered), unsubmitted)

    # ------------------------------------------------------------ bounds

    def prune(self, now: float | None = None) -> int:
        """Apply the growth bounds (see the module docstring); return the rows removed."""
        if self.read_only:
            return 0
        cutoff = (self._clock() if now is None else now) - self.max_age
        with self._connection.transaction() as db:
            removed = db.execute("DELETE FROM exchange WHERE updated < ?", (cutoff,)).rowcount
            removed += db.execute(
                "DELETE FROM held_receipts WHERE updated < ?", (cutoff,)
            ).rowcount
            removed += db.execute(
                "DELETE FROM exchange WHERE rowid IN (SELECT rowid FROM exchange"
                " ORDER BY updated DESC LIMIT -1 OFFSET ?)",
                (self.max_rows,),
            ).rowcount
            removed += db.execute(
                "DELETE FROM held_receipts WHERE rowid IN (SELECT rowid FROM held_receipts"
                " ORDER BY (total > submitted) DESC, updated DESC LIMIT -1 OFFSET ?)",
                (self.max_rows,),
            ).rowcount
        return removed

    def __len__(self) -> int:
        """Rows held, both tables together (for tests and statistics)."""
        with self._connection.transaction() as db:
            exchanges = db.execute("SELECT count(*) FROM exchange").fetchone()[0]
            held = db.execute("SELECT count(*) FROM held_receipts").fetchone()[0]
        return int(exchanges) + int(held)
