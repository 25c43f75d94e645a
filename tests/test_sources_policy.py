"""The source policy: mirrors fill in when the swarm falls short, and step back after."""

from __future__ import annotations

import random

import pytest

from opendistro.bitfield import Bitfield
from opendistro.errors import ConfigError
from opendistro.swarm.picker import BLOCK_SIZE, PiecePicker
from opendistro.swarm.sources import MirrorGate, SourcePolicy

FAST = 10e6


def test_prefer_p2p_opens_mirrors_after_a_second_of_a_stalled_swarm() -> None:
    gate = MirrorGate()
    gate.update(0.0, FAST)
    assert not gate.mirrors_wanted()
    gate.update(10.0, 0.0)
    gate.update(10.5, 0.0)
    assert not gate.mirrors_wanted()  # a blip is not a stall
    gate.update(11.0, 0.0)
    assert gate.mirrors_wanted() and gate.opened_at == 11.0


def test_when_the_last_peer_leaves_mirrors_open_at_once() -> None:
    gate = MirrorGate()
    gate.update(0.0, 0.0, peers_connected=False)
    assert not gate.mirrors_wanted()  # at the start the swarm gets its second to show up
    gate.update(0.5, FAST, peers_connected=True)
    gate.update(3.0, 0.0, peers_connected=False)
    assert gate.mirrors_wanted() and gate.opened_at == 3.0


def test_prefer_p2p_closes_mirrors_only_after_the_swarm_recovered_for_a_while() -> None:
    gate = MirrorGate(recover_after=5.0)
    gate.update(0.0, 0.0)
    gate.update(1.0, 0.0)
    assert gate.mirrors_wanted()
    gate.update(2.0, FAST)
    gate.update(6.0, FAST)
    assert gate.mirrors_wanted()
    gate.update(7.0, FAST)
    assert not gate.mirrors_wanted()


def test_a_slow_swarm_counts_as_falling_short() -> None:
    gate = MirrorGate(min_swarm_rate=1e6)
    gate.update(0.0, 5e5)
    gate.update(1.5, 5e5)
    assert gate.mirrors_wanted()


@pytest.mark.parametrize(
    ("policy", "wanted"),
    [
        (SourcePolicy.FASTEST, True),
        (SourcePolicy.MIRRORS_ONLY, True),
        (SourcePolicy.P2P_ONLY, False),
    ],
)
def test_the_other_policies_do_not_watch_the_swarm(policy: SourcePolicy, wanted: bool) -> None:
    gate = MirrorGate(policy)
    for second in range(5):
        gate.update(float(second), FAST if second % 2 else 0.0)
        assert gate.mirrors_wanted() is wanted
    assert policy.uses_peers is (policy is not SourcePolicy.MIRRORS_ONLY)
    assert policy.uses_mirrors is (policy is not SourcePolicy.P2P_ONLY)


def test_negative_thresholds_are_refused() -> None:
    with pytest.raises(ConfigError):
        MirrorGate(stall_after=-1)


def picker(num_pieces: int = 8) -> PiecePicker[str]:
    return PiecePicker(
        num_pieces,
        piece_length=2 * BLOCK_SIZE,
        total_length=num_pieces * 2 * BLOCK_SIZE,
        rng=random.Random(3),
        random_first=0,
    )


def test_a_mirror_gets_a_run_of_consecutive_pieces_starting_where_peers_have_none() -> None:
    subject = picker()
    everything = Bitfield.full(8)
    subject.peer_has_bitfield(everything)
    for index in range(8):
        if index != 5:
            subject.peer_has(index)  # piece 5 is the rarest, then 6 and 7 follow it
    run = subject.pick_run("mirror", 3)
    assert run == [5, 6, 7]
    picked = subject.pick("peer", everything, 10)  # the other five pieces, two blocks each
    assert sorted({index for index, _, _ in picked}) == [0, 1, 2, 3, 4]


def test_a_failed_mirror_run_is_free_for_any_source_again() -> None:
    subject = picker(4)
    subject.peer_has_bitfield(Bitfield.full(4))
    for index in (0, 2, 3):
        subject.peer_has(index)  # piece 1 is the rarest: runs start there
    run = subject.pick_run("mirror", 4)
    assert run == [1, 2, 3]
    assert subject.pick_run("other mirror", 4) == [0]  # the run is taken
    subject.release_run("mirror")
    assert subject.pick_run("third mirror", 4) == [1, 2, 3]


def test_a_mirror_piece_cancels_peers_asked_for_its_blocks() -> None:
    subject = picker(1)
    has = Bitfield.full(1)
    subject.peer_has_bitfield(has)
    asked = subject.pick("peer", has, 2)
    assert asked and subject.pick_run("mirror", 1) == []  # started by a peer: not a mirror's
    assert subject.run_received("mirror", 0) == {"peer"}
    assert subject.piece_complete(0)


def test_a_mirror_stopping_early_gives_back_only_the_pieces_it_names() -> None:
    subject = picker(4)
    subject.peer_has_bitfield(Bitfield.full(4))
    for index in (1, 2, 3):
        subject.peer_has(index)  # piece 0 is the rarest: the run starts there
    assert subject.pick_run("mirror", 4) == [0, 1, 2, 3]
    subject.release_run("mirror", [2, 3])
    assert subject.pick_run("other mirror", 4) == [2, 3]
    assert subject.run_received("mirror", 0) == set()  # the head is still the mirror's
    assert subject.piece_complete(0)


def test_a_faster_mirror_takes_over_the_untouched_tail_of_a_run() -> None:
    subject = picker(6)
    subject.peer_has_bitfield(Bitfield.full(6))
    for index in range(1, 6):
        subject.peer_has(index)
    assert subject.pick_run("slow", 6) == [0, 1, 2, 3, 4, 5]
    subject.block_received("slow", (3, 0, BLOCK_SIZE))  # piece 3 has begun arriving
    assert subject.hand_over("slow", "fast", [3, 4, 5]) == [4, 5]
    assert subject.run_received("fast", 5) == set()  # no one else was asked for it
    subject.release_run("slow")
    # What the slow mirror gave up is free again (piece 3, half done, first); the fast
    # one keeps piece 4.
    assert subject.pick_run("third", 6) == [3]
    assert subject.pick_run("third", 6) == [0, 1, 2]


def test_a_piece_a_departed_peer_left_half_done_goes_to_the_mirror() -> None:
    subject = picker(4)
    has = Bitfield.full(4)
    subject.peer_has_bitfield(has)
    picked = subject.pick("peer", has, 1)
    assert len(picked) == 1
    index = picked[0][0]
    subject.block_received("peer", picked[0])
    subject.release_peer_requests("peer")  # the peer left with the piece half done
    assert subject.pick_run("mirror", 4) == [index]
    assert subject.run_received("mirror", index) == set()
    assert subject.piece_complete(index)
