#!/usr/bin/env python3
"""Fuzz the BEP 10 extension payloads: handshake, ut_metadata, ut_pex and od_delta.

The first byte picks the decoder. Whatever decodes must encode back to a
payload that decodes to the same message.
"""

from __future__ import annotations

from collections.abc import Iterator

import _harness

from opendistro.bencode import encode
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.od_delta import decode_delta_message, encode_delta_message
from opendistro.wire.extensions.ut_metadata import (
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
)
from opendistro.wire.extensions.ut_pex import decode_pex, encode_pex


def seeds() -> Iterator[bytes]:
    handshake = ExtensionHandshake(
        m={"ut_metadata": 1, "ut_pex": 2, "od_delta": 3},
        v="opendistro 0.1",
        p=6881,
        reqq=250,
        metadata_size=31337,
        yourip=bytes(4),
        extra={b"od_delta_size": 100, b"od_delta_enc": [b"zlib"]},
    )
    yield b"\x00" + handshake.encode()
    yield b"\x00" + encode({b"m": {b"x": 300}, b"e": 1})
    for message in (MetadataRequest(3), MetadataReject(0), MetadataData(1, 20000, b"x" * 3616)):
        yield b"\x01" + encode_metadata_message(message)
    for raw in _harness.vector_hex("ut_pex_vectors.json", "vectors"):
        yield b"\x02" + raw
    for raw in _harness.vector_hex("od_delta_vectors.json"):
        yield b"\x03" + raw


def _handshake(payload: bytes) -> None:
    decoded = _harness.expect_typed(ExtensionHandshake.decode, payload)
    if decoded is not None:
        assert ExtensionHandshake.decode(decoded.encode()) == decoded


def _metadata(payload: bytes) -> None:
    decoded = _harness.expect_typed(decode_metadata_message, payload)
    if decoded is not None:
        assert decode_metadata_message(encode_metadata_message(decoded)) == decoded


def _pex(payload: bytes) -> None:
    decoded = _harness.expect_typed(decode_pex, payload)
    if decoded is not None:
        assert decode_pex(encode_pex(decoded)) == decoded


def _delta(payload: bytes) -> None:
    decoded = _harness.expect_typed(decode_delta_message, payload)
    if decoded is not None:
        assert decode_delta_message(encode_delta_message(decoded)) == decoded


_TARGETS = (_handshake, _metadata, _pex, _delta)


def fuzz_one(data: bytes) -> None:
    choice, payload = _harness.pick(data, len(_TARGETS))
    _TARGETS[choice](payload)


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
