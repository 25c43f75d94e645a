"""``opendistro check-sums``: a distribution's signed checksum list, checked like a user would."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from opendistro.cli import main

pytestmark = pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign not installed")


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with two images, SHA256SUMS made by sha256sum, signed with real minisign."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "os-1.0.iso").write_bytes(b"iso" * 50_000)
    (folder / "os-1.0.img").write_bytes(b"img" * 40_000)
    listing = subprocess.run(
        ["sha256sum", "os-1.0.iso", "os-1.0.img"], cwd=folder, capture_output=True, check=True
    ).stdout
    (folder / "SHA256SUMS").write_bytes(listing)
    key = tmp_path / "minisign.pub"
    secret = tmp_path / "minisign.key"
    subprocess.run(
        ["minisign", "-G", "-W", "-p", str(key), "-s", str(secret)], check=True,
        capture_output=True,
    )
    subprocess.run(
        ["minisign", "-S", "-s", str(secret), "-m", str(folder / "SHA256SUMS")], check=True,
        capture_output=True,
    )
    return folder, key


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["check-sums", *map(str, args), "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_every_listed_file_is_checked_against_the_signed_list(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, key = published
    sums = folder / "SHA256SUMS"
    code, report = run(capsys, sums, "--signature", f"{sums}.minisig", "--key", key)
    assert code == 0
    assert sorted(report["checked"]) == ["os-1.0.img", "os-1.0.iso"]
    assert report["signed"] is True


def test_a_changed_file_or_a_changed_list_is_refused(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, key = published
    sums = folder / "SHA256SUMS"
    with (folder / "os-1.0.iso").open("r+b") as handle:
        handle.write(b"X")
    code, report = run(capsys, sums, folder / "os-1.0.iso", "--signature", f"{sums}.minisig",
                       "--key", key)
    assert code == 1 and report["type"] == "IntegrityError"
    sums.write_bytes(sums.read_bytes().replace(b"os-1.0.img", b"os-1.0.imx"))
    code, report = run(capsys, sums, "--signature", f"{sums}.minisig", "--key", key)
    assert code == 1 and report["type"] == "SignatureError"


def test_an_unsigned_list_needs_to_be_asked_for(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = published
    code, report = run(capsys, folder / "SHA256SUMS")
    assert code == 2 and "--unsigned" in report["error"]
    code, report = run(capsys, folder / "SHA256SUMS", "--unsigned")
    assert code == 0 and report["signed"] is False
