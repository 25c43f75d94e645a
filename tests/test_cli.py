"""The ``opendistro`` command as other tools use it: real processes, real sockets on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from opendistro.errors import TrackerError
from opendistro.metainfo import Metainfo
from opendistro.tracker.client import announce
from opendistro.tracker.protocol import AnnounceRequest

LOOPBACK = "127.0.0.1"


def opendistro(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opendistro.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_json(output: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@contextmanager
def background(*args: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "opendistro.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("flag,version", [("--v1", "v1"), ("--v2", "v2"), ("--hybrid", "hybrid")])
def test_create_then_info_reports_the_same_torrent(
    make_release: Callable[..., Path], tmp_path: Path, flag: str, version: str
) -> None:
    release = make_release(sizes=(50_000, 70_000))
    output = tmp_path / "out.torrent"
    created = opendistro(
        "create", str(release), "-o", str(output), flag, "--piece-length", "32768",
        "--tracker", "http://127.0.0.1:1/announce", "--tracker", "udp://127.0.0.1:2/announce",
        "--webseed", "http://127.0.0.1:3/files/", "--json",
    )
    assert created.returncode == 0, created.stderr
    described = opendistro("info", str(output), "--json")
    assert described.returncode == 0, described.stderr
    info = last_json(described.stdout)
    parsed = Metainfo.from_file(output)
    assert info["version"] == version
    assert info["info_hash_v1"] == (parsed.info_hash_v1.hex() if parsed.info_hash_v1 else None)
    assert info["info_hash_v2"] == (parsed.info_hash_v2.hex() if parsed.info_hash_v2 else None)
    assert info["piece_length"] == 32768
    assert info["total_length"] == 120_000
    assert info["trackers"] == [["http://127.0.0.1:1/announce"], ["udp://127.0.0.1:2/announce"]]
    assert info["webseeds"] == ["http://127.0.0.1:3/files/"]
    assert last_json(created.stdout)["magnet"] == info["magnet"]


def test_bad_input_prints_one_clear_line_and_fails(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.torrent"
    garbage.write_bytes(b"d4:infoi3ee")
    result = opendistro("info", str(garbage))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opendistro info: error:")
    missing = opendistro("get", str(tmp_path / "nope.torrent"), "--json")
    assert missing.returncode == 1
    assert last_json(missing.stdout)["ok"] is False
    bad_magnet = opendistro("get", "magnet:?xt=urn:btih:zz", "-o", str(tmp_path))
    assert bad_magnet.returncode == 1
    assert "magnet" in bad_magnet.stderr.lower()


def test_tracker_seed_and_get_work_together(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(900_000, 12_345))
    tracker_port = free_port()
    announce = f"http://{LOOPBACK}:{tracker_port}/announce"
    torrent = tmp_path / "release.torrent"
    created = opendistro("create", str(release), "-o", str(torrent), "--tracker", announce)
    assert created.returncode == 0, created.stderr
    seed_port = free_port()
    with (
        background("tracker", "--host", LOOPBACK, "--port", str(tracker_port),
                   "--db", str(tmp_path / "tracker.sqlite"), "--interval", "2"),
        background("seed", str(torrent), "--data", str(release), "--host", LOOPBACK,
                   "--port", str(seed_port)),
    ):
        wait_listening(tracker_port)
        wait_listening(seed_port)
        result = opendistro("get", str(torrent), "-o", str(tmp_path / "dl"), "--host", LOOPBACK,
                            "--json")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["ok"] is True and report["verified"] is True
    assert report["bytes_from_peers"] >= 912_345
    assert report["bytes_from_mirrors"] == 0 and report["bytes_reused"] == 0
    assert report["seconds"] > 0
    final = Path(report["path"])
    assert final == tmp_path / "dl" / release.name
    for original in release.rglob("*.bin"):
        assert (final / original.relative_to(release)).read_bytes() == original.read_bytes()


def test_get_a_magnet_from_a_peer_given_on_the_command_line(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(333_333,))
    torrent = tmp_path / "single.torrent"
    created = opendistro("create", str(release), "-o", str(torrent), "--json")
    magnet = last_json(created.stdout)["magnet"]
    seed_port = free_port()
    with background("seed", str(torrent), "--data", str(release.parent), "--host", LOOPBACK,
                    "--port", str(seed_port)):
        wait_listening(seed_port)
        result = opendistro("get", magnet, "-o", str(tmp_path / "m"), "--host", LOOPBACK,
                            "--peer", f"{LOOPBACK}:{seed_port}", "--json")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m" / release.name).read_bytes() == release.read_bytes()


def test_seeding_data_that_does_not_match_fails_clearly(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(100_000,))
    torrent = tmp_path / "t.torrent"
    assert opendistro("create", str(release), "-o", str(torrent)).returncode == 0
    release.write_bytes(bytes(100_000))
    result = opendistro("seed", str(torrent), "--data", str(release), "--host", LOOPBACK)
    assert result.returncode == 1
    assert "does not match" in result.stderr


def test_demo_runs_a_verified_swarm() -> None:
    # A slow seeder keeps the late leecher (capped at twice the seeder's rate) from
    # having it all before the swarm is shut down at 30%.
    result = opendistro(
        "demo", "--size-mib", "4", "--leechers", "3", "--seed-rate-mib", "2", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["verified"] is True
    assert len(report["results"]) == 3
    assert all(r["identical"] and r["ok"] for r in report["results"])
    assert all(r["bytes_from_mirror"] >= 0 for r in report["results"])
    assert report["seeder_uploaded"] >= 4 << 20
    # Between the acts: each client's credit ledger, and the tracker's view once the
    # clients posted their receipts.
    ledgers = {ledger["client"]: ledger for ledger in report["credit"]}
    assert set(ledgers) == {"seeder", "leecher 0", "leecher 1", "leecher 2"}
    seeder_peers = ledgers["seeder"]["peers"]
    assert sum(peer["sent"] for peer in seeder_peers) >= 4 << 20
    assert all(0 <= peer["held"] <= peer["sent"] and peer["received"] == 0
               for peer in seeder_peers)
    health = report["tracker_health"]
    assert (health["seeders"], health["leechers"], health["completed"]) == (4, 0, 3)
    assert health["distributed_copies_estimate"] >= 4
    scores = {entry["client"]: entry["score"] for entry in health["contribution_ranking"]}
    assert set(scores) == set(ledgers) and scores["seeder"] > 0
    # Act 2: the swarm went away under the late leecher and the mirror finished the job.
    fallback = report["fallback"]
    assert fallback["ok"] and fallback["identical"], fallback
    assert fallback["fraction_at_cut"] >= 0.3
    assert fallback["bytes_from_mirror_after_swarm_left"] > 0, fallback
    assert fallback["mirror_bytes_served"] >= fallback["bytes_from_mirror_after_swarm_left"]
    assert fallback["bytes_from_peers"] + fallback["bytes_from_mirror"] >= 4 << 20
    # The take-over is timed from the cut, unless the mirror was already helping then.
    latency = fallback["first_mirror_byte_after_seconds"]
    assert (latency is not None and latency >= 0) or fallback["bytes_from_mirror_at_cut"] > 0


async def test_tracker_allow_list_refuses_unlisted_torrents(tmp_path: Path) -> None:
    listed, unlisted = bytes(range(20)), bytes(range(1, 21))
    allow_file = tmp_path / "allow.txt"
    allow_file.write_text(f"# release 1.0\n{listed.hex()}\n")
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/announce"
    with background("tracker", "--host", LOOPBACK, "--port", str(port),
                    "--allow-list", str(allow_file)):
        wait_listening(port)
        request = AnnounceRequest(info_hash=listed, peer_id=b"-OD0100-" + bytes(12), port=6881)
        response = await announce(url, request, timeout=10)
        assert response.interval > 0
        with pytest.raises(TrackerError):
            await announce(url, dataclasses.replace(request, info_hash=unlisted), timeout=10)


def test_a_malformed_allow_list_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "allow.txt"
    bad.write_text("not-a-hash\n")
    result = opendistro("tracker", "--host", LOOPBACK, "--port", str(free_port()),
                        "--allow-list", str(bad))
    assert result.returncode == 2
    assert "allow.txt:1" in result.stderr
