"""Identity-bound announces and the standing-aware peer-list policy of our tracker.

Announces go over real HTTP to a tracker on 127.0.0.1 with real SQLite credit
files; the seeding-time arithmetic is also checked on the pure registry with
an explicit clock.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing

from opendistro import bencode
from opendistro.credit.identity import CreditIdentity
from opendistro.credit.receipts import issue_receipt
from opendistro.errors import ConfigError, TrackerError
from opendistro.tracker import client
from opendistro.tracker.credit import CreditStore
from opendistro.tracker.credit_client import fetch_standing, submit_receipts
from opendistro.tracker.protocol import (
    AnnounceEvent,
    AnnounceRequest,
    announce_statement,
    check_announce_proof,
    sign_announce,
)
from opendistro.tracker.registry import TrackerRegistry
from opendistro.tracker.server import TrackerServer

TORRENT = b"\x61" * 20
SIZE = 1_000_000
CONTRIBUTOR = CreditIdentity.from_seed(bytes([41]) * 32)
GRATEFUL = CreditIdentity.from_seed(bytes([42]) * 32)
NEWCOMER = CreditIdentity.from_seed(bytes([43]) * 32)


def peer_id(n: int) -> bytes:
    return f"-OD0001-{n:012d}".encode()


def request(n: int, **kwargs: Any) -> AnnounceRequest:
    kwargs.setdefault("info_hash", TORRENT)
    kwargs.setdefault("left", SIZE)
    return AnnounceRequest(peer_id=peer_id(n), port=20_000 + n, **kwargs)


def signed(n: int, identity: CreditIdentity, *, at: int | None = None, **kwargs: Any
           ) -> AnnounceRequest:
    return sign_announce(request(n, **kwargs), identity, time=at or int(time.time()))


@asynccontextmanager
async def running(tmp_path: Path, **kwargs: Any) -> AsyncIterator[TrackerServer]:
    kwargs.setdefault("credit_db_path", tmp_path / "credit.sqlite")
    async with trio.open_nursery() as nursery:
        server = TrackerServer(udp=False, interval=60, min_interval=5, **kwargs)
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def make_contributor(server: TrackerServer) -> None:
    """GRATEFUL signs that it received 50 MB from CONTRIBUTOR; the tracker takes it."""
    receipt = issue_receipt(GRATEFUL, torrent=TORRENT, giver=CONTRIBUTOR.public_key,
                            total=50_000_000)
    result = await submit_receipts(server.credit_url, [receipt])
    assert result.accepted == 1


async def raw_announce(port: int, query: str) -> dict[bytes, Any]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        target = f"/announce?{query}"
        await stream.send_all(
            connection.send(h11.Request(method="GET", target=target, headers=[("Host", "t")]))
            + connection.send(h11.EndOfMessage())
        )
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
    answer = bencode.decode(body)
    assert isinstance(answer, dict)
    return answer


async def fill_swarm(server: TrackerServer, seeds: range, leechers: range,
                     left: Callable[[int], int] = lambda n: SIZE) -> None:
    for n in seeds:
        await client.announce(server.announce_url, request(n, left=0))
    for n in leechers:
        await client.announce(server.announce_url, request(n, left=left(n)))


def seeds_in(answer_peers: tuple[tuple[str, int], ...], seeds: range) -> int:
    seed_ports = {20_000 + n for n in seeds}
    return sum(1 for _, port in answer_peers if port in seed_ports)


# ------------------------------------------------------------ the announce binding


def test_proof_round_trips_through_the_query_and_verifies() -> None:
    now = 1_700_000_000
    ask = signed(1, CONTRIBUTOR, at=now)
    parsed = AnnounceRequest.from_query(ask.to_query())
    assert parsed == ask
    assert check_announce_proof(parsed, now + 10) is None
    assert parsed.statement == announce_statement(
        identity=CONTRIBUTOR.public_key, info_hash=TORRENT, peer_id=peer_id(1), port=20_001,
        time=now,
    )
    assert parsed.statement.startswith(b"opendistro-credit-announce-v1\x00")
    # bound to peer id, port and time: any change breaks it
    for changed in (
        dataclasses.replace(parsed, peer_id=peer_id(2)),
        dataclasses.replace(parsed, port=1),
        dataclasses.replace(parsed, identity_time=now + 1),
        dataclasses.replace(parsed, identity=NEWCOMER.public_key),
    ):
        assert check_announce_proof(changed, now) == "identity proof signature does not verify"
    assert "from the tracker's clock" in (check_announce_proof(parsed, now + 301) or "")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("odid=" + "ab" * 32, "odid, odts and odsig together"),
        ("odid=" + "ab" * 31 + "&odts=1&odsig=" + "cd" * 64, "'odid' must be 64 hex digits"),
        ("odid=" + "zz" * 32 + "&odts=1&odsig=" + "cd" * 64, "'odid' must be 64 hex digits"),
        ("odid=" + "ab" * 32 + "&odts=1&odsig=" + "cd" * 63, "'odsig' must be 128 hex digits"),
        ("odid=" + "ab" * 32 + "&odts=-5&odsig=" + "cd" * 64, "'odts'"),
        ("odid=" + "ab" * 32 + "&odts=1e3&odsig=" + "cd" * 64, "'odts'"),
    ],
)
async def test_malformed_proofs_refuse_the_announce(
    tmp_path: Path, extra: str, reason: str
) -> None:
    async with running(tmp_path) as server:
        answer = await raw_announce(server.port, f"{request(1).to_query()}&{extra}")
        assert reason in answer[b"failure reason"].decode()
        assert server.registry.swarm(TORRENT) is None


async def test_a_proved_identity_is_recorded_and_used(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        answer = await client.announce(server.announce_url, signed(1, NEWCOMER))
        assert answer.warning is None
        swarm = server.registry.swarm(TORRENT)
        assert swarm is not None
        assert swarm.peers[peer_id(1)].identity == NEWCOMER.public_key
        assert server.registry.counters.proofs_accepted == 1


@pytest.mark.parametrize("problem", ["forged", "stale", "future"])
async def test_invalid_proofs_are_ignored_with_a_warning(tmp_path: Path, problem: str) -> None:
    now = int(time.time())
    ask = {
        "forged": dataclasses.replace(signed(1, NEWCOMER, at=now), identity=CONTRIBUTOR.public_key),
        "stale": signed(1, NEWCOMER, at=now - 3600),
        "future": signed(1, NEWCOMER, at=now + 3600),
    }[problem]
    async with running(tmp_path) as server:
        answer = await client.announce(server.announce_url, ask)
        assert answer.warning is not None and answer.warning.startswith("identity ignored")
        swarm = server.registry.swarm(TORRENT)
        assert swarm is not None
        assert swarm.peers[peer_id(1)].identity is None  # served, but as a stranger
        assert server.registry.counters.proofs_ignored == 1


async def test_a_replayed_proof_is_ignored(tmp_path: Path) -> None:
    now = int(time.time())
    async with running(tmp_path) as server:
        first = signed(1, NEWCOMER, at=now)
        assert (await client.announce(server.announce_url, first)).warning is None
        replay = await client.announce(server.announce_url, first)
        assert replay.warning is not None and "replay" in replay.warning
        swarm = server.registry.swarm(TORRENT)
        assert swarm is not None and swarm.peers[peer_id(1)].identity is None
        # the owner moves on with a later time and is recognised again; the old proof
        # stays dead even after an anonymous announce in between
        later = await client.announce(server.announce_url, signed(1, NEWCOMER, at=now + 1))
        assert later.warning is None
        assert swarm.peers[peer_id(1)].identity == NEWCOMER.public_key
        await client.announce(server.announce_url, request(1))
        again = await client.announce(server.announce_url, signed(1, NEWCOMER, at=now + 1))
        assert again.warning is not None and "replay" in again.warning


# ------------------------------------------------------------ peer lists


async def test_contributors_get_more_seeds_and_peers_than_newcomers(tmp_path: Path) -> None:
    seeds, leechers = range(100, 130), range(200, 260)
    async with running(tmp_path) as server:
        await make_contributor(server)
        await fill_swarm(server, seeds, leechers)
        contributor = await client.announce(server.announce_url,
                                            signed(1, CONTRIBUTOR, numwant=20))
        newcomer = await client.announce(server.announce_url, signed(2, NEWCOMER, numwant=20))
        stranger = await client.announce(server.announce_url, request(3, numwant=20))
        # a contributor with nothing: 25 peers (a quarter more), 75 % of them seeds
        assert len(contributor.peers) == 25
        assert seeds_in(contributor.peers, seeds) == 19
        # a newcomer or a stranger with nothing: 20 peers, half of them seeds
        for answer in (newcomer, stranger):
            assert len(answer.peers) == 20
            assert seeds_in(answer.peers, seeds) == 10
        standing = server.registry.standing_of(CONTRIBUTOR.public_key)
        assert standing is not None and standing.is_contributor


async def test_leechers_that_lack_less_get_fewer_seeds_but_never_none(tmp_path: Path) -> None:
    seeds, leechers = range(100, 130), range(200, 260)
    async with running(tmp_path) as server:
        await fill_swarm(server, seeds, leechers)
        almost = await client.announce(server.announce_url,
                                       request(1, numwant=20, left=SIZE // 10))
        assert seeds_in(almost.peers, seeds) == 6  # ceil(20 x (0.25 + 0.25 x 0.1))
        one = await client.announce(server.announce_url, request(2, numwant=1, left=SIZE // 10))
        assert seeds_in(one.peers, seeds) == 1


async def test_a_seed_is_handed_the_leechers_that_need_it_most(tmp_path: Path) -> None:
    needy, nearly_done = range(200, 204), range(300, 308)
    async with running(tmp_path) as server:
        await fill_swarm(server, range(0), needy)
        await fill_swarm(server, range(0), nearly_done, left=lambda n: SIZE // 50)
        answer = await client.announce(server.announce_url, request(1, left=0, numwant=5))
        ports = {port for _, port in answer.peers}
        assert len(ports) == 5
        assert ports >= {20_000 + n for n in needy}
        # the needy ones count as served now; a leecher that got a seed is served too
        swarm = server.registry.swarm(TORRENT)
        assert swarm is not None
        assert all(swarm.peers[peer_id(n)].served == 1 for n in needy)


async def test_the_requester_is_never_in_its_own_list_and_seeds_get_no_seeds(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as server:
        await fill_swarm(server, range(100, 103), range(200, 203))
        answer = await client.announce(server.announce_url, request(100, left=0, numwant=50))
        assert sorted(port for _, port in answer.peers) == [20_200, 20_201, 20_202]
        answer = await client.announce(server.announce_url, request(200, numwant=50))
        assert 20_200 not in {port for _, port in answer.peers}
        assert len(answer.peers) == 5


# ------------------------------------------------------------ seeding time


def test_seeding_time_is_credited_between_two_proved_seed_announces() -> None:
    registry = TrackerRegistry(interval=600, rng=random.Random(1))

    def announce(n: int, now: int, identity: CreditIdentity | None, **kwargs: Any) -> None:
        ask = request(n, left=0, **kwargs)
        if identity is not None:
            ask = sign_announce(ask, identity, time=now)
        registry.announce(ask, "127.0.0.1", float(now))

    announce(1, 1000, CONTRIBUTOR)
    announce(1, 1600, CONTRIBUTOR)  # 600 s seeding
    announce(1, 1700, None)  # anonymous: the 100 s are not credited
    announce(1, 1800, CONTRIBUTOR)  # the previous announce proved no one: nothing
    announce(1, 9000, CONTRIBUTOR)  # silent for 7200 s: capped at the peer TTL (1200 s)
    announce(1, 9100, CONTRIBUTOR, event=AnnounceEvent.STOPPED)  # stopping counts: 100 s
    credit = registry.take_seeding_credit()
    assert credit == {(CONTRIBUTOR.public_key, TORRENT): 600 + 1200 + 100}
    assert registry.take_seeding_credit() == {}


def test_a_leecher_earns_no_seeding_time() -> None:
    registry = TrackerRegistry(rng=random.Random(1))
    for now in (1000, 1600):
        ask = sign_announce(request(1), NEWCOMER, time=now)
        registry.announce(ask, "127.0.0.1", float(now))
    assert registry.take_seeding_credit() == {}


def test_credit_store_keeps_seeding_time_apart_from_the_score(tmp_path: Path) -> None:
    with CreditStore(tmp_path / "credit.sqlite") as store:
        assert store.add_seeding_time({(NEWCOMER.public_key, TORRENT): 600.0,
                                       (b"short", TORRENT): 5.0,
                                       (CONTRIBUTOR.public_key, TORRENT): -3.0}) == 1
        store.add_seeding_time({(NEWCOMER.public_key, TORRENT): 60.0})
        standing = store.standing(NEWCOMER.public_key)
        assert standing.seeding_seconds == 660
        assert standing.score == 0 and standing.is_newcomer
    with CreditStore(tmp_path / "allowed.sqlite", is_allowed=lambda h: h != TORRENT) as store:
        assert store.add_seeding_time({(NEWCOMER.public_key, TORRENT): 600.0}) == 0


async def test_seeding_time_reaches_the_standing_over_http(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        start = int(time.time())
        await client.announce(server.announce_url, signed(1, NEWCOMER, at=start, left=0))
        await trio.sleep(1.1)  # real seconds must pass: the tracker uses the wall clock
        await client.announce(server.announce_url, signed(1, NEWCOMER, at=start + 2, left=0))
        await server.refresh_standings()
        standing = await fetch_standing(server.credit_url, NEWCOMER.public_key)
        assert standing.seeding_seconds >= 1
        assert standing.score == 0


# ------------------------------------------------------------ flash crowds


async def wait_for(condition: Callable[[], bool]) -> None:
    """Let the server run until ``condition`` holds (loopback I/O needs only checkpoints)."""
    for _ in range(100_000):
        if condition():
            return
        await trio.sleep(0)
    raise AssertionError("the condition never held")


async def test_in_a_flash_crowd_contributors_are_answered_first(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path, max_announce_rate=1.0, announce_burst=1) as server:
        await make_contributor(server)
        order: list[str] = []

        async def announce(name: str, ask: AnnounceRequest) -> None:
            await client.announce(server.announce_url, ask)
            order.append(name)

        def waiting(count: int) -> Callable[[], bool]:
            return lambda: server.counters.announces_waiting == count

        def answered(count: int) -> Callable[[], bool]:
            return lambda: len(order) == count

        await announce("first", request(1))  # takes the only token
        async with trio.open_nursery() as nursery:
            for n in (2, 3, 4):
                nursery.start_soon(announce, f"newcomer{n}", signed(n, NEWCOMER))
                await wait_for(waiting(n - 1))
            nursery.start_soon(announce, "contributor", signed(5, CONTRIBUTOR))
            await wait_for(waiting(4))
            assert order == ["first"]
            for count in range(2, 6):
                mock_clock.jump(1.0)
                await wait_for(answered(count))
        assert order == ["first", "contributor", "newcomer2", "newcomer3", "newcomer4"]
        assert server.counters.announces_waiting == 0


async def test_a_full_queue_sheds_announces(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with running(
        tmp_path, max_announce_rate=1.0, announce_burst=1, max_waiting_announces=1
    ) as server:
        await client.announce(server.announce_url, request(1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.announce, server.announce_url, request(2))
            await wait_for(lambda: server.counters.announces_waiting == 1)
            with pytest.raises(TrackerError, match="tracker is busy"):
                await client.announce(server.announce_url, request(3))
            assert server.counters.announces_shed == 1
            mock_clock.jump(1.0)
        swarm = server.registry.swarm(TORRENT)
        assert swarm is not None
        assert set(swarm.peers) == {peer_id(1), peer_id(2)}


@pytest.mark.parametrize(
    "settings",
    [{"max_announce_rate": 0.0}, {"max_announce_rate": 1.0, "announce_burst": 0},
     {"max_announce_rate": 1.0, "max_waiting_announces": -1}],
)
def test_a_nonsensical_rate_limit_is_a_config_error(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TrackerServer(**settings)
