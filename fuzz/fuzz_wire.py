#!/usr/bin/env python3
"""Fuzz the peer wire decoder (BEP 3/5/6/10/52 framing and messages).

The input is fed to a :class:`MessageDecoder` in pieces whose sizes come from
the input itself, so partial frames and top-ups are exercised. Every decoded
message must re-encode to bytes that decode to the same message.
"""

from __future__ import annotations

from collections.abc import Iterator

import _harness

from opendistro.errors import RemoteProtocolError
from opendistro.wire.codec import MessageDecoder, encode
from opendistro.wire.messages import Message

MAX_MESSAGE_SIZE = 1 << 16


def seeds() -> Iterator[bytes]:
    for raw in _harness.vector_hex("bep3_bep6_vectors.json", "vectors"):
        yield b"\x07" + raw  # split size 7
        yield b"\x00" + raw  # one piece


def _round_trip(message: Message) -> None:
    wire = encode(message)
    decoder = MessageDecoder(expect_handshake=wire[:1] == b"\x13" and len(wire) == 68)
    again = decoder.feed(wire)
    assert decoder.buffered == 0, "a re-encoded message left bytes behind"
    assert len(again) == 1 and _same(again[0], message), f"{message!r} did not round-trip"


def _same(left: Message, right: Message) -> bool:
    data = getattr(left, "data", None)
    if data is not None:  # a Piece may hold a memoryview
        return type(left) is type(right) and bytes(data) == bytes(getattr(right, "data", b""))
    return left == right


def fuzz_one(data: bytes) -> None:
    split, stream = _harness.pick(data, 256)
    decoder = MessageDecoder(
        max_message_size=MAX_MESSAGE_SIZE, expect_handshake=stream[:1] == b"\x13"
    )
    step = split or len(stream) or 1
    messages: list[Message] = []
    try:
        for start in range(0, len(stream), step):
            messages.extend(decoder.feed(stream[start : start + step]))
            assert decoder.buffered <= 4 + MAX_MESSAGE_SIZE, "decoder buffered past its limit"
    except RemoteProtocolError:
        return
    for message in messages:
        _round_trip(message)


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
