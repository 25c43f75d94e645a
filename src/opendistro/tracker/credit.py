"""The tracker's network-wide credit ledger: receipts in, standings out.

Givers submit the receipts their peers signed (``POST /credit``, see
``spec/od-credit.md``). For every (receiver, giver, torrent) the tracker keeps
only the highest total it has verified: receipts are cumulative, so a higher
one supersedes the rest, and a replayed or older one changes nothing. Each
accepted receipt counts at once as the giver's upload and as the receiver's
download, so a receiver that overstates what it got hurts its own standing as
much as it helps the giver's.

An identity's :class:`Standing` is what others verifiably acknowledged: bytes
uploaded and downloaded, and how many distinct identities vouched. It also
carries the seeding time the tracker itself saw: time between two announces
with ``left=0`` that each proved the identity (the announce binding). That
is only the peer's own claim to hold the data, so it is reported, and used
as a tie-break among contributors, but it never enters the score. Its
``score`` never goes below zero, which is also a brand-new identity's score:
an identity that took more than it gave is no worse off than a newcomer, so
there is nothing to gain by throwing it away for a fresh one.

Everything is bounded: a submission holds at most :data:`MAX_SUBMISSION`
receipts in at most :data:`MAX_SUBMISSION_BODY` bytes, and the store at most
``max_rows`` (receiver, giver, torrent) rows; when full, receipts for new
rows are refused while ones improving known rows are still taken.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..bencode import decode, encode
from ..credit.database import LockedConnection
from ..credit.identity import PUBLIC_KEY_SIZE
from ..credit.receipts import Receipt, verify_receipt
from ..errors import BencodeError, ReceiptError, StorageError, TrackerError

__all__ = [
    "DEFAULT_MAX_ROWS",
    "MAX_SUBMISSION",
    "MAX_SUBMISSION_BODY",
    "CreditStore",
    "Standing",
    "SubmitResult",
    "decode_submission",
    "encode_submission",
]

MAX_SUBMISSION: Final = 256
MAX_SUBMISSION_BODY: Final = 64 * 1024
DEFAULT_MAX_ROWS: Final = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credit_receipts (
    receiver BLOB NOT NULL,
    giver BLOB NOT NULL,
    torrent BLOB NOT NULL,
    total INTEGER NOT NULL,
    sig BLOB NOT NULL,
    first_seen REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (receiver, giver, torrent)
);
CREATE INDEX IF NOT EXISTS credit_by_giver ON credit_receipts (giver);
CREATE TABLE IF NOT EXISTS credit_seeding (
    identity BLOB NOT NULL,
    torrent BLOB NOT NULL,
    seconds REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (identity, torrent)
);
"""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """How a submission went: receipts taken, ignored as not new, and refused."""

    accepted: int = 0
    stale: int = 0
    rejected: int = 0
    credited: int = 0
    """Bytes of upload credit the accepted receipts added, all givers together."""

    def encode(self) -> bytes:
        return encode({
            b"accepted": self.accepted,
            b"credited": self.credited,
            b"rejected": self.rejected,
            b"stale": self.stale,
        })

    @classmethod
    def decode(cls, body: bytes) -> SubmitResult:
        """Parse the tracker's answer; TrackerError when it is not one."""
        raw = _decode_dict(body)
        return cls(**{name: _count(raw, name) for name in ("accepted", "stale", "rejected",
                                                           "credited")})


@dataclass(frozen=True, slots=True)
class Standing:
    """What the network verifiably knows about one identity."""

    identity: bytes
    uploaded: int = 0
    """Bytes others acknowledged receiving from it (the sum of the best receipts)."""
    downloaded: int = 0
    """Bytes it acknowledged receiving from others."""
    receivers: int = 0
    """Distinct identities that acknowledged receiving from it."""
    givers: int = 0
    """Distinct identities it acknowledged receiving from."""
    seeding_seconds: int = 0
    """Seconds the tracker saw it seed (proved announces with ``left=0``), all torrents."""

    @property
    def balance(self) -> int:
        return self.uploaded - self.downloaded

    @property
    def score(self) -> int:
        """max(0, balance): a newcomer's 0 is the floor, so shedding an identity gains nothing."""
        return max(0, self.balance)

    @property
    def is_newcomer(self) -> bool:
        return self.uploaded == 0 and self.downloaded == 0

    @property
    def is_contributor(self) -> bool:
        """A verified net giver: what the tracker's peer-list policy favours."""
        return self.score > 0

    def encode(self) -> bytes:
        return encode({
            b"downloaded": self.downloaded,
            b"givers": self.givers,
            b"identity": self.identity,
            b"receivers": self.receivers,
            b"seeding": self.seeding_seconds,
            b"uploaded": self.uploaded,
        })

    @classmethod
    def decode(cls, body: bytes) -> Standing:
        """Parse a standing; ``seeding`` is optional (trackers before the announce binding)."""
        raw = _decode_dict(body)
        identity = raw.get(b"identity")
        if not isinstance(identity, bytes) or len(identity) != PUBLIC_KEY_SIZE:
            raise TrackerError("credit standing names no identity")
        seeding = _count(raw, "seeding") if b"seeding" in raw else 0
        return cls(
            identity,
            uploaded=_count(raw, "uploaded"),
            downloaded=_count(raw, "downloaded"),
            receivers=_count(raw, "receivers"),
            givers=_count(raw, "givers"),
            seeding_seconds=seeding,
        )


def _decode_dict(body: bytes) -> dict[bytes, Any]:
    try:
        raw = decode(body)
    except BencodeError as exc:
        raise TrackerError(f"tracker credit answer is not bencoded: {exc}") from None
    if not isinstance(raw, dict):
        raise TrackerError("tracker credit answer is not a dictionary")
    reason = raw.get(b"failure reason")
    if isinstance(reason, bytes):
        raise TrackerError(f"tracker refused: {reason.decode('utf-8', 'replace')}")
    return raw


def _count(raw: dict[bytes, Any], name: str) -> int:
    value = raw.get(name.encode())
    if not isinstance(value, int) or value < 0:
        raise TrackerError(f"tracker credit answer: {name} must be a non-negative integer")
    return value


def encode_submission(receipts: Sequence[Receipt]) -> bytes:
    """The body of ``POST /credit``: a bencoded list of receipt dictionaries."""
    if len(receipts) > MAX_SUBMISSION:
        raise TrackerError(f"at most {MAX_SUBMISSION} receipts per submission")
    return encode([receipt.to_fields() for receipt in receipts])


def decode_submission(body: bytes) -> list[Receipt | None]:
    """Parse a ``POST /credit`` body: each entry a receipt, or None if that entry is malformed.

    A body that is not a canonical bencoded list of at most
    :data:`MAX_SUBMISSION` entries raises TrackerError: nothing in it counts.
    """
    if len(body) > MAX_SUBMISSION_BODY:
        raise TrackerError(f"a credit submission is at most {MAX_SUBMISSION_BODY} bytes")
    try:
        raw = decode(body)
    except BencodeError as exc:
        raise TrackerError(f"credit submission is not bencoded: {exc}") from None
    if not isinstance(raw, list):
        raise TrackerError("a credit submission is a list of receipts")
    if len(raw) > MAX_SUBMISSION:
        raise TrackerError(f"at most {MAX_SUBMISSION} receipts per submission")
    if encode(raw) != body:
        raise TrackerError("credit submission is not canonically encoded")
    receipts: list[Receipt | None] = []
    for entry in raw:
        try:
            receipts.append(Receipt.from_fields(entry))
        except ReceiptError:
            receipts.append(None)
    return receipts


class CreditStore:
    """Verified best receipts per (receiver, giver, torrent), in a SQLite file.

    ``is_allowed(info_hash)`` (the tracker's allow-list) refuses receipts for
    torrents the tracker does not serve. Safe to call from worker threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        is_allowed: Callable[[bytes], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self.max_rows = max_rows
        self._is_allowed = is_allowed
        self._clock = clock
        try:
            db = sqlite3.connect(self.path, check_same_thread=False)
            with db:
                db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open tracker credit database {self.path!r}: {exc}") from exc
        self._connection = LockedConnection(db, f"tracker credit database {self.path!r}")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> CreditStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, receipts: Sequence[Receipt | None]) -> SubmitResult:
        """Verify and keep each receipt that beats the stored one for its key.

        ``None`` entries (malformed in the submission) and receipts that do
        not verify, name a torrent not tracked here or would need a new row
        in a full store count as rejected; receipts not above the stored
        total count as stale and change nothing.
        """
        accepted = stale = rejected = credited = 0
        now = self._clock()
        with self._connection.transaction() as db:
            rows = db.execute("SELECT count(*) FROM credit_receipts").fetchone()[0]
            for receipt in receipts:
                if receipt is None or (
                    self._is_allowed is not None and not self._is_allowed(receipt.torrent)
                ):
                    rejected += 1
                    continue
                row = db.execute(
                    "SELECT total FROM credit_receipts"
                    " WHERE receiver = ? AND giver = ? AND torrent = ?",
                    receipt.key,
                ).fetchone()
                previous = int(row[0]) if row else 0
                if receipt.total <= previous:
                    stale += 1  # checked before the signature: a replay costs no verify
                    continue
                if row is None and rows >= self.max_rows:
                    rejected += 1
                    continue
                try:
                    verify_receipt(receipt)
                except ReceiptError:
                    rejected += 1
                    continue
                if row is None:
                    rows += 1
                    db.execute(
                        "INSERT INTO credit_receipts"
                        " (receiver, giver, torrent, total, sig, first_seen, updated)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*receipt.key, receipt.total, receipt.signature, now, now),
                    )
                else:
                    db.execute(
                        "UPDATE credit_receipts SET total = ?, sig = ?, updated = ?"
                        " WHERE receiver = ? AND giver = ? AND torrent = ?",
                        (receipt.total, receipt.signature, now, *receipt.key),
                    )
                accepted += 1
                credited += receipt.total - previous
        return SubmitResult(accepted, stale, rejected, credited)

    def standing(self, identity: bytes) -> Standing:
        """The identity's standing; an identity nobody mentioned is a newcomer (all zero).

        Sums use SQLite's floating ``total()``, which cannot overflow: a sybil
        that signs receipts of 2^63 bytes must not be able to break the sums
        of the identities it names (they are exact up to 2^53 bytes, 8 PiB).
        """
        with self._connection.transaction() as db:
            uploaded, receivers = db.execute(
                "SELECT total(total), count(DISTINCT receiver)"
                " FROM credit_receipts WHERE giver = ?",
                (identity,),
            ).fetchone()
            downloaded, givers = db.execute(
                "SELECT total(total), count(DISTINCT giver)"
                " FROM credit_receipts WHERE receiver = ?",
                (identity,),
            ).fetchone()
            (seeding,) = db.execute(
                "SELECT total(seconds) FROM credit_seeding WHERE identity = ?", (identity,)
            ).fetchone()
        return Standing(bytes(identity), int(uploaded), int(downloaded), int(receivers),
                        int(givers), int(seeding))

    def standings(self, identities: Iterable[bytes]) -> list[Standing]:
        """The standing of each identity, in order (one call for a batch, as the tracker needs)."""
        return [self.standing(identity) for identity in identities]

    def add_seeding_time(self, credits: Mapping[tuple[bytes, bytes], float]) -> int:
        """Add seconds of seeding per (identity, torrent); return how many entries were kept.

        Only the tracker's own observation goes in here (see the module
        docstring), so there is nothing to verify; torrents not tracked here,
        negative times and new rows in a full store are dropped.
        """
        kept = 0
        now = self._clock()
        with self._connection.transaction() as db:
            rows = db.execute("SELECT count(*) FROM credit_seeding").fetchone()[0]
            for (identity, torrent), seconds in credits.items():
                if seconds <= 0 or len(identity) != PUBLIC_KEY_SIZE or (
                    self._is_allowed is not None and not self._is_allowed(torrent)
                ):
                    continue
                changed = db.execute(
                    "UPDATE credit_seeding SET seconds = seconds + ?, updated = ?"
                    " WHERE identity = ? AND torrent = ?",
                    (seconds, now, identity, torrent),
                ).rowcount
                if not changed:
                    if rows >= self.max_rows:
                        continue
                    rows += 1
                    db.execute(
                        "INSERT INTO credit_seeding (identity, torrent, seconds, updated)"
                        " VALUES (?, ?, ?, ?)",
                        (identity, torrent, seconds, now),
                    )
                kept += 1
        return kept

    def best_total(self, receiver: bytes, giver: bytes, torrent: bytes) -> int:
        """The highest verified total for this key (0: none)."""
        with self._connection.transaction() as db:
            row = db.execute(
                "SELECT total FROM credit_receipts"
                " WHERE receiver = ? AND giver = ? AND torrent = ?",
                (receiver, giver, torrent),
            ).fetchone()
        return int(row[0]) if row else 0
