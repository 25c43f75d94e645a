"""Publisher keys: the three signature schemes, key identifiers and key files.

One scheme per key type, so a key never has to say how it is used: Ed25519
keys sign with Ed25519, P-256 keys with ECDSA over SHA-256, RSA keys with
RSA-PSS (SHA-256, MGF1-SHA-256, a 32-byte salt). A key is named by its *key id*,
the first 16 bytes of SHA-256 over its DER SubjectPublicKeyInfo, which is the
same whoever computes it because we only accept SPKI that re-encodes to the
exact bytes we were given.

Private keys are stored as PKCS#8 PEM (optionally passphrase-protected),
public keys as SPKI PEM, optionally preceded by ``Field: value`` lines that say
whose key it is and until when it may be trusted (RFC 7468 allows explanatory
text before a PEM block, so ``openssl pkey -pubin`` still reads the file).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ..errors import ConfigError, SignatureError
from .reasons import Reason, refuse

__all__ = [
    "DEFAULT_RSA_BITS",
    "DEFAULT_SCHEME",
    "KEY_ID_SIZE",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "SCHEMES",
    "PublicKeyFile",
    "Scheme",
    "SigningKey",
    "VerifyingKey",
    "check_text",
    "key_id_of",
]

Scheme = Literal["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha256"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)
DEFAULT_SCHEME: Scheme = "ed25519"

KEY_ID_SIZE = 16
MIN_RSA_BITS = 2048
#: Verifying costs grow with the modulus; a hostile key must not stall us.
MAX_RSA_BITS = 16384
DEFAULT_RSA_BITS = 3072
#: Ed25519 signatures and ECDSA (r || s) are both 64 bytes.
_FIXED_SIGNATURE_SIZE = 64
_P256_SCALAR_SIZE = 32
_PSS_SALT_SIZE = 32  # = SHA-256 digest size
MAX_KEY_FILE_SIZE = 64 * 1024
MAX_TEXT_BYTES = 255

_PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def key_id_of(spki: bytes) -> bytes:
    """The 16-byte key id: SHA-256 over the DER SubjectPublicKeyInfo, truncated."""
    return hashlib.sha256(spki).digest()[:KEY_ID_SIZE]


def check_text(raw: bytes, what: str) -> str:
    """Decode a name-like field: UTF-8, 1..255 bytes, no control characters.

    Names end up on terminals and in logs, so a control character could forge
    output ("verified: ..."); refusing them is cheaper than escaping everywhere.
    """
    if not 0 < len(raw) <= MAX_TEXT_BYTES:
        raise refuse(Reason.MALFORMED, f"{what} must be 1 to {MAX_TEXT_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse(Reason.MALFORMED, f"{what} is not UTF-8") from None
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise refuse(Reason.MALFORMED, f"{what} contains control characters")
    return text


def _scheme_of(key: _PublicKey) -> Scheme:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise refuse(Reason.MALFORMED, f"unsupported curve {key.curve.name}; use P-256")
        return "ecdsa-p256-sha256"
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise refuse(
                Reason.MALFORMED,
                f"RSA key of {key.key_size} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} allowed",
            )
        return "rsa-pss-sha256"
    raise refuse(Reason.MALFORMED, f"unsupported key type {type(key).__name__}")


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_PSS_SALT_SIZE)


@dataclass(frozen=True)
class VerifyingKey:
    """A public key that checks signatures of exactly one scheme."""

    spki: bytes = field(repr=False)
    scheme: Scheme
    key_id: bytes
    _key: _PublicKey = field(repr=False, compare=False)

    @classmethod
    def from_spki(cls, spki: bytes) -> VerifyingKey:
        """Parse DER SPKI; refuse unsupported keys and non-canonical encodings."""
        spki = bytes(spki)
        try:
            key = serialization.load_der_public_key(spki)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise refuse(Reason.MALFORMED, f"not a usable public key: {exc}") from None
        if not isinstance(key, _PublicKey):
            raise refuse(Reason.MALFORMED, f"unsupported key type {type(key).__name__}")
        scheme = _scheme_of(key)
        canonical = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if canonical != spki:
            # Two encodings of one key would have two key ids.
            raise refuse(Reason.MALFORMED, "public key is not in canonical DER form")
        return cls(spki, scheme, key_id_of(spki), key)

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyingKey:
        """Parse one ``PUBLIC KEY`` PEM block (SPKI)."""
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise refuse(Reason.MALFORMED, f"not a PEM public key: {exc}") from None
        return cls.from_spki(
            key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def to_pem(self) -> bytes:
        """SPKI as a ``PUBLIC KEY`` PEM block."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is this key's signature of ``message``, else raise "invalid"."""
        key = self._key
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                self._check_size(signature, _FIXED_SIGNATURE_SIZE)
                key.verify(signature, message)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                self._check_size(signature, _FIXED_SIGNATURE_SIZE)
                r = int.from_bytes(signature[:_P256_SCALAR_SIZE], "big")
                s = int.from_bytes(signature[_P256_SCALAR_SIZE:], "big")
                key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
            else:
                self._check_size(signature, (key.key_size + 7) // 8)
                key.verify(signature, message, _pss(), hashes.SHA256())
        except InvalidSignature:
            raise refuse(
                Reason.INVALID, f"bad {self.scheme} signature by key {self.key_id.hex()}"
            ) from None

    def _check_size(self, signature: bytes, size: int) -> None:
        if len(signature) != size:
            raise refuse(
                Reason.INVALID,
                f"{self.scheme} signature is {len(signature)} bytes, expected {size}",
            )


@dataclass(frozen=True)
class SigningKey:
    """A private key and its public half."""

    _key: _PrivateKey = field(repr=False)
    public: VerifyingKey

    @property
    def scheme(self) -> Scheme:
        return self.public.scheme

    @property
    def key_id(self) -> bytes:
        return self.public.key_id

    @classmethod
    def _wrap(cls, key: _PrivateKey) -> SigningKey:
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(key, VerifyingKey.from_spki(spki))

    @classmethod
    def generate(
        cls, scheme: Scheme = DEFAULT_SCHEME, *, rsa_bits: int = DEFAULT_RSA_BITS
    ) -> SigningKey:
        """A fresh key for ``scheme`` (RSA of ``rsa_bits`` bits for rsa-pss-sha256)."""
        if scheme == "ed25519":
            return cls._wrap(ed25519.Ed25519PrivateKey.generate())
        if scheme == "ecdsa-p256-sha256":
            return cls._wrap(ec.generate_private_key(ec.SECP256R1()))
        if scheme == "rsa-pss-sha256":
            if not MIN_RSA_BITS <= rsa_bits <= MAX_RSA_BITS:
                raise ConfigError(f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
            return cls._wrap(rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits))
        raise ConfigError(f"unknown signature scheme {scheme!r}; choose one of {SCHEMES}")

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> SigningKey:
        """Load a PKCS#8 (or traditional) PEM private key; bad files raise ConfigError."""
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError as exc:  # encrypted without a passphrase, or the reverse
            raise ConfigError(f"private key: {exc}") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"not a usable private key (or wrong passphrase): {exc}") from None
        if not isinstance(key, _PrivateKey):
            raise ConfigError(f"unsupported private key type {type(key).__name__}")
        try:
            return cls._wrap(key)
        except SignatureError as exc:
            raise ConfigError(f"private key: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: bytes | None = None) -> SigningKey:
        """Read a private key file."""
        return cls.from_pem(_read_bounded(path), passphrase)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available algorithm when a passphrase is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def save(self, path: str | os.PathLike[str], passphrase: bytes | None = None) -> None:
        """Write the private key to a new file readable by its owner only (never overwrites)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"{os.fspath(path)} exists; refusing to overwrite a key") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.to_pem(passphrase))

    def sign(self, message: bytes) -> bytes:
        """This key's signature of ``message`` in its scheme's wire form."""
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(_P256_SCALAR_SIZE, "big") + s.to_bytes(_P256_SCALAR_SIZE, "big")
        return key.sign(message, _pss(), hashes.SHA256())


def _read_bounded(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_KEY_FILE_SIZE + 1)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise ConfigError(f"{os.fspath(path)}: larger than {MAX_KEY_FILE_SIZE} bytes")
    return data


_PEM_BLOCK = re.compile(
    rb"-----BEGIN PUBLIC KEY-----\r?\n.*?-----END PUBLIC KEY-----[ \t]*(?:\r?\n)?", re.DOTALL
)
_FIELD_LINE = re.compile(r"([A-Za-z][A-Za-z-]*):[ \t]*(.*)")


@dataclass(frozen=True)
class PublicKeyFile:
    """A publisher's public key file: optional ``Publisher``/``Not-After`` lines, then SPKI PEM.

    ``Key-Id`` may be present too; it is informational, but must match the key.
    """

    key: VerifyingKey
    publisher: str | None = None
    not_after: int | None = None

    def to_bytes(self) -> bytes:
        lines = []
        if self.publisher is not None:
            try:
                lines.append(f"Publisher: {check_text(self.publisher.encode(), 'publisher')}")
            except SignatureError as exc:
                raise ConfigError(str(exc)) from None
        if self.not_after is not None:
            lines.append(f"Not-After: {self.not_after}")
        lines.append(f"Key-Id: {self.key.key_id.hex()}")
        return "".join(line + "\n" for line in lines).encode() + self.key.to_pem()

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeyFile:
        """Parse a public key file; any defect raises ConfigError."""
        blocks = list(_PEM_BLOCK.finditer(data))
        if len(blocks) != 1:
            raise ConfigError("a public key file holds exactly one PUBLIC KEY PEM block")
        block = blocks[0]
        if data[block.end() :].strip():
            raise ConfigError("public key file: text after the PEM block")
        try:
            key = VerifyingKey.from_pem(block.group(0))
            header = data[: block.start()].decode("utf-8")
        except SignatureError as exc:
            raise ConfigError(f"public key file: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError("public key file: header is not UTF-8") from None
        fields: dict[str, str] = {}
        for line in header.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _FIELD_LINE.fullmatch(line.strip())
            if match is None or match.group(1) in fields:
                raise ConfigError(f"public key file: bad header line {line[:80]!r}")
            fields[match.group(1)] = match.group(2).strip()
        unknown = set(fields) - {"Publisher", "Not-After", "Key-Id"}
        if unknown:
            raise ConfigError(f"public key file: unknown fields {sorted(unknown)}")
        if "Key-Id" in fields and fields["Key-Id"].lower() != key.key_id.hex():
            raise ConfigError("public key file: Key-Id does not match the key")
        publisher = fields.get("Publisher")
        if publisher is not None:
            try:
                check_text(publisher.encode(), "publisher")
            except SignatureError as exc:
                raise ConfigError(f"public key file: {exc}") from None
        not_after = fields.get("Not-After")
        if not_after is not None and not (
            # A bounded length keeps a run of digits from int()'s plain ValueError.
            not_after.isascii() and not_after.isdigit() and len(not_after) <= 20
        ):
            raise ConfigError("public key file: Not-After must be a unix time in seconds")
        return cls(key, publisher, int(not_after) if not_after is not None else None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublicKeyFile:
        try:
            return cls.from_bytes(_read_bounded(path))
        except ConfigError as exc:
            raise ConfigError(f"{os.fspath(path)}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(self.to_bytes())
