"""Checksum lists written by the real coreutils tools, parsed and checked by ours."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro.checksums import ChecksumList, verify_file, verify_tree
from opendistro.checksums.sums import MAX_CHECKSUM_FILE_SIZE, algorithm_from_filename
from opendistro.errors import IntegrityError, UnsafePathError

TOOLS = ("sha1sum", "sha256sum", "sha512sum", "md5sum")
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS), reason="coreutils checksum tools missing"
)

NAMES = [
    "plain.iso",
    "with space.img",
    "new\nline.txt",
    "back\\slash.bin",
    "cr\rinside",
    "p(a) = q",
    "*star",
    " leading space",
    "-dash",
    "sub/dir/deep.bin",
    "ünïcødé.tar",
]


def run_tool(tool: str, directory: Path, names: list[str], *options: str) -> bytes:
    return subprocess.run(
        [tool, *options, "--", *names], cwd=directory, check=True, capture_output=True
    ).stdout


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "release"
    for number, name in enumerate(NAMES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + number * 777))
    return root


def expected_digest(path: Path, algorithm: str) -> bytes:
    return hashlib.new(algorithm, path.read_bytes()).digest()


@pytest.mark.parametrize(
    ("tool", "options", "algorithm"),
    [
        ("sha256sum", (), "sha256"),
        ("sha256sum", ("--binary",), "sha256"),
        ("sha256sum", ("--tag",), "sha256"),
        ("sha512sum", (), "sha512"),
        ("sha512sum", ("--tag",), "sha512"),
        ("sha1sum", (), "sha1"),
    ],
)
def test_lists_written_by_coreutils_parse_to_the_true_digests(
    release: Path, tool: str, options: tuple[str, ...], algorithm: str
) -> None:
    checksums = ChecksumList.parse(run_tool(tool, release, NAMES, *options))
    assert sorted(checksums.names()) == sorted(NAMES)
    for name in NAMES:
        (entry,) = checksums.lookup(name)
        assert entry.algorithm == algorithm
        assert entry.digest == expected_digest(release / name, algorithm)
        assert entry.binary == ("--binary" in options)
    assert verify_tree(release, checksums) == checksums.names()


def test_verify_file_streams_a_file_larger_than_one_chunk(tmp_path: Path) -> None:
    big = tmp_path / "big.iso"
    with open(big, "wb") as handle:
        for _ in range(5):
            handle.write(os.urandom(1024 * 1024 + 17))
    checksums = ChecksumList.parse(run_tool("sha512sum", tmp_path, ["big.iso"]))
    (entry,) = verify_file(big, checksums)
    assert entry.digest == expected_digest(big, "sha512")
    with open(big, "r+b") as handle:
        handle.seek(3 * 1024 * 1024)
        original = handle.read(1)
        handle.seek(3 * 1024 * 1024)
        handle.write(bytes([original[0] ^ 1]))
    with pytest.raises(IntegrityError, match="mismatch"):
        verify_file(big, checksums)


def test_tampered_file_is_detected_by_file_and_by_tree(release: Path) -> None:
    checksums = ChecksumList.parse(run_tool("sha256sum", release, NAMES))
    victim = release / "with space.img"
    data = bytearray(victim.read_bytes())
    data[500] ^= 0x40
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        verify_file(victim, checksums)
    with pytest.raises(IntegrityError, match=r"with space\.img"):
        verify_tree(release, checksums)
    # The untouched files still pass when checked on their own.
    assert verify_tree(release, checksums, names=["plain.iso", "sub/dir/deep.bin"]) == (
        "plain.iso",
        "sub/dir/deep.bin",
    )


def test_missing_entry_and_missing_file(release: Path) -> None:
    checksums = ChecksumList.parse(run_tool("sha256sum", release, ["plain.iso"]))
    with pytest.raises(IntegrityError, match="not listed"):
        verify_file(release / "with space.img", checksums)
    with pytest.raises(IntegrityError, match="not listed"):
        verify_tree(release, checksums, names=["with space.img"])
    (release / "plain.iso").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_tree(release, checksums)
    assert "plain.iso" in checksums
    assert "other" not in checksums


def test_verify_file_under_another_name(release: Path, tmp_path: Path) -> None:
    checksums = ChecksumList.parse(run_tool("sha256sum", release, ["plain.iso"]))
    copy = tmp_path / "downloaded.part"
    shutil.copyfile(release / "plain.iso", copy)
    assert verify_file(copy, checksums, name="plain.iso")[0].name == "plain.iso"
    with pytest.raises(IntegrityError, match="not listed"):
        verify_file(copy, checksums)


def test_dot_slash_names_from_a_glob_are_found(release: Path) -> None:
    checksums = ChecksumList.parse(run_tool("sha256sum", release, ["./plain.iso"]))
    assert checksums.names() == ("./plain.iso",)
    assert verify_file(release / "plain.iso", checksums)[0].name == "./plain.iso"
    assert verify_tree(release, checksums) == ("./plain.iso",)


def test_comments_blank_lines_and_crlf_are_accepted(release: Path) -> None:
    listing = run_tool("sha256sum", release, ["plain.iso"])
    tagged = run_tool("sha512sum", release, ["plain.iso"], "--tag")
    data = b"# Fedora-style comment: 1234 bytes\n\n" + listing.replace(b"\n", b"\r\n") + tagged
    checksums = ChecksumList.parse(data)
    assert {entry.algorithm for entry in checksums.lookup("plain.iso")} == {"sha256", "sha512"}
    assert len(verify_file(release / "plain.iso", checksums)) == 2


DIGEST = "ab" * 32
MALFORMED = [
    pytest.param(f"{DIGEST} one-space-only", id="single-space"),
    pytest.param(f"{DIGEST}  ", id="empty-name"),
    pytest.param(f"{DIGEST[:-1]}  odd-length", id="odd-length-digest"),
    pytest.param(f"{'ab' * 21}  no-algorithm-has-this-length", id="unknown-length"),
    pytest.param(f"{'zz' * 32}  not-hex", id="not-hex"),
    pytest.param(f"\\{DIGEST}  bad\\escape", id="bad-escape"),
    pytest.param(f"\\{DIGEST}  trailing\\", id="dangling-backslash"),
    pytest.param(f"SHA256 (name) = {'ab' * 64}", id="tag-length-mismatch"),
    pytest.param(f"SHA256(name)= {DIGEST}", id="bsd-without-spaces"),
    pytest.param(f"WHIRLPOOL (name) = {DIGEST}", id="unknown-tag"),
    pytest.param(f"MD5 (name) = {'ab' * 16}", id="md5-tag"),
    pytest.param(f"{'ab' * 64}  longer-than-the-first-line", id="mixed-untagged-lengths"),
    pytest.param("just some text", id="prose"),
    pytest.param(f"{DIGEST}  nul\0byte", id="nul-in-name"),
]


@pytest.mark.parametrize("line", MALFORMED)
def test_malformed_lines_name_their_line_number(line: str) -> None:
    data = f"# header\n{DIGEST}  good\n{line}\n".encode()
    with pytest.raises(IntegrityError, match="line 3"):
        ChecksumList.parse(data)


def test_duplicate_names_must_agree() -> None:
    same = f"{DIGEST}  a\n{DIGEST} *a\n".encode()
    assert len(ChecksumList.parse(same).lookup("a")) == 1
    different = f"{DIGEST}  a\n{'cd' * 32}  a\n".encode()
    with pytest.raises(IntegrityError, match=r"line 2.*listed twice"):
        ChecksumList.parse(different)
    via_dot = f"{DIGEST}  a\n{'cd' * 32}  ./a\n".encode()
    with pytest.raises(IntegrityError, match="listed twice"):
        ChecksumList.parse(via_dot)


def test_algorithm_from_file_name_pins_every_line(tmp_path: Path, release: Path) -> None:
    assert algorithm_from_filename("SHA256SUMS") == "sha256"
    assert algorithm_from_filename("SHA512SUMS.txt") == "sha512"
    assert algorithm_from_filename("SHA256") == "sha256"
    assert algorithm_from_filename("SHA1SUMS") == "sha1"
    assert algorithm_from_filename("B2SUMS") == "blake2b"
    assert algorithm_from_filename("CHECKSUM") is None
    with pytest.raises(IntegrityError, match="MD5"):
        algorithm_from_filename("MD5SUMS")

    sha512_lines = run_tool("sha512sum", release, ["plain.iso"])
    misnamed = tmp_path / "SHA256SUMS"
    misnamed.write_bytes(sha512_lines)
    with pytest.raises(IntegrityError, match="line 1"):
        ChecksumList.load(misnamed)
    # The same bytes under an honest name load fine.
    honest = tmp_path / "SHA512SUMS"
    honest.write_bytes(sha512_lines)
    assert verify_file(release / "plain.iso", ChecksumList.load(honest))


def test_blake2b_lists_from_b2sum(release: Path) -> None:
    if shutil.which("b2sum") is None:
        pytest.skip("b2sum is not installed")
    tagged = ChecksumList.parse(run_tool("b2sum", release, NAMES, "--tag"))
    untagged = ChecksumList.parse(run_tool("b2sum", release, NAMES), algorithm="blake2b")
    for checksums in (tagged, untagged):
        (entry,) = checksums.lookup("plain.iso")
        assert entry.algorithm == "blake2b"
        assert verify_tree(release, checksums) == checksums.names()


def test_md5_lists_are_refused(release: Path) -> None:
    with pytest.raises(IntegrityError, match="MD5"):
        ChecksumList.parse(run_tool("md5sum", release, ["plain.iso"], "--tag"))


def test_oversized_list_is_refused_without_parsing(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="exceeds"):
        ChecksumList.parse(b"#" * (MAX_CHECKSUM_FILE_SIZE + 1))
    huge = tmp_path / "SHA256SUMS"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_CHECKSUM_FILE_SIZE + 1)
    with pytest.raises(IntegrityError, match="larger than"):
        ChecksumList.load(huge)


@pytest.mark.parametrize(
    "name",
    ["../outside.txt", "/etc/hostname", "sub/../../outside.txt", "./../outside.txt"],
)
def test_names_that_climb_out_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    digest = hashlib.sha256(b"secret").hexdigest()
    checksums = ChecksumList.parse(f"{digest}  {name}\n".encode())
    with pytest.raises(UnsafePathError):
        verify_tree(root, checksums)


def test_symlink_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    (root / "inner.txt").write_bytes(b"inner")
    (root / "escape.txt").symlink_to(outside)
    (root / "alias.txt").symlink_to("inner.txt")
    checksums = ChecksumList.parse(run_tool("sha256sum", root, ["escape.txt", "alias.txt"]))
    # A link that stays inside the tree is followed.
    assert verify_tree(root, checksums, names=["alias.txt"]) == ("alias.txt",)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        verify_tree(root, checksums)


def test_our_verdict_matches_sha256sum_check(release: Path) -> None:
    listing = run_tool("sha256sum", release, NAMES)
    assert verify_tree(release, ChecksumList.parse(listing))
    (release / "plain.iso").write_bytes(b"replaced")
    coreutils = subprocess.run(
        ["sha256sum", "--check", "--quiet", "-"], cwd=release, input=listing, capture_output=True
    )
    assert coreutils.returncode != 0
    with pytest.raises(IntegrityError):
        verify_tree(release, ChecksumList.parse(listing))


file_names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="/\0", max_codepoint=0x2FF
    ),
    min_size=1,
    max_size=40,
).filter(lambda name: name not in (".", "..") and len(name.encode()) < 200)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(file_names, min_size=1, max_size=4, unique=True), tag=st.booleans())
def test_any_name_coreutils_can_write_round_trips(names: list[str], tag: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for index, name in enumerate(names):
            (root / name).write_bytes(name.encode() * index)
        listing = run_tool("sha256sum", root, names, *(["--tag"] if tag else []))
        checksums = ChecksumList.parse(listing)
        assert sorted(checksums.names()) == sorted(names)
        for name in names:
            (entry,) = checksums.lookup(name)
            assert entry.digest == hashlib.sha256((root / name).read_bytes()).digest()
        assert verify_tree(root, checksums) == checksums.names()
