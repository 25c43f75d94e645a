#!/usr/bin/env python3
"""Fuzz the strict bencode decoder (decode, decode_prefix, dict_value_span).

Besides refusing bad input with BencodeError only, a value that decodes must
re-encode to an encoding that decodes to the same value, and canonical input
must come back byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator

import _harness

from opendistro import bencode


def seeds() -> Iterator[bytes]:
    yield b"d4:infod6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:" + bytes(20) + b"ee"
    yield bencode.encode({b"a": [1, -2, b"x", {b"b": []}], b"c": 0})
    yield b"l" * 64 + b"e" * 64
    yield b"i-42e"
    yield from _harness.vector_hex("ut_pex_vectors.json", "vectors")
    yield from _harness.vector_hex("od_delta_vectors.json", "good")


def _has_dict(value: object) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and any(_has_dict(item) for item in value)


def fuzz_one(data: bytes) -> None:
    value = _harness.expect_typed(bencode.decode, data)
    if value is not None:
        encoded = bencode.encode(value)
        assert bencode.decode(encoded) == value, "re-encoding changed the value"
        # Only dictionary key order may differ from the canonical form.
        assert encoded == data or _has_dict(value), "canonical input did not round-trip"
    _harness.expect_typed(bencode.decode_prefix, data)
    _harness.expect_typed(bencode.dict_value_span, data, b"info")


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
