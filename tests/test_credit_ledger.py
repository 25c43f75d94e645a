"""The local credit ledger on real SQLite files: persistence, monotone totals, receipts, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from opendistro.credit.identity import CreditIdentity
from opendistro.credit.ledger import LEDGER_FILE_NAME, CreditLedger
from opendistro.credit.receipts import Receipt, issue_receipt
from opendistro.errors import ReceiptError, StorageError

US = CreditIdentity.from_seed(bytes([10]) * 32)
PEER = CreditIdentity.from_seed(bytes([11]) * 32)
PEER2 = CreditIdentity.from_seed(bytes([12]) * 32)
TORRENT = b"\x01" * 20
TORRENT_B = b"\x02" * 20


def from_peer(total: int, peer: CreditIdentity = PEER, torrent: bytes = TORRENT) -> Receipt:
    """A receipt ``peer`` signed for data it received from us."""
    return issue_receipt(peer, torrent=torrent, giver=US.public_key, total=total)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_ledger_survives_reopening(tmp_path: Path) -> None:
    with CreditLedger.open(tmp_path, owner=US.public_key) as ledger:
        ledger.record(PEER.public_key, TORRENT, received=3 << 20, sent=7 << 20)
        assert ledger.keep_receipt(from_peer(6 << 20)) == 6 << 20
    assert (tmp_path / LEDGER_FILE_NAME).is_file()
    with CreditLedger.open(tmp_path, owner=US.public_key) as ledger:
        history = ledger.exchange(PEER.public_key, TORRENT)
        assert (history.received, history.sent, history.held) == (3 << 20, 7 << 20, 6 << 20)
        assert ledger.best_receipt(PEER.public_key, TORRENT) == from_peer(6 << 20)
        assert ledger.totals(PEER.public_key) == (3 << 20, 7 << 20)


def test_totals_only_go_up(tmp_path: Path) -> None:
    with CreditLedger(tmp_path / "l.sqlite", owner=US.public_key) as ledger:
        ledger.record(PEER.public_key, TORRENT, received=100, sent=50)
        ledger.record(PEER.public_key, TORRENT, received=40, sent=80)  # a late, older report
        history = ledger.exchange(PEER.public_key, TORRENT)
        assert (history.received, history.sent) == (100, 80)
        assert ledger.exchange(PEER2.public_key, TORRENT).received == 0  # a stranger
        with pytest.raises(StorageError):
            ledger.record(PEER.public_key, TORRENT, received=-1)


def test_only_the_best_receipt_is_kept_and_replays_gain_nothing(tmp_path: Path) -> None:
    with CreditLedger(tmp_path / "l.sqlite", owner=US.public_key) as ledger:
        assert ledger.keep_receipt(from_peer(2 << 20)) == 2 << 20
        assert ledger.keep_receipt(from_peer(5 << 20)) == 3 << 20
        assert ledger.keep_receipt(from_peer(2 << 20)) == 0  # replayed old receipt
        assert ledger.keep_receipt(from_peer(5 << 20)) == 0  # replayed current receipt
        best = ledger.best_receipt(PEER.public_key, TORRENT)
        assert best is not None and best.total == 5 << 20
        assert len(ledger) == 1


def test_receipts_not_for_us_or_forged_are_not_kept(tmp_path: Path) -> None:
    with CreditLedger(tmp_path / "l.sqlite", owner=US.public_key) as ledger:
        for_someone_else = issue_receipt(PEER, torrent=TORRENT, giver=PEER2.public_key, total=9)
        with pytest.raises(ReceiptError, match="another giver"):
            ledger.keep_receipt(for_someone_else)
        honest = from_peer(100)
        inflated = Receipt(honest.torrent, honest.giver, honest.receiver, 10**9, honest.signature)
        with pytest.raises(ReceiptError, match="signature"):
            ledger.keep_receipt(inflated)
        assert ledger.best_receipt(PEER.public_key, TORRENT) is None


def test_submission_bookkeeping(tmp_path: Path) -> None:
    with CreditLedger(tmp_path / "l.sqlite", owner=US.public_key) as ledger:
        ledger.keep_receipt(from_peer(10))
        ledger.keep_receipt(from_peer(20, PEER2))
        pending = ledger.receipts_to_submit()
        assert {r.total for r in pending} == {10, 20}
        ledger.mark_submitted(pending)
        assert ledger.receipts_to_submit() == []
        ledger.keep_receipt(from_peer(30))  # a better receipt must be submitted again
        assert [r.total for r in ledger.receipts_to_submit()] == [30]


def test_old_rows_are_pruned(tmp_path: Path) -> None:
    clock = Clock()
    with CreditLedger(tmp_path / "l.sqlite", owner=US.public_key, max_age=100.0,
                      clock=clock) as ledger:
        ledger.record(PEER.public_key, TORRENT, received=1)
        ledger.keep_receipt(from_peer(5))
        clock.now += 50
        ledger.record(PEER2.public_key, TORRENT, received=2)
        clock.now += 60  # PEER's rows are now 110 s old, PEER2's 60 s
        assert ledger.prune() == 2
        assert ledger.exchange(PEER.public_key, TORRENT).received == 0
        assert ledger.best_receipt(PEER.public_key, TORRENT) is None
        assert ledger.exchange(PEER2.public_key, TORRENT).received == 2


def test_row_cap_keeps_recent_rows_and_unsubmitted_receipts(tmp_path: Path) -> None:
    clock = Clock()
    with CreditLedger(tmp_path / "l.sqlite", owner=US.public_key, max_rows=2,
                      clock=clock) as ledger:
        for number in range(5):
            clock.now += 1
            ledger.record(PEER.public_key, bytes([number]) * 20, received=number + 1)
        old = from_peer(7, torrent=TORRENT)
        ledger.keep_receipt(old)
        clock.now += 1
        submitted = [from_peer(8, torrent=TORRENT_B), from_peer(9, PEER2)]
        for receipt in submitted:
            ledger.keep_receipt(receipt)
        ledger.mark_submitted(submitted)
        ledger.prune()
        assert len(ledger) == 4  # two exchanges + two receipts
        assert ledger.exchange(PEER.public_key, bytes([4]) * 20).received == 5
        assert ledger.exchange(PEER.public_key, bytes([0]) * 20).received == 0
        # The unsubmitted receipt outlives a newer one the tracker already has.
        assert ledger.best_receipt(PEER.public_key, TORRENT) == old
        assert ledger.receipts_to_submit() == [old]


def test_a_file_that_is_not_a_ledger_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        CreditLedger(path, owner=US.public_key)


def test_receipts_to_submit_per_torrent(tmp_path: Path) -> None:
    with CreditLedger.open(tmp_path, owner=US.public_key) as ledger:
        a, b = from_peer(10), from_peer(20, torrent=TORRENT_B)
        other = from_peer(30, peer=PEER2)
        for receipt in (a, b, other):
            ledger.keep_receipt(receipt)
        assert ledger.receipts_to_submit(torrent=TORRENT) == [a, other]
        assert ledger.receipts_to_submit(torrent=TORRENT_B) == [b]
        assert ledger.receipts_to_submit(1, torrent=TORRENT) == [a]
        ledger.mark_submitted([a])
        assert ledger.receipts_to_submit(torrent=TORRENT) == [other]
        assert ledger.receipts_to_submit(torrent=b"\x03" * 20) == []
        assert sorted(r.total for r in ledger.receipts_to_submit()) == [20, 30]


def test_summary_totals_each_peer_over_every_torrent(tmp_path: Path) -> None:
    with CreditLedger.open(tmp_path, owner=US.public_key) as ledger:
        assert ledger.summary().peers == () and ledger.summary().unsubmitted == 0
        ledger.record(PEER.public_key, TORRENT, received=5000, sent=100)
        ledger.record(PEER.public_key, TORRENT_B, received=700)
        ledger.record(PEER2.public_key, TORRENT, sent=9000)
        ledger.keep_receipt(from_peer(8192, peer=PEER2))
        ledger.keep_receipt(from_peer(50, peer=PEER2, torrent=TORRENT_B))
        ledger.mark_submitted([from_peer(50, peer=PEER2, torrent=TORRENT_B)])
        summary = ledger.summary()
    # Biggest exchange first: PEER2 moved 9000 bytes, PEER 5800.
    assert [peer.identity for peer in summary.peers] == [PEER2.public_key, PEER.public_key]
    taker, giver = summary.peers
    assert (giver.received, giver.sent, giver.held, giver.torrents) == (5700, 100, 0, 2)
    assert giver.credit == 5600
    assert (taker.received, taker.sent, taker.held, taker.torrents) == (0, 9000, 8242, 1)
    assert summary.unsubmitted == 1
    assert (summary.received, summary.sent, summary.held) == (5700, 9100, 8242)


def test_a_read_only_ledger_writes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    with CreditLedger.open(tmp_path, owner=US.public_key) as ledger:
        ledger.record(PEER.public_key, TORRENT, received=42)
    path = tmp_path / LEDGER_FILE_NAME
    before = path.read_bytes()
    clock.now += 10 * 365 * 24 * 3600  # every row is long past max_age...
    with CreditLedger(path, owner=US.public_key, read_only=True, clock=clock) as view:
        assert view.prune() == 0  # ...yet a read-only view prunes nothing
        assert [peer.received for peer in view.summary().peers] == [42]
        with pytest.raises(StorageError):
            view.record(PEER.public_key, TORRENT, received=43)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE_NAME]
    with pytest.raises(StorageError):
        CreditLedger(tmp_path / "missing.sqlite", owner=US.public_key, read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()
