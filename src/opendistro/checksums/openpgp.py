"""Verifying OpenPGP signatures over release files, as gpg would, without gpg.

What is supported is what distributions use: detached signatures (binary
``.sig``/``.gpg`` or armored ``.asc``) and cleartext signed messages, made by
v4 keys with RSA (at least 2048 bits) or Ed25519 (legacy EdDSA, algorithm 22,
and RFC 9580's algorithm 27), over SHA-224/256/384/512, of signature type 0x00
(binary) or 0x01 (canonical text).

What is checked, in order:

* The key file is the trust anchor. Each primary key in it must carry a valid
  self-signature (a user ID certification or a direct-key signature) and must
  not be revoked by a valid self-revocation; the newest self-signature gives
  its expiry and whether it may sign.
* A subkey signs only with a valid binding signature from its primary, a sign
  flag in the newest binding, a valid embedded back-signature (type 0x19, so
  nobody can attach a subkey they do not own), and no valid revocation. Its
  expiry is the earlier of its own and its primary's.
* A document signature is matched to keys by its issuer fingerprint or issuer
  key id subpacket. It needs a hashed creation time no earlier than the key's
  creation and before the key's expiry (a key that has expired since is fine:
  the signature was made while it was valid), must not have passed its own
  signature expiration time, and must not carry a critical subpacket we do not
  understand. Then the quick check (left 16 bits of the digest) and the
  signature itself are verified.
* Every signature made by a key in the key file must verify, and at least one
  must exist; signatures by other keys are ignored (Debian signs ``InRelease``
  with several archive keys at once).

SHA-1 is refused for document signatures: chosen-prefix collisions make a
SHA-1 signature over one document reusable over another. It is accepted in
self-signatures and binding signatures, which the key owner makes over data
the owner chose, because many long-lived keys still carry such signatures.
MD5, RIPEMD-160, DSA, ECDSA and v3/v5/v6 packets are not supported.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..errors import IntegrityError, SignatureError
from .openpgp_armor import (
    ARMOR_PUBLIC_KEY,
    ARMOR_SIGNATURE,
    dearmor,
    is_armored,
    split_cleartext,
)
from .openpgp_packets import (
    ALG_ED25519,
    ALG_EDDSA_LEGACY,
    ALG_RSA,
    ALG_RSA_SIGN_ONLY,
    TAG_PUBLIC_KEY,
    TAG_PUBLIC_SUBKEY,
    TAG_SIGNATURE,
    TAG_USER_ATTRIBUTE,
    TAG_USER_ID,
    Packet,
    PublicKey,
    Signature,
    parse_packets,
    parse_public_key,
    parse_signature,
)
from .sums import read_bounded

__all__ = [
    "MAX_KEYRING_SIZE",
    "MAX_SIGNATURE_SIZE",
    "Keyring",
    "SigningKey",
    "VerifiedSignature",
    "looks_like_openpgp",
    "verify_cleartext",
    "verify_detached",
    "verify_detached_file",
]

MAX_KEYRING_SIZE = 16 * 1024 * 1024
MAX_SIGNATURE_SIZE = 1024 * 1024
MAX_CLEARTEXT_SIZE = 32 * 1024 * 1024
_MAX_KEYRING_PACKETS = 200_000
_MAX_SIGNATURE_PACKETS = 64
_CHUNK_SIZE = 1024 * 1024

_TYPE_BINARY = 0x00
_TYPE_TEXT = 0x01
_TYPE_CERTIFICATIONS = frozenset({0x10, 0x11, 0x12, 0x13})
_TYPE_SUBKEY_BINDING = 0x18
_TYPE_PRIMARY_BINDING = 0x19
_TYPE_DIRECT_KEY = 0x1F
_TYPE_KEY_REVOCATION = 0x20
_TYPE_SUBKEY_REVOCATION = 0x28
_FLAG_SIGN = 0x02

_DOCUMENT_HASHES = {8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
_SELF_SIGNATURE_HASHES = {**_DOCUMENT_HASHES, 2: "sha1"}
_CRYPTOGRAPHY_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_HASH_NAMES_FOR_ERRORS = {1: "MD5", 2: "SHA-1", 3: "RIPEMD-160"}

_Hasher = Any  # hashlib's hash objects have no public type


def _fingerprint_hex(fingerprint: bytes) -> str:
    return fingerprint.hex().upper()


def _raw_verify(key: PublicKey, signature: Signature, digest: bytes, hash_name: str) -> bool:
    """The public-key operation alone: does ``signature`` sign ``digest`` under ``key``?"""
    if key.algorithm in (ALG_RSA, ALG_RSA_SIGN_ONLY):
        if signature.algorithm not in (ALG_RSA, ALG_RSA_SIGN_ONLY) or not signature.values:
            return False
        modulus, exponent = key.material
        number = int.from_bytes(modulus, "big")
        value = signature.values[0].lstrip(b"\x00")
        if len(value) > len(modulus):
            return False
        try:
            public = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), number).public_key()
            public.verify(
                value.rjust(len(modulus), b"\x00"),
                digest,
                padding.PKCS1v15(),
                Prehashed(_CRYPTOGRAPHY_HASHES[hash_name]()),
            )
        except (InvalidSignature, ValueError):
            return False
        return True
    if key.algorithm in (ALG_EDDSA_LEGACY, ALG_ED25519):
        # EdDSA signs the digest itself; it must be at least 256 bits long.
        if signature.algorithm != key.algorithm or len(digest) < 32:
            return False
        r, s = (value.lstrip(b"\x00") for value in signature.values)
        if len(r) > 32 or len(s) > 32:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(key.material[0]).verify(
                r.rjust(32, b"\x00") + s.rjust(32, b"\x00"), digest
            )
        except (InvalidSignature, ValueError):
            return False
        return True
    return False


def _check(key: PublicKey, signature: Signature, hasher: _Hasher, hash_name: str) -> bool:
    """Finish a hash that already holds the signed data and verify ``signature`` over it."""
    if not key.can_verify or signature.unknown_critical or signature.created is None:
        return False
    final = hasher.copy()
    final.update(signature.hashed_part)
    final.update(signature.trailer)
    digest: bytes = final.digest()
    if digest[:2] != signature.left16:
        return False
    return _raw_verify(key, signature, digest, hash_name)


def _check_over(key: PublicKey, signature: Signature, material: bytes) -> bool:
    """Verify a key-management signature (self, binding, revocation) over ``material``."""
    hash_name = _SELF_SIGNATURE_HASHES.get(signature.hash_algorithm)
    if hash_name is None:
        return False
    hasher = hashlib.new(hash_name, usedforsecurity=hash_name != "sha1")
    hasher.update(material)
    return _check(key, signature, hasher, hash_name)


def _names_key(signature: Signature, key: PublicKey) -> bool:
    """Whether the signature's issuer subpackets point at ``key``."""
    return (
        key.fingerprint in signature.issuer_fingerprints or key.key_id in signature.issuer_key_ids
    )


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key from the key file that may make document signatures."""

    key: PublicKey
    primary: PublicKey
    expires: int | None
    """Absolute Unix time after which its signatures are refused; None for never."""

    @property
    def fingerprint(self) -> str:
        return _fingerprint_hex(self.key.fingerprint)

    @property
    def primary_fingerprint(self) -> str:
        return _fingerprint_hex(self.primary.fingerprint)


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """What a successful verification established."""

    fingerprint: str
    """Fingerprint of the (sub)key that made the signature, upper-case hex."""
    primary_fingerprint: str
    created: int
    hash_algorithm: str


@dataclass
class _Component:
    """A user ID, user attribute or subkey with the signatures that follow it."""

    tag: int
    body: bytes
    signatures: list[Signature]


def _group_certificates(packets: list[Packet]) -> Iterator[tuple[bytes, list[_Component]]]:
    """Split a keyring into (primary key body, components); the first component is the key."""
    primary: bytes | None = None
    components: list[_Component] = []
    for packet in packets:
        if packet.tag == TAG_PUBLIC_KEY:
            if primary is not None:
                yield primary, components
            primary = packet.body
            components = [_Component(TAG_PUBLIC_KEY, packet.body, [])]
        elif primary is None:
            if packet.tag in (TAG_SIGNATURE, TAG_USER_ID, TAG_PUBLIC_SUBKEY):
                raise SignatureError("bad format: key file does not start with a public key")
        elif packet.tag in (TAG_USER_ID, TAG_USER_ATTRIBUTE, TAG_PUBLIC_SUBKEY):
            components.append(_Component(packet.tag, packet.body, []))
        elif packet.tag == TAG_SIGNATURE:
            signature = parse_signature(packet.body)
            if signature is not None:
                components[-1].signatures.append(signature)
    if primary is not None:
        yield primary, components


def _expiry(created: int, expires_after: int | None) -> int | None:
    return None if not expires_after else created + expires_after


def _earliest(*times: int | None) -> int | None:
    known = [moment for moment in times if moment is not None]
    return min(known) if known else None


def _newest(signatures: Iterable[Signature]) -> Signature | None:
    return max(signatures, key=lambda signature: signature.created or 0, default=None)


def _certificate_keys(primary_body: bytes, components: list[_Component]) -> list[SigningKey]:
    """The keys of one certificate that may sign documents, per the module's rules."""
    primary = parse_public_key(primary_body)
    if primary is None:
        return []
    own = primary.hashed_form

    def self_made(signature: Signature) -> bool:
        return _names_key(signature, primary)

    key_signatures = components[0].signatures
    if any(
        sig.sig_type == _TYPE_KEY_REVOCATION and self_made(sig) and _check_over(primary, sig, own)
        for sig in key_signatures
    ):
        return []
    self_signatures = [
        sig
        for sig in key_signatures
        if sig.sig_type == _TYPE_DIRECT_KEY and self_made(sig) and _check_over(primary, sig, own)
    ]
    for component in components[1:]:
        if component.tag == TAG_PUBLIC_SUBKEY:
            continue
        prefix = b"\xb4" if component.tag == TAG_USER_ID else b"\xd1"
        material = own + prefix + len(component.body).to_bytes(4, "big") + component.body
        self_signatures.extend(
            sig
            for sig in component.signatures
            if sig.sig_type in _TYPE_CERTIFICATIONS
            and self_made(sig)
            and _check_over(primary, sig, material)
        )
    newest = _newest(self_signatures)
    if newest is None:
        return []
    primary_expires = _expiry(primary.created, newest.key_expires_after)
    found: list[SigningKey] = []
    if primary.can_verify and (newest.key_flags is None or newest.key_flags & _FLAG_SIGN):
        found.append(SigningKey(primary, primary, primary_expires))
    for component in components[1:]:
        if component.tag != TAG_PUBLIC_SUBKEY:
            continue
        subkey = parse_public_key(component.body)
        if subkey is None or not subkey.can_verify:
            continue
        material = own + subkey.hashed_form
        if any(
            sig.sig_type == _TYPE_SUBKEY_REVOCATION
            and self_made(sig)
            and _check_over(primary, sig, material)
            for sig in component.signatures
        ):
            continue
        binding = _newest(
            sig
            for sig in component.signatures
            if sig.sig_type == _TYPE_SUBKEY_BINDING
            and self_made(sig)
            and _check_over(primary, sig, material)
        )
        if binding is None or not (binding.key_flags or 0) & _FLAG_SIGN:
            continue
        if not any(
            back.sig_type == _TYPE_PRIMARY_BINDING and _check_over(subkey, back, material)
            for back in binding.embedded
        ):
            continue
        expires = _earliest(primary_expires, _expiry(subkey.created, binding.key_expires_after))
        found.append(SigningKey(subkey, primary, expires))
    return found


class Keyring:
    """The signing-capable keys of an exported public key file (``gpg --export``)."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def parse(cls, data: bytes) -> Keyring:
        """Read a binary or ASCII-armored key export; several keys may be concatenated."""
        data = bytes(data)
        if len(data) > MAX_KEYRING_SIZE:
            raise SignatureError("bad format: key file is too large")
        binary = _unarmor(data, ARMOR_PUBLIC_KEY)
        packets = parse_packets(binary, _MAX_KEYRING_PACKETS)
        if not packets:
            raise SignatureError("bad format: empty key file")
        keys: list[SigningKey] = []
        for primary, components in _group_certificates(packets):
            keys.extend(_certificate_keys(primary, components))
        if not keys:
            raise SignatureError("bad format: key file holds no usable signing key")
        return cls(keys)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        try:
            data = read_bounded(path, MAX_KEYRING_SIZE, "key file")
        except IntegrityError as exc:
            raise SignatureError(str(exc)) from exc
        return cls.parse(data)

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return self._keys

    def candidates(self, signature: Signature) -> list[SigningKey]:
        """Keys that the signature's issuer subpackets name."""
        return [entry for entry in self._keys if _names_key(signature, entry.key)]


def _is_binary(data: bytes) -> bool:
    """Binary OpenPGP starts with a packet header, whose top bit is always set."""
    return bool(data[:1]) and data[0] & 0x80 != 0


def _unarmor(data: bytes, label: str) -> bytes:
    return data if _is_binary(data) else dearmor(data, label)


def looks_like_openpgp(data: bytes) -> bool:
    """Whether ``data`` is shaped like OpenPGP (armored, or a binary packet header)."""
    return _is_binary(bytes(data[:1])) or is_armored(data)


def _read_signatures(signature: bytes) -> list[Signature]:
    signature = bytes(signature)
    if len(signature) > MAX_SIGNATURE_SIZE:
        raise SignatureError("bad format: signature is too large")
    binary = _unarmor(signature, ARMOR_SIGNATURE)
    packets = parse_packets(binary, _MAX_SIGNATURE_PACKETS)
    parsed: list[Signature] = []
    for packet in packets:
        if packet.tag != TAG_SIGNATURE:
            raise SignatureError(f"bad format: packet of type {packet.tag} in a signature")
        found = parse_signature(packet.body)
        if found is None:
            raise SignatureError("bad format: unsupported signature version")
        parsed.append(found)
    if not parsed:
        raise SignatureError("bad format: no signature packet")
    return parsed


class _TextCanonicalizer:
    """Feeds text with every line ending as CRLF, across chunk boundaries."""

    def __init__(self) -> None:
        self._held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self._held_cr:
            chunk = b"\r" + chunk
        self._held_cr = chunk.endswith(b"\r")
        if self._held_cr:
            chunk = chunk[:-1]
        return chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        return b"\r" if self._held_cr else b""


class _DocumentHash:
    """One streaming pass over the data for every (type, hash) the signatures need."""

    def __init__(self, signatures: list[Signature], keyring: Keyring) -> None:
        self._hashers: dict[tuple[int, str], _Hasher] = {}
        self._text = _TextCanonicalizer()
        for signature in signatures:
            if not keyring.candidates(signature):
                continue
            if signature.sig_type not in (_TYPE_BINARY, _TYPE_TEXT):
                raise SignatureError(
                    f"bad format: signature type 0x{signature.sig_type:02x} is not a document"
                    " signature"
                )
            name = _DOCUMENT_HASHES.get(signature.hash_algorithm)
            if name is None:
                label = _HASH_NAMES_FOR_ERRORS.get(signature.hash_algorithm)
                label = label or f"hash algorithm {signature.hash_algorithm}"
                raise SignatureError(f"invalid signature: {label} signatures are refused")
            self._hashers.setdefault((signature.sig_type, name), hashlib.new(name))

    def update(self, chunk: bytes) -> None:
        text: bytes | None = None
        for (sig_type, _), hasher in self._hashers.items():
            if sig_type == _TYPE_TEXT:
                if text is None:
                    text = self._text.feed(chunk)
                hasher.update(text)
            else:
                hasher.update(chunk)

    def finish(self) -> None:
        tail = self._text.finish()
        for (sig_type, _), hasher in self._hashers.items():
            if sig_type == _TYPE_TEXT and tail:
                hasher.update(tail)

    def hasher(self, signature: Signature) -> tuple[_Hasher, str]:
        name = _DOCUMENT_HASHES[signature.hash_algorithm]
        return self._hashers[(signature.sig_type, name)], name


def _judge(
    signatures: list[Signature], document: _DocumentHash, keyring: Keyring, now: float | None
) -> VerifiedSignature:
    """Apply the module's acceptance rules to signatures whose data is already hashed."""
    moment = time.time() if now is None else now
    verified: VerifiedSignature | None = None
    for signature in signatures:
        candidates = keyring.candidates(signature)
        if not candidates:
            continue
        created = signature.created
        if created is None:
            raise SignatureError("bad format: signature has no hashed creation time")
        if signature.unknown_critical:
            raise SignatureError(
                f"invalid signature: unsupported critical subpacket {signature.unknown_critical[0]}"
            )
        if signature.expires_after and created + signature.expires_after <= moment:
            raise SignatureError("invalid signature: the signature has expired")
        hasher, name = document.hasher(signature)
        problem = "invalid signature: the data does not match the signature"
        for candidate in candidates:
            if created < candidate.key.created:
                problem = "invalid signature: signature is older than its key"
                continue
            if candidate.expires is not None and created >= candidate.expires:
                problem = f"invalid signature: key {candidate.fingerprint} had expired"
                continue
            if _check(candidate.key, signature, hasher, name):
                verified = VerifiedSignature(
                    candidate.fingerprint, candidate.primary_fingerprint, created, name
                )
                break
        else:
            raise SignatureError(problem)
    if verified is None:
        issuers = sorted(
            {key_id.hex().upper() for sig in signatures for key_id in sig.issuer_key_ids}
            | {fpr.hex().upper() for sig in signatures for fpr in sig.issuer_fingerprints}
        )
        raise SignatureError(
            "no signature by a key in the key file"
            + (f" (signed by {', '.join(issuers)})" if issuers else "")
        )
    return verified


def verify_detached(
    data: bytes, signature: bytes, keyring: Keyring, now: float | None = None
) -> VerifiedSignature:
    """Verify a detached signature (binary or armored) over ``data``."""
    signatures = _read_signatures(signature)
    document = _DocumentHash(signatures, keyring)
    document.update(bytes(data))
    document.finish()
    return _judge(signatures, document, keyring, now)


def verify_detached_file(
    path: str | os.PathLike[str], signature: bytes, keyring: Keyring, now: float | None = None
) -> VerifiedSignature:
    """Verify a detached signature over a file, reading it in fixed-size chunks."""
    signatures = _read_signatures(signature)
    document = _DocumentHash(signatures, keyring)
    try:
        with open(Path(path), "rb") as handle:
            while chunk := handle.read(_CHUNK_SIZE):
                document.update(chunk)
    except OSError as exc:
        raise SignatureError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc
    document.finish()
    return _judge(signatures, document, keyring, now)


def verify_cleartext(
    message: bytes, keyring: Keyring, now: float | None = None
) -> tuple[bytes, VerifiedSignature]:
    """Verify a cleartext signed message; return the signed text (LF line ends) and signer.

    The text returned is the canonical form the signature covers (dash escapes
    removed, trailing spaces and tabs stripped), never the raw input.
    """
    message = bytes(message)
    if len(message) > MAX_CLEARTEXT_SIZE:
        raise SignatureError("bad format: signed message is too large")
    cleartext = split_cleartext(message)
    signatures = _read_signatures(cleartext.signature)
    for signature in signatures:
        if signature.sig_type != _TYPE_TEXT and keyring.candidates(signature):
            raise SignatureError("bad format: a cleartext signature must be a text signature")
        if (
            cleartext.hash_algorithms is not None
            and signature.hash_algorithm not in cleartext.hash_algorithms
        ):
            raise SignatureError("bad format: signature hash is not one the Hash header names")
    document = _DocumentHash(signatures, keyring)
    # Canonicalizing text that already ends its lines in CRLF changes nothing.
    document.update(cleartext.canonical)
    document.finish()
    return cleartext.signed_text, _judge(signatures, document, keyring, now)
