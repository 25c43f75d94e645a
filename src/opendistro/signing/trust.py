"""The trust store: which publisher keys a user trusts, and what they already accepted.

It lives in one SQLite file the user chooses, so it survives restarts and can
be shared by the CLI and a long-running client. It remembers:

* pinned keys, each with its publisher name, optional expiry (``not_after``)
  and, for a key learnt through a rotation certificate, the key that certified
  it (its *predecessor*);
* revocations, which are permanent: a revoked key id is refused from then on,
  even if someone pins it again;
* for each (publisher, release name) the newest release accepted so far, which
  is what rollback protection compares against (by ``created``).

Every change happens in one ``BEGIN IMMEDIATE`` transaction, so two processes
sharing a store cannot both accept a release the other just superseded. One
connection is shared behind a lock, which lets trio code call in from worker
threads.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, SignatureError, StorageError
from .keys import PublicKeyFile, Scheme, VerifyingKey, check_text
from .reasons import Reason, refuse
from .statement import Envelope, ReleaseStatement, RevocationStatement, RotationStatement

__all__ = [
    "MAX_CLOCK_SKEW",
    "AcceptedRelease",
    "TrustStore",
    "TrustedKey",
    "check_not_future",
]

#: A statement may claim a ``created`` time at most this far past our clock.
#: A publisher whose clock runs ahead would otherwise lock out its own later
#: releases (rollback protection compares ``created``).
MAX_CLOCK_SKEW = 24 * 3600

_APPLICATION_ID = 0x6F647473  # "odts"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE keys (
    key_id BLOB PRIMARY KEY,
    spki BLOB NOT NULL,
    publisher TEXT NOT NULL,
    not_after INTEGER,
    added INTEGER NOT NULL,
    predecessor BLOB,
    revoked_at INTEGER,
    revocation_reason TEXT
);
CREATE TABLE releases (
    publisher TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created INTEGER NOT NULL,
    info_hash_v1 BLOB,
    info_hash_v2 BLOB,
    key_id BLOB NOT NULL,
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (publisher, name)
);
"""
_KEY_COLUMNS = "spki, publisher, not_after, added, predecessor, revoked_at, revocation_reason"


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


def check_not_future(created: int, now: int, what: str) -> None:
    """Refuse a statement dated further ahead of ``now`` than MAX_CLOCK_SKEW."""
    if created > now + MAX_CLOCK_SKEW:
        raise refuse(Reason.INVALID, f"{what} is dated {created}, in the future (now {now})")


@dataclass(frozen=True)
class TrustedKey:
    """A key in the store and everything the store knows about it."""

    key: VerifyingKey
    publisher: str
    not_after: int | None
    added: int
    predecessor: bytes | None
    revoked_at: int | None
    revocation_reason: str | None

    @property
    def key_id(self) -> bytes:
        return self.key.key_id

    @property
    def scheme(self) -> Scheme:
        return self.key.scheme

    def check_usable(self, now: int, signed_at: int | None = None) -> None:
        """Raise "revoked" or "expired" unless this key may vouch for something now.

        Expiry is judged at verification time, not at the signer's claimed
        ``created``: a stolen expired key could claim any ``created`` it likes.
        """
        who = f"key {self.key_id.hex()} of {self.publisher!r}"
        if self.revoked_at is not None:
            why = f" ({self.revocation_reason})" if self.revocation_reason else ""
            raise refuse(Reason.REVOKED, f"{who} was revoked at {self.revoked_at}{why}")
        if self.not_after is not None:
            if now > self.not_after:
                raise refuse(Reason.EXPIRED, f"{who} expired at {self.not_after} (now {now})")
            if signed_at is not None and signed_at > self.not_after:
                raise refuse(
                    Reason.EXPIRED, f"{who} expires at {self.not_after}, before {signed_at}"
                )

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id.hex(),
            "scheme": self.scheme,
            "publisher": self.publisher,
            "not_after": self.not_after,
            "added": self.added,
            "predecessor": self.predecessor.hex() if self.predecessor else None,
            "revoked_at": self.revoked_at,
            "revocation_reason": self.revocation_reason,
        }


@dataclass(frozen=True)
class AcceptedRelease:
    """The newest release of one name accepted from one publisher."""

    publisher: str
    name: str
    version: str
    created: int
    info_hash_v1: bytes | None
    info_hash_v2: bytes | None
    key_id: bytes
    accepted_at: int


def _optional_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class TrustStore:
    """Pinned publisher keys, rotations, revocations and accepted releases in SQLite.

    ``path`` is a file (created on first use) or ``":memory:"`` for a store that
    lives as long as the object, e.g. one pinned key given on the command line.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open trust store {self.path!r}: {exc}") from exc
        try:
            self._initialise()
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def pinned(cls, key_file: PublicKeyFile, *, publisher: str | None = None) -> TrustStore:
        """An in-memory store trusting the one key in ``key_file``."""
        store = cls()
        store.add_key(
            key_file.key,
            publisher=publisher or key_file.publisher or key_file.key.key_id.hex(),
            not_after=key_file.not_after,
        )
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TrustStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------

    def _initialise(self) -> None:
        with self._transaction(write=False) as db:
            if self._has_schema(db):
                return
        with self._transaction() as db:  # re-checked: another process may have won the race
            if not self._has_schema(db):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _has_schema(self, db: sqlite3.Connection) -> bool:
        """True for our store, False for an empty database; ConfigError for anything else."""
        try:
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.OperationalError:
            raise  # locked, unreadable: a storage problem, not a wrong file
        except sqlite3.DatabaseError:
            raise ConfigError(f"{self.path!r} is not an opendistro trust store") from None
        if application_id == 0 and tables == 0:
            return False
        if application_id != _APPLICATION_ID:
            raise ConfigError(f"{self.path!r} is not an opendistro trust store")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != _SCHEMA_VERSION:
            raise ConfigError(f"trust store {self.path!r} has unknown schema {version}")
        return True

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; a writing one takes the write lock before reading anything.

        That is what makes "check the newest release, then record this one"
        atomic between processes. SQLite failures surface as StorageError.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"trust store {self.path!r}: {exc}") from exc

    def _row_to_key(self, key_id: bytes, row: Any) -> TrustedKey:
        spki, publisher, not_after, added, predecessor, revoked_at, reason = row
        try:
            key = VerifyingKey.from_spki(bytes(spki))
        except SignatureError as exc:
            raise StorageError(f"trust store {self.path!r} holds a bad key: {exc}") from None
        if key.key_id != key_id:
            raise StorageError(f"trust store {self.path!r}: key id does not match its key")
        return TrustedKey(
            key, str(publisher), not_after, int(added), _optional_bytes(predecessor),
            revoked_at, reason,
        )

    def _get(self, db: sqlite3.Connection, key_id: bytes) -> TrustedKey | None:
        row = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else self._row_to_key(key_id, row)

    # -- reading ----------------------------------------------------------------------

    def get(self, key_id: bytes) -> TrustedKey | None:
        """The stored key with this id (revoked or expired ones too), or None."""
        with self._transaction(write=False) as db:
            return self._get(db, bytes(key_id))

    def keys(self) -> list[TrustedKey]:
        """Every stored key, in the order they were added."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT key_id, {_KEY_COLUMNS} FROM keys ORDER BY rowid"
            ).fetchall()
            return [self._row_to_key(bytes(row[0]), row[1:]) for row in rows]

    def lookup(self, key_id: bytes) -> TrustedKey:
        """The stored key with this id, or raise "untrusted key"."""
        found = self.get(key_id)
        if found is None:
            raise refuse(Reason.UNTRUSTED, f"key {bytes(key_id).hex()} is not in the trust store")
        return found

    def latest_release(self, publisher: str, name: str) -> AcceptedRelease | None:
        """The newest release ``name`` accepted from ``publisher``, if any."""
        with self._transaction(write=False) as db:
            return self._latest(db, publisher, name)

    @staticmethod
    def _latest(db: sqlite3.Connection, publisher: str, name: str) -> AcceptedRelease | None:
        row = db.execute(
            "SELECT version, created, info_hash_v1, info_hash_v2, key_id, accepted_at"
            " FROM releases WHERE publisher = ? AND name = ?",
            (publisher, name),
        ).fetchone()
        if row is None:
            return None
        version, created, v1, v2, key_id, accepted_at = row
        return AcceptedRelease(
            publisher, name, str(version), int(created), _optional_bytes(v1),
            _optional_bytes(v2), bytes(key_id), int(accepted_at),
        )

    # -- pinning and local decisions --------------------------------------------------

    def add_key(
        self,
        key: VerifyingKey,
        *,
        publisher: str,
        not_after: int | None = None,
        now: int | None = None,
    ) -> TrustedKey:
        """Pin ``key`` for ``publisher`` (re-adding it only updates ``not_after``)."""
        try:
            check_text(publisher.encode(), "publisher")
        except SignatureError as exc:
            raise ConfigError(str(exc)) from None
        with self._transaction() as db:
            existing = self._get(db, key.key_id)
            if existing is not None:
                if existing.revoked_at is not None:
                    raise ConfigError(
                        f"key {key.key_id.hex()} was revoked; it cannot be trusted again"
                    )
                if existing.publisher != publisher:
                    raise ConfigError(
                        f"key {key.key_id.hex()} is already trusted for {existing.publisher!r}"
                    )
                db.execute(
                    "UPDATE keys SET not_after = ? WHERE key_id = ?", (not_after, key.key_id)
                )
            else:
                db.execute(
                    "INSERT INTO keys (key_id, spki, publisher, not_after, added)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key.key_id, key.spki, publisher, not_after, _now(now)),
                )
            found = self._get(db, key.key_id)
            assert found is not None
            return found

    def revoke(
        self, key_id: bytes, *, reason: str | None = None, now: int | None = None
    ) -> TrustedKey:
        """Stop trusting a stored key for good, on the user's own say-so."""
        with self._transaction() as db:
            return self._revoke(db, bytes(key_id), reason, _now(now))

    def _revoke(
        self, db: sqlite3.Connection, key_id: bytes, reason: str | None, now: int
    ) -> TrustedKey:
        existing = self._get(db, key_id)
        if existing is None:
            raise refuse(Reason.UNTRUSTED, f"key {key_id.hex()} is not in the trust store")
        if existing.revoked_at is None:
            db.execute(
                "UPDATE keys SET revoked_at = ?, revocation_reason = ? WHERE key_id = ?",
                (now, reason, key_id),
            )
        found = self._get(db, key_id)
        assert found is not None
        return found

    # -- signed certificates ----------------------------------------------------------

    def apply_rotation(self, certificate: bytes, *, now: int | None = None) -> TrustedKey:
        """Trust the new key a rotation certificate names, for the signer's publisher.

        The signer must be in the store, unrevoked and unexpired; the new key
        then gets the signer as its predecessor. Returns the new key's entry.
        """
        now = _now(now)
        statement, signer_key = Envelope.decode(certificate).open(
            RotationStatement, lambda st: self.lookup(st.key_id).key
        )
        signer = self.lookup(signer_key.key_id)
        signer.check_usable(now, statement.created)
        check_not_future(statement.created, now, "rotation certificate")
        new_key = VerifyingKey.from_spki(statement.new_key)
        if new_key.key_id == signer.key_id:
            raise refuse(Reason.INVALID, "rotation certificate names the signing key itself")
        with self._transaction() as db:
            existing = self._get(db, new_key.key_id)
            if existing is not None:
                existing.check_usable(now)
                if existing.publisher != signer.publisher:
                    raise refuse(
                        Reason.INVALID,
                        f"key {new_key.key_id.hex()} already belongs to {existing.publisher!r}",
                    )
                return existing
            db.execute(
                "INSERT INTO keys (key_id, spki, publisher, not_after, added, predecessor)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    new_key.key_id, new_key.spki, signer.publisher, statement.not_after, now,
                    signer.key_id,
                ),
            )
            found = self._get(db, new_key.key_id)
            assert found is not None
            return found

    def apply_revocation(self, certificate: bytes, *, now: int | None = None) -> TrustedKey:
        """Revoke the key a revocation certificate names. Returns its (revoked) entry.

        Valid when signed by the revoked key itself or by its predecessor, even
        if the signer is itself revoked or expired, and whatever its ``created``
        time: a revocation only ever takes trust away, so accepting it can never
        let an attacker in.
        """
        now = _now(now)

        def key_for(statement: RevocationStatement) -> VerifyingKey:
            signer = self.lookup(statement.key_id)
            target = self.lookup(statement.revoked_key)
            if statement.key_id not in (target.key_id, target.predecessor):
                raise refuse(
                    Reason.INVALID,
                    f"key {statement.key_id.hex()} may not revoke {target.key_id.hex()}:"
                    " only the key itself or its predecessor may",
                )
            return signer.key

        statement, _ = Envelope.decode(certificate).open(RevocationStatement, key_for)
        with self._transaction() as db:
            return self._revoke(db, statement.revoked_key, statement.reason, now)

    # -- releases ---------------------------------------------------------------------

    def accept_release(
        self, publisher: str, statement: ReleaseStatement, *, now: int | None = None,
        record: bool = True,
    ) -> None:
        """Apply rollback protection to a verified release, and remember it if newest.

        Refused ("rolled back") when an accepted release of the same name from
        the same publisher is newer (larger ``created``), or equally new but for
        a different torrent. Accepting the newest release again is fine.
        """
        with self._transaction() as db:
            latest = self._latest(db, publisher, statement.name)
            if latest is not None:
                if statement.created < latest.created:
                    raise refuse(
                        Reason.ROLLED_BACK,
                        f"{statement.name} {statement.version} (created {statement.created}) is"
                        f" older than {latest.version} (created {latest.created}) already"
                        f" accepted from {publisher!r}",
                    )
                same_torrent = (statement.info_hash_v1, statement.info_hash_v2) == (
                    latest.info_hash_v1,
                    latest.info_hash_v2,
                )
                if statement.created == latest.created and not same_torrent:
                    raise refuse(
                        Reason.ROLLED_BACK,
                        f"{statement.name} {statement.version} has the same created time"
                        f" ({statement.created}) as the different release {latest.version}"
                        f" already accepted from {publisher!r}",
                    )
                if statement.created == latest.created:
                    return
            if record:
                db.execute(
                    "INSERT OR REPLACE INTO releases (publisher, name, version, created,"
                    " info_hash_v1, info_hash_v2, key_id, accepted_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        publisher, statement.name, statement.version, statement.created,
                        statement.info_hash_v1, statement.info_hash_v2, statement.key_id,
                        _now(now),
                    ),
                )
