"""Clients with a credit identity prove it in their HTTP announces; the bundled tracker
(real HTTP and UDP on 127.0.0.1) then ranks them and counts their seeding time."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.io.credit import CreditService
from opendistro.metainfo import Metainfo
from opendistro.tracker.credit_client import fetch_standing
from opendistro.tracker.health_client import fetch_tracker_health
from opendistro.tracker.protocol import AnnounceRequest, check_announce_proof
from opendistro.tracker.server import TrackerServer

LOOPBACK = "127.0.0.1"


def seeded_release(
    make_release: Callable[..., Path], trackers: list[str]
) -> tuple[Metainfo, Path]:
    release = make_release(sizes=(200_000,))
    return create_torrent(release, version="hybrid", trackers=trackers), release


async def torrent_health(tracker: TrackerServer, info_hash: bytes) -> dict[str, Any]:
    document = await fetch_tracker_health(tracker.announce_url, info_hash)
    [entry] = document["torrents"]
    assert isinstance(entry, dict)
    return entry


def test_proofs_count_up_and_stay_off_udp(tmp_path: Path) -> None:
    service = CreditService.open(tmp_path / "state")
    try:
        request = AnnounceRequest(
            info_hash=b"\x11" * 20, peer_id=b"-OD0100-abcdefghijkl", port=6881
        )
        first = service.sign_announce("http://tracker.example/announce", request)
        second = service.sign_announce("https://tracker.example/announce", request)
        assert first.identity == second.identity == service.public_key
        assert first.identity_time is not None and second.identity_time is not None
        # Two proofs within one second still count up, as the tracker demands.
        assert second.identity_time > first.identity_time
        assert check_announce_proof(first, time.time()) is None
        assert check_announce_proof(second, time.time()) is None
        # The proof is in the query string an HTTP tracker receives.
        assert f"odid={service.public_key.hex()}" in second.to_query()
        assert service.sign_announce("udp://tracker.example:6969/announce", request) == request
    finally:
        service.close()


async def test_our_tracker_sees_the_identity_and_counts_seeding_time(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    tracker = TrackerServer(
        host=LOOPBACK,
        port=0,
        interval=1,
        min_interval=1,
        credit_db_path=tmp_path / "tracker-credit.sqlite",
        standing_refresh=0.1,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        metainfo, release = seeded_release(make_release, [tracker.announce_url])
        async with Client(host=LOOPBACK, state_dir=tmp_path / "seeder") as seeder:
            assert seeder.credit is not None
            identity = seeder.credit.public_key.hex()
            await seeder.seed(metainfo, release.parent)
            with trio.fail_after(30):
                while (entry := await torrent_health(tracker, metainfo.wire_info_hash))[
                    "seeders"
                ] < 1:
                    await trio.sleep(0.05)
            assert entry["identified_peers"] == 1
            assert [rank["identity"] for rank in entry["contribution_ranking"]] == [identity]
            assert entry["contribution_ranking"][0]["seeding_now"] is True
            assert [peer["identity"] for peer in entry["peers"]] == [identity]
            # Proved announces as a seed, one a second: the tracker credits the time
            # between them, and saves it where GET /credit reads it.
            with trio.fail_after(30):
                while (
                    await fetch_standing(tracker.credit_url, seeder.credit.public_key)
                ).seeding_seconds < 2:
                    await trio.sleep(0.1)
        assert tracker.registry.counters.proofs_accepted >= 3
        assert tracker.registry.counters.proofs_ignored == 0  # every proof counted up
        nursery.cancel_scope.cancel()


async def test_udp_announces_stay_anonymous(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    tracker = TrackerServer(host=LOOPBACK, port=0, interval=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        metainfo, release = seeded_release(make_release, [tracker.udp_url])
        async with Client(host=LOOPBACK, state_dir=tmp_path / "seeder") as seeder:
            assert seeder.credit is not None
            await seeder.seed(metainfo, release.parent)
            with trio.fail_after(30):
                while (entry := await torrent_health(tracker, metainfo.wire_info_hash))[
                    "seeders"
                ] < 1:
                    await trio.sleep(0.05)
        assert entry["identified_peers"] == 0 and entry["contribution_ranking"] == []
        assert tracker.registry.counters.proofs_accepted == 0
        nursery.cancel_scope.cancel()
