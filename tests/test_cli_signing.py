"""``opendistro keygen/sign/verify/trust/revocation`` as a publisher and a user run them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opendistro.cli import main
from opendistro.metainfo import Metainfo
from opendistro.signing import PublicKeyFile

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""

    def invoke(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def last_json(output: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


@pytest.fixture
def torrent(tmp_path: Path, make_release: Callable[..., Path], run: Run) -> Path:
    output = tmp_path / "example-os.torrent"
    code, _, err = run("create", make_release("example-os", (60_000, 30_000)), "-o", output)
    assert code == 0, err
    return output


@pytest.fixture
def publisher_key(tmp_path: Path, run: Run) -> Path:
    key = tmp_path / "publisher.key"
    code, _, err = run("keygen", "--out", key, "--name", "Example Project")
    assert code == 0, err
    return key


def pub(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


@pytest.mark.parametrize(
    ("option", "scheme"),
    [("ed25519", "ed25519"), ("ecdsa-p256", "ecdsa-p256-sha256"), ("rsa-pss", "rsa-pss-sha256")],
)
def test_keygen_writes_both_key_files(tmp_path: Path, run: Run, option: str, scheme: str) -> None:
    key = tmp_path / "k.key"
    code, out, _ = run("keygen", "--out", key, "--scheme", option, "--name", "Ex", "--json")
    assert code == 0
    summary = last_json(out)
    assert summary["ok"] is True and summary["scheme"] == scheme
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    public = PublicKeyFile.load(pub(key))
    assert (public.publisher, public.key.scheme) == ("Ex", scheme)
    assert public.key.key_id.hex() == summary["key_id"]
    code, _, err = run("keygen", "--out", key)
    assert code == 2 and "refusing to overwrite" in err


def test_sign_embeds_and_verify_reports_who_signed_what(
    torrent: Path, publisher_key: Path, run: Run
) -> None:
    before = Metainfo.from_file(torrent)
    code, out, err = run("sign", torrent, "--key", publisher_key, "--version", "1.0", "--json")
    assert code == 0, err
    assert last_json(out)["output"] == str(torrent)
    after = Metainfo.from_file(torrent)
    assert after.info_bytes == before.info_bytes
    assert (after.info_hash_v1, after.info_hash_v2) == (before.info_hash_v1, before.info_hash_v2)
    assert len(after.signatures) == 1

    code, out, err = run("verify", torrent, "--trust", pub(publisher_key))
    assert code == 0, err
    assert out.startswith("verified: example-os 1.0")
    assert "'Example Project'" in out
    code, out, _ = run("verify", torrent, "--trust", pub(publisher_key), "--json")
    result = last_json(out)
    assert result["ok"] is True
    assert (result["publisher"], result["name"], result["version"]) == (
        "Example Project", "example-os", "1.0",
    )
    assert before.info_hash_v2 is not None
    assert result["info_hash_v2"] == before.info_hash_v2.hex()


def test_detached_signature(torrent: Path, publisher_key: Path, run: Run) -> None:
    original = torrent.read_bytes()
    code, _, err = run("sign", torrent, "--key", publisher_key, "--version", "2", "--detached")
    assert code == 0, err
    assert torrent.read_bytes() == original
    signature = torrent.with_name(torrent.name + ".sig")
    assert signature.is_file()
    code, out, err = run("verify", torrent, "--trust", pub(publisher_key), "--json")
    assert code == 1
    assert last_json(out)["error"].startswith("missing:")
    assert "signature refused: missing" in err
    code, out, _ = run("verify", torrent, "--trust", pub(publisher_key), "--signature", signature)
    assert code == 0 and "example-os 2" in out


def test_untrusted_key_and_other_torrent(
    tmp_path: Path, torrent: Path, publisher_key: Path, run: Run,
    make_release: Callable[..., Path],
) -> None:
    run("sign", torrent, "--key", publisher_key, "--version", "1.0")
    stranger = tmp_path / "stranger.key"
    run("keygen", "--out", stranger)
    code, out, err = run("verify", torrent, "--trust", pub(stranger), "--json")
    assert code == 1
    assert last_json(out) == {
        "ok": False, "error": last_json(out)["error"], "type": "SignatureError",
    }
    assert last_json(out)["error"].startswith("untrusted key:")
    assert "opendistro verify: error: signature refused: untrusted key" in err

    # Another torrent's detached signature does not hide the embedded good one.
    other = tmp_path / "other.torrent"
    run("create", make_release("other", (10_000,), seed=3), "-o", other)
    run("sign", other, "--key", publisher_key, "--version", "1.0", "--detached")
    code, _, err = run(
        "verify", torrent, "--trust", pub(publisher_key),
        "--signature", other.with_name(other.name + ".sig"),
    )
    assert code == 0, err


def test_signature_for_another_torrent_is_an_info_hash_mismatch(
    tmp_path: Path, torrent: Path, publisher_key: Path, run: Run,
    make_release: Callable[..., Path],
) -> None:
    other = tmp_path / "other.torrent"
    run("create", make_release("other", (10_000,), seed=3), "-o", other)
    run("sign", other, "--key", publisher_key, "--version", "1.0", "--detached")
    code, out, _ = run(
        "verify", torrent, "--trust", pub(publisher_key),
        "--signature", other.with_name(other.name + ".sig"), "--json",
    )
    assert code == 1
    assert last_json(out)["error"].startswith("info-hash mismatch:")


def test_tampered_signed_torrent_is_refused(torrent: Path, publisher_key: Path, run: Run) -> None:
    run("sign", torrent, "--key", publisher_key, "--version", "1.0")
    data = torrent.read_bytes()
    at = data.index(b"7:version3:1.0") + len(b"7:version3:1.")
    torrent.write_bytes(data[:at] + b"9" + data[at + 1 :])
    code, out, _ = run("verify", torrent, "--trust", pub(publisher_key), "--json")
    assert code == 1
    assert last_json(out)["error"].startswith("invalid:")


def test_expired_key(tmp_path: Path, torrent: Path, run: Run) -> None:
    key = tmp_path / "old.key"
    run("keygen", "--out", key, "--not-after", "2001-01-01")
    assert PublicKeyFile.load(pub(key)).not_after == 978_307_200
    run("sign", torrent, "--key", key, "--version", "1.0", "--created", "2000-06-01")
    code, _, err = run("verify", torrent, "--trust", pub(key))
    assert code == 1 and "signature refused: expired" in err


def test_passphrase_protected_key(tmp_path: Path, torrent: Path, run: Run) -> None:
    secret = tmp_path / "secret"
    secret.write_text("correct horse\n")
    key = tmp_path / "locked.key"
    assert run("keygen", "--out", key, "--passphrase-file", secret)[0] == 0
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    code, _, err = run("sign", torrent, "--key", key, "--version", "1")
    assert code == 2 and "bad setting" in err
    code, _, err = run("sign", torrent, "--key", key, "--version", "1", "--passphrase-file", secret)
    assert code == 0, err


def test_trust_store_rollback_rotation_and_revocation(
    tmp_path: Path, torrent: Path, publisher_key: Path, run: Run,
    make_release: Callable[..., Path],
) -> None:
    store = tmp_path / "trust.db"
    code, out, err = run("trust", "add", "--store", store, pub(publisher_key), "--json")
    assert code == 0, err
    assert last_json(out)["publisher"] == "Example Project"

    newer = tmp_path / "newer.torrent"
    run("create", make_release("example-os", (60_000, 31_000), seed=8), "-o", newer)
    run("sign", newer, "--key", publisher_key, "--version", "1.1", "--created", "2026-01-02")
    run("sign", torrent, "--key", publisher_key, "--version", "1.0", "--created", "2026-01-01")
    code, out, err = run("verify", newer, "--trust", store)
    assert code == 0, err
    code, out, _ = run("verify", torrent, "--trust", store, "--json")
    assert code == 1
    assert last_json(out)["error"].startswith("rolled back:")

    # Rotation: the new key is trusted for the same publisher once the store sees it.
    new_key = tmp_path / "new.key"
    code, out, err = run(
        "keygen", "--out", new_key, "--scheme", "ecdsa-p256", "--rotate-from", publisher_key,
        "--json",
    )
    assert code == 0, err
    rotation = Path(last_json(out)["rotation"])
    newest = tmp_path / "newest.torrent"
    run("create", make_release("example-os", (60_000, 32_000), seed=9), "-o", newest)
    run("sign", newest, "--key", new_key, "--version", "1.2", "--created", "2026-01-03")
    code, _, err = run("verify", newest, "--trust", store)
    assert code == 1 and "untrusted key" in err
    assert run("trust", "rotate", "--store", store, rotation)[0] == 0
    code, out, err = run("verify", newest, "--trust", store, "--json")
    assert code == 0, err
    assert (last_json(out)["publisher"], last_json(out)["version"]) == ("Example Project", "1.2")

    # Revocation by certificate: the old key is refused from then on.
    certificate = tmp_path / "old.revocation"
    code, _, err = run(
        "revocation", "--key", publisher_key, "--out", certificate, "--reason", "retired"
    )
    assert code == 0, err
    assert run("trust", "revoke", "--store", store, "--certificate", certificate)[0] == 0
    code, _, err = run("verify", newer, "--trust", store)
    assert code == 1 and "revoked" in err and "retired" in err

    code, out, _ = run("trust", "list", "--store", store, "--json")
    keys = last_json(out)["keys"]
    assert [(k["publisher"], k["revoked_at"] is not None) for k in keys] == [
        ("Example Project", True), ("Example Project", False),
    ]
    assert keys[1]["predecessor"] == keys[0]["key_id"]

    # Local revocation by key id needs no certificate.
    new_id = keys[1]["key_id"]
    code, out, _ = run("trust", "revoke", "--store", store, new_id)
    assert code == 0 and "REVOKED" in out
    code, _, err = run("verify", newest, "--trust", store)
    assert code == 1 and "revoked" in err


def test_keygen_refuses_a_control_character_in_the_name_before_writing(
    tmp_path: Path, run: Run
) -> None:
    key = tmp_path / "k.key"
    code, _, err = run("keygen", "--out", key, "--name", "Evil\x1b[2J")
    assert code == 2 and "control characters" in err
    assert not key.exists() and not pub(key).exists()


def test_trust_and_verify_errors(tmp_path: Path, torrent: Path, run: Run) -> None:
    code, _, err = run("verify", torrent, "--trust", tmp_path / "missing.db")
    assert code == 2 and "no trust store" in err
    code, _, err = run("trust", "list", "--store", tmp_path / "missing.db")
    assert code == 2
    assert not (tmp_path / "missing.db").exists()
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    code, _, err = run("verify", torrent, "--trust", junk)
    assert code == 2 and "PUBLIC KEY" in err
