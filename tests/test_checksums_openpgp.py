"""OpenPGP signatures and keys made by the real gpg, checked by our verifier."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opendistro.checksums import verify_checksum_file, verify_signed_file
from opendistro.checksums.openpgp import (
    Keyring,
    VerifiedSignature,
    verify_cleartext,
    verify_detached,
    verify_detached_file,
)
from opendistro.checksums.openpgp_packets import parse_packets
from opendistro.errors import IntegrityError, SignatureError

pytestmark = pytest.mark.skipif(
    shutil.which("gpg") is None or shutil.which("gpgconf") is None, reason="gpg is not installed"
)


@dataclass
class GnuPG:
    """A throwaway GnuPG home with helpers that run the real gpg in it."""

    home: Path

    def run(self, *args: str | Path, data: bytes | None = None) -> bytes:
        command = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        command += [str(arg) for arg in args]
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        return subprocess.run(command, input=data, env=env, check=True, capture_output=True).stdout

    def generate(
        self, uid: str, algorithm: str, usage: str = "sign", expire: str = "never", *time: str
    ) -> str:
        self.run(*time, "--quick-gen-key", uid, algorithm, usage, expire)
        return self.fingerprints(uid)[0]

    def fingerprints(self, uid: str) -> list[str]:
        listing = self.run("--list-keys", "--with-colons", uid).decode()
        return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]

    def export(self, who: str, armor: bool) -> bytes:
        return self.run("--export", *(["--armor"] if armor else []), who)

    def sign(self, who: str, path: Path, *options: str) -> bytes:
        return self.run("--local-user", who, "--detach-sign", "--output", "-", *options, path)


@dataclass
class Keys:
    gpg: GnuPG
    rsa: str
    ed: str
    other: str
    sub_primary: str
    sub_signing: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    gpg = GnuPG(home)
    try:
        rsa = gpg.generate("RSA Test <rsa@example.org>", "rsa3072")
        ed = gpg.generate("Ed Test <ed@example.org>", "ed25519")
        other = gpg.generate("Other <other@example.org>", "ed25519")
        sub_primary = gpg.generate("Sub Test <sub@example.org>", "ed25519", "cert")
        gpg.run("--quick-add-key", sub_primary, "ed25519", "sign", "never")
        sub_signing = gpg.fingerprints("sub@example.org")[1]
        yield Keys(gpg, rsa, ed, other, sub_primary, sub_signing)
    finally:
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(home)},
            check=False,
            capture_output=True,
        )


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "release.iso"
    path.write_bytes(os.urandom(2 * 1024 * 1024 + 123))
    return path


def keyring(keys: Keys, *who: str, armor: bool = True) -> Keyring:
    return Keyring.parse(b"".join(keys.gpg.export(person, armor) for person in who))


def flip(data: bytes, offset: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("which", ["rsa", "ed"])
@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("digest", ["SHA256", "SHA512"])
def test_genuine_detached_signatures_verify_and_tampering_does_not(
    keys: Keys, payload: Path, which: str, armor: bool, digest: str
) -> None:
    fingerprint = getattr(keys, which)
    options = ["--digest-algo", digest, *(["--armor"] if armor else [])]
    signature = keys.gpg.sign(fingerprint + "!", payload, *options)
    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----") == armor
    # The key file's format is independent of the signature's.
    ring = keyring(keys, fingerprint, armor=not armor)

    result = verify_detached_file(payload, signature, ring)
    assert result == verify_detached(payload.read_bytes(), signature, ring)
    assert result.fingerprint == fingerprint
    assert result.primary_fingerprint == fingerprint
    assert result.hash_algorithm == digest.lower()

    tampered = flip(payload.read_bytes(), 1024 * 1024)
    with pytest.raises(SignatureError, match="does not match"):
        verify_detached(tampered, signature, ring)


def test_wrong_key_is_refused(keys: Keys, payload: Path) -> None:
    signature = keys.gpg.sign(keys.ed, payload)
    with pytest.raises(SignatureError, match="no signature by a key in the key file"):
        verify_detached_file(payload, signature, keyring(keys, keys.other))


def test_text_mode_signature_covers_canonical_line_endings(keys: Keys, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    content = b"first line  \r\nsecond\tline\t\nthird\rline\n\nlast line without newline"
    text.write_bytes(content)
    textual = keys.gpg.sign(keys.ed, text, "--textmode")
    binary = keys.gpg.sign(keys.ed, text)
    ring = keyring(keys, keys.ed)

    assert verify_detached_file(text, textual, ring).fingerprint == keys.ed
    assert verify_detached_file(text, binary, ring).fingerprint == keys.ed
    # A text signature is about lines, not bytes: CRLF and LF versions both verify.
    as_crlf = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    as_lf = content.replace(b"\r\n", b"\n")
    assert verify_detached(as_crlf, textual, ring).fingerprint == keys.ed
    assert verify_detached(as_lf, textual, ring).fingerprint == keys.ed
    with pytest.raises(SignatureError, match="does not match"):
        verify_detached(as_crlf, binary, ring)
    with pytest.raises(SignatureError, match="does not match"):
        verify_detached(content.replace(b"second", b"Second"), textual, ring)


def test_text_mode_across_chunk_boundaries(keys: Keys, tmp_path: Path) -> None:
    """A CRLF split between two read chunks must still count as one line ending."""
    chunk = 1024 * 1024
    lines = (b"x" * 98 + b"\n") * ((chunk - 1) // 99)
    content = lines + b"y" * (chunk - 1 - len(lines)) + b"\r\n" + b"z" * 10 + b"\n"
    assert content[chunk - 1 : chunk + 1] == b"\r\n"
    text = tmp_path / "big.txt"
    text.write_bytes(content)
    signature = keys.gpg.sign(keys.rsa, text, "--textmode")
    assert verify_detached_file(text, signature, keyring(keys, keys.rsa)).fingerprint == keys.rsa


def test_sha1_signatures_are_refused(keys: Keys, payload: Path) -> None:
    signature = keys.gpg.sign(keys.rsa, payload, "--digest-algo", "SHA1")
    with pytest.raises(SignatureError, match="SHA-1"):
        verify_detached_file(payload, signature, keyring(keys, keys.rsa))


def test_armor_checksum_is_checked(keys: Keys, payload: Path) -> None:
    armored = keys.gpg.sign(keys.ed, payload, "--armor")
    ring = keyring(keys, keys.ed)
    lines = armored.decode().splitlines()
    (crc_index,) = [index for index, line in enumerate(lines) if line.startswith("=")]
    wrong_crc = "=AAAA" if lines[crc_index] != "=AAAA" else "=BBBB"
    corrupted = "\n".join([*lines[:crc_index], wrong_crc, *lines[crc_index + 1 :]]) + "\n"
    with pytest.raises(SignatureError, match="CRC-24"):
        verify_detached_file(payload, corrupted.encode(), ring)

    # Changing one base64 character in the body is caught by the same check.
    body_line = lines[2]
    swapped = body_line[:5] + ("B" if body_line[5] != "B" else "C") + body_line[6:]
    with pytest.raises(SignatureError, match="CRC-24"):
        verify_detached_file(payload, armored.replace(body_line.encode(), swapped.encode()), ring)

    # RFC 9580 made the checksum line optional; without it the signature still stands.
    without = "\n".join([*lines[:crc_index], *lines[crc_index + 1 :]]) + "\n"
    assert verify_detached_file(payload, without.encode(), ring).fingerprint == keys.ed


def test_truncated_and_mangled_signatures_raise_signature_error(keys: Keys, payload: Path) -> None:
    signature = keys.gpg.sign(keys.ed, payload)
    ring = keyring(keys, keys.ed)
    genuine = verify_detached_file(payload, signature, ring)
    for cut in range(len(signature)):
        with pytest.raises(SignatureError):
            verify_detached_file(payload, signature[:cut], ring)
    survived: list[int] = []
    for offset in range(len(signature)):
        try:
            result = verify_detached_file(payload, flip(signature, offset), ring)
        except SignatureError:
            continue
        # Only bytes outside what is signed (the unhashed issuer subpacket's
        # framing) may change without breaking the signature.
        assert result == genuine
        survived.append(offset)
    assert len(survived) < len(signature) // 4


def test_truncated_key_files_raise_signature_error(keys: Keys) -> None:
    export = keys.gpg.export(keys.sub_primary, armor=False)
    failures = 0
    for cut in range(len(export)):
        try:
            Keyring.parse(export[:cut])
        except SignatureError:
            failures += 1
    assert failures > len(export) // 2
    for bad in (b"", b"\x00garbage", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n"):
        with pytest.raises(SignatureError):
            Keyring.parse(bad)
    a_signature = keys.gpg.run("--armor", "--detach-sign", "--output", "-", data=b"x")
    with pytest.raises(SignatureError, match="expected PGP PUBLIC KEY BLOCK"):
        Keyring.parse(a_signature)


def test_signing_subkey_is_used_through_its_binding(keys: Keys, payload: Path) -> None:
    signature = keys.gpg.sign("sub@example.org", payload)
    ring = keyring(keys, keys.sub_primary)
    result = verify_detached_file(payload, signature, ring)
    assert result.fingerprint == keys.sub_signing
    assert result.primary_fingerprint == keys.sub_primary
    # The certify-only primary is not offered as a signing key.
    assert [key.fingerprint for key in ring.keys] == [keys.sub_signing]


def new_format_packet(tag: int, body: bytes) -> bytes:
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def test_subkey_grafted_onto_another_certificate_is_not_trusted(keys: Keys, payload: Path) -> None:
    """Someone who appends their own subkey to a published key gains nothing."""
    victim = parse_packets(keys.gpg.export(keys.other, armor=False), 1000)
    attacker = parse_packets(keys.gpg.export(keys.sub_primary, armor=False), 1000)
    subkey_at = next(index for index, packet in enumerate(attacker) if packet.tag == 14)
    grafted = b"".join(
        new_format_packet(packet.tag, packet.body) for packet in victim + attacker[subkey_at:]
    )
    ring = Keyring.parse(grafted)
    assert [key.fingerprint for key in ring.keys] == [keys.other]
    signature = keys.gpg.sign("sub@example.org", payload)
    with pytest.raises(SignatureError, match="no signature by a key"):
        verify_detached_file(payload, signature, ring)


def test_several_signers_each_key_file_decides(keys: Keys, payload: Path) -> None:
    both = keys.gpg.run(
        "--local-user", keys.rsa, "--local-user", keys.ed, "--detach-sign", "--output", "-", payload
    )
    assert verify_detached_file(payload, both, keyring(keys, keys.rsa)).fingerprint == keys.rsa
    assert verify_detached_file(payload, both, keyring(keys, keys.ed)).fingerprint == keys.ed
    assert verify_detached_file(payload, both, keyring(keys, keys.rsa, keys.ed))
    with pytest.raises(SignatureError, match="no signature by a key"):
        verify_detached_file(payload, both, keyring(keys, keys.other))


def test_signature_expiration_is_enforced(keys: Keys, payload: Path) -> None:
    signature = keys.gpg.sign(keys.ed, payload, "--default-sig-expire", "1d")
    ring = keyring(keys, keys.ed)
    created = verify_detached_file(payload, signature, ring).created
    assert verify_detached_file(payload, signature, ring, now=created + 3600)
    with pytest.raises(SignatureError, match="expired"):
        verify_detached_file(payload, signature, ring, now=created + 2 * 86400)


def test_key_expiry_and_creation_time_are_checked(keys: Keys, payload: Path) -> None:
    gpg = keys.gpg
    start = "--faked-system-time"
    fingerprint = gpg.generate(
        "Expiring <exp@example.org>", "ed25519", "sign", "1d", start, "20200101T000000!"
    )
    stale_copy = gpg.export(fingerprint, armor=True)
    # While valid, the owner extends the key; a signature is made on day two.
    gpg.run(start, "20200101T120000!", "--quick-set-expire", fingerprint, "3d")
    day_two = gpg.sign(fingerprint, payload, start, "20200102T120000!")
    fresh_copy = gpg.export(fingerprint, armor=True)

    # The key has long expired, but the signature was made while it was valid.
    assert verify_detached_file(payload, day_two, Keyring.parse(fresh_copy)).created
    # A copy of the key from before the extension says it had expired by then.
    with pytest.raises(SignatureError, match="had expired"):
        verify_detached_file(payload, day_two, Keyring.parse(stale_copy))

    before_key = gpg.sign(fingerprint, payload, start, "20191201T000000!", "--ignore-time-conflict")
    with pytest.raises(SignatureError, match="older than its key"):
        verify_detached_file(payload, before_key, Keyring.parse(fresh_copy))


def test_revoked_key_is_not_trusted(keys: Keys, payload: Path) -> None:
    gpg = keys.gpg
    fingerprint = gpg.generate("Revoked <revoked@example.org>", "ed25519")
    signature = gpg.sign(fingerprint, payload)
    assert verify_detached_file(payload, signature, Keyring.parse(gpg.export(fingerprint, True)))
    # gpg leaves a revocation certificate with its armor line disarmed by a colon.
    certificate = (gpg.home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_text()
    gpg.run("--import", data=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
    revoked = gpg.export(fingerprint, armor=True)
    with pytest.raises(SignatureError, match="no usable signing key"):
        Keyring.parse(revoked)
    ring = Keyring.parse(revoked + gpg.export(keys.ed, armor=True))
    with pytest.raises(SignatureError, match="no signature by a key"):
        verify_detached_file(payload, signature, ring)


def test_short_rsa_keys_are_not_trusted(keys: Keys) -> None:
    fingerprint = keys.gpg.generate("Short <short@example.org>", "rsa1024")
    with pytest.raises(SignatureError, match="no usable signing key"):
        Keyring.parse(keys.gpg.export(fingerprint, armor=False))


def make_sums(directory: Path, payload: Path) -> Path:
    listing = subprocess.run(
        ["sha256sum", payload.name], cwd=payload.parent, check=True, capture_output=True
    ).stdout
    sums = directory / "SHA256SUMS"
    sums.write_bytes(listing)
    return sums


def test_clearsigned_text_with_dash_escapes_and_trailing_spaces(keys: Keys, tmp_path: Path) -> None:
    document = tmp_path / "InRelease.src"
    document.write_bytes(
        b"Origin: Example  \n- a list item\n-----BEGIN PGP SIGNATURE-----\nFrom here\n\ttabbed\t\n"
    )
    options = ["--digest-algo", "SHA512", "--clearsign", "--output", "-"]
    signed = keys.gpg.run("--local-user", keys.rsa, *options, document)
    assert b"\n- - a list item\n" in signed  # gpg dash-escaped it
    ring = keyring(keys, keys.rsa)
    text, result = verify_cleartext(signed, ring)
    expected = b"Origin: Example\n- a list item\n-----BEGIN PGP SIGNATURE-----\nFrom here\n\ttabbed"
    assert text == expected
    assert result.fingerprint == keys.rsa
    assert result.hash_algorithm == "sha512"

    with pytest.raises(SignatureError, match="does not match"):
        verify_cleartext(signed.replace(b"From here", b"From there"), ring)
    with pytest.raises(SignatureError, match="Hash header"):
        verify_cleartext(signed.replace(b"Hash: SHA512", b"Hash: SHA256"), ring)
    with pytest.raises(SignatureError, match="dash-escaped"):
        verify_cleartext(signed.replace(b"- - a list item", b"-- a list item"), ring)
    with pytest.raises(SignatureError, match="no signature by a key"):
        verify_cleartext(signed, keyring(keys, keys.other))
    # Trailing whitespace is outside the signature, so adding some changes nothing.
    assert verify_cleartext(signed.replace(b"From here", b"From here \t"), ring)[0] == text


def test_facade_with_clearsigned_checksums(keys: Keys, tmp_path: Path, payload: Path) -> None:
    sums = make_sums(tmp_path, payload)
    clearsigned = tmp_path / "CHECKSUM"
    clearsigned.write_bytes(
        keys.gpg.run("--local-user", keys.ed, "--clearsign", "--output", "-", sums)
    )
    key_file = tmp_path / "key.asc"
    key_file.write_bytes(keys.gpg.export(keys.ed, armor=True))
    checksums = verify_checksum_file(clearsigned, None, key_file)
    assert checksums.names() == ("release.iso",)
    assert verify_signed_file(payload, clearsigned, None, key_file)

    payload.write_bytes(b"not the release")
    with pytest.raises(IntegrityError, match="mismatch"):
        verify_signed_file(payload, clearsigned, None, key_file)


@pytest.mark.parametrize(
    ("signature_name", "armor"), [("SHA256SUMS.gpg", False), ("SHA256SUMS.sign", True)]
)
def test_facade_with_detached_checksum_signatures(
    keys: Keys, tmp_path: Path, payload: Path, signature_name: str, armor: bool
) -> None:
    sums = make_sums(tmp_path, payload)
    signature = tmp_path / signature_name
    signature.write_bytes(keys.gpg.sign(keys.rsa, sums, *(["--armor"] if armor else [])))
    key_file = tmp_path / "archive-key.gpg"
    key_file.write_bytes(keys.gpg.export(keys.rsa, armor=False))
    wrong_key = tmp_path / "other.asc"
    wrong_key.write_bytes(keys.gpg.export(keys.other, armor=True))

    assert verify_checksum_file(sums, signature, key_file).names() == ("release.iso",)
    assert verify_signed_file(payload, sums, signature, key_file)[0].algorithm == "sha256"
    with pytest.raises(SignatureError, match="no signature by a key"):
        verify_checksum_file(sums, signature, wrong_key)
    sums.write_bytes(sums.read_bytes().replace(b"release.iso", b"release.img"))
    with pytest.raises(SignatureError, match="does not match"):
        verify_checksum_file(sums, signature, key_file)


def test_facade_refuses_mismatched_key_and_signature_formats(
    keys: Keys, tmp_path: Path, payload: Path
) -> None:
    sums = make_sums(tmp_path, payload)
    signature = tmp_path / "SHA256SUMS.gpg"
    signature.write_bytes(keys.gpg.sign(keys.ed, sums))
    minisign_style_key = tmp_path / "minisign.pub"
    minisign_style_key.write_text(
        "untrusted comment: minisign public key\n"
        "RWQcUejbqSbPgNTIBjhNkSQVeuwILo8BOZOe4VXuZqBw76ctKxfSm5dl\n"
    )
    with pytest.raises(SignatureError):
        verify_checksum_file(sums, signature, minisign_style_key)
    with pytest.raises(SignatureError, match="not signed"):
        verify_checksum_file(sums, None, minisign_style_key)


def test_verified_signature_is_plain_data(keys: Keys, payload: Path) -> None:
    result = verify_detached_file(
        payload, keys.gpg.sign(keys.rsa, payload), keyring(keys, keys.rsa)
    )
    assert isinstance(result, VerifiedSignature)
    assert result.created > 0
    assert len(result.fingerprint) == 40
