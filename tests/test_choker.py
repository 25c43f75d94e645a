"""The choker: tit-for-tat, optimistic unchokes, seed round robin, bounded memory."""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.errors import ConfigError
from opendistro.swarm.choker import Choker, PeerStats

OLD = -1000.0  # connected long before any round in these tests


def peer(
    key: str,
    rate: float = 0.0,
    *,
    interested: bool = True,
    up: float = 0.0,
    connected_at: float = OLD,
    seed: bool = False,
    snubbed: bool = False,
) -> PeerStats:
    return PeerStats(
        key=key,
        interested=interested,
        download_rate=rate,
        upload_rate=up,
        connected_at=connected_at,
        is_seed=seed,
        snubbed=snubbed,
    )


def choker(**kwargs: object) -> Choker:
    return Choker(rng=random.Random(11), **kwargs)  # type: ignore[arg-type]


# -- leeching: tit-for-tat --------------------------------------------------------


def test_highest_reciprocators_get_the_regular_slots() -> None:
    peers = [peer(f"p{rate}", rate) for rate in (10, 60, 20, 50, 30, 40)]
    unchoked = choker(slots=4, optimistic_slots=0).rechoke(peers, 0.0, seeding=False)
    assert unchoked == {"p60", "p50", "p40", "p30"}


def test_optimistic_unchoke_comes_from_the_peers_left_out() -> None:
    peers = [peer(f"p{rate}", rate) for rate in (10, 60, 20, 50, 30, 40)]
    subject = choker(slots=4, optimistic_slots=1)
    unchoked = subject.rechoke(peers, 0.0, seeding=False)
    assert len(subject.optimistic) == 1
    assert subject.optimistic <= {"p10", "p20"}
    assert unchoked == {"p60", "p50", "p40", "p30"} | subject.optimistic


def test_snubbed_and_seed_peers_never_get_a_regular_slot() -> None:
    peers = [
        peer("snubbed", 1000, snubbed=True),
        peer("seed", 900, seed=True),
        peer("slow", 1),
        peer("slower", 0.5),
    ]
    subject = choker(slots=2, optimistic_slots=1)
    for round_number in range(60):
        unchoked = subject.rechoke(peers, round_number * 10.0, seeding=False)
        assert "seed" not in unchoked
        assert unchoked - subject.optimistic == {"slow", "slower"}
    # the snubbed peer's one way back is the optimistic slot
    assert subject.optimistic == {"snubbed"}


def test_uninterested_peers_are_never_unchoked() -> None:
    peers = [peer("idle", 10_000, interested=False), peer("a", 1), peer("b", 2)]
    subject = choker(slots=1, optimistic_slots=1)
    for round_number in range(30):
        unchoked = subject.rechoke(peers, round_number * 10.0, seeding=False)
        assert "idle" not in unchoked
        assert unchoked == {"a", "b"}


def test_equal_rates_are_ranked_at_random_not_by_connection_order() -> None:
    peers = [peer(f"p{number}", 5.0) for number in range(10)]
    subject = choker(slots=1, optimistic_slots=0)
    winners = Counter(
        next(iter(subject.rechoke(peers, number * 10.0, seeding=False))) for number in range(300)
    )
    assert len(winners) == 10
    assert max(winners.values()) < 80  # about 30 each


def test_among_equal_reciprocators_peers_using_their_slot_are_kept() -> None:
    # Nobody uploads to us yet (a fresh swarm); two peers are downloading from us.
    peers = [peer(f"idle{number}") for number in range(8)]
    peers += [peer("busy1", up=3.0), peer("busy2", up=1.0)]
    subject = choker(slots=2, optimistic_slots=0)
    for round_number in range(20):
        assert subject.rechoke(peers, round_number * 10.0, seeding=False) == {"busy1", "busy2"}


def test_reciprocation_still_outranks_use_of_the_slot() -> None:
    peers = [peer("giver", 1.0), peer("taker", 0.0, up=50.0)]
    assert choker(slots=1, optimistic_slots=0).rechoke(peers, 0.0, seeding=False) == {"giver"}


def test_fewer_candidates_than_slots_unchokes_them_all() -> None:
    peers = [peer("a", 0.0), peer("b", 3.0)]
    assert choker(slots=4, optimistic_slots=1).rechoke(peers, 0.0, seeding=False) == {"a", "b"}


# -- timing ---------------------------------------------------------------------


def test_a_round_is_due_at_first_and_then_every_interval() -> None:
    subject = choker(rechoke_interval=10.0)
    assert subject.due(0.0)
    subject.rechoke([peer("a", 1)], 0.0, seeding=False)
    assert not subject.due(0.0)
    assert not subject.due(9.99)
    assert subject.due(10.0)
    subject.rechoke([peer("a", 1)], 12.0, seeding=False)
    assert not subject.due(21.9)
    assert subject.due(22.0)


def test_optimistic_unchoke_holds_for_thirty_seconds_then_rotates() -> None:
    peers = [peer("top", 100)] + [peer(f"p{number}", 1) for number in range(8)]
    subject = choker(slots=1, optimistic_slots=1)
    windows: list[frozenset[object]] = []
    for round_number in range(60):
        now = round_number * 10.0
        subject.rechoke(peers, now, seeding=False)
        if round_number % 3 == 0:
            windows.append(subject.optimistic)
        else:
            assert subject.optimistic == windows[-1]  # fixed within its 30 s
        assert len(subject.optimistic) == 1
        assert "top" not in subject.optimistic
    changes = sum(1 for before, after in pairwise(windows) if before != after)
    assert changes >= len(windows) // 2  # 8 candidates: a rotation usually picks another


def test_every_interested_peer_is_eventually_unchoked_optimistically() -> None:
    peers = [peer("top", 100)] + [peer(f"p{number}", 1, snubbed=True) for number in range(8)]
    subject = choker(slots=1, optimistic_slots=1)
    seen: set[object] = set()
    for round_number in range(3 * 60):
        subject.rechoke(peers, round_number * 10.0, seeding=False)
        seen |= subject.optimistic
    assert seen == {f"p{number}" for number in range(8)}


def test_an_optimistic_peer_that_leaves_or_loses_interest_is_replaced_next_round() -> None:
    peers = [peer(f"p{number}", 1) for number in range(5)]
    subject = choker(slots=0, optimistic_slots=1)
    subject.rechoke(peers, 0.0, seeding=False)
    (first,) = subject.optimistic
    remaining = [stats for stats in peers if stats.key != first]
    unchoked = subject.rechoke(remaining, 10.0, seeding=False)
    assert len(subject.optimistic) == 1
    assert first not in subject.optimistic
    assert unchoked == subject.optimistic
    (second,) = subject.optimistic
    bored = [peer(str(stats.key), 1, interested=stats.key != second) for stats in remaining]
    subject.rechoke(bored, 20.0, seeding=False)
    assert len(subject.optimistic) == 1
    assert second not in subject.optimistic


def test_newcomers_are_about_three_times_as_likely_to_be_chosen() -> None:
    subject = choker(slots=0, optimistic_slots=1, new_peer_weight=3)
    picks: Counter[object] = Counter()
    rounds = 3000
    for number in range(rounds):
        now = number * 30.0  # every round is a rotation
        peers = [peer("new", connected_at=now - 5.0)] + [peer(f"old{n}") for n in range(3)]
        subject.rechoke(peers, now, seeding=False)
        picks.update(subject.optimistic)
    mean_old = sum(picks[f"old{n}"] for n in range(3)) / 3
    assert picks.total() == rounds
    assert 2.2 < picks["new"] / mean_old < 4.0  # weight 3 of 6: half the picks


# -- seeding: round robin ---------------------------------------------------------


@pytest.mark.parametrize(("leechers", "slots", "optimistic"), [(10, 3, 0), (10, 3, 1), (7, 2, 1)])
def test_seeding_unchokes_every_leecher_within_ceil_n_over_slots_rounds(
    leechers: int, slots: int, optimistic: int
) -> None:
    peers = [peer(f"p{number}", rate=number * 1000.0) for number in range(leechers)]
    subject = choker(slots=slots, optimistic_slots=optimistic)
    rounds = math.ceil(leechers / slots)
    for start in range(0, 4 * rounds, rounds):
        seen: set[object] = set()
        for round_number in range(start, start + rounds):
            unchoked = subject.rechoke(peers, round_number * 10.0, seeding=True)
            assert len(unchoked) <= slots + optimistic
            seen |= unchoked
        assert seen == {stats.key for stats in peers}


def test_seeding_rotates_regular_slots_each_round() -> None:
    peers = [peer(f"p{number}", rate=10.0**number) for number in range(6)]
    subject = choker(slots=2, optimistic_slots=0)
    previous = subject.rechoke(peers, 0.0, seeding=True)
    for round_number in range(1, 12):
        unchoked = subject.rechoke(peers, round_number * 10.0, seeding=True)
        assert len(unchoked) == 2
        assert not unchoked & previous  # download rate counts for nothing when seeding
        previous = unchoked


def test_seeding_serves_slowest_served_first_among_never_unchoked() -> None:
    peers = [peer("fast", up=900.0), peer("slow", up=10.0), peer("mid", up=300.0)]
    unchoked = choker(slots=1, optimistic_slots=0).rechoke(peers, 0.0, seeding=True)
    assert unchoked == {"slow"}


def test_seeding_ignores_snubbing_but_not_interest() -> None:
    peers = [peer("snub", snubbed=True), peer("idle", interested=False), peer("seed", seed=True)]
    unchoked = choker(slots=2, optimistic_slots=1).rechoke(peers, 0.0, seeding=True)
    assert unchoked == {"snub"}


# -- memory -----------------------------------------------------------------------


def test_memory_of_departed_peers_is_forgotten() -> None:
    subject = choker(slots=1, optimistic_slots=1)
    subject.rechoke([peer("a", 5), peer("b", 1)], 0.0, seeding=True)
    assert subject.last_unchoked("a") == 0.0
    assert subject.last_unchoked("b") == 0.0
    assert subject.optimistic
    subject.rechoke([peer("c", 1)], 10.0, seeding=True)
    assert subject.last_unchoked("a") is None
    assert subject.last_unchoked("b") is None
    assert subject.last_unchoked("c") == 10.0
    assert subject.optimistic <= {"c"}


def test_duplicate_keys_count_once() -> None:
    peers = [peer("a", 5), peer("a", 5), peer("b", 1)]
    assert choker(slots=2, optimistic_slots=0).rechoke(peers, 0.0, seeding=False) == {"a", "b"}


@pytest.mark.parametrize(
    "settings_",
    [
        {"slots": -1},
        {"optimistic_slots": -1},
        {"rechoke_interval": 0.0},
        {"optimistic_interval": -5.0},
        {"new_peer_window": -1.0},
        {"new_peer_weight": 0},
        {"rechoke_interval": math.nan},
    ],
)
def test_bad_settings_are_refused(settings_: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Choker(**settings_)  # type: ignore[arg-type]


# -- properties -------------------------------------------------------------------

peer_stats = st.builds(
    PeerStats,
    key=st.integers(0, 15),
    interested=st.booleans(),
    download_rate=st.floats(0, 1e9, allow_nan=False),
    upload_rate=st.floats(0, 1e9, allow_nan=False),
    connected_at=st.floats(-1e4, 1e4, allow_nan=False),
    is_seed=st.booleans(),
    snubbed=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(
            st.lists(peer_stats, max_size=12, unique_by=lambda stats: stats.key),
            st.floats(0, 100, allow_nan=False),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    ),
    slots=st.integers(0, 5),
    optimistic_slots=st.integers(0, 3),
    seed=st.integers(0, 2**32),
)
def test_rechoke_only_unchokes_interested_leechers_within_the_slot_budget(
    rounds: list[tuple[list[PeerStats], float, bool]],
    slots: int,
    optimistic_slots: int,
    seed: int,
) -> None:
    subject = Choker(slots=slots, optimistic_slots=optimistic_slots, rng=random.Random(seed))
    now = 0.0
    for peers, step, seeding in rounds:
        now += step
        unchoked = subject.rechoke(peers, now, seeding=seeding)
        by_key = {stats.key: stats for stats in peers}
        assert unchoked <= by_key.keys()
        assert all(by_key[key].interested and not by_key[key].is_seed for key in unchoked)
        assert len(unchoked) <= slots + optimistic_slots
        assert subject.optimistic <= unchoked
        assert len(subject.optimistic) <= optimistic_slots
        if not seeding:
            assert not any(by_key[key].snubbed for key in unchoked - subject.optimistic)
        eligible = [stats for stats in peers if stats.interested and not stats.is_seed]
        regular_ok = [stats for stats in eligible if seeding or not stats.snubbed]
        if (regular_ok and slots) or (eligible and optimistic_slots):
            assert unchoked  # nobody who could use a slot is left waiting on an empty round
        assert not subject.due(now)
        for key in range(16):
            if key not in by_key:
                assert subject.last_unchoked(key) is None


def test_peers_named_only_in_present_are_remembered_but_never_unchoked() -> None:
    # A session with many connections passes stats for the unchokable ones only.
    subject = choker(slots=1, optimistic_slots=0)
    assert subject.rechoke([peer("a", 5)], 0.0, seeding=True) == {"a"}
    unchoked = subject.rechoke([peer("b", 1)], 10.0, seeding=True, present={"a", "b"})
    assert unchoked == {"b"}
    assert subject.last_unchoked("a") == 0.0 and subject.last_unchoked("b") == 10.0
    # Once "a" is gone from the connections, the choker forgets it.
    subject.rechoke([peer("b", 1)], 20.0, seeding=True, present={"b"})
    assert subject.last_unchoked("a") is None
    # Without ``present``, the peers given are the connections: a round without
    # "b" forgets it.
    subject.rechoke([peer("c", 1)], 30.0, seeding=True)
    assert subject.last_unchoked("b") is None and subject.last_unchoked("c") == 30.0
