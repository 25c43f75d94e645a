"""``opendistro get --seed-ratio/--seed-time``: real processes seed on 127.0.0.1, then stop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.test_cli import LOOPBACK, background, free_port, last_json, opendistro, wait_listening


def test_get_seeds_on_until_the_ratio_target_then_exits(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    # publisher -> relay -> late, and the late downloader knows only the relay:
    # the relay's upload is what lets it reach ratio 1 and stop.
    release = make_release(sizes=(700_000,))
    torrent = tmp_path / "release.torrent"
    assert opendistro("create", str(release), "-o", str(torrent)).returncode == 0
    seed_port, relay_port = free_port(), free_port()
    with background("seed", str(torrent), "--data", str(release.parent), "--host", LOOPBACK,
                    "--port", str(seed_port), "--no-credit"):
        wait_listening(seed_port)
        relay = subprocess.Popen(
            [sys.executable, "-m", "opendistro.cli", "get", str(torrent),
             "-o", str(tmp_path / "relay"), "--host", LOOPBACK, "--port", str(relay_port),
             "--peer", f"{LOOPBACK}:{seed_port}", "--seed-ratio", "1", "--no-credit", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_listening(relay_port)
            late = opendistro("get", str(torrent), "-o", str(tmp_path / "late"), "--host",
                              LOOPBACK, "--peer", f"{LOOPBACK}:{relay_port}", "--no-credit",
                              "--json")
            relay_out, relay_err = relay.communicate(timeout=120)
        finally:
            relay.kill()
            relay.wait()
    assert late.returncode == 0, late.stderr
    assert (tmp_path / "late" / release.name).read_bytes() == release.read_bytes()
    assert relay.returncode == 0, relay_err
    report = last_json(relay_out)
    assert report["verified"] is True
    downloaded = report["bytes_from_peers"] + report["bytes_from_mirrors"]
    assert downloaded >= 700_000
    assert report["bytes_uploaded"] >= downloaded


def test_get_seeds_for_the_time_target_when_nobody_downloads(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(200_000,))
    torrent = tmp_path / "release.torrent"
    assert opendistro("create", str(release), "-o", str(torrent)).returncode == 0
    seed_port = free_port()
    with background("seed", str(torrent), "--data", str(release.parent), "--host", LOOPBACK,
                    "--port", str(seed_port), "--no-credit"):
        wait_listening(seed_port)
        # The ratio target is out of reach (nobody else downloads): the time target ends it.
        result = opendistro("get", str(torrent), "-o", str(tmp_path / "dl"), "--host", LOOPBACK,
                            "--peer", f"{LOOPBACK}:{seed_port}", "--seed-ratio", "5",
                            "--seed-time", "1.5", "--no-credit", "--json")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["verified"] is True and report["bytes_uploaded"] == 0
    assert report["seconds"] >= 1.5  # it stayed at least the seeding time after completing


def test_bad_seeding_targets_are_refused_before_any_download(tmp_path: Path) -> None:
    for flag, value in (("--seed-ratio", "-1"), ("--seed-time", "nan")):
        result = opendistro("get", str(tmp_path / "missing.torrent"), "-o", str(tmp_path / "out"),
                            flag, value)
        assert result.returncode == 2  # a bad setting, as for any other option
        # The targets are checked first: not "cannot read missing.torrent".
        assert "bad setting: --seed-ratio/--seed-time" in result.stderr
        assert not (tmp_path / "out").exists()
    help_text = opendistro("get", "--help").stdout
    assert "--seed-ratio R" in help_text and "--seed-time SECONDS" in help_text
