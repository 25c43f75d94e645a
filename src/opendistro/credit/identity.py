"""A client's credit identity: one Ed25519 key, kept across sessions in the state directory.

Credit is only worth something if it sticks to someone, and peer ids do not:
a client picks a new one every run. So a client that takes part in
``od_credit`` (``spec/od-credit.md``) owns a long-lived Ed25519 key; its
32-byte public key *is* its identity, and everything it signs (connection
hellos, receipts for data it received) is signed with it.

The key is created the first time it is needed and then loaded. The file is
written under a temporary name with mode 0600 and linked into place, so two
processes starting at once end up with the same key, and a crash never leaves
half a key behind. Like ``ssh``, we refuse a key file that others may read:
whoever can read it can spend our credit.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import CreditError

__all__ = [
    "IDENTITY_FILE_NAME",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "CreditIdentity",
    "is_valid_signature",
]

IDENTITY_FILE_NAME: Final = "credit-identity.pem"
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
SEED_SIZE: Final = 32
_MAX_FILE_SIZE: Final = 4096  # a PKCS#8 Ed25519 PEM is 119 bytes


@dataclass(frozen=True)
class CreditIdentity:
    """An Ed25519 private key; ``public_key`` (32 raw bytes) names the identity on the wire."""

    _key: ed25519.Ed25519PrivateKey = field(repr=False, compare=False)
    public_key: bytes

    @classmethod
    def _wrap(cls, key: ed25519.Ed25519PrivateKey) -> CreditIdentity:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(key, public)

    @classmethod
    def generate(cls) -> CreditIdentity:
        return cls._wrap(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> CreditIdentity:
        """The identity whose private key is the 32-byte ``seed`` (RFC 8032); for test vectors."""
        if len(seed) != SEED_SIZE:
            raise CreditError(f"an Ed25519 seed is {SEED_SIZE} bytes, not {len(seed)}")
        return cls._wrap(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(bytes(message))

    # ------------------------------------------------------------ files

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (``openssl pkey`` reads it)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> CreditIdentity:
        """Parse a PKCS#8 PEM Ed25519 private key; anything else raises CreditError."""
        try:
            key = serialization.load_pem_private_key(bytes(data), password=None)
        except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
            raise CreditError(f"not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise CreditError(f"a credit identity is an Ed25519 key, not {type(key).__name__}")
        return cls._wrap(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CreditIdentity:
        """Read an identity file; a missing, corrupt or exposed one raises CreditError."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as handle:
                if os.name == "posix":  # pragma: no branch - other systems: no such modes
                    mode = os.fstat(handle.fileno()).st_mode
                    if mode & (stat.S_IRWXG | stat.S_IRWXO):
                        raise CreditError(
                            f"{name}: credit identity is accessible by others "
                            f"(mode {stat.S_IMODE(mode):o}); run chmod 600 on it"
                        )
                data = handle.read(_MAX_FILE_SIZE + 1)
        except OSError as exc:
            raise CreditError(f"cannot read credit identity {name}: {exc}") from exc
        if len(data) > _MAX_FILE_SIZE:
            raise CreditError(f"{name}: larger than {_MAX_FILE_SIZE} bytes, not an identity")
        try:
            return cls.from_pem(data)
        except CreditError as exc:
            raise CreditError(
                f"{name}: corrupt credit identity ({exc}); move it away to start a new "
                "identity (its credit is lost)"
            ) from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a new 0600 identity file atomically; an existing file is never replaced."""
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self.to_pem())
                    handle.flush()
                    os.fsync(handle.fileno())
                # link() fails if ``target`` exists, unlike rename(): first writer wins.
                os.link(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
        except FileExistsError:
            raise CreditError(f"{target} exists; refusing to overwrite an identity") from None
        except OSError as exc:
            raise CreditError(f"cannot write credit identity {target}: {exc}") from exc

    @classmethod
    def load_or_create(cls, state_dir: str | os.PathLike[str]) -> CreditIdentity:
        """The identity kept in ``state_dir``, made (with the directory) on first use."""
        directory = Path(state_dir)
        path = directory / IDENTITY_FILE_NAME
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CreditError(f"cannot create state directory {directory}: {exc}") from exc
        if not path.exists():
            try:
                cls.generate().save(path)
            except CreditError:
                if not path.exists():  # pragma: no branch - else a race with another process
                    raise
                # Another process created it between our check and our link: use theirs.
        return cls.load(path)


def is_valid_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``message``.

    A public key that is not 32 bytes or not a point on the curve, or a
    signature that is not 64 bytes, is simply invalid: the caller decides
    which error that is.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(bytes(public_key))
        key.verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True
