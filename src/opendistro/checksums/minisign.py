"""minisign and signify (OpenBSD) Ed25519 signatures.

Both tools share one key format: a line ``untrusted comment: ...`` and the
base64 of ``"Ed" || key id (8 bytes) || Ed25519 public key (32 bytes)``.

* signify signs the file itself. Its ``.sig`` holds an untrusted comment and
  the base64 of ``"Ed" || key id || signature (64 bytes)``; ``signify -S -e``
  appends the signed message after those two lines (OpenBSD's ``SHA256.sig``).
* minisign writes the same first two lines, with algorithm ``"ED"`` when the
  signature covers the BLAKE2b-512 digest of the file (the default since
  minisign 0.8, so large files are never held in memory) or ``"Ed"`` for the
  legacy form over the file itself. Two more lines follow: ``trusted comment:
  TEXT`` and the base64 of a *global* signature over ``signature || TEXT``,
  which is what makes the trusted comment trustworthy.

Only the comment lines' prefixes are checked; their untrusted text is ignored.
The key ids must match, as the tools require, so a signature made by another
key fails with a message saying so rather than as a bare "invalid signature".
Legacy signatures need the whole file in memory (Ed25519 cannot be streamed);
files larger than :data:`MAX_LEGACY_MESSAGE_SIZE` are refused for them.
"""

from __future__ import annotations

import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import IntegrityError, SignatureError
from .sums import read_bounded

__all__ = [
    "MAX_LEGACY_MESSAGE_SIZE",
    "Ed25519Key",
    "MinisignSignature",
    "SignifySignature",
    "looks_like_ed25519_key",
    "looks_like_ed25519_signature",
    "verify_minisign",
    "verify_minisign_file",
    "verify_signify",
    "verify_signify_embedded",
    "verify_signify_file",
]

MAX_KEY_FILE_SIZE = 64 * 1024
MAX_SIGNATURE_FILE_SIZE = 64 * 1024
MAX_LEGACY_MESSAGE_SIZE = 1024 * 1024 * 1024
"""Legacy (non-prehashed) signatures cover the raw file, which must fit in memory."""

MAX_EMBEDDED_MESSAGE_SIZE = 16 * 1024 * 1024

_UNTRUSTED = b"untrusted comment: "
_TRUSTED = b"trusted comment: "
_LEGACY = b"Ed"
_PREHASHED = b"ED"
_CHUNK_SIZE = 1024 * 1024


def _b64(text: bytes, what: str) -> bytes:
    try:
        return binascii.a2b_base64(text.strip(), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"bad format: {what} is not valid base64") from exc


def _split_lines(data: bytes, what: str) -> list[bytes]:
    try:
        text = bytes(data)
    except TypeError as exc:
        raise SignatureError(f"bad format: {what} must be bytes") from exc
    lines = text.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


@dataclass(frozen=True, slots=True)
class Ed25519Key:
    """A minisign/signify public key: its 8-byte id and the Ed25519 key."""

    key_id: bytes
    public_key: bytes

    @property
    def key_id_hex(self) -> str:
        """The id as minisign prints it (a little-endian number in upper-case hex)."""
        return self.key_id[::-1].hex().upper()

    @classmethod
    def parse(cls, data: bytes | str) -> Ed25519Key:
        """Read a key file (comment line + base64) or the bare base64 string."""
        raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
        if len(raw) > MAX_KEY_FILE_SIZE:
            raise SignatureError("bad format: public key file is too large")
        lines = [line for line in _split_lines(raw, "public key") if line.strip()]
        if len(lines) == 2 and lines[0].startswith(_UNTRUSTED):
            encoded = lines[1]
        elif len(lines) == 1 and not lines[0].startswith(_UNTRUSTED):
            encoded = lines[0]
        else:
            raise SignatureError("bad format: not a minisign/signify public key")
        blob = _b64(encoded, "public key")
        if len(blob) != 42 or blob[:2] != _LEGACY:
            raise SignatureError("bad format: not an Ed25519 minisign/signify public key")
        return cls(key_id=blob[2:10], public_key=blob[10:])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ed25519Key:
        return cls.parse(read_bounded(path, MAX_KEY_FILE_SIZE, "public key"))

    def _verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        except ValueError as exc:
            raise SignatureError("bad format: unusable Ed25519 public key") from exc
        return True

    def _check_key_id(self, key_id: bytes) -> None:
        if key_id != self.key_id:
            raise SignatureError(
                f"key id mismatch: signed by key {key_id[::-1].hex().upper()},"
                f" not by {self.key_id_hex}"
            )


def _parse_signature_line(line: bytes, algorithms: tuple[bytes, ...]) -> tuple[bytes, bytes, bytes]:
    blob = _b64(line, "signature")
    if len(blob) != 74 or blob[:2] not in algorithms:
        raise SignatureError("bad format: not an Ed25519 signature line")
    return blob[:2], blob[2:10], blob[10:]


@dataclass(frozen=True, slots=True)
class MinisignSignature:
    """A parsed ``.minisig`` file."""

    algorithm: bytes
    key_id: bytes
    signature: bytes
    trusted_comment: bytes
    global_signature: bytes

    @property
    def prehashed(self) -> bool:
        return self.algorithm == _PREHASHED

    @classmethod
    def parse(cls, data: bytes) -> MinisignSignature:
        if len(data) > MAX_SIGNATURE_FILE_SIZE:
            raise SignatureError("bad format: signature file is too large")
        lines = _split_lines(data, "signature")
        while lines and not lines[-1].strip():
            lines.pop()
        if (
            len(lines) != 4
            or not lines[0].startswith(_UNTRUSTED)
            or not lines[2].startswith(_TRUSTED)
        ):
            raise SignatureError("bad format: not a minisign signature file")
        algorithm, key_id, signature = _parse_signature_line(lines[1], (_LEGACY, _PREHASHED))
        global_signature = _b64(lines[3], "global signature")
        if len(global_signature) != 64:
            raise SignatureError("bad format: global signature has the wrong length")
        return cls(algorithm, key_id, signature, lines[2][len(_TRUSTED) :], global_signature)


@dataclass(frozen=True, slots=True)
class SignifySignature:
    """A parsed signify ``.sig`` file; ``message`` is set for embedded (``-e``) ones."""

    key_id: bytes
    signature: bytes
    message: bytes | None = None

    @classmethod
    def parse(cls, data: bytes, embedded: bool = False) -> SignifySignature:
        limit = MAX_SIGNATURE_FILE_SIZE + (MAX_EMBEDDED_MESSAGE_SIZE if embedded else 0)
        if len(data) > limit:
            raise SignatureError("bad format: signature file is too large")
        first, _, rest = bytes(data).partition(b"\n")
        second, newline, message = rest.partition(b"\n")
        if not first.startswith(_UNTRUSTED) or not newline:
            raise SignatureError("bad format: not a signify signature file")
        if not embedded and message.strip():
            raise SignatureError("bad format: unexpected data after the signature")
        _, key_id, signature = _parse_signature_line(second, (_LEGACY,))
        return cls(key_id, signature, message if embedded else None)


def looks_like_ed25519_key(data: bytes) -> bool:
    """Whether ``data`` is shaped like a minisign/signify key (not whether it is valid)."""
    try:
        Ed25519Key.parse(data)
    except SignatureError:
        return False
    return True


def looks_like_ed25519_signature(data: bytes) -> bool:
    """Whether ``data`` starts like a minisign or signify signature file."""
    return bytes(data[: len(_UNTRUSTED)]) == _UNTRUSTED


def _read_message(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SignatureError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc
    if size > MAX_LEGACY_MESSAGE_SIZE:
        raise SignatureError(
            f"{os.fspath(path)!r} is too large for a legacy (non-prehashed) signature"
        )
    try:
        return read_bounded(path, MAX_LEGACY_MESSAGE_SIZE, "signed file")
    except IntegrityError as exc:
        raise SignatureError(str(exc)) from exc


def _blake2b_file(path: Path) -> bytes:
    hasher = hashlib.blake2b(digest_size=64)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK_SIZE):
                hasher.update(chunk)
    except OSError as exc:
        raise SignatureError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc
    return hasher.digest()


def _check_minisign(signature: MinisignSignature, key: Ed25519Key, signed: bytes) -> None:
    key._check_key_id(signature.key_id)
    if not key._verify(signature.signature, signed):
        raise SignatureError("invalid signature: the file does not match its minisign signature")
    if not key._verify(signature.global_signature, signature.signature + signature.trusted_comment):
        raise SignatureError("invalid trusted-comment signature: the trusted comment was altered")


def verify_minisign(message: bytes, signature: bytes, key: Ed25519Key) -> str:
    """Verify a minisign signature over ``message``; return the trusted comment."""
    parsed = MinisignSignature.parse(signature)
    signed = hashlib.blake2b(message, digest_size=64).digest() if parsed.prehashed else message
    _check_minisign(parsed, key, signed)
    return parsed.trusted_comment.decode("utf-8", "replace")


def verify_minisign_file(path: str | os.PathLike[str], signature: bytes, key: Ed25519Key) -> str:
    """Verify a file against a ``.minisig``; prehashed ones are read in chunks."""
    path = Path(path)
    parsed = MinisignSignature.parse(signature)
    signed = _blake2b_file(path) if parsed.prehashed else _read_message(path)
    _check_minisign(parsed, key, signed)
    return parsed.trusted_comment.decode("utf-8", "replace")


def verify_signify(message: bytes, signature: bytes, key: Ed25519Key) -> None:
    """Verify a detached signify signature over ``message``."""
    parsed = SignifySignature.parse(signature)
    key._check_key_id(parsed.key_id)
    if not key._verify(parsed.signature, message):
        raise SignatureError("invalid signature: the file does not match its signify signature")


def verify_signify_file(path: str | os.PathLike[str], signature: bytes, key: Ed25519Key) -> None:
    """Verify a file against a detached signify ``.sig``."""
    verify_signify(_read_message(Path(path)), signature, key)


def verify_signify_embedded(signature: bytes, key: Ed25519Key) -> bytes:
    """Verify a ``signify -S -e`` file and return the message it carries."""
    parsed = SignifySignature.parse(signature, embedded=True)
    message = parsed.message or b""
    key._check_key_id(parsed.key_id)
    if not key._verify(parsed.signature, message):
        raise SignatureError("invalid signature: the embedded message was altered")
    return message
