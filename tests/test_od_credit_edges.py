"""od_credit argument checks and message shapes that the session and vector tests do not reach."""

from __future__ import annotations

import pytest

from opendistro.bencode import encode
from opendistro.credit.identity import CreditIdentity
from opendistro.errors import CreditProtocolError, LocalProtocolError
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.od_credit import (
    EXTENSION_NAME,
    CreditSession,
    Hello,
    decode_credit_message,
    encode_credit_message,
)

ME = CreditIdentity.from_seed(bytes([31]) * 32)
PEER = CreditIdentity.from_seed(bytes([32]) * 32)
INFO_HASH = b"\x17" * 20
MY_PID = b"-OD0001-edges0000001"
PEER_PID = b"-OD0001-edges0000002"


def session(**changes: object) -> CreditSession:
    arguments: dict[str, object] = {
        "info_hash": INFO_HASH, "our_peer_id": MY_PID, "their_peer_id": PEER_PID,
    }  # fmt: skip
    arguments.update(changes)
    return CreditSession(ME, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"info_hash": bytes(32)}, "20-byte info-hash and peer id"),
        ({"our_peer_id": b"short"}, "20-byte info-hash and peer id"),
        ({"their_peer_id": b"short"}, "peer's 20-byte peer id"),
        ({"receipt_interval": 0}, "receipt_interval must be positive"),
        ({"nonce": bytes(15)}, "nonce is 16 bytes"),
    ],
)
def test_a_session_needs_well_formed_arguments(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        session(**changes)


def test_byte_counts_cannot_be_negative() -> None:
    ours = session()
    with pytest.raises(LocalProtocolError, match="cannot be negative"):
        ours.on_verified_bytes(-1)
    with pytest.raises(LocalProtocolError, match="cannot be negative"):
        ours.on_bytes_sent(-1)
    assert (ours.received, ours.sent) == (0, 0)


def test_only_the_first_extension_handshake_counts() -> None:
    """A later handshake without od_credit neither turns it off nor queues a second hello."""
    peer = CreditSession(PEER, info_hash=INFO_HASH, our_peer_id=PEER_PID, their_peer_id=MY_PID)
    first = ExtensionHandshake(m={EXTENSION_NAME: 3}, extra=peer.handshake_fields())
    ours = session()
    ours.on_peer_handshake(ExtensionHandshake.decode(first.encode()))
    ours.on_peer_handshake(ExtensionHandshake.decode(ExtensionHandshake(m={}).encode()))
    assert ours.active
    (hello,) = ours.outgoing()
    assert isinstance(decode_credit_message(hello), Hello)


def test_we_never_send_malformed_messages() -> None:
    with pytest.raises(LocalProtocolError, match="32-byte key and a 64-byte signature"):
        encode_credit_message(Hello(ME.public_key[:31], bytes(64)))
    with pytest.raises(LocalProtocolError, match="32-byte key and a 64-byte signature"):
        encode_credit_message(Hello(ME.public_key, bytes(63)))
    with pytest.raises(LocalProtocolError, match="not an od_credit message"):
        encode_credit_message(b"hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("signature", [bytes(63), 64], ids=["short", "not bytes"])
def test_a_hello_with_a_malformed_signature_is_refused(signature: object) -> None:
    payload = encode({b"identity": PEER.public_key, b"msg_type": 0, b"sig": signature})
    with pytest.raises(CreditProtocolError, match="hello sig must be 64 bytes"):
        decode_credit_message(payload)
