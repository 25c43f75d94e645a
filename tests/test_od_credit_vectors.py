"""The od_credit test vectors (spec/od-credit.md): receipts, messages and hellos, good and bad.

Keys come from fixed Ed25519 seeds and Ed25519 signatures are deterministic,
so the file is exact. Run this file as a script to regenerate
``extensions/od_credit_vectors.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opendistro.bencode import encode
from opendistro.credit.identity import CreditIdentity
from opendistro.credit.receipts import Receipt, issue_receipt, verify_receipt
from opendistro.errors import CreditProtocolError, ReceiptError
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.od_credit import (
    HANDSHAKE_NONCE_KEY,
    CreditMessage,
    CreditSession,
    Hello,
    PeerIdentified,
    ReceiptMessage,
    ReceiptRequest,
    decode_credit_message,
    encode_credit_message,
    hello_signed_bytes,
)

VECTORS = Path(__file__).resolve().parents[1] / "extensions" / "od_credit_vectors.json"

SEEDS = {"alice": bytes([0xA1]) * 32, "bob": bytes([0xB0]) * 32, "mallory": bytes([0x3A]) * 32}
KEYS = {name: CreditIdentity.from_seed(seed) for name, seed in SEEDS.items()}
ALICE, BOB, MALLORY = KEYS["alice"], KEYS["bob"], KEYS["mallory"]
INFO_HASH = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
OTHER_HASH = bytes(20)
ALICE_PEER_ID = b"-OD0001-alice0000001"
BOB_PEER_ID = b"-OD0001-bob000000001"
BOB_NONCE = bytes(range(16))
"""The nonce Bob put in his extension handshake; Alice's hello to Bob signs it."""
MiB = 1 << 20

# Alice uploaded to Bob; Bob signs receipts crediting Alice.
GOOD_RECEIPT = issue_receipt(BOB, torrent=INFO_HASH, giver=ALICE.public_key, total=5 * MiB)


def _receipt_with(**changes: Any) -> bytes:
    fields = GOOD_RECEIPT.to_fields()
    for name, value in changes.items():
        if value is None:
            del fields[name.encode()]
        else:
            fields[name.encode()] = value
    return encode(fields)


GOOD_RECEIPTS: list[tuple[str, Receipt]] = [
    ("Bob received 5 MiB from Alice", GOOD_RECEIPT),
    ("Bob received 1 byte from Alice", issue_receipt(BOB, torrent=INFO_HASH,
                                                     giver=ALICE.public_key, total=1)),
    ("Alice received 2^63-1 bytes from Bob", issue_receipt(ALICE, torrent=INFO_HASH,
                                                           giver=BOB.public_key,
                                                           total=(1 << 63) - 1)),
]

# (name, encoded receipt); verified with torrent=INFO_HASH, giver=Alice, receiver=Bob.
BAD_RECEIPTS: list[tuple[str, bytes]] = [
    ("total inflated after signing", _receipt_with(total=50 * MiB)),
    ("signed by the giver, not the receiver",
     _receipt_with(sig=ALICE.sign(GOOD_RECEIPT.signed_bytes()))),
    ("signed by a third party", _receipt_with(sig=MALLORY.sign(GOOD_RECEIPT.signed_bytes()))),
    ("signature without the domain prefix",
     _receipt_with(sig=BOB.sign(encode({k: v for k, v in GOOD_RECEIPT.to_fields().items()
                                        if k != b"sig"})))),
    ("moved to another torrent", issue_receipt(BOB, torrent=OTHER_HASH,
                                               giver=ALICE.public_key, total=5 * MiB).encode()),
    ("credits another giver", issue_receipt(BOB, torrent=INFO_HASH,
                                            giver=MALLORY.public_key, total=5 * MiB).encode()),
    ("signed by another receiver", issue_receipt(MALLORY, torrent=INFO_HASH,
                                                 giver=ALICE.public_key, total=5 * MiB).encode()),
    ("giver is the receiver", _receipt_with(giver=BOB.public_key)),
    ("total zero", _receipt_with(total=0)),
    ("total 2^63", _receipt_with(total=1 << 63)),
    ("version 2", _receipt_with(v=2)),
    ("unknown key", _receipt_with(note=b"hi")),
    ("signature missing", _receipt_with(sig=None)),
    ("signature 63 bytes", _receipt_with(sig=bytes(63))),
    ("info-hash 32 bytes", _receipt_with(torrent=bytes(32))),
    ("total as a string", _receipt_with(total=b"5")),
    ("not canonical (sig first)",
     b"d3:sig64:" + GOOD_RECEIPT.signature + GOOD_RECEIPT.encode()[1:].replace(
         b"3:sig64:" + GOOD_RECEIPT.signature, b"")),
    ("not a dictionary", b"le"),
]

HELLO_SIGNED = hello_signed_bytes(identity=ALICE.public_key, info_hash=INFO_HASH,
                                  sender=ALICE_PEER_ID, recipient=BOB_PEER_ID, nonce=BOB_NONCE)


def _hello_signing(**changes: bytes) -> Hello:
    fields = {"identity": ALICE.public_key, "info_hash": INFO_HASH, "sender": ALICE_PEER_ID,
              "recipient": BOB_PEER_ID, "nonce": BOB_NONCE, **changes}
    return Hello(ALICE.public_key, ALICE.sign(hello_signed_bytes(**fields)))


GOOD_MESSAGES: list[tuple[str, CreditMessage]] = [
    ("hello from Alice to Bob", Hello(ALICE.public_key, ALICE.sign(HELLO_SIGNED))),
    ("receipt", ReceiptMessage(GOOD_RECEIPT)),
    ("receipt request", ReceiptRequest()),
]

BAD_MESSAGES: list[tuple[str, bytes]] = [
    ("not bencoded", b"x"),
    ("a list", b"le"),
    ("unknown msg_type", b"d8:msg_typei9ee"),
    ("msg_type missing", b"de"),
    ("hello identity 31 bytes",
     encode({b"msg_type": 0, b"identity": bytes(31), b"sig": bytes(64)})),
    ("hello without sig", encode({b"msg_type": 0, b"identity": bytes(32)})),
    ("hello with an unknown key",
     encode({b"msg_type": 0, b"identity": bytes(32), b"sig": bytes(64), b"x": 1})),
    ("receipt request with a key", encode({b"msg_type": 2, b"total": 1})),
    ("receipt message with a malformed receipt",
     encode({b"msg_type": 1, b"receipt": {b"v": 1}})),
    ("trailing bytes", encode({b"msg_type": 2}) + b"x"),
    ("not canonical", b"d8:msg_typei2e1:ai1ee"),
    ("over 512 bytes", encode({b"msg_type": 2, b"pad": bytes(520)})),
]

# Hellos Bob receives (Bob's nonce BOB_NONCE, peer ids as above): accepted or refused.
HELLOS: list[tuple[str, Hello, bool]] = [
    ("bound to this connection", Hello(ALICE.public_key, ALICE.sign(HELLO_SIGNED)), True),
    ("signed for another nonce (a replay)", _hello_signing(nonce=bytes(16)), False),
    ("signed for another torrent", _hello_signing(info_hash=OTHER_HASH), False),
    ("peer ids swapped", _hello_signing(sender=BOB_PEER_ID, recipient=ALICE_PEER_ID), False),
    ("claims a key it does not hold",
     Hello(ALICE.public_key, MALLORY.sign(HELLO_SIGNED)), False),
    ("signature without the domain prefix",
     Hello(ALICE.public_key, ALICE.sign(HELLO_SIGNED[len(b"opendistro-credit-hello-v1\x00"):])),
     False),
]


def _hex_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()}


def describe_message(message: CreditMessage) -> dict[str, Any]:
    if isinstance(message, Hello):
        return {"type": "Hello", "identity": message.identity.hex(),
                "sig": message.signature.hex()}
    if isinstance(message, ReceiptMessage):
        return {"type": "ReceiptMessage", "receipt": describe_receipt(message.receipt)}
    return {"type": "ReceiptRequest"}


def describe_receipt(receipt: Receipt) -> dict[str, Any]:
    return _hex_fields({"torrent": receipt.torrent, "giver": receipt.giver,
                        "receiver": receipt.receiver, "total": receipt.total,
                        "sig": receipt.signature})


def build_vectors() -> dict[str, Any]:
    return {
        "description": "od_credit (spec/od-credit.md). Identities are Ed25519 keys from the "
        "given 32-byte seeds (RFC 8032); signatures are deterministic. 'receipts': encoded "
        "receipts; good ones decode to 'expected' and verify, bad ones raise ReceiptError when "
        "decoded or verified against 'binding'. 'messages': od_credit payloads; bad ones raise "
        "CreditProtocolError. 'hellos': hello payloads as Bob receives them in 'context' "
        "(Bob's handshake nonce, both peer ids, info-hash); 'valid' says whether Bob accepts.",
        "identities": [
            {"name": name, "seed": seed.hex(), "public": KEYS[name].public_key.hex()}
            for name, seed in SEEDS.items()
        ],
        "context": _hex_fields({"info_hash": INFO_HASH, "alice_peer_id": ALICE_PEER_ID,
                                "bob_peer_id": BOB_PEER_ID, "bob_nonce": BOB_NONCE}),
        "receipts": {
            "binding": _hex_fields({"torrent": INFO_HASH, "giver": ALICE.public_key,
                                    "receiver": BOB.public_key}),
            "good": [
                {"name": name, "hex": receipt.encode().hex(),
                 "signed_hex": receipt.signed_bytes().hex(),
                 "expected": describe_receipt(receipt)}
                for name, receipt in GOOD_RECEIPTS
            ],
            "bad": [
                {"name": name, "hex": data.hex(), "error": "ReceiptError"}
                for name, data in BAD_RECEIPTS
            ],
        },
        "messages": {
            "good": [
                {"name": name, "hex": encode_credit_message(message).hex(),
                 "expected": describe_message(message)}
                for name, message in GOOD_MESSAGES
            ],
            "bad": [
                {"name": name, "hex": data.hex(), "error": "CreditProtocolError"}
                for name, data in BAD_MESSAGES
            ],
        },
        "hellos": [
            {"name": name, "hex": encode_credit_message(hello).hex(), "valid": valid}
            for name, hello, valid in HELLOS
        ],
    }


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


def test_the_vector_file_is_current() -> None:
    assert _load() == build_vectors()


def test_identities_derive_from_their_seeds() -> None:
    for entry in _load()["identities"]:
        identity = CreditIdentity.from_seed(bytes.fromhex(entry["seed"]))
        assert identity.public_key.hex() == entry["public"]


@pytest.mark.parametrize("vector", _load()["receipts"]["good"], ids=lambda v: v["name"])
def test_good_receipts_decode_and_verify(vector: dict[str, Any]) -> None:
    receipt = Receipt.decode(bytes.fromhex(vector["hex"]))
    assert describe_receipt(receipt) == vector["expected"]
    assert receipt.signed_bytes().hex() == vector["signed_hex"]
    verify_receipt(receipt)


@pytest.mark.parametrize("vector", _load()["receipts"]["bad"], ids=lambda v: v["name"])
def test_bad_receipts_are_refused(vector: dict[str, Any]) -> None:
    binding = {k: bytes.fromhex(v) for k, v in _load()["receipts"]["binding"].items()}
    with pytest.raises(ReceiptError):
        verify_receipt(Receipt.decode(bytes.fromhex(vector["hex"])), **binding)


@pytest.mark.parametrize("vector", _load()["messages"]["good"], ids=lambda v: v["name"])
def test_good_messages_decode(vector: dict[str, Any]) -> None:
    message = decode_credit_message(bytes.fromhex(vector["hex"]))
    assert describe_message(message) == vector["expected"]
    assert encode_credit_message(message).hex() == vector["hex"]


@pytest.mark.parametrize("vector", _load()["messages"]["bad"], ids=lambda v: v["name"])
def test_bad_messages_are_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(CreditProtocolError):
        decode_credit_message(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", _load()["hellos"], ids=lambda v: v["name"])
def test_hellos_as_bob_receives_them(vector: dict[str, Any]) -> None:
    context = {k: bytes.fromhex(v) for k, v in _load()["context"].items()}
    bob = CreditSession(BOB, info_hash=context["info_hash"], our_peer_id=context["bob_peer_id"],
                        their_peer_id=context["alice_peer_id"], nonce=context["bob_nonce"])
    alice_handshake = ExtensionHandshake(m={"od_credit": 3},
                                         extra={HANDSHAKE_NONCE_KEY: bytes(16)})
    bob.on_peer_handshake(ExtensionHandshake.decode(alice_handshake.encode()))
    payload = bytes.fromhex(vector["hex"])
    if vector["valid"]:
        assert bob.handle_message(payload) == PeerIdentified(ALICE.public_key)
    else:
        with pytest.raises(CreditProtocolError):
            bob.handle_message(payload)
        assert bob.peer_identity is None


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(build_vectors(), indent=1) + "\n")
