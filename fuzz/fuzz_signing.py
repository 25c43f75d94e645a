#!/usr/bin/env python3
"""Fuzz the signed-release formats: envelopes, release/rotation/revocation
statements, DER public keys and publisher key files. The first byte picks the parser.

What decodes must encode back to the same bytes (the formats are canonical).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import _harness

from opendistro.signing.keys import PublicKeyFile, VerifyingKey
from opendistro.signing.statement import (
    Envelope,
    ReleaseStatement,
    RevocationStatement,
    RotationStatement,
)

_STATEMENTS: tuple[
    type[ReleaseStatement] | type[RotationStatement] | type[RevocationStatement], ...
] = (ReleaseStatement, RotationStatement, RevocationStatement)


def _envelope(data: bytes) -> None:
    envelope = _harness.expect_typed(Envelope.decode, data)
    if envelope is not None:
        assert envelope.encode() == data, "envelope is not canonical"
        for kind in _STATEMENTS:
            _harness.expect_typed(kind.decode, envelope.statement)


def _statement(data: bytes) -> None:
    for kind in _STATEMENTS:
        statement: Any = _harness.expect_typed(kind.decode, data)
        if statement is not None:
            assert statement.encode() == data, f"{kind.__name__} is not canonical"


def _spki(data: bytes) -> None:
    key = _harness.expect_typed(VerifyingKey.from_spki, data)
    if key is not None:
        assert VerifyingKey.from_pem(key.to_pem()) == key
        _harness.expect_typed(key.verify, data[:64], data)


def _key_file(data: bytes) -> None:
    key_file = _harness.expect_typed(PublicKeyFile.from_bytes, data)
    if key_file is not None:
        assert PublicKeyFile.from_bytes(key_file.to_bytes()) == key_file


_TARGETS = (_envelope, _statement, _spki, _key_file)


def seeds() -> Iterator[bytes]:
    vectors = json.loads((_harness.VECTORS / "signed_release_vectors.json").read_text())
    envelopes = _harness.vector_hex("signed_release_vectors.json", "vectors", key="envelope_hex")
    for raw in envelopes[:12]:
        yield b"\x00" + raw
        envelope = _harness.expect_typed(Envelope.decode, raw)
        if envelope is not None:
            yield b"\x01" + envelope.statement
    for key in vectors["keys"].values():
        spki = bytes.fromhex(key["spki_hex"])
        yield b"\x02" + spki
        verifying = VerifyingKey.from_spki(spki)
        yield b"\x03" + PublicKeyFile(verifying, "Example Project", 1767312000).to_bytes()


def fuzz_one(data: bytes) -> None:
    choice, payload = _harness.pick(data, len(_TARGETS))
    _TARGETS[choice](payload)


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
