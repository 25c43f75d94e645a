"""minisign and signify signatures made by the real tools, checked by ours."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from opendistro.checksums import verify_checksum_file, verify_signed_file
from opendistro.checksums.minisign import (
    Ed25519Key,
    verify_minisign,
    verify_minisign_file,
    verify_signify,
    verify_signify_embedded,
    verify_signify_file,
)
from opendistro.errors import IntegrityError, SignatureError

needs_minisign = pytest.mark.skipif(
    shutil.which("minisign") is None, reason="minisign is not installed"
)
needs_signify = pytest.mark.skipif(
    shutil.which("signify-openbsd") is None, reason="signify-openbsd is not installed"
)


def run(*command: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(part) for part in command], check=True, capture_output=True, cwd=cwd)


def minisign_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    public, secret = directory / f"{name}.pub", directory / f"{name}.key"
    run("minisign", "-G", "-W", "-p", public, "-s", secret)
    return public, secret


def signify_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    public, secret = directory / f"{name}.pub", directory / f"{name}.sec"
    run("signify-openbsd", "-G", "-n", "-p", public, "-s", secret)
    return public, secret


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "release.iso"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    return path


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@needs_minisign
@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_minisign_genuine_accepted_tampering_rejected(
    tmp_path: Path, payload: Path, legacy: bool
) -> None:
    public, secret = minisign_keypair(tmp_path, "good")
    signature = tmp_path / "release.iso.minisig"
    flags = ["-l"] if legacy else []
    run("minisign", "-S", *flags, "-s", secret, "-m", payload, "-x", signature, "-t", "v1.0 ok")
    sig_bytes = signature.read_bytes()
    assert base64.b64decode(sig_bytes.split(b"\n")[1])[:2] == (b"Ed" if legacy else b"ED")
    key = Ed25519Key.load(public)

    assert verify_minisign_file(payload, sig_bytes, key) == "v1.0 ok"
    assert verify_minisign(payload.read_bytes(), sig_bytes, key) == "v1.0 ok"

    flip_byte(payload, 2 * 1024 * 1024)
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_minisign_file(payload, sig_bytes, key)


@needs_minisign
def test_minisign_tampered_trusted_comment_rejected(tmp_path: Path, payload: Path) -> None:
    public, secret = minisign_keypair(tmp_path, "good")
    signature = tmp_path / "sig.minisig"
    run("minisign", "-S", "-s", secret, "-m", payload, "-x", signature, "-t", "version 1.0")
    forged = signature.read_bytes().replace(b"version 1.0", b"version 9.9")
    with pytest.raises(SignatureError, match="invalid trusted-comment signature"):
        verify_minisign_file(payload, forged, Ed25519Key.load(public))
    # minisign itself agrees the forgery is bad.
    (tmp_path / "forged.minisig").write_bytes(forged)
    refused = subprocess.run(
        ["minisign", "-V", "-p", public, "-m", payload, "-x", tmp_path / "forged.minisig"],
        capture_output=True,
    )
    assert refused.returncode != 0


@needs_minisign
def test_minisign_wrong_key_rejected(tmp_path: Path, payload: Path) -> None:
    _, secret = minisign_keypair(tmp_path, "signer")
    other_public, _ = minisign_keypair(tmp_path, "other")
    signature = tmp_path / "sig.minisig"
    run("minisign", "-S", "-s", secret, "-m", payload, "-x", signature)
    other = Ed25519Key.load(other_public)
    with pytest.raises(SignatureError, match="key id mismatch"):
        verify_minisign_file(payload, signature.read_bytes(), other)
    # Another key dressed up with the signer's key id fails on the signature itself.
    signer_id = Ed25519Key.load(tmp_path / "signer.pub").key_id
    impostor = Ed25519Key(key_id=signer_id, public_key=other.public_key)
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_minisign_file(payload, signature.read_bytes(), impostor)


@needs_minisign
def test_minisign_key_as_file_or_bare_string(tmp_path: Path) -> None:
    public, _ = minisign_keypair(tmp_path, "k")
    lines = public.read_text().splitlines()
    from_file = Ed25519Key.load(public)
    from_string = Ed25519Key.parse(lines[1])
    assert from_file == from_string
    # minisign prints the key id as a hex number, without leading zeros.
    assert lines[0].split()[-1] == from_file.key_id_hex.lstrip("0")


BAD_KEYS = [
    b"",
    b"untrusted comment: x\n",
    b"untrusted comment: x\nnot base64!\n",
    b"RWQ" + b"A" * 10,
    base64.b64encode(b"XX" + bytes(40)),
    b"comment without prefix\n" + base64.b64encode(b"Ed" + bytes(40)),
]


@pytest.mark.parametrize("data", BAD_KEYS)
def test_malformed_keys_are_bad_format(data: bytes) -> None:
    with pytest.raises(SignatureError, match="bad format"):
        Ed25519Key.parse(data)


@needs_minisign
def test_malformed_minisign_signatures_are_bad_format(tmp_path: Path, payload: Path) -> None:
    public, secret = minisign_keypair(tmp_path, "k")
    signature = tmp_path / "s.minisig"
    run("minisign", "-S", "-s", secret, "-m", payload, "-x", signature)
    good = signature.read_bytes()
    key = Ed25519Key.load(public)
    lines = good.split(b"\n")
    broken = [
        b"",
        b"garbage",
        b"\n".join(lines[:2]),  # no trusted comment
        b"\n".join([lines[0], lines[1][:-8], lines[2], lines[3]]),  # short signature line
        b"\n".join([lines[0], lines[1], b"comment: no prefix", lines[3]]),
        b"\n".join([lines[0], lines[1], lines[2], lines[3][:40]]),  # short global signature
        b"\n".join([b"comment: missing", lines[1], lines[2], lines[3]]),
        good + b"extra line\n",
    ]
    for data in broken:
        with pytest.raises(SignatureError, match="bad format"):
            verify_minisign_file(payload, data, key)
    # Every truncation is refused as a SignatureError, never another exception.
    for cut in range(len(good) - 1):
        with pytest.raises(SignatureError):
            verify_minisign_file(payload, good[:cut], key)


@needs_signify
def test_signify_genuine_accepted_tampering_and_wrong_key_rejected(
    tmp_path: Path, payload: Path
) -> None:
    public, secret = signify_keypair(tmp_path, "release")
    other_public, _ = signify_keypair(tmp_path, "other")
    signature = tmp_path / "release.iso.sig"
    run("signify-openbsd", "-S", "-s", secret, "-m", payload, "-x", signature)
    key = Ed25519Key.load(public)
    verify_signify_file(payload, signature.read_bytes(), key)
    verify_signify(payload.read_bytes(), signature.read_bytes(), key)

    with pytest.raises(SignatureError, match="key id mismatch"):
        verify_signify_file(payload, signature.read_bytes(), Ed25519Key.load(other_public))
    flip_byte(payload, 17)
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_signify_file(payload, signature.read_bytes(), key)


@needs_signify
def test_signify_embedded_message(tmp_path: Path) -> None:
    public, secret = signify_keypair(tmp_path, "k")
    message = tmp_path / "SHA256"
    message.write_bytes(b"SHA256 (a) = " + b"ab" * 32 + b"\n")
    embedded = tmp_path / "SHA256.sig"
    run("signify-openbsd", "-S", "-e", "-s", secret, "-m", message, "-x", embedded)
    key = Ed25519Key.load(public)
    assert verify_signify_embedded(embedded.read_bytes(), key) == message.read_bytes()
    altered = embedded.read_bytes().replace(b"(a)", b"(b)")
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_signify_embedded(altered, key)
    # A detached check refuses a file that carries a message.
    with pytest.raises(SignatureError, match="bad format"):
        verify_signify(message.read_bytes(), embedded.read_bytes(), key)


@needs_minisign
@needs_signify
def test_minisign_key_reads_signify_signatures_and_vice_versa(tmp_path: Path) -> None:
    """The two tools share a key format, and each signature names its own kind."""
    sg_public, sg_secret = signify_keypair(tmp_path, "sg")
    ms_public, ms_secret = minisign_keypair(tmp_path, "ms")
    data = tmp_path / "data"
    data.write_bytes(b"same family")
    run("signify-openbsd", "-S", "-s", sg_secret, "-m", data, "-x", tmp_path / "data.sig")
    run("minisign", "-S", "-s", ms_secret, "-m", data, "-x", tmp_path / "data.minisig")
    with pytest.raises(SignatureError, match="bad format"):
        verify_minisign_file(data, (tmp_path / "data.sig").read_bytes(), Ed25519Key.load(sg_public))
    with pytest.raises(SignatureError, match="bad format"):
        verify_signify_file(
            data, (tmp_path / "data.minisig").read_bytes(), Ed25519Key.load(ms_public)
        )


def write_sums(directory: Path, payload: Path) -> Path:
    sums = directory / "SHA256SUMS"
    listing = subprocess.run(
        ["sha256sum", payload.name], cwd=payload.parent, check=True, capture_output=True
    ).stdout
    sums.write_bytes(listing)
    return sums


@needs_minisign
def test_facade_with_a_minisigned_checksum_list(tmp_path: Path, payload: Path) -> None:
    public, secret = minisign_keypair(tmp_path, "k")
    other_public, _ = minisign_keypair(tmp_path, "other")
    sums = write_sums(tmp_path, payload)
    signature = tmp_path / "SHA256SUMS.minisig"
    run("minisign", "-S", "-s", secret, "-m", sums, "-x", signature)

    checksums = verify_checksum_file(sums, signature, public)
    assert checksums.names() == ("release.iso",)
    assert verify_signed_file(payload, sums, signature, public)[0].algorithm == "sha256"
    with pytest.raises(SignatureError, match="key id mismatch"):
        verify_checksum_file(sums, signature, other_public)

    flip_byte(payload, 0)
    with pytest.raises(IntegrityError, match="mismatch"):
        verify_signed_file(payload, sums, signature, public)
    sums.write_bytes(sums.read_bytes().replace(b"release.iso", b"release.isx"))
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_checksum_file(sums, signature, public)


@needs_signify
def test_facade_with_openbsd_style_embedded_list(tmp_path: Path, payload: Path) -> None:
    public, secret = signify_keypair(tmp_path, "openbsd-75-base")
    listing = subprocess.run(
        ["sha256sum", "--tag", payload.name], cwd=payload.parent, check=True, capture_output=True
    ).stdout
    (tmp_path / "SHA256").write_bytes(listing)
    embedded = tmp_path / "SHA256.sig"
    run("signify-openbsd", "-S", "-e", "-s", secret, "-m", tmp_path / "SHA256", "-x", embedded)
    checksums = verify_checksum_file(embedded, None, public)
    assert checksums.names() == ("release.iso",)
    assert verify_signed_file(payload, embedded, None, public)
    detached = tmp_path / "SHA256.detached.sig"
    run("signify-openbsd", "-S", "-s", secret, "-m", tmp_path / "SHA256", "-x", detached)
    assert verify_checksum_file(tmp_path / "SHA256", detached, public).names() == ("release.iso",)
