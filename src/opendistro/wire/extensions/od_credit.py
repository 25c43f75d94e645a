"""``od_credit``: our BEP 10 extension for verifiable credit (normative: ``spec/od-credit.md``).

Two peers that both speak it prove their long-lived identities to each other
and then exchange signed receipts (:mod:`opendistro.credit.receipts`): every
so often the downloader signs "I have received N bytes of this torrent from
you" and hands it to the uploader, who keeps the best one and later shows it
to the tracker.

Proving an identity must not be replayable, so each side puts a fresh random
nonce in its extension handshake (``od_credit_nonce``) and the other side's
``hello`` signs that nonce together with the info-hash and both peer ids.
Someone who recorded a hello cannot reuse it: the next connection has
another nonce.

:class:`CreditSession` is the whole protocol for one connection, sans I/O:
the connection layer feeds it the peer's extension handshake, the payloads of
its od_credit messages and the verified bytes it got from the peer, and sends
whatever :meth:`CreditSession.outgoing` returns as extended messages under the
peer's od_credit id. A peer that does not list ``od_credit`` (or lists it
with a bad nonce) leaves the session inactive: it sends nothing and expects
nothing, and the connection goes on as if the extension did not exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from ...bencode import decode, encode
from ...credit.identity import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    CreditIdentity,
    is_valid_signature,
)
from ...credit.ledger import Exchange
from ...credit.receipts import MAX_TOTAL, Receipt, issue_receipt, verify_receipt
from ...errors import (
    BencodeError,
    CreditProtocolError,
    LocalProtocolError,
    ReceiptError,
)
from .handshake import ExtensionHandshake

__all__ = [
    "EXTENSION_NAME",
    "HANDSHAKE_NONCE_KEY",
    "HELLO_DOMAIN",
    "MAX_MESSAGE_SIZE",
    "NONCE_SIZE",
    "RECEIPT_INTERVAL",
    "CreditEvent",
    "CreditMessage",
    "CreditSession",
    "Hello",
    "PeerIdentified",
    "ReceiptAccepted",
    "ReceiptIssued",
    "ReceiptMessage",
    "ReceiptRequest",
    "decode_credit_message",
    "encode_credit_message",
    "hello_signed_bytes",
    "peer_nonce",
]

EXTENSION_NAME: Final = "od_credit"
HANDSHAKE_NONCE_KEY: Final = b"od_credit_nonce"
"""Extension handshake key: the sender's fresh nonce, which the other side's hello signs."""
NONCE_SIZE: Final = 16
HELLO_DOMAIN: Final = b"opendistro-credit-hello-v1\x00"
MAX_MESSAGE_SIZE: Final = 512
"""The largest od_credit payload (a receipt message is about 230 bytes)."""
RECEIPT_INTERVAL: Final = 1 << 20
"""We sign a receipt each time this many more verified bytes came from the peer."""
PEER_ID_SIZE: Final = 20
_FREE_RECEIPTS: Final = 8
_BYTES_PER_RECEIPT: Final = 64 * 1024
"""A peer may send us one receipt per this many bytes we sent it (plus a few free)."""

_HELLO, _RECEIPT, _REQUEST = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Hello:
    """The sender's identity, and its signature binding it to this connection."""

    identity: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ReceiptMessage:
    """A receipt the sender (a receiver of our data) signed for us."""

    receipt: Receipt


@dataclass(frozen=True, slots=True)
class ReceiptRequest:
    """The sender asks for a receipt covering everything it gave us so far."""


CreditMessage = Hello | ReceiptMessage | ReceiptRequest


def encode_credit_message(message: CreditMessage) -> bytes:
    """The payload of an :class:`~opendistro.wire.messages.Extended` od_credit message."""
    match message:
        case Hello(identity, signature):
            if len(identity) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
                raise LocalProtocolError("a hello carries a 32-byte key and a 64-byte signature")
            return encode({b"msg_type": _HELLO, b"identity": identity, b"sig": signature})
        case ReceiptMessage(receipt):
            return encode({b"msg_type": _RECEIPT, b"receipt": receipt.to_fields()})
        case ReceiptRequest():
            return encode({b"msg_type": _REQUEST})
    raise LocalProtocolError(f"not an od_credit message: {message!r}")


def _exact_keys(raw: dict[bytes, Any], keys: set[bytes]) -> None:
    if set(raw) != keys:
        raise CreditProtocolError(
            f"od_credit message keys must be {sorted(k.decode() for k in keys)}"
        )


def decode_credit_message(payload: bytes) -> CreditMessage:
    """Parse an od_credit payload strictly; CreditProtocolError when it is malformed.

    The payload must be one canonical bencoded dictionary of at most
    :data:`MAX_MESSAGE_SIZE` bytes with exactly the keys of its ``msg_type``.
    """
    payload = bytes(payload)
    if len(payload) > MAX_MESSAGE_SIZE:
        raise CreditProtocolError(f"od_credit message over {MAX_MESSAGE_SIZE} bytes")
    try:
        raw = decode(payload)
    except BencodeError as exc:
        raise CreditProtocolError(f"od_credit message is not bencoded: {exc}") from None
    if not isinstance(raw, dict):
        raise CreditProtocolError("od_credit message must be a dictionary")
    if encode(raw) != payload:
        raise CreditProtocolError("od_credit message is not canonically encoded")
    msg_type = raw.get(b"msg_type")
    if msg_type == _HELLO and not isinstance(msg_type, bool):
        _exact_keys(raw, {b"msg_type", b"identity", b"sig"})
        identity, signature = raw[b"identity"], raw[b"sig"]
        if not isinstance(identity, bytes) or len(identity) != PUBLIC_KEY_SIZE:
            raise CreditProtocolError(f"od_credit identity must be {PUBLIC_KEY_SIZE} bytes")
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            raise CreditProtocolError(f"od_credit hello sig must be {SIGNATURE_SIZE} bytes")
        return Hello(identity, signature)
    if msg_type == _RECEIPT:
        _exact_keys(raw, {b"msg_type", b"receipt"})
        try:
            return ReceiptMessage(Receipt.from_fields(raw[b"receipt"]))
        except ReceiptError as exc:
            raise CreditProtocolError(f"od_credit receipt malformed: {exc}") from None
    if msg_type == _REQUEST:
        _exact_keys(raw, {b"msg_type"})
        return ReceiptRequest()
    raise CreditProtocolError(f"unknown od_credit msg_type {msg_type!r}")


def hello_signed_bytes(
    *, identity: bytes, info_hash: bytes, sender: bytes, recipient: bytes, nonce: bytes
) -> bytes:
    """What a hello signs: the sender's identity bound to this torrent, both peer ids
    (the sender's first) and the recipient's handshake nonce."""
    return HELLO_DOMAIN + encode({
        b"from": sender,
        b"identity": identity,
        b"info_hash": info_hash,
        b"nonce": nonce,
        b"to": recipient,
    })


def peer_nonce(handshake: ExtensionHandshake) -> bytes | None:
    """The peer's od_credit nonce, or None when it does not speak od_credit usably.

    A missing or malformed nonce disables the extension for that peer; it is
    not a reason to drop the connection (the rest of the handshake stands).
    """
    if not handshake.supports(EXTENSION_NAME):
        return None
    nonce = handshake.extra.get(HANDSHAKE_NONCE_KEY)
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        return None
    return nonce


@dataclass(frozen=True, slots=True)
class PeerIdentified:
    """The peer proved it holds ``identity``: load its history and call
    :meth:`CreditSession.resume` before feeding more bytes."""

    identity: bytes


@dataclass(frozen=True, slots=True)
class ReceiptAccepted:
    """The peer signed a receipt above the best we held from it: keep it (the ledger)."""

    receipt: Receipt
    gain: int


@dataclass(frozen=True, slots=True)
class ReceiptIssued:
    """We signed (and queued) a receipt for the peer: record our new received total."""

    receipt: Receipt


CreditEvent = PeerIdentified | ReceiptAccepted | ReceiptIssued


class CreditSession:
    """The od_credit protocol on one connection, for one torrent, sans I/O.

    Counting: ``received``/``sent`` are cumulative over every session with
    the peer's identity for this torrent, once :meth:`resume` has added what
    the ledger remembers; bytes counted before the peer identified itself
    count too. Receipts we issue state ``received``; we sign one whenever it
    grew by :data:`RECEIPT_INTERVAL` since the last, and on the peer's
    request when it grew at all.
    """

    def __init__(
        self,
        identity: CreditIdentity,
        *,
        info_hash: bytes,
        our_peer_id: bytes,
        their_peer_id: bytes,
        nonce: bytes | None = None,
        receipt_interval: int = RECEIPT_INTERVAL,
    ) -> None:
        if len(info_hash) != 20 or len(our_peer_id) != PEER_ID_SIZE:
            raise LocalProtocolError("od_credit needs a 20-byte info-hash and peer id")
        if len(their_peer_id) != PEER_ID_SIZE:
            raise LocalProtocolError("od_credit needs the peer's 20-byte peer id")
        if receipt_interval <= 0:
            raise LocalProtocolError("receipt_interval must be positive")
        self.identity = identity
        self.info_hash = bytes(info_hash)
        self.our_peer_id = bytes(our_peer_id)
        self.their_peer_id = bytes(their_peer_id)
        self.nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else bytes(nonce)
        if len(self.nonce) != NONCE_SIZE:
            raise LocalProtocolError(f"an od_credit nonce is {NONCE_SIZE} bytes")
        self.receipt_interval = receipt_interval
        self.active = False
        """Whether the peer speaks od_credit (known once its handshake arrived)."""
        self.peer_identity: bytes | None = None
        self.stale_receipts = 0
        """Receipts the peer sent that were not above the best one we held (ignored)."""
        self._their_nonce: bytes | None = None
        self._handshake_seen = False
        self._outgoing: list[bytes] = []
        self._received_base = self._sent_base = 0
        self._received_now = self._sent_now = 0
        self._last_issued = 0
        self._best_held = 0
        self._receipts_in = 0

    # ------------------------------------------------------------ handshake

    def handshake_fields(self) -> dict[bytes, Any]:
        """Keys to add to our BEP 10 handshake's ``extra`` (with ``od_credit`` in its ``m``)."""
        return {HANDSHAKE_NONCE_KEY: self.nonce}

    def on_peer_handshake(self, handshake: ExtensionHandshake) -> None:
        """Read the peer's (first) extension handshake; queue our hello if it speaks od_credit.

        A later handshake (BEP 10 allows several) does not change the nonce:
        our hello is already signed.
        """
        if self._handshake_seen:
            return
        self._handshake_seen = True
        nonce = peer_nonce(handshake)
        if nonce is None:
            return
        self.active = True
        self._their_nonce = nonce
        signed = hello_signed_bytes(
            identity=self.identity.public_key,
            info_hash=self.info_hash,
            sender=self.our_peer_id,
            recipient=self.their_peer_id,
            nonce=nonce,
        )
        self._outgoing.append(
            encode_credit_message(Hello(self.identity.public_key, self.identity.sign(signed)))
        )

    # ------------------------------------------------------------ counting

    @property
    def received(self) -> int:
        """Verified bytes the peer gave us for this torrent, all sessions."""
        return self._received_base + self._received_now

    @property
    def sent(self) -> int:
        """Bytes we gave the peer for this torrent, all sessions."""
        return self._sent_base + self._sent_now

    @property
    def best_held(self) -> int:
        """The total of the best receipt the peer gave us (0: none)."""
        return self._best_held

    def resume(self, history: Exchange) -> None:
        """Continue from the ledger's record of this identity and torrent.

        What we received in earlier sessions may not all be receipted: a session
        that ended (or was replaced by a second connection to the same peer)
        before its next receipt was due took that part with it. So the first
        receipt of this session states the whole total again, as soon as it is
        due or asked for; a receipt the peer already holds is merely stale.
        """
        if history.peer != self.peer_identity or history.torrent != self.info_hash:
            raise LocalProtocolError("resume() with the history of another peer or torrent")
        self._received_base = history.received
        self._sent_base = history.sent
        self._best_held = max(self._best_held, history.held)

    def on_verified_bytes(self, count: int) -> ReceiptIssued | None:
        """The peer gave us ``count`` more bytes that passed the hash check.

        Returns the receipt this made us issue (already queued), if any.
        Only verified data earns a receipt: bytes of a piece that fails its
        hash must not be counted.
        """
        if count < 0:
            raise LocalProtocolError("a byte count cannot be negative")
        self._received_now += count
        if self.received - self._last_issued >= self.receipt_interval:
            return self.issue_receipt()
        return None

    def on_bytes_sent(self, count: int) -> None:
        """We gave the peer ``count`` more bytes of piece data."""
        if count < 0:
            raise LocalProtocolError("a byte count cannot be negative")
        self._sent_now += count

    def request_receipt(self) -> None:
        """Ask the peer for a receipt covering what we sent (say, before we disconnect)."""
        if self.active and self.peer_identity is not None and self.sent > self._best_held:
            self._outgoing.append(encode_credit_message(ReceiptRequest()))

    def issue_receipt(self) -> ReceiptIssued | None:
        """Sign (and queue) a receipt for everything the peer gave us so far, if that
        is more than our last receipt stated.

        A downloader that stops calls this, so the uploader's total ends exact
        rather than up to one :data:`RECEIPT_INTERVAL` short.
        """
        if not self.active or self.peer_identity is None:
            return None
        total = min(self.received, MAX_TOTAL)
        if total <= self._last_issued:
            return None
        receipt = issue_receipt(
            self.identity, torrent=self.info_hash, giver=self.peer_identity, total=total
        )
        self._last_issued = total
        self._outgoing.append(encode_credit_message(ReceiptMessage(receipt)))
        return ReceiptIssued(receipt)

    # ------------------------------------------------------------ messages

    def handle_message(self, payload: bytes) -> CreditEvent | None:
        """Act on one od_credit payload from the peer; CreditProtocolError if it breaks a rule."""
        if not self.active:
            raise CreditProtocolError("od_credit message from a peer that did not enable it")
        message = decode_credit_message(payload)
        if isinstance(message, Hello):
            return self._on_hello(message)
        if self.peer_identity is None:
            raise CreditProtocolError("od_credit message before the peer's hello")
        if isinstance(message, ReceiptRequest):
            return self.issue_receipt()
        return self._on_receipt(message.receipt)

    def _on_hello(self, hello: Hello) -> PeerIdentified | None:
        if self.peer_identity is not None:
            raise CreditProtocolError("a second od_credit hello")
        signed = hello_signed_bytes(
            identity=hello.identity,
            info_hash=self.info_hash,
            sender=self.their_peer_id,
            recipient=self.our_peer_id,
            nonce=self.nonce,
        )
        valid = is_valid_signature(hello.identity, hello.signature, signed)
        if hello.identity == self.identity.public_key:
            if not valid:
                raise CreditProtocolError("the peer claims our own credit identity")
            # Only our key makes this signature: another process sharing our state
            # folder (``seed`` and ``get`` side by side). Giving to ourselves earns
            # nothing, so credit stays off on this connection; the data still flows.
            # Our own hello, if still queued, goes out: the other side turns off too.
            self.active = False
            return None
        if not valid:
            raise CreditProtocolError("od_credit hello signature does not bind this connection")
        self.peer_identity = hello.identity
        return PeerIdentified(hello.identity)

    def _on_receipt(self, receipt: Receipt) -> ReceiptAccepted | None:
        self._receipts_in += 1
        if self._receipts_in > _FREE_RECEIPTS + self._sent_now // _BYTES_PER_RECEIPT:
            raise CreditProtocolError("more od_credit receipts than the data we sent warrants")
        if (
            receipt.torrent != self.info_hash
            or receipt.giver != self.identity.public_key
            or receipt.receiver != self.peer_identity
        ):
            raise CreditProtocolError("od_credit receipt is bound to another torrent or peer")
        if receipt.total <= self._best_held:
            # A replay or a reordering: it adds nothing, and checking it costs a verify.
            self.stale_receipts += 1
            return None
        try:
            verify_receipt(
                receipt,
                torrent=self.info_hash,
                giver=self.identity.public_key,
                receiver=self.peer_identity,
            )
        except ReceiptError as exc:
            raise CreditProtocolError(f"od_credit receipt refused: {exc}") from None
        gain = receipt.total - self._best_held
        self._best_held = receipt.total
        return ReceiptAccepted(receipt, gain)

    def outgoing(self) -> list[bytes]:
        """Payloads to send, in order, as extended messages under the peer's od_credit id."""
        queued, self._outgoing = self._outgoing, []
        return queued
