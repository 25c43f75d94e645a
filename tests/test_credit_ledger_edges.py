"""Credit ledger files that are not ours to use, corrupt rows, and the periodic pruning."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from opendistro.credit.identity import CreditIdentity
from opendistro.credit.ledger import LEDGER_FILE_NAME, PRUNE_EVERY, CreditLedger
from opendistro.credit.receipts import issue_receipt
from opendistro.errors import StorageError

US = CreditIdentity.from_seed(bytes([40]) * 32)
PEER = CreditIdentity.from_seed(bytes([41]) * 32)
TORRENT = b"\x05" * 20


def test_a_ledger_from_a_newer_client_is_refused(tmp_path: Path) -> None:
    with CreditLedger.open(tmp_path, owner=US.public_key) as ledger:
        ledger.record(PEER.public_key, TORRENT, received=5)
    with sqlite3.connect(tmp_path / LEDGER_FILE_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match="schema 99 is newer than this client"):
        CreditLedger.open(tmp_path, owner=US.public_key)


def test_reading_a_database_that_is_no_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StorageError, match="not a credit ledger"):
        CreditLedger(path, owner=US.public_key, read_only=True)


def test_a_state_directory_that_cannot_be_made_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="cannot create state directory"):
        CreditLedger.open(blocker / "state", owner=US.public_key)


def test_a_corrupt_receipt_row_is_a_storage_error(tmp_path: Path) -> None:
    with CreditLedger.open(tmp_path, owner=US.public_key) as ledger:
        receipt = issue_receipt(PEER, torrent=TORRENT, giver=US.public_key, total=100)
        assert ledger.keep_receipt(receipt) == 100
        assert ledger.best_receipt(PEER.public_key, TORRENT) == receipt
    with sqlite3.connect(tmp_path / LEDGER_FILE_NAME) as db:
        db.execute("UPDATE held_receipts SET receipt = ?", (b"not a receipt",))
    with (
        CreditLedger.open(tmp_path, owner=US.public_key) as ledger,
        pytest.raises(StorageError, match="holds a corrupt receipt"),
    ):
        ledger.best_receipt(PEER.public_key, TORRENT)


def test_a_peer_known_only_by_its_receipts_is_in_the_summary() -> None:
    """Its exchange row may be gone (pruned) while its receipt to us is still held."""
    with CreditLedger(":memory:", owner=US.public_key) as ledger:
        ledger.keep_receipt(issue_receipt(PEER, torrent=TORRENT, giver=US.public_key, total=70))
        (peer,) = ledger.summary().peers
        assert (peer.identity, peer.received, peer.sent, peer.held) == (PEER.public_key, 0, 0, 70)
        assert peer.torrents == 1
        assert peer.to_json() == {
            "identity": PEER.public_key.hex(), "received": 0, "sent": 0, "held": 70,
            "credit": 0, "torrents": 1,
        }  # fmt: skip


def test_the_ledger_prunes_itself_every_so_many_writes() -> None:
    with CreditLedger(":memory:", owner=US.public_key, max_rows=10) as ledger:
        for number in range(PRUNE_EVERY - 1):
            ledger.record(number.to_bytes(32, "big"), TORRENT, received=1)
        assert len(ledger) == PRUNE_EVERY - 1
        ledger.record(b"\xff" * 32, TORRENT, received=1)
        assert len(ledger) == 10
