"""Credit identities: created once with mode 0600, loaded afterwards, corrupt files refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from opendistro.credit.identity import (
    IDENTITY_FILE_NAME,
    CreditIdentity,
    is_valid_signature,
)
from opendistro.errors import CreditError

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def test_first_use_creates_the_identity_and_later_uses_load_it(tmp_path: Path) -> None:
    state = tmp_path / "state" / "nested"
    first = CreditIdentity.load_or_create(state)
    second = CreditIdentity.load_or_create(state)
    assert first.public_key == second.public_key
    assert len(first.public_key) == 32
    assert is_valid_signature(first.public_key, second.sign(b"hello"), b"hello")
    assert [p.name for p in state.iterdir()] == [IDENTITY_FILE_NAME]  # no temporary left


@posix_only
def test_identity_file_is_private(tmp_path: Path) -> None:
    CreditIdentity.load_or_create(tmp_path / "state")
    mode = stat.S_IMODE((tmp_path / "state" / IDENTITY_FILE_NAME).stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) & 0o077 == 0


@posix_only
def test_an_identity_others_can_read_is_refused(tmp_path: Path) -> None:
    CreditIdentity.load_or_create(tmp_path)
    (tmp_path / IDENTITY_FILE_NAME).chmod(0o644)
    with pytest.raises(CreditError, match="chmod 600"):
        CreditIdentity.load_or_create(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
     bytes(10_000)],
    ids=["empty", "text", "bad base64 body", "too large"],
)
def test_corrupt_identity_files_raise_credit_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / IDENTITY_FILE_NAME
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CreditError, match=r"corrupt|larger"):
        CreditIdentity.load_or_create(tmp_path)
    assert path.read_bytes() == content  # never silently replaced: that would lose the credit


def test_a_non_ed25519_key_is_not_an_identity(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / IDENTITY_FILE_NAME
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)
    with pytest.raises(CreditError, match="Ed25519"):
        CreditIdentity.load(path)


def test_save_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    CreditIdentity.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(CreditError, match="exists"):
        CreditIdentity.generate().save(path)
    assert path.read_bytes() == before


def test_seeded_identities_are_deterministic() -> None:
    # RFC 8032 test 1: this secret key has this public key.
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    identity = CreditIdentity.from_seed(seed)
    assert identity.public_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    with pytest.raises(CreditError):
        CreditIdentity.from_seed(b"short")


def test_signature_check_refuses_bad_keys_and_sizes() -> None:
    identity = CreditIdentity.from_seed(bytes(32))
    signature = identity.sign(b"m")
    assert is_valid_signature(identity.public_key, signature, b"m")
    assert not is_valid_signature(identity.public_key, signature, b"n")
    assert not is_valid_signature(identity.public_key[:31], signature, b"m")
    assert not is_valid_signature(identity.public_key, signature[:63], b"m")
    assert not is_valid_signature(b"\xff" * 32, signature, b"m")


def test_an_oversized_identity_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILE_NAME
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 100_000)
    path.chmod(0o600)
    with pytest.raises(CreditError, match=r"larger than \d+ bytes, not an identity"):
        CreditIdentity.load(path)


def test_unwritable_places_raise_credit_error(tmp_path: Path) -> None:
    with pytest.raises(CreditError, match="cannot write credit identity"):
        CreditIdentity.generate().save(tmp_path / "no such folder" / "id.pem")
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    with pytest.raises(CreditError, match="cannot create state directory"):
        CreditIdentity.load_or_create(a_file / "state")


@posix_only
def test_a_dangling_link_in_place_of_the_identity_is_not_followed(tmp_path: Path) -> None:
    """Not an identity, and not a place to write one: refused, the link left alone."""
    path = tmp_path / IDENTITY_FILE_NAME
    path.symlink_to(tmp_path / "elsewhere.pem")
    with pytest.raises(CreditError, match="refusing to overwrite"):
        CreditIdentity.load_or_create(tmp_path)
    assert path.is_symlink() and not (tmp_path / "elsewhere.pem").exists()


def test_a_folder_is_not_an_identity_file(tmp_path: Path) -> None:
    with pytest.raises(CreditError, match="cannot read credit identity"):
        CreditIdentity.load(tmp_path)
