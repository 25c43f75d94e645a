"""BEP 16 super-seeding: rarest reveals, holding back until shared, one upload per piece."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.bitfield import Bitfield
from opendistro.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from opendistro.swarm.superseed import SuperSeeder


def bits(length: int, indices: list[int]) -> Bitfield:
    field = Bitfield(length)
    for index in indices:
        field.set(index)
    return field


def seeder(num_pieces: int, *, strict: bool = True, max_copies: int | None = 2) -> SuperSeeder:
    return SuperSeeder(num_pieces, rng=random.Random(3), strict=strict, max_copies=max_copies)


def test_a_newcomer_is_offered_a_piece_nobody_has() -> None:
    subject = seeder(4)
    subject.peer_joined("a", bits(4, [0, 1]))
    subject.peer_joined("b", bits(4, [0]))
    subject.peer_joined("c", None)
    subject.peer_joined("d", None)
    first = subject.piece_to_offer("c")
    second = subject.piece_to_offer("d")
    # pieces 2 and 3 exist nowhere; a piece on its way to c counts as taken
    assert {first, second} == {2, 3}


def test_once_everything_was_offered_the_rarest_piece_comes_next() -> None:
    subject = seeder(3)
    subject.peer_joined("a", bits(3, [0, 1, 2]))
    subject.peer_joined("b", bits(3, [0, 1]))
    subject.peer_joined("c", bits(3, [1]))
    subject.peer_joined("new", None)
    assert subject.piece_to_offer("new") == 2


def test_the_next_piece_waits_until_the_last_one_is_seen_at_another_peer() -> None:
    subject = seeder(8)
    subject.peer_joined("a", None)
    subject.peer_joined("b", None)
    offered = subject.piece_to_offer("a")
    assert offered is not None
    assert subject.piece_to_offer("a") is None  # a has not even fetched it
    subject.peer_has("a", offered)
    assert subject.piece_to_offer("a") is None  # a fetched it but kept it to itself
    subject.peer_has("b", offered)
    following = subject.piece_to_offer("a")
    assert following is not None
    assert following != offered


def test_a_peer_may_download_only_the_pieces_revealed_to_it() -> None:
    subject = seeder(8)
    subject.peer_joined("a", None)
    subject.peer_joined("b", None)
    assert not any(subject.may_upload("a", index) for index in range(8))
    for_a = subject.piece_to_offer("a")
    for_b = subject.piece_to_offer("b")
    assert for_a is not None and for_b is not None
    assert subject.may_upload("a", for_a)
    assert not subject.may_upload("a", for_b)
    assert subject.may_upload("b", for_b)
    assert not subject.may_upload("b", for_a)
    assert [index for index in range(8) if subject.may_upload("a", index)] == [for_a]
    assert subject.offered_to("a") == {for_a}
    assert not subject.may_upload("stranger", for_a)


def test_a_lone_peer_is_not_stalled() -> None:
    subject = seeder(3)
    subject.peer_joined("only", None)
    revealed = []
    while (index := subject.piece_to_offer("only")) is not None:
        revealed.append(index)
        subject.peer_has("only", index)
    assert sorted(revealed) == [0, 1, 2]


def test_relaxed_mode_offers_the_next_piece_once_the_last_arrived() -> None:
    subject = seeder(4, strict=False)
    subject.peer_joined("a", None)
    subject.peer_joined("b", None)
    offered = subject.piece_to_offer("a")
    assert offered is not None
    assert subject.piece_to_offer("a") is None
    subject.peer_has("a", offered)
    assert subject.piece_to_offer("a") not in (None, offered)


def test_a_peer_with_everything_is_offered_nothing() -> None:
    subject = seeder(4)
    subject.peer_joined("seed", Bitfield.full(4))
    assert subject.piece_to_offer("seed") is None
    assert subject.piece_to_offer("unknown") is None


def test_pieces_held_only_by_a_departed_peer_become_rare_again() -> None:
    subject = seeder(3)
    subject.peer_joined("a", bits(3, [0, 1]))
    subject.peer_joined("b", bits(3, [0, 2]))
    subject.peer_left("b")
    subject.peer_left("b")  # teardown may repeat
    subject.peer_joined("c", bits(3, [0]))
    assert subject.piece_to_offer("c") == 2


def test_a_departed_peers_unfetched_piece_is_offered_to_the_next_peer() -> None:
    subject = seeder(2)
    subject.peer_joined("a", None)
    lost = subject.piece_to_offer("a")
    assert lost is not None
    subject.peer_left("a")
    subject.peer_joined("b", bits(2, [1 - lost]))
    assert subject.piece_to_offer("b") == lost


def test_bad_input_raises_typed_errors() -> None:
    with pytest.raises(LocalProtocolError, match="negative"):
        seeder(-1)
    subject = seeder(4)
    subject.peer_joined("a", None)
    with pytest.raises(RemoteProtocolError):
        subject.peer_has("a", 4)
    with pytest.raises(RemoteProtocolError):
        subject.peer_has("a", -1)
    with pytest.raises(LocalProtocolError):
        subject.peer_has("ghost", 0)
    with pytest.raises(LocalProtocolError):
        subject.peer_joined("a", None)
    with pytest.raises(LocalProtocolError):
        subject.peer_joined("b", Bitfield(5))


def _simulate(
    num_pieces: int, num_peers: int, seed: int, *, greedy: bool, max_copies: int | None = 2
) -> Counter[int]:
    """Peers trade among themselves and fetch from the seed only what it revealed.

    Every step each peer fetches one missing piece from any source that has it,
    picked at random (the seed is a source only for pieces revealed to that
    peer); a ``greedy`` peer takes what the seed revealed first, as a peer with
    a fast link to the seed would. Returns how often the seed uploaded each piece.
    """
    rng = random.Random(seed)
    subject = SuperSeeder(num_pieces, rng=random.Random(seed + 1), max_copies=max_copies)
    keys = [f"peer{number}" for number in range(num_peers)]
    have = {key: set[int]() for key in keys}
    revealed = {key: set[int]() for key in keys}
    for key in keys:
        subject.peer_joined(key, None)
    uploads: Counter[int] = Counter()
    for _ in range(50 * num_pieces):
        if all(len(pieces) == num_pieces for pieces in have.values()):
            return uploads
        for key in keys:
            offer = subject.piece_to_offer(key)
            if offer is not None:
                revealed[key].add(offer)
        for key in rng.sample(keys, len(keys)):
            others = [have[other] for other in keys if other != key]
            from_peers = set().union(*others) - have[key]
            from_seed = revealed[key] - have[key]
            seed_offers = [(True, index) for index in sorted(from_seed)]
            peer_offers = [(False, index) for index in sorted(from_peers)]
            choices = seed_offers if greedy and seed_offers else seed_offers + peer_offers
            if not choices:
                continue
            from_the_seed, index = rng.choice(choices)
            if from_the_seed:
                assert subject.may_upload(key, index)
                uploads[index] += 1
            have[key].add(index)
            subject.peer_has(key, index)
    raise AssertionError("the swarm never completed")


@pytest.mark.parametrize(
    ("num_pieces", "num_peers", "seed", "greedy"),
    [(40, 4, 1, False), (64, 6, 2, False), (30, 3, 3, True), (64, 6, 4, True), (100, 10, 5, True)],
)
def test_the_seed_uploads_each_piece_about_once(
    num_pieces: int, num_peers: int, seed: int, greedy: bool
) -> None:
    uploads = _simulate(num_pieces, num_peers, seed, greedy=greedy)
    assert set(uploads) == set(range(num_pieces))  # the seed is the only first source
    assert uploads.total() <= 1.1 * num_pieces
    assert max(uploads.values()) <= 2


@pytest.mark.parametrize("greedy", [False, True])
def test_with_one_copy_allowed_the_seed_uploads_each_piece_exactly_once(greedy: bool) -> None:
    uploads = _simulate(64, 6, 7, greedy=greedy, max_copies=1)
    assert uploads == Counter(range(64))


def test_without_a_copy_cap_a_greedy_swarm_drains_the_seed() -> None:
    capped = _simulate(64, 6, 4, greedy=True).total()
    uncapped = _simulate(64, 6, 4, greedy=True, max_copies=None).total()
    assert uncapped > 2 * capped


def test_pieces_with_enough_copies_are_left_to_the_swarm() -> None:
    subject = seeder(3, max_copies=2)
    subject.peer_joined("a", bits(3, [0, 1, 2]))
    subject.peer_joined("b", bits(3, [0, 1]))
    subject.peer_joined("c", bits(3, [2]))
    subject.peer_joined("new", None)
    assert subject.piece_to_offer("new") is None  # every piece is at two peers already
    subject.peer_left("c")
    assert subject.piece_to_offer("new") == 2
    assert subject.piece_to_offer("other") is None


def test_a_bad_copy_cap_is_refused() -> None:
    with pytest.raises(ConfigError):
        SuperSeeder(4, max_copies=0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["join", "have", "leave", "offer"]), st.integers(0, 4), st.integers(0, 9)
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=operations, max_copies=st.sampled_from([1, 2, 3, None]), seed=st.integers(0, 99))
def test_offers_respect_the_rules_under_any_sequence_of_events(
    ops: list[tuple[str, int, int]], max_copies: int | None, seed: int
) -> None:
    """A reference model of who has and is fetching what checks every offer."""
    num_pieces = 10
    subject = SuperSeeder(num_pieces, rng=random.Random(seed), max_copies=max_copies)
    have: dict[int, set[int]] = {}
    offered: dict[int, list[int]] = {}
    for action, key, index in ops:
        if action == "join" and key not in have:
            subject.peer_joined(key, bits(num_pieces, [index]))
            have[key], offered[key] = {index}, []
        elif action == "have" and key in have:
            subject.peer_has(key, index)
            have[key].add(index)
        elif action == "leave":
            subject.peer_left(key)
            have.pop(key, None)
            offered.pop(key, None)
        elif action == "offer":
            piece = subject.piece_to_offer(key)
            if piece is None:
                continue
            assert key in have
            assert piece not in have[key]
            assert piece not in offered[key]
            holders = sum(piece in pieces for pieces in have.values())
            fetching = sum(
                1
                for other, pieces in offered.items()
                if pieces and pieces[-1] == piece and piece not in have[other]
            )
            assert max_copies is None or holders + fetching < max_copies
            if offered[key]:
                last = offered[key][-1]
                others_have = any(last in have[other] for other in have if other != key)
                alone = len(have) == 1 and last in have[key]
                assert others_have or alone  # the last piece was passed on first
            offered[key].append(piece)
        for peer_key in have:
            for number in range(num_pieces):
                assert subject.may_upload(peer_key, number) == (number in offered[peer_key])


def test_a_piece_announced_again_counts_once() -> None:
    subject = seeder(3)
    subject.peer_joined("b", None)
    for _ in range(3):
        subject.peer_has("b", 2)  # repeated Haves: b still holds one copy of piece 2
    subject.peer_joined("c", bits(3, [0, 1]))
    subject.peer_joined("d", bits(3, [0, 1]))
    subject.peer_joined("e", bits(3, [1]))
    subject.peer_joined("new", None)
    # copies: piece 2 once, 0 twice, 1 three times (counting b's Haves thrice would make 0 rarest)
    assert subject.piece_to_offer("new") == 2
