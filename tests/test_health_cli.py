"""Swarm health: ``Torrent.health()`` in a running client, and ``opendistro health``.

Real parts throughout: the bundled tracker (HTTP and UDP on 127.0.0.1), real
clients seeding and holding part of a release, and the command line run as a
subprocess that watches the swarm without downloading from it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.errors import ConfigError
from opendistro.io.client import Client
from opendistro.io.health import CompletionRates
from opendistro.io.torrent import Torrent
from opendistro.metainfo import Metainfo
from opendistro.storage.files import FileStorage
from opendistro.tracker.health_client import fetch_tracker_health
from opendistro.tracker.server import TrackerServer

LOOPBACK = "127.0.0.1"
PIECE = 16384
PIECES = 24
HELD = 9
"""Pieces the partial leecher holds (the first ones)."""
CLI = [sys.executable, "-m", "opendistro.cli"]


def make_torrent(make_release: Callable[..., Path], trackers: list[str]) -> tuple[Metainfo, Path]:
    release = make_release(sizes=(PIECES * PIECE - 1000,))
    return create_torrent(release, piece_length=PIECE, trackers=trackers), release


def stage_partial(metainfo: Metainfo, release: Path, download_dir: Path, pieces: int) -> None:
    """Leave an interrupted download of ``release`` in ``download_dir``: its first ``pieces``."""
    storage = FileStorage(
        download_dir=download_dir,
        name=metainfo.name,
        files=metainfo.files,
        piece_length=metainfo.piece_length,
        total_length=metainfo.total_length,
        is_multi_file=metainfo.is_multi_file,
        mode="download",
    )
    data = release.read_bytes()
    try:
        storage.preallocate()
        for index in range(pieces):
            storage.write_block(index, 0, data[index * PIECE : (index + 1) * PIECE])
        storage.flush()
    finally:
        storage.close()


async def partial_leecher(
    client: Client, metainfo: Metainfo, release: Path, folder: Path, **kwargs: Any
) -> Torrent:
    """A peer holding HELD pieces that stays that way: it never asks for more."""
    stage_partial(metainfo, release, folder, HELD)
    torrent = await client.add_torrent(metainfo, folder, observe=True, **kwargs)
    assert torrent.have is not None and torrent.have.count == HELD
    return torrent


async def run_cli(*args: str) -> tuple[int, str, str]:
    done = await trio.run_process(
        [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def last_json(text: str) -> dict[str, Any]:
    document = json.loads(text.strip().splitlines()[-1])
    assert isinstance(document, dict)
    return document


# -- completion rates ------------------------------------------------------------------


def test_completion_rates_follow_piece_counts_over_the_window() -> None:
    rates: CompletionRates[str] = CompletionRates(window=10.0)
    rates.sample(0.0, {"a": 0, "b": 5})
    assert rates.rate("a", 100.0) is None  # one sample: no rate yet
    rates.sample(2.0, {"a": 4, "b": 5})
    assert rates.rate("a", 100.0) == pytest.approx(200.0)  # 4 pieces of 100 B in 2 s
    assert rates.rate("b", 100.0) == 0.0
    for second in range(3, 31):
        rates.sample(float(second), {"a": 4 + (second - 2) * 2})  # "b" left
    assert rates.rate("b", 100.0) is None
    # Only the last ~10 s count: 2 pieces a second, whatever came before.
    assert rates.rate("a", 100.0) == pytest.approx(200.0)
    rates.sample(40.0, {"a": 100})  # a peer's count never counts down
    rates.sample(41.0, {"a": 3})
    assert rates.rate("a", 100.0) is not None and rates.rate("a", 100.0) >= 0.0
    with pytest.raises(ConfigError):
        CompletionRates(window=0.0)


# -- Torrent.health() in a running client ----------------------------------------------


async def test_a_running_torrent_reports_its_swarm(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = make_torrent(make_release, [])
    async with (
        Client(host=LOOPBACK, state_dir=tmp_path / "seeder-state") as seeder,
        Client(host=LOOPBACK, state_dir=tmp_path / "leecher-state") as leecher,
    ):
        assert leecher.credit is not None
        seeded = await seeder.seed(metainfo, release.parent)
        watched = await partial_leecher(
            leecher, metainfo, release, tmp_path / "partial", peers=[(LOOPBACK, seeder.port)]
        )
        with trio.fail_after(30):
            while not (
                seeded.peers
                and (health := seeded.health()).peers[0].identity is not None
                and health.peers[0].completion > 0
            ):
                await trio.sleep(0.05)
        # The seeder's view: itself and a leecher with the first HELD pieces.
        assert (health.seeders, health.leechers) == (1, 1)
        assert health.num_pieces == PIECES
        assert health.distributed_copies == pytest.approx(1 + HELD / PIECES)
        assert health.rarest_availability == 1 and health.rarest_pieces == PIECES - HELD
        assert health.seed_only_pieces == PIECES - HELD
        assert health.time_to_death == 0.0  # without us, pieces would be lost at once
        [peer] = health.peers
        assert peer.completion == pytest.approx(HELD / PIECES) and not peer.seed
        assert peer.identity == leecher.credit.public_key  # proved over od_credit
        assert peer.score == 0  # a newcomer to our ledger
        assert health.ranking == (peer.key,)
        # The observing leecher sees the seeder as a seed, and has taken nothing.
        theirs = watched.health()
        assert (theirs.seeders, theirs.leechers) == (1, 1)
        assert theirs.peers[0].seed
        assert watched.status().bytes_from_peers == 0
        assert seeded.status().bytes_uploaded == 0
        json.dumps(health.to_json())  # what an API or the CLI prints


async def test_health_needs_the_pieces_of_a_magnet(tmp_path: Path) -> None:
    async with Client(host=LOOPBACK) as client:
        magnet = "magnet:?xt=urn:btih:" + "ab" * 20
        torrent = await client.add_magnet(magnet, tmp_path / "dl")
        with pytest.raises(ConfigError, match="pieces"):
            torrent.health()


# -- opendistro health ---------------------------------------------------------------------


async def test_health_command_reports_trackers_and_the_swarm(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    tracker = TrackerServer(
        host=LOOPBACK, port=0, interval=60, credit_db_path=tmp_path / "tracker-credit.sqlite"
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        metainfo, release = make_torrent(make_release, [tracker.announce_url])
        info_hash = metainfo.wire_info_hash
        torrent_file = tmp_path / "release.torrent"
        torrent_file.write_bytes(metainfo.to_bytes())
        # The same torrent (same info-hash) known through the UDP tracker only.
        udp_file = tmp_path / "release-udp.torrent"
        udp_file.write_bytes(create_torrent(
            release, piece_length=PIECE, trackers=[tracker.udp_url]
        ).to_bytes())
        async with (
            Client(host=LOOPBACK, state_dir=tmp_path / "one") as one,
            Client(host=LOOPBACK, state_dir=tmp_path / "two") as two,
            Client(host=LOOPBACK, credit=False) as three,
        ):
            assert one.credit is not None and two.credit is not None
            seeders = [await one.seed(metainfo, release.parent),
                       await two.seed(metainfo, release.parent)]
            partial = await partial_leecher(three, metainfo, release, tmp_path / "partial")
            with trio.fail_after(30):
                while True:
                    [entry] = (await fetch_tracker_health(tracker.announce_url, info_hash))[
                        "torrents"
                    ]
                    if (entry["seeders"], entry["leechers"]) == (2, 1):
                        break
                    await trio.sleep(0.05)

            code, out, err = await run_cli(
                "health", str(torrent_file), "--json", "--seconds", "3", "--host", LOOPBACK
            )
            assert code == 0, err
            report = last_json(out)
            assert report["ok"] is True and report["info_hash"] == info_hash.hex()
            [told] = report["trackers"]
            assert told["url"] == tracker.announce_url and told["source"] == "health"
            assert (told["torrent"]["seeders"], told["torrent"]["leechers"]) == (2, 1)
            ranked = {entry["identity"] for entry in told["torrent"]["contribution_ranking"]}
            assert ranked == {one.credit.public_key.hex(), two.credit.public_key.hex()}
            swarm = report["swarm"]
            assert swarm["peers_seen"] == 3
            assert (swarm["seeders"], swarm["leechers"]) == (2, 1)  # the observer is no member
            assert swarm["distributed_copies"] == pytest.approx(2 + HELD / PIECES, abs=1e-3)
            assert swarm["distributed_copies"] >= 2
            assert swarm["rarest_availability"] == 2 and swarm["missing_pieces"] == 0
            assert swarm["seed_only_pieces"] == PIECES - HELD
            assert swarm["time_to_death_if_seeders_leave"] == 0.0
            completions = sorted(peer["completion"] for peer in swarm["peers"])
            assert completions == [round(HELD / PIECES, 4), 1.0, 1.0]
            assert len(swarm["contribution_ranking"]) == 3
            # The observer took nothing from anyone.
            assert all(torrent.status().bytes_uploaded == 0 for torrent in seeders)
            assert partial.status().bytes_uploaded == 0

            # A third-party-style tracker (UDP: no /health.json) is scraped instead.
            code, out, err = await run_cli(
                "health", str(udp_file), "--json", "--seconds", "1", "--host", LOOPBACK
            )
            assert code == 0, err
            report = last_json(out)
            [told] = report["trackers"]
            assert told["source"] == "scrape" and told["url"] == tracker.udp_url
            assert (told["seeders"], told["leechers"]) == (2, 1)
            assert report["swarm"]["seeders"] == 2

            # The tracker itself: its health document, and a readable summary.
            code, out, err = await run_cli("health", tracker.announce_url, "--json")
            assert code == 0, err
            document = last_json(out)
            assert document["tracker"]["seeders"] == 2 and document["tracker"]["torrents"] == 1
            assert [t["info_hash"] for t in document["torrents"]] == [info_hash.hex()]
            code, out, err = await run_cli("health", tracker.announce_url)
            assert code == 0, err
            assert "2 seeders" in out and info_hash.hex() in out
        nursery.cancel_scope.cancel()


async def test_health_command_errors_are_clear(tmp_path: Path) -> None:
    code, out, err = await run_cli("health", "udp://127.0.0.1:9/announce", "--json")
    assert code == 1 and last_json(out)["type"] == "TrackerError"
    assert "health" in err
    broken = tmp_path / "broken.torrent"
    broken.write_bytes(b"not bencoded")
    code, out, err = await run_cli("health", str(broken), "--json")
    assert code == 1 and last_json(out)["type"] == "MetainfoError"
    code, out, err = await run_cli("health", str(broken), "--seconds", "0")
    assert code == 2 and "--seconds" in err
