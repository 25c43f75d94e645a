#!/usr/bin/env python3
"""Fuzz the Message Stream Encryption handshake, as responder and as initiator.

The first byte picks the side (bit 0) and the size of the reads the bytes are
fed in (the rest). Keys and pads are fixed, so the seeds, which are the real
byte streams of a handshake between the two, stay valid and a mutation can get
past the Diffie-Hellman exchange and the sync hashes into the encrypted fields.
"""

from __future__ import annotations

from collections.abc import Iterator

import _harness

from opendistro.errors import EncryptionError
from opendistro.wire.mse import MseInitiator, MseResponder

INFO_HASH = bytes(range(20))
_KEY_A = 0xA5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5
_KEY_B = 0x5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A
_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + INFO_HASH + b"-OD0100-fuzzfuzzfuzz"


def _initiator() -> MseInitiator:
    return MseInitiator(
        INFO_HASH,
        allow_plaintext=True,
        initial_payload=_HANDSHAKE,
        private_key=_KEY_A,
        pad_length=0,
    )


def _responder() -> MseResponder:
    return MseResponder([INFO_HASH], allow_plaintext=True, private_key=_KEY_B, pad_length=0)


def _streams() -> tuple[bytes, bytes]:
    """What A sends to B and what B sends to A in a complete handshake."""
    initiator, responder = _initiator(), _responder()
    a_to_b = bytearray(initiator.data_to_send())
    responder.receive_data(a_to_b)
    b_to_a = bytearray(responder.data_to_send())
    initiator.receive_data(b_to_a)
    step3 = initiator.data_to_send()
    a_to_b += step3
    responder.receive_data(step3)
    step4 = responder.data_to_send()
    b_to_a += step4
    initiator.receive_data(step4)
    assert initiator.done and responder.done
    return bytes(a_to_b), bytes(b_to_a)


def seeds() -> Iterator[bytes]:
    a_to_b, b_to_a = _streams()
    yield b"\x00" + a_to_b
    yield b"\x0e" + a_to_b + b"payload after the handshake"
    yield b"\x01" + b_to_a
    yield b"\x21" + b_to_a + b"payload"


def fuzz_one(data: bytes) -> None:
    choice, stream = _harness.pick(data, 256)
    side = _initiator() if choice & 1 else _responder()
    step = (choice >> 1) * 7 or len(stream) or 1
    try:
        for start in range(0, len(stream), step):
            if side.done:
                break
            side.receive_data(stream[start : start + step])
            side.data_to_send()
    except EncryptionError:
        return  # refused: the connection is dropped
    if side.done:
        side.cipher().decrypt(side.leftover())


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
