"""Verifying releases the way distributions already publish them.

A distribution ships a checksum list (``SHA256SUMS``, OpenBSD's ``SHA256``,
Fedora's ``CHECKSUM``) and a signature over it: OpenPGP (detached ``.gpg``,
``.sign``, ``.asc``, or the list itself cleartext-signed), minisign
(``.minisig``) or signify (``.sig``, possibly with the list embedded). Checking
a download is then two steps: authenticate the list, then hash the file.

:func:`verify_checksum_file` does the first step whatever the signature format
is, and parses exactly the bytes it authenticated (the file is read once, so it
cannot change between the check and the parse). :func:`verify_signed_file`
does both steps.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SignatureError
from .minisign import (
    Ed25519Key,
    looks_like_ed25519_key,
    looks_like_ed25519_signature,
    verify_minisign,
    verify_signify,
    verify_signify_embedded,
)
from .openpgp import (
    MAX_SIGNATURE_SIZE,
    Keyring,
    VerifiedSignature,
    looks_like_openpgp,
    verify_cleartext,
    verify_detached,
)
from .openpgp_armor import is_cleartext
from .sums import (
    MAX_CHECKSUM_FILE_SIZE,
    ChecksumEntry,
    ChecksumList,
    algorithm_from_filename,
    read_bounded,
    verify_file,
    verify_tree,
)

__all__ = [
    "ChecksumEntry",
    "ChecksumList",
    "Ed25519Key",
    "Keyring",
    "VerifiedSignature",
    "verify_checksum_file",
    "verify_file",
    "verify_signed_file",
    "verify_tree",
]

_MAX_KEY_SIZE = 16 * 1024 * 1024
_TRUSTED_COMMENT = b"\ntrusted comment: "


def _authenticate(sums: bytes, signature: bytes | None, key: bytes) -> bytes:
    """Check the signature over ``sums`` and return the bytes that it covers."""
    if signature is None:
        if is_cleartext(sums):
            text, _ = verify_cleartext(sums, Keyring.parse(key))
            return text
        if looks_like_ed25519_signature(sums):
            return verify_signify_embedded(sums, Ed25519Key.parse(key))
        raise SignatureError("bad format: no signature given and the checksum list is not signed")
    if looks_like_ed25519_signature(signature):
        if not looks_like_ed25519_key(key):
            raise SignatureError("bad format: a minisign/signify signature needs such a public key")
        ed_key = Ed25519Key.parse(key)
        if _TRUSTED_COMMENT in signature.replace(b"\r\n", b"\n"):
            verify_minisign(sums, signature, ed_key)
        else:
            verify_signify(sums, signature, ed_key)
        return sums
    if looks_like_openpgp(signature):
        verify_detached(sums, signature, Keyring.parse(key))
        return sums
    raise SignatureError("bad format: unrecognised signature file")


def verify_checksum_file(
    sums_path: str | os.PathLike[str],
    signature_path: str | os.PathLike[str] | None,
    public_key_path: str | os.PathLike[str],
    algorithm: str | None = None,
) -> ChecksumList:
    """Authenticate a checksum list and return its entries.

    The signature format (OpenPGP binary or armored, minisign, signify) is
    detected from the signature file. With ``signature_path`` None the list
    must carry its own signature: an OpenPGP cleartext signed message or a
    ``signify -e`` file. ``algorithm`` defaults to what the list's file name
    announces (``SHA512SUMS`` -> sha512). Any failure raises SignatureError
    (or IntegrityError for a malformed list).
    """
    sums_path = Path(sums_path)
    sums = read_bounded(sums_path, MAX_CHECKSUM_FILE_SIZE, "checksum list")
    signature = (
        None
        if signature_path is None
        else read_bounded(signature_path, MAX_SIGNATURE_SIZE, "signature")
    )
    key = read_bounded(public_key_path, _MAX_KEY_SIZE, "public key")
    signed = _authenticate(sums, signature, key)
    if algorithm is None:
        algorithm = algorithm_from_filename(sums_path.name)
    return ChecksumList.parse(signed, algorithm)


def verify_signed_file(
    path: str | os.PathLike[str],
    sums_path: str | os.PathLike[str],
    signature_path: str | os.PathLike[str] | None,
    public_key_path: str | os.PathLike[str],
    name: str | None = None,
) -> tuple[ChecksumEntry, ...]:
    """Authenticate the checksum list, then check ``path`` against it (see :func:`verify_file`)."""
    checksums = verify_checksum_file(sums_path, signature_path, public_key_path)
    return verify_file(path, checksums, name=name)
