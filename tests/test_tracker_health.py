"""Tracker health: /health.json, /metrics, scrape and the health client, on 127.0.0.1.

The time-to-death estimate is checked on the pure registry with an explicit
clock; everything else over real HTTP against our tracker.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from opendistro.credit.identity import CreditIdentity
from opendistro.credit.receipts import issue_receipt
from opendistro.errors import TrackerError
from opendistro.tracker import client
from opendistro.tracker.credit import Standing
from opendistro.tracker.credit_client import submit_receipts
from opendistro.tracker.health_client import fetch_tracker_health, health_url_for
from opendistro.tracker.metrics import time_to_death, torrent_health
from opendistro.tracker.protocol import AnnounceEvent, AnnounceRequest, ScrapeStats, sign_announce
from opendistro.tracker.registry import Swarm, TrackerRegistry
from opendistro.tracker.server import TrackerServer

TORRENT = b"\x71" * 20
OTHER = b"\x72" * 20
SIZE = 1000
GIVER = CreditIdentity.from_seed(bytes([51]) * 32)
TAKER = CreditIdentity.from_seed(bytes([52]) * 32)
SILENT = CreditIdentity.from_seed(bytes([53]) * 32)


def peer_id(n: int) -> bytes:
    return f"-OD0001-{n:012d}".encode()


def request(n: int, **kwargs: Any) -> AnnounceRequest:
    kwargs.setdefault("info_hash", TORRENT)
    kwargs.setdefault("left", SIZE)
    return AnnounceRequest(peer_id=peer_id(n), port=20_000 + n, **kwargs)


@asynccontextmanager
async def running(tmp_path: Path, **kwargs: Any) -> AsyncIterator[TrackerServer]:
    kwargs.setdefault("credit_db_path", tmp_path / "credit.sqlite")
    async with trio.open_nursery() as nursery:
        server = TrackerServer(udp=False, interval=60, min_interval=5, **kwargs)
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def get(
    port: int, target: str, *, method: str = "GET", body: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request with our own h11 client, to see status codes and headers."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        headers = [("Host", "t"), ("Content-Length", str(len(body)))]
        await stream.send_all(
            connection.send(h11.Request(method=method, target=target, headers=headers))
            + (connection.send(h11.Data(data=body)) if body else b"")
            + connection.send(h11.EndOfMessage())
        )
        status, answer_headers, answer = 0, {}, b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status, answer_headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, answer_headers, answer


async def populate(server: TrackerServer) -> None:
    """Two seeds (GIVER proved), three leechers at 0 %, 50 % and 75 % (TAKER proved)."""
    url = server.announce_url
    now = int(time.time())
    await client.announce(url, sign_announce(request(1, left=0), GIVER, time=now))
    await client.announce(url, request(2, left=100))
    await client.announce(url, request(3, left=SIZE))
    await client.announce(url, sign_announce(request(4, left=500), TAKER, time=now))
    await client.announce(url, request(5, left=250, downloaded=750,
                                      event=AnnounceEvent.STARTED))
    await client.announce(url, request(2, left=0, uploaded=5000, event=AnnounceEvent.COMPLETED))
    receipt = issue_receipt(TAKER, torrent=TORRENT, giver=GIVER.public_key, total=4000)
    assert (await submit_receipts(server.credit_url, [receipt])).accepted == 1
    await server.refresh_standings()


# ------------------------------------------------------------ the estimates


def test_time_to_death_follows_leechers_leaving_as_they_finish() -> None:
    registry = TrackerRegistry(rng=random.Random(3))

    def announce(n: int, now: float, left: int) -> None:
        registry.announce(request(n, left=left), "127.0.0.1", now)

    announce(9, 0, 0)  # a seed, which is assumed gone
    for n, (start, later) in enumerate([(1000, 200), (1000, 400), (500, 500)], start=1):
        announce(n, 0, start)
        announce(n, 10, later)
    swarm = registry.swarm(TORRENT)
    assert swarm is not None
    # completions .8, .6, .5 (sum 1.9); rates 80 and 60 B/s, the third stalled.
    # The first leaves after 200/80 = 2.5 s (1.1 copies left), the second after
    # 400/60 s (0.5 left): dead then.
    assert time_to_death(swarm) == pytest.approx(400 / 60)


def test_time_to_death_is_zero_without_a_copy_and_none_when_nobody_leaves() -> None:
    registry = TrackerRegistry(rng=random.Random(3))
    registry.announce(request(1, left=0), "127.0.0.1", 0)
    registry.announce(request(2, left=SIZE), "127.0.0.1", 0)
    registry.announce(request(3, left=400), "127.0.0.1", 0)
    swarm = registry.swarm(TORRENT)
    assert swarm is not None
    assert time_to_death(swarm) == 0.0  # 0 + 0.6 copies without the seed
    registry.announce(request(4, left=300), "127.0.0.1", 0)
    assert time_to_death(swarm) is None  # 1.3 copies, and nobody progresses
    assert time_to_death(Swarm()) == 0.0


def test_an_identity_behind_two_peers_is_ranked_once() -> None:
    registry = TrackerRegistry(rng=random.Random(3))
    for n, left, identity in ((1, 0, GIVER), (2, SIZE, GIVER), (3, SIZE, TAKER), (4, SIZE, None)):
        ask = request(n, left=left)
        if identity is not None:
            ask = sign_announce(ask, identity, time=1000)
        registry.announce(ask, f"127.0.0.{n}", 1000.0)
    registry.set_standings([Standing(GIVER.public_key, uploaded=10)])
    swarm = registry.swarm(TORRENT)
    assert swarm is not None
    health = torrent_health(registry, TORRENT, swarm)
    assert health.identified == 3
    ranked = [(entry["identity"], entry["score"]) for entry in health.ranking]
    assert ranked == [(GIVER.public_key.hex(), 10), (TAKER.public_key.hex(), 0)]
    assert torrent_health(registry, TORRENT, swarm, max_ranked=0).ranking == ()


# ------------------------------------------------------------ over HTTP


async def test_health_json_describes_one_torrent(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        await populate(server)
        await client.announce(server.announce_url, request(6, info_hash=OTHER))
        hex_hash = TORRENT.hex()
        status, headers, body = await get(server.port, f"/health.json?info_hash={hex_hash}")
        assert status == 200 and headers[b"content-type"] == b"application/json"
        document = json.loads(body)
        (torrent,) = document["torrents"]
        assert torrent["info_hash"] == hex_hash
        assert (torrent["seeders"], torrent["leechers"], torrent["completed"]) == (2, 3, 1)
        assert torrent["identified_peers"] == 2
        assert torrent["size_estimate"] == SIZE
        assert torrent["distributed_copies_estimate"] == pytest.approx(3.25)
        assert torrent["rarest_availability_lower_bound"] == 2
        assert torrent["time_to_death_if_seeders_leave"] is None  # 1.25 copies, nobody moves
        ranking = torrent["contribution_ranking"]
        assert [entry["identity"] for entry in ranking] == [GIVER.public_key.hex(),
                                                            TAKER.public_key.hex()]
        assert (ranking[0]["score"], ranking[0]["uploaded"], ranking[0]["seeding_now"]) == (
            4000, 4000, True)
        assert (ranking[1]["score"], ranking[1]["downloaded"]) == (0, 4000)
        peers = torrent["peers"]
        assert len(peers) == 5
        assert peers[0]["uploaded"] == 5000  # the biggest uploader first
        assert all("ip" not in peer and "port" not in peer for peer in peers)
        tracker = document["tracker"]
        assert tracker["torrents"] == 2
        assert tracker["identity_proofs_accepted"] == 2
        assert tracker["credit_receipts"]["accepted"] == 1

        # the raw 20 bytes, percent-encoded as in a scrape, name the same torrent
        raw = "".join(f"%{byte:02X}" for byte in TORRENT)
        _, _, same = await get(server.port, f"/health.json?info_hash={raw}")
        assert json.loads(same)["torrents"][0]["seeders"] == 2
        # without a name: every swarm, largest first
        _, _, everything = await get(server.port, "/health.json")
        assert [t["info_hash"] for t in json.loads(everything)["torrents"]] == [
            TORRENT.hex(), OTHER.hex()]


@pytest.mark.parametrize("query", ["info_hash=zz", "info_hash=" + "ab" * 19,
                                   "&".join(f"info_hash={n:040x}" for n in range(33))])
async def test_bad_health_queries_are_400(tmp_path: Path, query: str) -> None:
    async with running(tmp_path) as server:
        status, _, body = await get(server.port, f"/health.json?{query}")
        assert status == 400
        assert "info_hash" in json.loads(body)["error"]


async def test_scrape_and_stats_json_keep_their_shape(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        await populate(server)
        stats = await client.scrape(server.announce_url, [TORRENT])
        assert stats == {TORRENT: ScrapeStats(complete=2, downloaded=1, incomplete=3)}
        _, _, body = await get(server.port, "/stats.json")
        assert json.loads(body) == {"torrents": 1, "seeders": 2, "leechers": 3, "completed": 1}


_SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"\\]*"(,[a-z_]+="[^"\\]*")*\})? (\S+)$')


def parse_prometheus(text: str) -> dict[str, float]:
    """A strict reader of the text format: every family typed before its samples."""
    assert text.endswith("\n")
    typed: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge")
            typed.add(name)
            continue
        match = _SAMPLE.match(line)
        assert match, line
        assert match.group(1) in typed, line
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(4))
    return samples


async def test_metrics_are_prometheus_text(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        await populate(server)
        await client.scrape(server.announce_url, [TORRENT])
        forged = issue_receipt(TAKER, torrent=TORRENT, giver=SILENT.public_key, total=10)
        bad = issue_receipt(SILENT, torrent=TORRENT, giver=GIVER.public_key, total=99)
        await submit_receipts(server.credit_url, [forged, bad.__class__(
            bad.torrent, bad.giver, bad.receiver, bad.total, bytes(64))])
        status, headers, body = await get(server.port, "/metrics")
        assert status == 200
        assert headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
        samples = parse_prometheus(body.decode())
        label = f'{{info_hash="{TORRENT.hex()}"}}'
        assert samples[f"opendistro_tracker_torrent_seeders{label}"] == 2
        assert samples[f"opendistro_tracker_torrent_leechers{label}"] == 3
        assert samples[f"opendistro_tracker_torrent_completed_total{label}"] == 1
        assert samples[f"opendistro_tracker_torrent_identified_peers{label}"] == 2
        assert samples[f"opendistro_tracker_torrent_distributed_copies{label}"] == 3.25
        assert samples[f"opendistro_tracker_torrent_time_to_death_seconds{label}"] == float("inf")
        assert samples['opendistro_tracker_announces_total{result="answered"}'] == 6
        assert samples['opendistro_tracker_identity_proofs_total{result="accepted"}'] == 2
        assert samples['opendistro_tracker_credit_receipts_total{result="accepted"}'] == 2
        assert samples['opendistro_tracker_credit_receipts_total{result="rejected"}'] == 1
        assert samples["opendistro_tracker_scrapes_total"] == 1
        assert samples["opendistro_tracker_torrents"] == 1


async def test_refused_submissions_and_announces_are_counted(tmp_path: Path) -> None:
    async with running(tmp_path, allow_list=[TORRENT]) as server:
        with pytest.raises(TrackerError, match="not tracked"):
            await client.announce(server.announce_url, request(1, info_hash=OTHER))
        status, _, _ = await get(server.port, "/credit", method="POST", body=b"not bencoded")
        assert status == 400
        _, _, body = await get(server.port, "/metrics")
        samples = parse_prometheus(body.decode())
        assert samples['opendistro_tracker_announces_total{result="refused"}'] == 1
        assert samples["opendistro_tracker_credit_submissions_refused_total"] == 1


# ------------------------------------------------------------ the health client


def test_health_urls_are_derived_from_what_the_user_has() -> None:
    assert health_url_for("http://t.example:6969/announce") == "http://t.example:6969/health.json"
    assert health_url_for("https://t.example/x/announce.php?pk=1") == (
        "https://t.example/x/health.json?pk=1")
    assert health_url_for("http://t.example") == "http://t.example/health.json"
    assert health_url_for("http://t.example/scrape", TORRENT) == (
        f"http://t.example/health.json?info_hash={TORRENT.hex()}")
    assert health_url_for("http://t.example/health.json", b"\x01" * 32) == (
        f"http://t.example/health.json?info_hash={'01' * 20}")
    for bad in ("udp://t.example:6969/announce", "http://t.example/tracker", "ftp://x/announce"):
        with pytest.raises(TrackerError):
            health_url_for(bad)
    with pytest.raises(TrackerError, match="20 bytes"):
        health_url_for("http://t.example/announce", b"short")


async def test_fetch_tracker_health_reads_our_tracker(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        await populate(server)
        document = await fetch_tracker_health(server.announce_url, TORRENT)
        assert document["torrents"][0]["seeders"] == 2
        assert document["tracker"]["announces"] == 6
        unknown = await fetch_tracker_health(server.announce_url, OTHER)
        assert unknown["torrents"][0]["seeders"] == 0
        assert unknown["torrents"][0]["time_to_death_if_seeders_leave"] == 0.0
        everything = await fetch_tracker_health(f"http://127.0.0.1:{server.port}/")
        assert len(everything["torrents"]) == 1


async def test_fetch_tracker_health_refuses_what_is_not_a_health_document(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as server:
        # /stats.json is JSON but not the health document; ask it by its own URL
        with pytest.raises(TrackerError):
            await fetch_tracker_health(f"http://127.0.0.1:{server.port}/announce/../nothing")
    async with running(tmp_path, allow_list=[TORRENT]) as server:
        document = await fetch_tracker_health(server.announce_url, OTHER)
        assert document["torrents"] == []
