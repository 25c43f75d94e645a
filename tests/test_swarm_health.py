"""The sans-I/O swarm health model, on hand-built bitfields and rates."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.bitfield import Bitfield
from opendistro.errors import ConfigError
from opendistro.swarm.health import PeerView, swarm_health


def bits(pattern: str) -> Bitfield:
    field = Bitfield(len(pattern))
    for index, char in enumerate(pattern):
        if char == "1":
            field.set(index)
    return field


def test_figures_of_a_small_swarm_with_one_seed() -> None:
    # 4 pieces of 10 bytes, the last one 5: 35 bytes. We have nothing.
    health = swarm_health(
        have=bits("0000"),
        peers=[
            PeerView("seed", bits("1111"), download_rate=100.0),
            PeerView("a", bits("1100"), download_rate=10.0, upload_rate=3.0, completion_rate=5.0),
            PeerView("b", bits("0110")),
        ],
        piece_length=10,
        total_length=35,
        self_completion_rate=5.0,
    )
    assert (health.seeders, health.leechers) == (1, 3)
    # availability per piece: 2, 3, 2, 1 -> the rarest is 1, three pieces above it
    assert health.rarest_availability == 1
    assert health.rarest_pieces == 1
    assert health.distributed_copies == pytest.approx(1.75)
    assert health.missing_pieces == 0
    # piece 3 is held by the seed only: if it leaves, the swarm is dead at once
    assert health.seed_only_pieces == 1
    assert health.time_to_death == 0.0
    # 5 seed-only bytes (the short last piece) at 5 + 5 bytes/s of leecher progress
    assert health.time_to_independence == pytest.approx(0.5)
    assert health.download_rate == 110.0
    assert health.upload_rate == 3.0
    assert [peer.completion for peer in health.peers] == [1.0, 0.5, 0.5]
    assert [peer.seed for peer in health.peers] == [True, False, False]


def test_time_to_death_is_when_a_piece_loses_its_last_leecher() -> None:
    # 4 pieces of 10 bytes. Leecher a lacks 20 bytes at 10 B/s: gone after 2 s.
    # b lacks 10 bytes at 1 B/s: gone after 10 s. c never progresses: it stays.
    peers = [
        PeerView("seed", bits("1111")),
        PeerView("a", bits("1100"), completion_rate=10.0),
        PeerView("b", bits("0111"), completion_rate=1.0),
        PeerView("c", bits("1001")),
    ]
    health = swarm_health(
        have=bits("1111"), peers=peers, piece_length=10, total_length=40, count_self=False
    )
    # piece 0: a, c (stays) -> never; piece 1: a (2 s), b (10 s) -> 10 s; piece 2: b -> 10 s
    assert health.time_to_death == pytest.approx(10.0)
    assert health.seed_only_pieces == 0
    assert health.time_to_independence == 0.0
    # availability 3, 3, 2, 3 (the seed plus leechers; we are not counted)
    assert (health.rarest_availability, health.distributed_copies) == (2, pytest.approx(2.75))

    # counting ourselves (a seed) adds one copy of everything, and we are a seed that leaves
    with_us = swarm_health(have=bits("1111"), peers=peers, piece_length=10, total_length=40)
    assert with_us.seeders == 2
    assert with_us.distributed_copies == pytest.approx(3.75)
    assert with_us.time_to_death == pytest.approx(10.0)


def test_a_swarm_of_stalled_leechers_that_covers_everything_has_no_end_in_sight() -> None:
    health = swarm_health(
        have=bits("1100"),
        peers=[PeerView("x", bits("0011")), PeerView("y", bits("0110"), completion_rate=0.0)],
        piece_length=8,
        total_length=32,
    )
    assert health.seeders == 0
    assert health.time_to_death is None
    assert health.time_to_independence == 0.0


def test_a_piece_nobody_holds_means_death_and_zero_copies() -> None:
    health = swarm_health(
        have=bits("100"),
        peers=[PeerView("x", bits("110"), completion_rate=4.0)],
        piece_length=4,
        total_length=12,
    )
    assert health.missing_pieces == 1
    assert health.rarest_availability == 0
    assert health.distributed_copies == pytest.approx(2 / 3)
    assert health.time_to_death == 0.0


def test_leechers_without_progress_cannot_make_seed_only_pieces_independent() -> None:
    health = swarm_health(
        have=bits("00"),
        peers=[PeerView("seed", bits("11"))],
        piece_length=4,
        total_length=8,
    )
    assert health.seed_only_pieces == 2
    assert health.time_to_independence is None
    assert health.time_to_death == 0.0


def test_ranking_puts_standing_first_then_what_the_peer_gives_us() -> None:
    health = swarm_health(
        have=bits("00"),
        peers=[
            PeerView("fast-stranger", bits("10"), download_rate=900.0),
            PeerView("contributor", bits("01"), download_rate=1.0, identity=b"\x01" * 32,
                     score=5000),
            PeerView("slow-stranger", bits("11"), download_rate=10.0),
            PeerView("newcomer", bits("00"), identity=b"\x02" * 32, score=0),
        ],
        piece_length=4,
        total_length=8,
    )
    assert health.ranking == ("contributor", "fast-stranger", "slow-stranger", "newcomer")


def test_to_json_is_plain_json() -> None:
    health = swarm_health(
        have=bits("1010"),
        peers=[PeerView("p", bits("0101"), identity=b"\xab" * 32, score=3)],
        piece_length=16,
        total_length=60,
    )
    document = json.loads(json.dumps(health.to_json()))
    assert document["distributed_copies"] == 1.0
    assert document["time_to_death_if_seeders_leave"] is None
    assert document["peers"][0]["identity"] == "ab" * 32
    assert document["contribution_ranking"] == ["p"]


def test_an_empty_view_and_an_empty_torrent() -> None:
    alone = swarm_health(have=bits("000"), peers=[], piece_length=4, total_length=10,
                         count_self=False)
    assert (alone.seeders, alone.leechers, alone.distributed_copies) == (0, 0, 0.0)
    assert alone.missing_pieces == 3
    assert alone.time_to_death == 0.0
    empty = swarm_health(have=Bitfield(0), peers=[], piece_length=4, total_length=0)
    assert empty.num_pieces == 0 and empty.distributed_copies == 0.0


@pytest.mark.parametrize(
    ("peers", "piece_length", "total_length", "match"),
    [
        ([PeerView("short", bits("11"))], 4, 10, "bitfield of 2 pieces"),
        ([], 4, 20, "cannot make"),
        ([], 4, 8, "cannot make"),
        ([], 0, 10, "cannot make"),
        ([PeerView("neg", bits("101"), download_rate=-1.0)], 4, 10, "download_rate"),
        ([PeerView("nan", bits("101"), completion_rate=math.nan)], 4, 10, "completion_rate"),
    ],
)
def test_inconsistent_inputs_are_config_errors(
    peers: list[PeerView], piece_length: int, total_length: int, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        swarm_health(have=bits("000"), peers=peers, piece_length=piece_length,
                     total_length=total_length)


# ------------------------------------------------------------ against a naive model


def naive(
    members: list[tuple[str, float | None]], piece_length: int, total_length: int
) -> tuple[int, float, int, int, float | None]:
    """Per-piece loops, straight from the definitions."""
    count = len(members[0][0])
    sizes = [piece_length] * (count - 1) + [total_length - piece_length * (count - 1)]
    availability = [sum(m[0][i] == "1" for m in members) for i in range(count)]
    rarest = min(availability)
    copies = rarest + sum(a > rarest for a in availability) / count
    seeds = [m for m in members if set(m[0]) == {"1"}]
    leechers = [m for m in members if set(m[0]) != {"1"}]
    in_leechers = [any(m[0][i] == "1" for m in leechers) for i in range(count)]
    seed_only = sum(1 for i in range(count) if seeds and not in_leechers[i])

    def leaves(member: tuple[str, float | None]) -> float:
        lacking = sum(sizes[i] for i in range(count) if member[0][i] == "0")
        return lacking / member[1] if member[1] else math.inf

    deaths = []
    for i in range(count):
        holders = [leaves(m) for m in leechers if m[0][i] == "1"]
        deaths.append(max(holders) if holders else 0.0)
    death = min(deaths)
    return rarest, copies, seed_only, count - sum(a > 0 for a in availability), (
        None if math.isinf(death) else death
    )


member_strategy = st.integers(1, 12).flatmap(
    lambda n: st.lists(
        st.tuples(
            st.text(alphabet="01", min_size=n, max_size=n),
            st.one_of(st.none(), st.floats(0.5, 100.0)),
        ),
        min_size=1,
        max_size=7,
    )
)


@settings(max_examples=150, deadline=None)
@given(members=member_strategy, piece_length=st.integers(1, 64), cut=st.integers(0, 63))
def test_matches_the_naive_per_piece_model(
    members: list[tuple[str, float | None]], piece_length: int, cut: int
) -> None:
    count = len(members[0][0])
    total_length = piece_length * count - cut % piece_length
    ours, *others = members
    health = swarm_health(
        have=bits(ours[0]),
        peers=[
            PeerView(f"p{i}", bits(pattern), completion_rate=rate)
            for i, (pattern, rate) in enumerate(others)
        ],
        piece_length=piece_length,
        total_length=total_length,
        self_completion_rate=ours[1],
    )
    rarest, copies, seed_only, missing, death = naive(members, piece_length, total_length)
    assert health.rarest_availability == rarest
    assert health.distributed_copies == pytest.approx(copies)
    assert health.seed_only_pieces == seed_only
    assert health.missing_pieces == missing
    if death is None:
        assert health.time_to_death is None
    else:
        assert health.time_to_death == pytest.approx(death)
