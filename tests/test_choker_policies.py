"""Choker policies: the deficit policy against plain tit-for-tat, credit, newcomers, seeding."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from opendistro.errors import ConfigError
from opendistro.swarm.choker import (
    CHOKING_POLICIES,
    MAX_OWED_SLOTS_FACTOR,
    Choker,
    PeerStats,
)
from opendistro.swarm.session import SessionConfig

OLD = -1000.0


def peer(
    key: str,
    *,
    gave: float = 0.0,
    took: float = 0.0,
    credit: float = 0.0,
    rate: float = 0.0,
    sending: float = 0.0,
    connected_at: float = OLD,
    snubbed: bool = False,
) -> PeerStats:
    """``gave``: bytes it sent us on this connection; ``took``: bytes we sent it;
    ``rate``: bytes/s it sends us now; ``sending``: bytes/s we send it now."""
    return PeerStats(
        key=key,
        interested=True,
        download_rate=rate,
        upload_rate=sending,
        connected_at=connected_at,
        snubbed=snubbed,
        credit=credit,
        downloaded=gave,
        uploaded=took,
    )


def deficit_choker(**kwargs: object) -> Choker:
    return Choker(policy="deficit", rng=random.Random(5), **kwargs)  # type: ignore[arg-type]


def test_regular_slots_go_to_the_largest_deficits() -> None:
    peers = [
        peer("owed_most", gave=900, took=100),  # +800
        peer("owed", gave=500, took=400),  # +100
        peer("even", gave=300, took=300),  # 0
        peer("overserved", gave=100, took=900),  # -800
    ]
    subject = deficit_choker(slots=2, optimistic_slots=0)
    assert subject.rechoke(peers, 0.0, seeding=False) == {"owed_most", "owed"}


def test_deficit_outranks_a_higher_recent_rate() -> None:
    # Tit-for-tat looks at the rate only; the deficit policy at the books.
    peers = [peer("steady", gave=5000, took=1000, rate=10), peer("burst", gave=900, rate=900)]
    assert deficit_choker(slots=1, optimistic_slots=0).rechoke(
        peers, 0.0, seeding=False
    ) == {"steady"}
    tit_for_tat = Choker(slots=1, optimistic_slots=0, rng=random.Random(5))
    assert tit_for_tat.rechoke(peers, 0.0, seeding=False) == {"burst"}


def test_earlier_credit_counts_as_what_a_peer_gave() -> None:
    peers = [peer("remembered", credit=4000, took=1000), peer("fresh", gave=2000)]
    assert deficit_choker(slots=1, optimistic_slots=0).rechoke(
        peers, 0.0, seeding=False
    ) == {"remembered"}
    # A peer that took more than it gave before starts behind one that gave little.
    peers = [peer("taker", credit=-5000, gave=3000), peer("giver", gave=1000)]
    assert deficit_choker(slots=1, optimistic_slots=0).rechoke(
        peers, 0.0, seeding=False
    ) == {"giver"}


def test_free_riders_never_outrank_a_peer_that_gave_anything() -> None:
    # The contributor took far more than it gave; the free riders were never served.
    peers = [peer("contributor", gave=1, took=10**9)]
    peers += [peer(f"rider{number}") for number in range(6)]
    subject = deficit_choker(slots=1, optimistic_slots=1)
    for round_number in range(30):
        unchoked = subject.rechoke(peers, round_number * 10.0, seeding=False)
        assert "contributor" in unchoked - subject.optimistic


def test_free_riders_get_only_the_optimistic_share_while_contributors_are_interested() -> None:
    contributors = [peer(f"c{number}", gave=1000 * (number + 1)) for number in range(4)]
    riders = [peer(f"r{number}") for number in range(4)]
    subject = deficit_choker(slots=4, optimistic_slots=1)
    counts: Counter[str] = Counter()
    for round_number in range(90):
        unchoked = subject.rechoke(contributors + riders, round_number * 10.0, seeding=False)
        counts.update(str(key) for key in unchoked)
        assert unchoked - subject.optimistic == {stats.key for stats in contributors}
    # ...and through the optimistic slot every rider is served now and then.
    assert all(counts[f"r{number}"] > 0 for number in range(4))


def test_newcomers_keep_a_weighted_optimistic_share() -> None:
    subject = deficit_choker(slots=1, optimistic_slots=1, new_peer_weight=3)
    picks: Counter[object] = Counter()
    rounds = 1500
    for number in range(rounds):
        now = number * 30.0  # every round is a rotation
        peers = [peer("owed", gave=10**6), peer("new", connected_at=now - 5.0)]
        peers += [peer(f"old{n}", took=10**5) for n in range(3)]
        subject.rechoke(peers, now, seeding=False)
        picks.update(subject.optimistic)
    mean_old = sum(picks[f"old{n}"] for n in range(3)) / 3
    assert picks["owed"] == 0  # it holds the regular slot
    assert 2.2 < picks["new"] / mean_old < 4.0


def test_snubbed_peers_get_no_regular_slot_whatever_their_deficit() -> None:
    peers = [peer("snubbed", gave=10**9, snubbed=True), peer("other", gave=1, took=50)]
    subject = deficit_choker(slots=1, optimistic_slots=0)
    assert subject.rechoke(peers, 0.0, seeding=False) == {"other"}


def test_a_deficit_seed_serves_the_least_served_so_uploads_even_out() -> None:
    # Simulate byte accounting: each regular slot gets 100 bytes per round.
    served = {f"p{number}": 0.0 for number in range(7)}
    subject = deficit_choker(slots=2, optimistic_slots=0)
    for round_number in range(70):
        peers = [peer(key, took=bytes_sent) for key, bytes_sent in served.items()]
        for key in subject.rechoke(peers, round_number * 10.0, seeding=True):
            served[str(key)] += 100
    assert max(served.values()) - min(served.values()) <= 100


def test_a_seed_repays_the_peers_that_fed_it_first() -> None:
    peers = [peer("fed_us", gave=5000, took=1000), peer("stranger"), peer("other", took=10)]
    subject = deficit_choker(slots=1, optimistic_slots=0)
    assert subject.rechoke(peers, 0.0, seeding=True) == {"fed_us"}


def test_tit_for_tat_is_still_the_default_and_unknown_policies_are_refused() -> None:
    assert Choker().policy == "tit-for-tat"
    assert SessionConfig().choking == "tit-for-tat"
    assert set(CHOKING_POLICIES) == {"tit-for-tat", "deficit"}
    with pytest.raises(ConfigError):
        Choker(policy="propshare-ish")
    with pytest.raises(ConfigError):
        SessionConfig(choking="nice")


def test_while_leeching_every_peer_owed_above_the_water_level_is_unchoked() -> None:
    # We send 100 B/s in all, so 1,000 bytes before the next round (10 s). The
    # two largest deficits hold the slots; the next ones are unchoked too while
    # the bytes needed to bring the larger ones down to theirs stay within that.
    peers = [peer("top", gave=5000, sending=60), peer("second", gave=4800, sending=40)]
    peers += [peer("third", gave=4500), peer("fourth", gave=4300), peer("low", gave=100)]
    subject = deficit_choker(slots=2, optimistic_slots=0)
    # above "third": 500 + 300 = 800 < 1000; above "fourth": 700 + 500 + 200 = 1400.
    assert subject.rechoke(peers, 0.0, seeding=False) == {"top", "second", "third"}


def test_the_owed_peers_unchoked_at_once_are_capped() -> None:
    peers = [peer(f"owed{n}", gave=1000 + n, sending=10**6) for n in range(40)]
    subject = deficit_choker(slots=2, optimistic_slots=0)
    unchoked = subject.rechoke(peers, 0.0, seeding=False)
    assert unchoked == {f"owed{n}" for n in range(39, 39 - 2 * MAX_OWED_SLOTS_FACTOR, -1)}


def test_left_over_slots_go_to_contributors_fastest_first_never_to_takers() -> None:
    peers = [
        peer("owed", gave=900, took=100),
        peer("slow_contributor", gave=100, took=5000, rate=10),
        peer("fast_contributor", gave=100, took=9000, rate=500),
        peer("remembered", credit=10, took=20_000, rate=50),
        peer("taker", took=100),  # served once, never gave anything
        peer("untried"),  # never served, never gave: the optimistic slot is its way in
    ]
    subject = deficit_choker(slots=3, optimistic_slots=0)
    assert subject.rechoke(peers, 0.0, seeding=False) == {
        "owed", "fast_contributor", "remembered"
    }
    wide = deficit_choker(slots=6, optimistic_slots=0)
    assert wide.rechoke(peers, 0.0, seeding=False) == {
        "owed", "fast_contributor", "remembered", "slow_contributor"
    }


def test_a_peer_without_unchoke_slots_unchokes_nobody_it_owes() -> None:
    # A free rider's session runs with no slots at all: owing is not enough.
    subject = deficit_choker(slots=0, optimistic_slots=0)
    assert subject.rechoke([peer("owed", gave=10**6, sending=10**6)], 0.0, seeding=False) == set()


def test_a_seed_serves_peers_that_fed_it_before_strangers_it_served_less() -> None:
    peers = [peer("contributor", gave=10, took=5000), peer("stranger", took=100)]
    subject = deficit_choker(slots=1, optimistic_slots=0)
    assert subject.rechoke(peers, 0.0, seeding=True) == {"contributor"}
