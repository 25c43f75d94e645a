"""Signed receipts: forged, rebound, inflated and malformed receipts are all refused."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.bencode import decode, encode
from opendistro.credit.identity import CreditIdentity
from opendistro.credit.receipts import (
    RECEIPT_DOMAIN,
    Receipt,
    issue_receipt,
    verify_receipt,
)
from opendistro.errors import ReceiptError

RECEIVER = CreditIdentity.from_seed(bytes([1]) * 32)
GIVER = CreditIdentity.from_seed(bytes([2]) * 32)
OTHER = CreditIdentity.from_seed(bytes([3]) * 32)
TORRENT = bytes(range(20))
TORRENT_B = bytes(range(1, 21))


def receipt(total: int = 5 << 20, torrent: bytes = TORRENT) -> Receipt:
    return issue_receipt(RECEIVER, torrent=torrent, giver=GIVER.public_key, total=total)


def test_a_receipt_verifies_and_round_trips() -> None:
    good = receipt()
    verify_receipt(good, torrent=TORRENT, giver=GIVER.public_key, receiver=RECEIVER.public_key)
    assert Receipt.decode(good.encode()) == good
    assert good.signed_bytes().startswith(RECEIPT_DOMAIN)
    assert good.key == (RECEIVER.public_key, GIVER.public_key, TORRENT)
    assert receipt() == good  # Ed25519 is deterministic: same facts, same bytes


def test_an_inflated_total_breaks_the_signature() -> None:
    inflated = dataclasses.replace(receipt(), total=(5 << 20) + 1)
    with pytest.raises(ReceiptError, match="signature"):
        verify_receipt(inflated)


@pytest.mark.parametrize(
    "change",
    [
        {"torrent": TORRENT_B},
        {"giver": OTHER.public_key},
        {"receiver": OTHER.public_key},
    ],
    ids=["torrent", "giver", "receiver"],
)
def test_moving_a_receipt_to_another_torrent_or_peer_breaks_it(change: dict[str, bytes]) -> None:
    moved = dataclasses.replace(receipt(), **change)
    with pytest.raises(ReceiptError):
        verify_receipt(moved)


def test_binding_is_checked_against_what_the_verifier_expects() -> None:
    good = receipt()
    with pytest.raises(ReceiptError, match="another torrent"):
        verify_receipt(good, torrent=TORRENT_B)
    with pytest.raises(ReceiptError, match="another giver"):
        verify_receipt(good, giver=OTHER.public_key)
    with pytest.raises(ReceiptError, match="another receiver"):
        verify_receipt(good, receiver=OTHER.public_key)


def test_a_receipt_signed_by_someone_else_is_forged() -> None:
    # OTHER signs a receipt claiming RECEIVER received the data.
    honest = receipt()
    forged = dataclasses.replace(honest, signature=OTHER.sign(honest.signed_bytes()))
    with pytest.raises(ReceiptError, match="signature"):
        verify_receipt(forged)
    # ... and a signature over the same fields without the domain prefix is no receipt either.
    stripped = honest.signed_bytes()[len(RECEIPT_DOMAIN):]
    with pytest.raises(ReceiptError, match="signature"):
        verify_receipt(dataclasses.replace(honest, signature=RECEIVER.sign(stripped)))


def test_shapes_that_are_never_receipts() -> None:
    with pytest.raises(ReceiptError, match="differ"):
        issue_receipt(RECEIVER, torrent=TORRENT, giver=RECEIVER.public_key, total=1)
    with pytest.raises(ReceiptError, match="total"):
        issue_receipt(RECEIVER, torrent=TORRENT, giver=GIVER.public_key, total=0)
    with pytest.raises(ReceiptError, match="total"):
        issue_receipt(RECEIVER, torrent=TORRENT, giver=GIVER.public_key, total=1 << 63)
    with pytest.raises(ReceiptError, match="info-hash"):
        issue_receipt(RECEIVER, torrent=bytes(32), giver=GIVER.public_key, total=1)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: {**f, b"extra": 1},
        lambda f: {k: v for k, v in f.items() if k != b"sig"},
        lambda f: {**f, b"v": 2},
        lambda f: {**f, b"total": b"5"},
        lambda f: {**f, b"giver": 7},
        lambda f: {**f, b"total": -1},
    ],
    ids=["unknown key", "no signature", "version 2", "total as string", "giver as int",
         "negative total"],
)
def test_malformed_receipts_are_refused(mutate: object) -> None:
    assert callable(mutate)
    with pytest.raises(ReceiptError):
        Receipt.decode(encode(mutate(receipt().to_fields())))


def test_non_canonical_and_oversized_encodings_are_refused() -> None:
    data = receipt().encode()
    unsorted = b"d3:sig64:" + receipt().signature + data[1:].replace(
        b"3:sig64:" + receipt().signature, b""
    )
    assert decode(unsorted) == decode(data)
    with pytest.raises(ReceiptError, match="canonical"):
        Receipt.decode(unsorted)
    with pytest.raises(ReceiptError, match="at most"):
        Receipt.decode(data + bytes(300))
    with pytest.raises(ReceiptError, match="bencoded"):
        Receipt.decode(data[:-1])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_caught(data: st.DataObject) -> None:
    encoded = bytearray(receipt().encode())
    position = data.draw(st.integers(0, len(encoded) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != encoded[position]))
    encoded[position] = value
    with pytest.raises(ReceiptError):
        verify_receipt(Receipt.decode(bytes(encoded)))


def test_receipt_fields_of_the_wrong_size_or_shape_are_refused() -> None:
    good = receipt()
    with pytest.raises(ReceiptError, match="identities must be 32-byte keys"):
        dataclasses.replace(good, giver=GIVER.public_key[:31])
    with pytest.raises(ReceiptError, match="signature must be 64 bytes"):
        dataclasses.replace(good, signature=good.signature + b"\x00")
    with pytest.raises(ReceiptError, match="must be a dictionary"):
        Receipt.decode(encode([good.to_fields()]))
