#!/usr/bin/env python3
"""Fuzz checksum lists and the signatures over them: SHA256SUMS (GNU and BSD
lines), minisign and signify keys and signatures, OpenPGP keyrings, detached
and cleartext signatures. The first byte picks the parser.

Signatures are checked against real keys (``seeds/``, made once with gpg and
minisign), so a mutation that survives parsing reaches the verification code.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import _harness
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opendistro.checksums.minisign import (
    Ed25519Key,
    MinisignSignature,
    SignifySignature,
    verify_minisign,
    verify_signify,
    verify_signify_embedded,
)
from opendistro.checksums.openpgp import Keyring, verify_cleartext, verify_detached
from opendistro.checksums.openpgp_armor import dearmor, split_cleartext
from opendistro.checksums.sums import ChecksumList

SEEDS = Path(__file__).resolve().parent / "seeds"
_MESSAGE = (SEEDS / "openpgp" / "message").read_bytes()
_PGP_KEYRING = Keyring.parse((SEEDS / "openpgp" / "key.gpg").read_bytes())
_MINISIGN_KEY = Ed25519Key.parse((SEEDS / "minisign" / "key.pub").read_bytes())
_SIGNIFY_SECRET = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
_SIGNIFY_KEY_ID = b"fuzzkey!"


def _signify_files() -> tuple[bytes, bytes, bytes]:
    """A signify public key, a detached signature of _MESSAGE and an embedded one."""
    raw_public = _SIGNIFY_SECRET.public_key().public_bytes_raw()
    public = base64.b64encode(b"Ed" + _SIGNIFY_KEY_ID + raw_public)
    signature = base64.b64encode(b"Ed" + _SIGNIFY_KEY_ID + _SIGNIFY_SECRET.sign(_MESSAGE))
    key_file = b"untrusted comment: signify public key\n" + public + b"\n"
    sig_file = b"untrusted comment: verify with fuzz.pub\n" + signature + b"\n"
    return key_file, sig_file, sig_file + _MESSAGE


_SIGNIFY_KEY_FILE, _SIGNIFY_SIG, _SIGNIFY_EMBEDDED = _signify_files()
_SIGNIFY_KEY = Ed25519Key.parse(_SIGNIFY_KEY_FILE)


def _sums(data: bytes) -> None:
    _harness.expect_typed(ChecksumList.parse, data)
    _harness.expect_typed(ChecksumList.parse, data, "sha256")


def _ed25519_key(data: bytes) -> None:
    _harness.expect_typed(Ed25519Key.parse, data)
    _harness.expect_typed(Ed25519Key.parse, data.decode("latin-1"))


def _minisign(data: bytes) -> None:
    _harness.expect_typed(MinisignSignature.parse, data)
    _harness.expect_typed(verify_minisign, _MESSAGE, data, _MINISIGN_KEY)


def _signify(data: bytes) -> None:
    _harness.expect_typed(SignifySignature.parse, data)
    _harness.expect_typed(verify_signify, _MESSAGE, data, _SIGNIFY_KEY)
    _harness.expect_typed(verify_signify_embedded, data, _SIGNIFY_KEY)


def _keyring(data: bytes) -> None:
    _harness.expect_typed(Keyring.parse, data)


def _pgp_detached(data: bytes) -> None:
    _harness.expect_typed(verify_detached, _MESSAGE, data, _PGP_KEYRING)
    _harness.expect_typed(dearmor, data, "SIGNATURE")


def _pgp_cleartext(data: bytes) -> None:
    _harness.expect_typed(verify_cleartext, data, _PGP_KEYRING)
    _harness.expect_typed(split_cleartext, data)


_TARGETS = (_sums, _ed25519_key, _minisign, _signify, _keyring, _pgp_detached, _pgp_cleartext)


def seeds() -> Iterator[bytes]:
    pgp, mini = SEEDS / "openpgp", SEEDS / "minisign"
    yield b"\x00" + (pgp / "SHA256SUMS").read_bytes()
    yield b"\x00\\" + b"0" * 64 + b"  back\\\\slash\\nnewline\n# comment\n"
    yield b"\x01" + (mini / "key.pub").read_bytes()
    yield b"\x01" + _SIGNIFY_KEY_FILE
    yield b"\x02" + (mini / "message.minisig").read_bytes()
    yield b"\x03" + _SIGNIFY_SIG
    yield b"\x03" + _SIGNIFY_EMBEDDED
    yield b"\x04" + (pgp / "key.gpg").read_bytes()
    yield b"\x04" + (pgp / "key.asc").read_bytes()
    yield b"\x05" + (pgp / "msg.sig").read_bytes()
    yield b"\x05" + (pgp / "msg.asc").read_bytes()
    yield b"\x06" + (pgp / "SHA256SUMS.clear").read_bytes()


def fuzz_one(data: bytes) -> None:
    choice, payload = _harness.pick(data, len(_TARGETS))
    _TARGETS[choice](payload)


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
