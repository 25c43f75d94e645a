"""``opendistro get --trust``: only a release signed by a trusted key is downloaded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opendistro.cli import main
from opendistro.metainfo import Metainfo

from .test_cli import LOOPBACK, background, free_port, last_json, wait_listening

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def key(tmp_path: Path, run: Run) -> Path:
    path = tmp_path / "keys" / "publisher.key"
    path.parent.mkdir()
    code, _, err = run("keygen", "--out", path, "--name", "Example Project")
    assert code == 0, err
    return path


def public(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def make_torrent(
    run: Run, make_release: Callable[..., Path], tmp_path: Path, name: str, seed: int
) -> tuple[Path, Path]:
    made = make_release(name, (200_000,), seed=seed)
    release = tmp_path / f"data-{seed}" / name  # its own folder: versions share one name
    release.parent.mkdir()
    made.rename(release)
    torrent = tmp_path / f"{name}-{seed}.torrent"
    code, _, err = run("create", release, "-o", torrent)
    assert code == 0, err
    return release, torrent


@pytest.fixture
def seeder() -> Iterator[Callable[[Path, Path], str]]:
    """Start seeders of (torrent, data) in the background; each returns its HOST:PORT."""
    stack: list[object] = []

    def start(torrent: Path, data: Path) -> str:
        port = free_port()
        manager = background(
            "seed", str(torrent), "--data", str(data.parent), "--host", LOOPBACK,
            "--port", str(port),
        )
        manager.__enter__()
        stack.append(manager)
        wait_listening(port)
        return f"{LOOPBACK}:{port}"

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)  # type: ignore[attr-defined]


def get(run: Run, source: str | Path, target: Path, peer: str, *extra: str | Path) -> tuple:
    return run("get", source, "-o", target, "--host", LOOPBACK, "--peer", peer, "--json", *extra)


def test_a_release_signed_by_a_trusted_key_is_downloaded(
    tmp_path: Path, make_release: Callable[..., Path], run: Run, key: Path, seeder: Callable
) -> None:
    release, torrent = make_torrent(run, make_release, tmp_path, "os", 1)
    assert run("sign", torrent, "--key", key, "--version", "1.0")[0] == 0
    peer = seeder(torrent, release)
    code, out, err = get(run, torrent, tmp_path / "dl", peer, "--trust", public(key))
    assert code == 0, err
    report = last_json(out)
    assert report["signed"]["version"] == "1.0"
    assert report["signed"]["publisher"] == "Example Project"
    assert Path(report["path"]).read_bytes() == release.read_bytes()


@pytest.mark.parametrize("problem", ["missing", "untrusted key", "info-hash mismatch", "invalid"])
def test_a_release_that_is_not_properly_signed_is_refused_before_any_download(
    tmp_path: Path,
    make_release: Callable[..., Path],
    run: Run,
    key: Path,
    seeder: Callable,
    problem: str,
) -> None:
    release, torrent = make_torrent(run, make_release, tmp_path, "os", 1)
    if problem == "untrusted key":
        stranger = tmp_path / "keys" / "stranger.key"
        assert run("keygen", "--out", stranger, "--name", "Mallory")[0] == 0
        assert run("sign", torrent, "--key", stranger, "--version", "1.0")[0] == 0
    elif problem == "info-hash mismatch":
        # A genuine signature, taken from another release and pasted into this torrent.
        _, other = make_torrent(run, make_release, tmp_path, "other", 2)
        assert run("sign", other, "--key", key, "--version", "1.0")[0] == 0
        raw = Metainfo.from_file(other).signatures[0]
        from opendistro.signing import embed_signature

        torrent.write_bytes(embed_signature(torrent.read_bytes(), raw))
    elif problem == "invalid":
        assert run("sign", torrent, "--key", key, "--version", "1.0")[0] == 0
        data = bytearray(torrent.read_bytes())
        marker = data.index(b"1.0")
        data[marker : marker + 3] = b"9.9"  # the version in the signed statement
        torrent.write_bytes(bytes(data))
    peer = seeder(torrent, release)
    target = tmp_path / "dl"
    code, out, err = get(run, torrent, target, peer, "--trust", public(key))
    assert code != 0
    assert last_json(out)["error"].startswith(problem), out
    assert "signature refused" in err
    assert not target.exists() or not any(target.iterdir())  # nothing fetched, nothing written


def test_a_replayed_older_release_is_refused(
    tmp_path: Path, make_release: Callable[..., Path], run: Run, key: Path, seeder: Callable
) -> None:
    store = tmp_path / "trust.sqlite"
    assert run("trust", "add", "--store", store, public(key))[0] == 0
    old_release, old = make_torrent(run, make_release, tmp_path, "os", 1)
    new_release, new = make_torrent(run, make_release, tmp_path, "os", 2)
    assert run("sign", old, "--key", key, "--version", "1.0", "--created", "2026-01-01")[0] == 0
    assert run("sign", new, "--key", key, "--version", "1.1", "--created", "2026-02-01")[0] == 0
    code, _, err = get(run, new, tmp_path / "new", seeder(new, new_release), "--trust", store)
    assert code == 0, err
    target = tmp_path / "old"
    code, out, _ = get(run, old, target, seeder(old, old_release), "--trust", store)
    assert code != 0
    assert last_json(out)["error"].startswith("rolled back")
    assert not target.exists() or not any(target.iterdir())


def test_a_magnet_link_needs_a_detached_signature(
    tmp_path: Path, make_release: Callable[..., Path], run: Run, key: Path, seeder: Callable
) -> None:
    release, torrent = make_torrent(run, make_release, tmp_path, "os", 1)
    assert run("sign", torrent, "--key", key, "--version", "1.0", "--detached")[0] == 0
    signature = torrent.with_name(torrent.name + ".sig")
    assert signature.is_file()
    magnet = Metainfo.from_file(torrent).magnet_link().to_uri()
    peer = seeder(torrent, release)
    code, out, _ = get(run, magnet, tmp_path / "bare", peer, "--trust", public(key))
    assert code != 0 and last_json(out)["error"].startswith("missing")
    code, out, err = get(
        run, magnet, tmp_path / "dl", peer, "--trust", public(key), "--signature", signature
    )
    assert code == 0, err
    assert Path(last_json(out)["path"]).read_bytes() == release.read_bytes()
