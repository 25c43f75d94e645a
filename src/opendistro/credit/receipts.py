"""Signed receipts: "I, receiver R, have received N bytes of torrent T from you, giver G".

The receipt is the unit of verifiable credit (``spec/od-credit.md``). It is
signed by the party that *benefited*, the receiver, so the giver can show it
to anyone (the tracker, in the end) and nobody but R could have made it. One
receipt states the *cumulative* total R received from G for T, never an
increment: a later receipt supersedes every earlier one, so whoever holds
receipts keeps only the highest per (receiver, giver, torrent), and a
replayed or reordered old receipt can add nothing. Changing any field,
including the total, breaks the signature.

There is no timestamp or sequence number: the total *is* the sequence (it
only grows), a time the signer chooses proves nothing a verifier's own clock
on arrival does not prove better, and without one the same facts always give
the same bytes, which keeps receipts deduplicable and test vectors exact.

The signature covers a domain-separation prefix followed by the canonical
bencoding of every field but the signature, so a receipt can never be
mistaken for any other message an identity signs (a connection hello, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..bencode import decode, encode
from ..errors import BencodeError, ReceiptError
from .identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, CreditIdentity, is_valid_signature

__all__ = [
    "INFO_HASH_SIZE",
    "MAX_RECEIPT_SIZE",
    "MAX_TOTAL",
    "RECEIPT_DOMAIN",
    "RECEIPT_VERSION",
    "Receipt",
    "issue_receipt",
    "verify_receipt",
]

RECEIPT_DOMAIN: Final = b"opendistro-credit-receipt-v1\x00"
RECEIPT_VERSION: Final = 1
INFO_HASH_SIZE: Final = 20
"""Receipts name a torrent by the 20-byte info-hash of the peer-wire handshake
(a v2 torrent's SHA-256 info-hash truncated, as in BEP 52)."""
MAX_TOTAL: Final = (1 << 63) - 1
"""The largest total a receipt may state (it fits a signed 64-bit SQLite integer)."""
MAX_RECEIPT_SIZE: Final = 256
"""An encoded receipt is about 200 bytes; anything longer is not one."""

_FIELDS: Final = frozenset({b"giver", b"receiver", b"sig", b"torrent", b"total", b"v"})


@dataclass(frozen=True, slots=True)
class Receipt:
    """One signed receipt. Construct it with :func:`issue_receipt` or :meth:`decode`.

    A ``Receipt`` only guarantees a well-formed shape; :func:`verify_receipt`
    checks the signature and what the receipt is bound to.
    """

    torrent: bytes
    giver: bytes
    receiver: bytes
    total: int
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.torrent) != INFO_HASH_SIZE:
            raise ReceiptError(f"receipt torrent must be a {INFO_HASH_SIZE}-byte info-hash")
        if len(self.giver) != PUBLIC_KEY_SIZE or len(self.receiver) != PUBLIC_KEY_SIZE:
            raise ReceiptError(f"receipt identities must be {PUBLIC_KEY_SIZE}-byte keys")
        if self.giver == self.receiver:
            raise ReceiptError("a receipt's giver and receiver must differ")
        if isinstance(self.total, bool) or not 0 < self.total <= MAX_TOTAL:
            raise ReceiptError(f"receipt total must be 1..{MAX_TOTAL}")
        if len(self.signature) != SIGNATURE_SIZE:
            raise ReceiptError(f"receipt signature must be {SIGNATURE_SIZE} bytes")

    @property
    def key(self) -> tuple[bytes, bytes, bytes]:
        """(receiver, giver, torrent): receipts with one key supersede each other by total."""
        return self.receiver, self.giver, self.torrent

    def signed_bytes(self) -> bytes:
        """What the receiver signs: the domain prefix, then every field but the signature."""
        fields = _unsigned_fields(self.torrent, self.giver, self.receiver, self.total)
        return RECEIPT_DOMAIN + encode(fields)

    def to_fields(self) -> dict[bytes, Any]:
        """The receipt as a bencodable dictionary (how it travels inside other messages)."""
        fields = _unsigned_fields(self.torrent, self.giver, self.receiver, self.total)
        fields[b"sig"] = self.signature
        return fields

    def encode(self) -> bytes:
        return encode(self.to_fields())

    @classmethod
    def from_fields(cls, raw: Any) -> Receipt:
        """Read a decoded receipt dictionary strictly; any defect raises ReceiptError."""
        if not isinstance(raw, dict):
            raise ReceiptError("a receipt must be a dictionary")
        if set(raw) != _FIELDS:
            missing = sorted(key.decode("ascii", "replace") for key in _FIELDS - set(raw))
            extra = sorted(key.decode("ascii", "replace") for key in set(raw) - _FIELDS)
            raise ReceiptError(f"receipt fields wrong (missing {missing}, unknown {extra})")
        version = raw[b"v"]
        if version != RECEIPT_VERSION or isinstance(version, bool):
            raise ReceiptError(f"unknown receipt version {version!r}")
        total = raw[b"total"]
        if not isinstance(total, int):
            raise ReceiptError("receipt total must be an integer")
        values = [raw[b"torrent"], raw[b"giver"], raw[b"receiver"], raw[b"sig"]]
        if not all(isinstance(value, bytes) for value in values):
            raise ReceiptError("receipt torrent, giver, receiver and sig must be strings")
        torrent, giver, receiver, signature = values
        return cls(torrent, giver, receiver, total, signature)

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Parse one encoded receipt; it must be canonical bencoding, at most 256 bytes."""
        data = bytes(data)
        if len(data) > MAX_RECEIPT_SIZE:
            raise ReceiptError(f"a receipt is at most {MAX_RECEIPT_SIZE} bytes")
        try:
            raw = decode(data)
        except BencodeError as exc:
            raise ReceiptError(f"receipt is not bencoded: {exc}") from None
        receipt = cls.from_fields(raw)
        if receipt.encode() != data:
            raise ReceiptError("receipt is not canonically encoded")
        return receipt


def _unsigned_fields(torrent: bytes, giver: bytes, receiver: bytes, total: int) -> dict[bytes, Any]:
    return {
        b"giver": giver,
        b"receiver": receiver,
        b"torrent": torrent,
        b"total": total,
        b"v": RECEIPT_VERSION,
    }


def issue_receipt(identity: CreditIdentity, *, torrent: bytes, giver: bytes, total: int) -> Receipt:
    """Sign, as the receiver, that we received ``total`` bytes of ``torrent`` from ``giver``."""
    receiver = identity.public_key
    unsigned = Receipt(torrent, giver, receiver, total, bytes(SIGNATURE_SIZE))
    return Receipt(torrent, giver, receiver, total, identity.sign(unsigned.signed_bytes()))


def verify_receipt(
    receipt: Receipt,
    *,
    torrent: bytes | None = None,
    giver: bytes | None = None,
    receiver: bytes | None = None,
) -> None:
    """Return if ``receipt`` is genuine and bound as expected; else raise ReceiptError.

    Pass what the receipt must be about: a peer checks a receipt names this
    torrent, itself as giver and the connected identity as receiver, so a
    receipt can never be moved to another torrent or credited to another peer.
    The tracker, which is told about strangers, checks the signature only.
    """
    if torrent is not None and receipt.torrent != torrent:
        raise ReceiptError("receipt is for another torrent")
    if giver is not None and receipt.giver != giver:
        raise ReceiptError("receipt credits another giver")
    if receiver is not None and receipt.receiver != receiver:
        raise ReceiptError("receipt is signed by another receiver")
    if not is_valid_signature(receipt.receiver, receipt.signature, receipt.signed_bytes()):
        raise ReceiptError("receipt signature does not verify")
