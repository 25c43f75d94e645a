"""The od_credit extension between two real CreditSessions: hello binding, receipts, limits.

The two sessions talk through real encoded BEP 10 handshakes and od_credit
payloads; only the socket is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opendistro.bencode import encode
from opendistro.credit.identity import CreditIdentity
from opendistro.credit.ledger import CreditLedger
from opendistro.credit.receipts import issue_receipt
from opendistro.errors import CreditProtocolError, LocalProtocolError, RemoteProtocolError
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.od_credit import (
    EXTENSION_NAME,
    CreditSession,
    Hello,
    PeerIdentified,
    ReceiptAccepted,
    ReceiptIssued,
    ReceiptMessage,
    ReceiptRequest,
    decode_credit_message,
    encode_credit_message,
)

SEEDER = CreditIdentity.from_seed(bytes([21]) * 32)
LEECHER = CreditIdentity.from_seed(bytes([22]) * 32)
MALLORY = CreditIdentity.from_seed(bytes([23]) * 32)
INFO_HASH = b"\x42" * 20
SEEDER_PID = b"-OD0001-seeder000001"
LEECHER_PID = b"-OD0001-leecher00001"
MiB = 1 << 20  # RECEIPT_INTERVAL, the default


def handshake_from(session: CreditSession | None) -> ExtensionHandshake:
    """The handshake ``session``'s side sends, through real encoding (None: no od_credit)."""
    if session is None:
        sent = ExtensionHandshake(m={"ut_metadata": 2})
    else:
        sent = ExtensionHandshake(m={EXTENSION_NAME: 7}, extra=session.handshake_fields())
    return ExtensionHandshake.decode(sent.encode())


def deliver(sender: CreditSession, receiver: CreditSession) -> list[object]:
    """Send everything ``sender`` has queued; return what ``receiver`` made of it."""
    return [receiver.handle_message(payload) for payload in sender.outgoing()]


def connect(
    seeder: CreditIdentity = SEEDER, leecher: CreditIdentity = LEECHER
) -> tuple[CreditSession, CreditSession]:
    up = CreditSession(seeder, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                       their_peer_id=LEECHER_PID)
    down = CreditSession(leecher, info_hash=INFO_HASH, our_peer_id=LEECHER_PID,
                         their_peer_id=SEEDER_PID)
    up.on_peer_handshake(handshake_from(down))
    down.on_peer_handshake(handshake_from(up))
    assert deliver(up, down) == [PeerIdentified(seeder.public_key)]
    assert deliver(down, up) == [PeerIdentified(leecher.public_key)]
    return up, down


def transfer(up: CreditSession, down: CreditSession, count: int) -> list[object]:
    """``up`` sends ``count`` bytes that ``down`` verifies; deliver any receipts."""
    up.on_bytes_sent(count)
    down.on_verified_bytes(count)
    return deliver(down, up)


def test_a_download_earns_the_uploader_receipts_every_mebibyte() -> None:
    up, down = connect()
    assert transfer(up, down, MiB - 1) == []
    [accepted] = transfer(up, down, 1)
    assert isinstance(accepted, ReceiptAccepted)
    assert (accepted.receipt.total, accepted.gain) == (MiB, MiB)
    assert accepted.receipt.giver == SEEDER.public_key
    assert accepted.receipt.receiver == LEECHER.public_key
    [accepted] = transfer(up, down, 3 * MiB)
    assert isinstance(accepted, ReceiptAccepted) and accepted.gain == 3 * MiB
    assert up.best_held == 4 * MiB and down.received == 4 * MiB and up.sent == 4 * MiB


def test_the_uploader_can_ask_for_a_receipt_of_everything_so_far() -> None:
    up, down = connect()
    assert transfer(up, down, 300_000) == []
    up.request_receipt()
    assert deliver(up, down) == [
        ReceiptIssued(issue_receipt(LEECHER, torrent=INFO_HASH, giver=SEEDER.public_key,
                                    total=300_000))
    ]
    [accepted] = deliver(down, up)
    assert isinstance(accepted, ReceiptAccepted) and accepted.receipt.total == 300_000
    up.request_receipt()  # nothing new was sent: no request goes out
    assert up.outgoing() == []


def test_a_peer_without_od_credit_gets_nothing_and_breaks_nothing() -> None:
    session = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                            their_peer_id=LEECHER_PID)
    session.on_peer_handshake(handshake_from(None))
    assert not session.active
    session.on_verified_bytes(10 * MiB)
    session.on_bytes_sent(10 * MiB)
    session.request_receipt()
    assert session.outgoing() == []
    with pytest.raises(CreditProtocolError):
        session.handle_message(encode_credit_message(ReceiptRequest()))


def test_a_handshake_with_a_bad_nonce_disables_od_credit_without_error() -> None:
    session = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                            their_peer_id=LEECHER_PID)
    bad = ExtensionHandshake(m={EXTENSION_NAME: 7}, extra={b"od_credit_nonce": b"short"})
    session.on_peer_handshake(ExtensionHandshake.decode(bad.encode()))
    assert not session.active and session.outgoing() == []


def test_a_recorded_hello_cannot_be_replayed_on_another_connection() -> None:
    # Mallory recorded the leecher's hello on one connection and replays it on a new one,
    # even reusing the leecher's peer id: the seeder's fresh nonce makes it useless.
    up, down = connect()
    old = CreditSession(LEECHER, info_hash=INFO_HASH, our_peer_id=LEECHER_PID,
                        their_peer_id=SEEDER_PID)
    first = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                          their_peer_id=LEECHER_PID)
    old.on_peer_handshake(handshake_from(first))
    [recorded_hello] = old.outgoing()
    fresh = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                          their_peer_id=LEECHER_PID)
    fresh.on_peer_handshake(handshake_from(down))
    with pytest.raises(CreditProtocolError, match="bind"):
        fresh.handle_message(recorded_hello)
    assert fresh.peer_identity is None
    assert up.peer_identity == LEECHER.public_key


@pytest.mark.parametrize("field", ["info_hash", "their_peer_id"])
def test_a_hello_for_another_torrent_or_peer_is_refused(field: str) -> None:
    ours = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                         their_peer_id=LEECHER_PID)
    other = {"info_hash": INFO_HASH, "our_peer_id": LEECHER_PID, "their_peer_id": SEEDER_PID}
    other["info_hash" if field == "info_hash" else "their_peer_id"] = b"\x07" * 20
    theirs = CreditSession(LEECHER, **other)
    ours.on_peer_handshake(handshake_from(theirs))
    theirs.on_peer_handshake(handshake_from(ours))
    with pytest.raises(CreditProtocolError, match="bind"):
        deliver(theirs, ours)


def test_a_hello_claiming_a_key_it_does_not_hold_is_refused() -> None:
    up = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                       their_peer_id=LEECHER_PID)
    mallory = CreditSession(MALLORY, info_hash=INFO_HASH, our_peer_id=LEECHER_PID,
                            their_peer_id=SEEDER_PID)
    up.on_peer_handshake(handshake_from(mallory))
    mallory.on_peer_handshake(handshake_from(up))
    [hello_payload] = mallory.outgoing()
    hello = decode_credit_message(hello_payload)
    assert isinstance(hello, Hello)
    claimed = encode_credit_message(Hello(LEECHER.public_key, hello.signature))
    with pytest.raises(CreditProtocolError):
        up.handle_message(claimed)
    # Our own key with someone else's signature: a forger, refused.
    forged_self = encode_credit_message(Hello(SEEDER.public_key, hello.signature))
    with pytest.raises(CreditProtocolError, match="our own"):
        up.handle_message(forged_self)


def test_our_own_identity_in_another_process_turns_credit_off_quietly() -> None:
    """``seed`` and ``get`` sharing one state folder meet with one identity: the
    connection carries data as usual, but neither side counts or signs anything."""
    one = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                        their_peer_id=LEECHER_PID)
    two = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=LEECHER_PID,
                        their_peer_id=SEEDER_PID)
    one.on_peer_handshake(handshake_from(two))
    two.on_peer_handshake(handshake_from(one))
    assert deliver(one, two) == [None] and deliver(two, one) == [None]
    assert not one.active and not two.active
    assert one.peer_identity is None and two.peer_identity is None
    two.on_bytes_sent(5 * MiB)
    assert one.on_verified_bytes(5 * MiB) is None  # no receipt to ourselves
    assert one.issue_receipt() is None
    two.request_receipt()
    assert one.outgoing() == [] and two.outgoing() == []


def test_a_stopping_downloader_signs_a_receipt_for_the_last_bytes() -> None:
    up, down = connect()
    transfer(up, down, MiB)  # a receipt at 1 MiB...
    assert transfer(up, down, 300_000) == []  # ...and 300,000 bytes it does not cover
    assert up.best_held == MiB
    issued = down.issue_receipt()
    assert issued is not None and issued.receipt.total == MiB + 300_000
    [accepted] = deliver(down, up)
    assert isinstance(accepted, ReceiptAccepted) and accepted.gain == 300_000
    assert up.best_held == down.received == MiB + 300_000
    assert down.issue_receipt() is None  # nothing new received: nothing to sign
    assert down.outgoing() == []


def test_messages_out_of_order_are_protocol_errors() -> None:
    up, down = connect()
    with pytest.raises(RemoteProtocolError, match="second"):
        # A second hello: replay the one already accepted.
        fresh = CreditSession(LEECHER, info_hash=INFO_HASH, our_peer_id=LEECHER_PID,
                              their_peer_id=SEEDER_PID, nonce=None)
        fresh.on_peer_handshake(handshake_from(up))
        deliver(fresh, up)
    early = CreditSession(SEEDER, info_hash=INFO_HASH, our_peer_id=SEEDER_PID,
                          their_peer_id=LEECHER_PID)
    early.on_peer_handshake(handshake_from(down))
    receipt = issue_receipt(LEECHER, torrent=INFO_HASH, giver=SEEDER.public_key, total=5)
    with pytest.raises(CreditProtocolError, match="before the peer's hello"):
        early.handle_message(encode_credit_message(ReceiptMessage(receipt)))


@pytest.mark.parametrize(
    ("signer", "torrent", "giver"),
    [
        (LEECHER, b"\x43" * 20, SEEDER),  # another torrent
        (LEECHER, INFO_HASH, MALLORY),  # crediting someone else
        (MALLORY, INFO_HASH, SEEDER),  # signed by a third party, not the connected peer
    ],
    ids=["other torrent", "other giver", "other receiver"],
)
def test_receipts_bound_elsewhere_are_refused(
    signer: CreditIdentity, torrent: bytes, giver: CreditIdentity
) -> None:
    up, _ = connect()
    up.on_bytes_sent(MiB)
    receipt = issue_receipt(signer, torrent=torrent, giver=giver.public_key, total=MiB)
    with pytest.raises(CreditProtocolError, match="bound"):
        up.handle_message(encode_credit_message(ReceiptMessage(receipt)))
    assert up.best_held == 0


def test_forged_and_inflated_receipts_are_refused() -> None:
    up, down = connect()
    transfer(up, down, MiB)
    honest = issue_receipt(LEECHER, torrent=INFO_HASH, giver=SEEDER.public_key, total=2 * MiB)
    fields = honest.to_fields()
    fields[b"total"] = 50 * MiB  # inflated after signing
    inflated = encode({b"msg_type": 1, b"receipt": fields})
    with pytest.raises(CreditProtocolError, match="signature"):
        up.handle_message(inflated)
    fields[b"total"] = 2 * MiB
    fields[b"sig"] = SEEDER.sign(honest.signed_bytes())  # forged by the giver itself
    with pytest.raises(CreditProtocolError, match="signature"):
        up.handle_message(encode({b"msg_type": 1, b"receipt": fields}))
    assert up.best_held == MiB


def test_replayed_receipts_are_ignored() -> None:
    up, down = connect()
    [first] = transfer(up, down, MiB)
    assert isinstance(first, ReceiptAccepted)
    transfer(up, down, MiB)
    replay = encode_credit_message(ReceiptMessage(first.receipt))
    assert up.handle_message(replay) is None
    assert up.stale_receipts == 1 and up.best_held == 2 * MiB


def test_a_receipt_flood_is_cut_off() -> None:
    up, _ = connect()
    up.on_bytes_sent(64 * 1024)  # warrants one receipt beyond the free allowance
    payloads = [
        encode_credit_message(ReceiptMessage(
            issue_receipt(LEECHER, torrent=INFO_HASH, giver=SEEDER.public_key, total=n)))
        for n in range(1, 11)
    ]
    for payload in payloads[:9]:
        up.handle_message(payload)
    with pytest.raises(CreditProtocolError, match="more od_credit receipts"):
        up.handle_message(payloads[9])


def test_totals_continue_across_sessions_through_the_ledger(tmp_path: Path) -> None:
    """A restart must not start receipts from zero: they would be worth nothing."""
    for _ in range(2):
        with (
            CreditLedger.open(tmp_path / "seeder", owner=SEEDER.public_key) as seeder_book,
            CreditLedger.open(tmp_path / "leecher", owner=LEECHER.public_key) as leecher_book,
        ):
            up, down = connect()
            assert up.peer_identity is not None and down.peer_identity is not None
            up.resume(seeder_book.exchange(up.peer_identity, INFO_HASH))
            down.resume(leecher_book.exchange(down.peer_identity, INFO_HASH))
            for event in transfer(up, down, 2 * MiB):
                assert isinstance(event, ReceiptAccepted)
                seeder_book.keep_receipt(event.receipt)
            seeder_book.record(LEECHER.public_key, INFO_HASH, sent=up.sent)
            leecher_book.record(SEEDER.public_key, INFO_HASH, received=down.received)
    best = seeder_book_best(tmp_path)
    assert best == 4 * MiB


def test_what_a_session_left_unreceipted_is_receipted_by_the_next(tmp_path: Path) -> None:
    """A connection replaced before its next receipt was due must not lose that part."""
    with (
        CreditLedger.open(tmp_path / "seeder", owner=SEEDER.public_key) as seeder_book,
        CreditLedger.open(tmp_path / "leecher", owner=LEECHER.public_key) as leecher_book,
    ):
        up, down = connect()
        [first] = transfer(up, down, MiB + MiB // 2)
        assert isinstance(first, ReceiptAccepted) and first.receipt.total == MiB + MiB // 2
        assert transfer(up, down, MiB // 4) == []  # not due yet when the connection ends
        seeder_book.keep_receipt(first.receipt)
        seeder_book.record(LEECHER.public_key, INFO_HASH, sent=up.sent)
        leecher_book.record(SEEDER.public_key, INFO_HASH, received=down.received)

        up, down = connect()
        up.resume(seeder_book.exchange(LEECHER.public_key, INFO_HASH))
        down.resume(leecher_book.exchange(SEEDER.public_key, INFO_HASH))
        [again] = transfer(up, down, 16384)
        assert isinstance(again, ReceiptAccepted)
        assert again.receipt.total == MiB + MiB // 2 + MiB // 4 + 16384
        assert again.gain == MiB // 4 + 16384


def seeder_book_best(tmp_path: Path) -> int:
    with CreditLedger.open(tmp_path / "seeder", owner=SEEDER.public_key) as book:
        receipt = book.best_receipt(LEECHER.public_key, INFO_HASH)
        assert receipt is not None
        assert book.exchange(LEECHER.public_key, INFO_HASH).sent == 4 * MiB
        return receipt.total


def test_resume_refuses_someone_elses_history(tmp_path: Path) -> None:
    up, _ = connect()
    with (
        CreditLedger.open(tmp_path, owner=SEEDER.public_key) as book,
        pytest.raises(LocalProtocolError),
    ):
        up.resume(book.exchange(MALLORY.public_key, INFO_HASH))

