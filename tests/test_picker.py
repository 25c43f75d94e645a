"""The piece picker: rarest first, partial pieces first, endgame, and recovery."""

from __future__ import annotations

import random

import pytest

from opendistro.bitfield import Bitfield
from opendistro.errors import ConfigError
from opendistro.swarm.picker import BLOCK_SIZE, SKIP, PiecePicker

PIECE = 4 * BLOCK_SIZE


def make_picker(num_pieces: int = 8, total: int | None = None, **kwargs: object) -> PiecePicker:
    total = num_pieces * PIECE if total is None else total
    kwargs.setdefault("random_first", 0)
    return PiecePicker(
        num_pieces, piece_length=PIECE, total_length=total, rng=random.Random(7), **kwargs
    )


def bits(length: int, indices: list[int]) -> Bitfield:
    field = Bitfield(length)
    for index in indices:
        field.set(index)
    return field


def test_rarest_piece_is_started_first() -> None:
    picker = make_picker()
    common = bits(8, list(range(8)))
    for _ in range(3):
        picker.peer_has_bitfield(common)
    picker.peer_has_bitfield(bits(8, [5]))  # piece 5 now the most common
    for index in range(8):
        if index != 2:
            picker.peer_has(index)  # piece 2 now the rarest
    blocks = picker.pick("a", common, 1)
    assert blocks == [(2, 0, BLOCK_SIZE)]


def test_partial_piece_is_finished_before_a_new_one_starts() -> None:
    picker = make_picker()
    everything = bits(8, list(range(8)))
    picker.peer_has_bitfield(everything)
    first = picker.pick("a", everything, 2)
    assert {index for index, _, _ in first} == {first[0][0]}
    following = picker.pick("b", everything, 2)
    assert {index for index, _, _ in following} == {first[0][0]}


def test_last_piece_and_block_are_short() -> None:
    total = 2 * PIECE + BLOCK_SIZE + 100
    picker = make_picker(num_pieces=3, total=total)
    only_last = bits(3, [2])
    picker.peer_has_bitfield(only_last)
    blocks = picker.pick("a", only_last, 10)
    assert blocks == [(2, 0, BLOCK_SIZE), (2, BLOCK_SIZE, 100)]


def test_a_piece_completes_once_every_block_arrived() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    blocks = picker.pick("a", has, 10)
    assert len(blocks) == 4
    for block in blocks[:-1]:
        assert picker.block_received("a", block) == (True, set())
        assert not picker.piece_complete(0)
    picker.block_received("a", blocks[-1])
    assert picker.piece_complete(0)
    picker.piece_verified(0)
    assert picker.complete and picker.have.has(0)


def test_endgame_asks_a_second_peer_and_reports_whom_to_cancel() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    first = picker.pick("slow", has, 10)
    assert picker.in_endgame
    duplicates = picker.pick("fast", has, 10)
    assert sorted(duplicates) == sorted(first)
    new, cancel = picker.block_received("fast", duplicates[0])
    assert new and cancel == {"slow"}
    again, _ = picker.block_received("slow", duplicates[0])
    assert not again


def test_an_idle_peer_takes_over_the_last_queued_block_of_a_busier_one() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    picker.peer_has_bitfield(has)
    asked = picker.pick("busy", has, 10)
    assert picker.steal("idle", has) == (asked[-1], "busy")
    # It is now the taker's: arriving from it is new and nobody else needs a cancel.
    assert picker.block_received("idle", asked[-1]) == (True, set())
    # The busy peer keeps the rest, and gives up one more only while it holds two.
    assert picker.steal("idle2", has) == (asked[-2], "busy")
    assert picker.steal("idle3", has) == (asked[-3], "busy")
    assert picker.steal("idle4", has) is None


def test_nothing_is_taken_from_a_peer_with_a_single_request_in_the_piece() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    for number, key in enumerate("abcd"):
        assert picker.pick(key, has, 1) == [(0, number * BLOCK_SIZE, BLOCK_SIZE)]
    assert picker.steal("e", has) is None


def test_nothing_is_taken_from_pieces_the_idle_peer_lacks() -> None:
    picker = make_picker(num_pieces=2)
    picker.peer_has_bitfield(bits(2, [0]))
    picker.pick("busy", bits(2, [0]), 10)
    assert picker.steal("idle", bits(2, [1])) is None


def test_a_piece_that_failed_from_several_peers_is_fetched_again_from_one() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    picker.peer_has_bitfield(has)
    assert len(picker.pick("a", has, 2) + picker.pick("b", has, 2)) == 4
    picker.piece_failed(0, single_source=True)
    again = picker.pick("b", has, 4)
    assert len(again) == 4  # the whole piece, from b alone
    assert picker.pick("a", has, 4) == []  # not even as an endgame duplicate
    # b refuses a block: the piece starts over, whole from another single peer.
    picker.block_received("b", again[1])
    picker.request_failed("b", again[0])
    assert sorted(picker.pick("a", has, 4)) == sorted(again)
    assert picker.pick("b", has, 4) == []


def test_failed_piece_is_downloaded_again() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    for block in picker.pick("a", has, 10):
        picker.block_received("a", block)
    picker.piece_failed(0)
    assert not picker.complete
    assert len(picker.pick("b", has, 10)) == 4


def test_departed_peer_releases_its_requests_and_availability() -> None:
    picker = make_picker(num_pieces=2)
    has = bits(2, [0, 1])
    picker.peer_has_bitfield(has)
    taken = picker.pick("gone", has, 4)
    released = picker.peer_lost("gone", has)
    assert sorted(released) == sorted(taken)
    assert picker.availability(0) == 0
    assert sorted(picker.pick("other", has, 4)) == sorted(taken)


def test_rejected_request_can_be_picked_again() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    blocks = picker.pick("a", has, 1)
    picker.request_failed("a", blocks[0])
    assert picker.pick("b", has, 1) == blocks


def test_padding_blocks_are_never_requested() -> None:
    # one piece whose last two blocks are BEP 47 padding
    picker = make_picker(num_pieces=2, padding=[(2 * BLOCK_SIZE, PIECE)])
    has = bits(2, [0])
    picker.peer_has_bitfield(has)
    blocks = picker.pick("a", has, 10)
    assert blocks == [(0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE)]
    for block in blocks:
        picker.block_received("a", block)
    assert picker.piece_complete(0)


def test_peer_without_wanted_pieces_is_not_interesting() -> None:
    picker = make_picker(num_pieces=2, have=bits(2, [0]))
    assert not picker.interesting(bits(2, [0]))
    assert picker.interesting(bits(2, [1]))
    assert picker.pick("a", bits(2, [0]), 5) == []


def test_pieces_no_peer_announced_are_never_picked() -> None:
    picker = make_picker(num_pieces=2)
    # the peer claims piece 1 but its announcement was never counted
    assert picker.pick("a", bits(2, [1]), 4) == []


def test_endgame_resumes_after_a_request_is_released() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    picker.peer_has_bitfield(has)
    blocks = picker.pick("a", has, 10)
    assert picker.pick("a", has, 10) == []  # nothing to duplicate to the same peer
    picker.request_failed("a", blocks[0])
    assert picker.pick("a", has, 10) == [blocks[0]]


def test_higher_priority_pieces_come_first_and_skipped_ones_never() -> None:
    picker = make_picker(num_pieces=4)
    everything = bits(4, [0, 1, 2, 3])
    picker.peer_has_bitfield(everything)
    picker.peer_has(2)  # 2 is now the most common...
    picker.set_priority(2, 7)  # ...but urgent
    picker.set_priority(3, SKIP)
    order = [picker.pick(key, everything, 4)[0][0] for key in "abc"]
    assert order[0] == 2
    assert 3 not in order
    assert all(index != 3 for index, _, _ in picker.pick("d", everything, 16))  # endgame
    for index in (0, 1, 2):
        picker.piece_verified(index)
    assert picker.complete  # the skipped piece is not waited for


def test_sequential_mode_picks_in_order() -> None:
    picker = make_picker(num_pieces=6, sequential=True)
    everything = bits(6, list(range(6)))
    picker.peer_has_bitfield(everything)
    picker.peer_has(0)
    started = [picker.pick(key, everything, 4)[0][0] for key in "abcdef"]
    assert started == [0, 1, 2, 3, 4, 5]


def test_a_peer_with_nothing_starts_with_random_pieces() -> None:
    starts = set()
    for seed in range(20):
        picker = PiecePicker(
            8, piece_length=PIECE, total_length=8 * PIECE, rng=random.Random(seed)
        )
        everything = bits(8, list(range(8)))
        picker.peer_has_bitfield(everything)
        for index in range(1, 8):
            picker.peer_has(index)  # piece 0 is the rarest
        starts.add(picker.pick("a", everything, 1)[0][0])
    assert len(starts) > 2  # not always the rarest piece 0


def test_a_bad_priority_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        make_picker().set_priority(0, 9)
