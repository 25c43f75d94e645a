"""Publisher keys: each scheme signs and verifies, key ids are stable, key files round-trip."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from opendistro.errors import ConfigError, SignatureError
from opendistro.signing import SCHEMES, PublicKeyFile, Scheme, SigningKey, VerifyingKey, key_id_of

MESSAGE = b"opendistro signed release v1\nd4:name3:abce"


@pytest.fixture(scope="module", params=SCHEMES)
def key(request: pytest.FixtureRequest) -> SigningKey:
    scheme: Scheme = request.param
    return SigningKey.generate(scheme, rsa_bits=2048)


def test_each_scheme_signs_and_verifies(key: SigningKey) -> None:
    signature = key.sign(MESSAGE)
    key.public.verify(signature, MESSAGE)
    expected_size = 256 if key.scheme == "rsa-pss-sha256" else 64
    assert len(signature) == expected_size


def test_a_changed_message_or_signature_is_invalid(key: SigningKey) -> None:
    signature = key.sign(MESSAGE)
    with pytest.raises(SignatureError, match=r"^invalid: bad"):
        key.public.verify(signature, MESSAGE + b"x")
    flipped = bytes([signature[0] ^ 0x80]) + signature[1:]
    with pytest.raises(SignatureError, match=r"^invalid"):
        key.public.verify(flipped, MESSAGE)
    with pytest.raises(SignatureError, match=r"^invalid: .* expected"):
        key.public.verify(signature + b"\0", MESSAGE)


def test_another_key_of_the_same_scheme_does_not_verify(key: SigningKey) -> None:
    other = SigningKey.generate(key.scheme, rsa_bits=2048)
    with pytest.raises(SignatureError, match=r"^invalid"):
        other.public.verify(key.sign(MESSAGE), MESSAGE)


def test_key_id_is_truncated_sha256_of_the_der_spki(key: SigningKey) -> None:
    spki = key.public.spki
    assert key.key_id == hashlib.sha256(spki).digest()[:16] == key_id_of(spki)
    assert VerifyingKey.from_spki(spki).key_id == key.key_id
    assert VerifyingKey.from_pem(key.public.to_pem()) == key.public


def test_private_key_round_trips_through_pkcs8_pem(key: SigningKey) -> None:
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = SigningKey.from_pem(pem)
    assert again.public == key.public
    key.public.verify(again.sign(MESSAGE), MESSAGE)


def test_passphrase_protected_key(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "publisher.key"
    key.save(path, b"correct horse")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path, b"correct horse").public == key.public
    with pytest.raises(ConfigError):
        SigningKey.load(path, b"wrong")
    with pytest.raises(ConfigError):
        SigningKey.load(path)


def test_saving_never_overwrites_a_key(tmp_path: Path) -> None:
    path = tmp_path / "publisher.key"
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        SigningKey.generate().save(path)
    assert path.read_bytes() == b"precious"


def test_public_key_file_round_trips_with_publisher_and_expiry(tmp_path: Path) -> None:
    key = SigningKey.generate("ecdsa-p256-sha256")
    path = tmp_path / "publisher.pub"
    PublicKeyFile(key.public, "Example Project", 1_900_000_000).save(path)
    text = path.read_text()
    assert "Publisher: Example Project\n" in text
    assert f"Key-Id: {key.key_id.hex()}\n" in text
    loaded = PublicKeyFile.load(path)
    assert loaded == PublicKeyFile(key.public, "Example Project", 1_900_000_000)
    # Standard tools read the same file as a plain SPKI PEM public key.
    plain = serialization.load_pem_public_key(path.read_bytes())
    assert isinstance(plain, ec.EllipticCurvePublicKey)


def test_plain_spki_pem_is_a_public_key_file() -> None:
    key = SigningKey.generate()
    loaded = PublicKeyFile.from_bytes(key.public.to_pem())
    assert loaded == PublicKeyFile(key.public, None, None)


@pytest.mark.parametrize(
    "header",
    [
        b"Publisher: a\nPublisher: b\n",
        b"Colour: blue\n",
        b"Not-After: tomorrow\n",
        b"Key-Id: 00112233445566778899aabbccddeeff\n",
        b"Publisher: evil\x1b[2J\n",
        b"this line is not a field\n",
    ],
)
def test_bad_public_key_file_headers_are_refused(header: bytes) -> None:
    pem = SigningKey.generate().public.to_pem()
    with pytest.raises(ConfigError):
        PublicKeyFile.from_bytes(header + pem)


def test_public_key_file_needs_exactly_one_pem_block() -> None:
    pem = SigningKey.generate().public.to_pem()
    with pytest.raises(ConfigError):
        PublicKeyFile.from_bytes(b"Publisher: x\n")
    with pytest.raises(ConfigError):
        PublicKeyFile.from_bytes(pem + pem)
    with pytest.raises(ConfigError):
        PublicKeyFile.from_bytes(pem + b"trailing text\n")


def test_weak_or_unsupported_keys_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_spki = weak.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SignatureError, match=r"^malformed: RSA key of 1024 bits"):
        VerifyingKey.from_spki(weak_spki)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SignatureError, match=r"^malformed: unsupported curve"):
        VerifyingKey.from_spki(p384)
    with pytest.raises(SignatureError, match=r"^malformed"):
        VerifyingKey.from_spki(b"\x30\x03\x02\x01\x00")
    with pytest.raises(ConfigError):
        SigningKey.generate("rsa-pss-sha256", rsa_bits=1024)


def test_only_the_canonical_spki_encoding_is_accepted() -> None:
    """A compressed P-256 point is the same key in other bytes: it would have another key id."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    uncompressed = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    # Same SPKI header as the uncompressed form, with the bit string shortened to 33+1 bytes.
    header = uncompressed[: -65 - 3]
    compressed = (
        bytes([0x30, len(header) - 2 + 3 + 33]) + header[2:] + bytes([0x03, 34, 0]) + point
    )
    loaded = serialization.load_der_public_key(compressed)
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    with pytest.raises(SignatureError, match="canonical"):
        VerifyingKey.from_spki(compressed)
    assert VerifyingKey.from_spki(uncompressed).spki == uncompressed


def test_private_key_file_of_another_kind_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-key"
    path.write_bytes(b"hello")
    with pytest.raises(ConfigError):
        SigningKey.load(path)
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="unsupported curve"):
        SigningKey.from_pem(p384)
