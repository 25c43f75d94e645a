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


# -- edge cases and recovery paths ----------------------------------------------------


def test_a_piece_skipped_while_in_progress_is_not_fetched_again_after_it_fails() -> None:
    picker = make_picker(num_pieces=2)
    everything = bits(2, [0, 1])
    picker.peer_has_bitfield(everything)
    (first,) = picker.pick("a", everything, 1)
    picker.set_priority(first[0], SKIP)
    picker.piece_failed(first[0])
    assert {index for index, _, _ in picker.pick("b", everything, 8)} == {1 - first[0]}
    # Wanted again later, it is picked like any other piece.
    picker.set_priority(first[0], 4)
    assert len(picker.pick("c", bits(2, [first[0]]), 8)) == 4


def test_a_single_source_piece_skipped_meanwhile_is_not_restarted() -> None:
    picker = make_picker(num_pieces=2)
    everything = bits(2, [0, 1])
    picker.peer_has_bitfield(everything)
    picker.pick("a", bits(2, [0]), 4)
    picker.piece_failed(0, single_source=True)
    again = picker.pick("b", bits(2, [0]), 1)
    picker.set_priority(0, SKIP)
    picker.request_failed("b", again[0])  # the chosen peer refuses: start over...
    # ...but piece 0 is no longer wanted, so only piece 1 is left to fetch.
    assert {index for index, _, _ in picker.pick("c", everything, 8)} == {1}


def test_setting_the_same_priority_again_changes_nothing() -> None:
    picker = make_picker(num_pieces=2)
    everything = bits(2, [0, 1])
    picker.peer_has_bitfield(everything)
    picker.set_priority(1, SKIP)
    picker.set_priority(1, SKIP)
    picker.piece_verified(0)
    assert picker.complete  # piece 1 was taken out of the missing count once only


def test_priority_of_pieces_in_progress_or_had_keeps_the_missing_count_right() -> None:
    picker = make_picker(num_pieces=3, have=bits(3, [2]))
    everything = bits(3, [0, 1, 2])
    picker.peer_has_bitfield(everything)
    picker.set_priority(2, SKIP)  # had already: the count of missing pieces is unchanged
    picker.set_priority(2, 6)
    blocks = picker.pick("a", bits(3, [0]), 4)  # piece 0 in progress
    picker.set_priority(0, 7)
    for block in blocks:
        picker.block_received("a", block)
    picker.piece_verified(0)
    assert not picker.complete
    picker.piece_verified(1)  # verified without ever being started (found on disk)
    assert picker.complete
    assert picker.pick("a", everything, 4) == []


def test_verifying_a_piece_twice_or_a_skipped_piece_counts_it_once() -> None:
    picker = make_picker(num_pieces=3)
    picker.set_priority(2, SKIP)
    picker.piece_verified(0)
    picker.piece_verified(0)
    assert not picker.complete
    picker.piece_verified(2)  # skipped pieces were never counted as missing
    assert not picker.complete
    picker.piece_verified(1)
    assert picker.complete and picker.have.count == 3


def test_a_departed_peer_without_a_bitfield_still_releases_its_requests() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has(0)
    taken = picker.pick("gone", has, 4)
    assert sorted(picker.peer_lost("gone", None)) == sorted(taken)
    assert picker.availability(0) == 1  # its one announcement stays counted


def test_a_seed_is_interesting_only_while_something_is_missing() -> None:
    picker = make_picker(num_pieces=2)
    seed = Bitfield.full(2)
    assert picker.interesting(seed)
    picker.piece_verified(0)
    picker.set_priority(1, SKIP)
    assert not picker.interesting(seed)


def test_asking_for_nothing_picks_nothing() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    assert picker.pick("a", has, 0) == []
    assert picker.pick_run("mirror", 0) == []
    assert len(picker.pick("a", has, 4)) == 4  # nothing was marked as asked


def test_a_mirror_run_in_sequential_mode_starts_at_the_first_missing_piece() -> None:
    picker = make_picker(num_pieces=4, sequential=True, have=bits(4, [0]))
    assert picker.pick_run("mirror", 2) == [1, 2]
    assert picker.pick_run("mirror", 8) == [3]
    assert picker.pick_run("mirror", 8) == []


def test_releasing_a_mirror_run_keeps_pieces_others_work_on_and_skipped_ones() -> None:
    picker = make_picker(num_pieces=4)
    for index, copies in enumerate([2, 1, 2, 2]):  # piece 1 is the rarest
        for _ in range(copies):
            picker.peer_has(index)
    peer_blocks = picker.pick("peer", bits(4, [0]), 1)  # piece 0 belongs to a peer
    assert peer_blocks[0][0] == 0
    run = picker.pick_run("mirror", 3)
    assert run == [1, 2, 3]
    picker.set_priority(3, SKIP)
    picker.release_run("mirror")
    # Pieces 1 and 2 are new again; skipped 3 is not; the peer's piece 0 stays its own.
    taken = picker.pick("other", bits(4, [1, 2, 3]), 16)
    assert {index for index, _, _ in taken} == {1, 2}
    assert picker.block_received("peer", peer_blocks[0]) == (True, set())


def test_a_run_is_handed_over_only_where_the_old_mirror_is_the_sole_source() -> None:
    picker = make_picker(num_pieces=3)
    for index, copies in enumerate([1, 2, 2]):  # piece 0 is the rarest
        for _ in range(copies):
            picker.peer_has(index)
    assert picker.pick_run("slow", 3) == [0, 1, 2]
    # A peer in endgame is asked for a block of piece 1 as well.
    duplicates = picker.pick("peer", bits(3, [1]), 1)
    assert duplicates[0][0] == 1
    assert picker.hand_over("slow", "fast", [0, 1, 2, 7]) == [0, 2]
    assert picker.run_received("fast", 0) == set()
    assert picker.run_received("fast", 1) == {"peer", "slow"}


def test_a_run_for_a_piece_not_in_progress_reports_no_one() -> None:
    picker = make_picker(num_pieces=2)
    assert picker.run_received("mirror", 1) == set()
    assert picker.block_received("a", (1, 0, BLOCK_SIZE)) == (False, set())
    picker.request_failed("a", (1, 0, BLOCK_SIZE))  # nothing to free, no error
    picker.piece_failed(1)
    assert not picker.in_endgame


def test_blocks_asked_of_two_peers_are_never_stolen() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    picker.pick("a", has, 4)
    assert len(picker.pick("b", has, 4)) == 4  # endgame: every block asked twice
    assert picker.steal("c", has) is None


def test_the_single_source_of_a_failed_piece_keeps_it_to_itself() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    picker.pick("a", has, 4)
    picker.piece_failed(0, single_source=True)
    assert len(picker.pick("b", has, 2)) == 2  # b now owns the piece
    assert picker.pick("a", has, 4) == []  # free blocks remain, but not for a
    assert len(picker.pick("b", has, 4)) == 2


def test_a_failed_pieces_complete_copy_is_not_restarted_while_it_is_hashed() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    picker.pick("a", has, 4)
    picker.piece_failed(0, single_source=True)
    blocks = picker.pick("b", has, 4)
    for block in blocks:
        picker.block_received("b", block)
    # b leaves (or refuses late) while its complete copy is being hashed.
    assert picker.peer_lost("b", has) == []
    assert picker.piece_complete(0)
    picker.piece_verified(0)
    assert picker.complete


def test_the_single_source_leaving_before_the_piece_started_frees_it_for_another() -> None:
    picker = make_picker(num_pieces=2)
    everything = bits(2, [0, 1])
    picker.peer_has_bitfield(everything)
    picker.pick("a", bits(2, [0]), 4)
    picker.piece_failed(0, single_source=True)
    picker.pick("b", bits(2, [0]), 4)
    picker.piece_failed(0, single_source=True)  # b's copy failed too, before b left
    picker.pick("c", bits(2, [0]), 1)  # c is chosen now
    picker.request_failed("c", (0, 0, BLOCK_SIZE))  # c refuses: restarted
    assert picker.peer_lost("c", None) == []  # owns nothing now
    assert len(picker.pick("d", bits(2, [0]), 4)) == 4


def test_a_late_block_for_a_released_request_is_not_asked_for_again() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    blocks = picker.pick("a", has, 2)
    picker.request_failed("a", blocks[0])  # timed out...
    picker.request_failed("a", blocks[0])  # ...reported twice: still one free block
    assert picker.block_received("a", blocks[0]) == (True, set())  # ...then arrived
    assert picker.pick("b", has, 2) == [
        (0, 2 * BLOCK_SIZE, BLOCK_SIZE),
        (0, 3 * BLOCK_SIZE, BLOCK_SIZE),
    ]


def test_releasing_a_block_still_asked_of_another_peer_does_not_free_it() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    blocks = picker.pick("a", has, 4)
    picker.pick("b", has, 4)  # endgame duplicates
    picker.block_received("a", blocks[0])
    picker.request_failed("b", blocks[0])  # already received: stays received
    picker.request_failed("b", blocks[1])  # still asked of a: not free
    assert picker.in_endgame  # no block went back to the free ones
    assert picker.pick("c", has, 4) == [blocks[1]]  # the one block now asked of a alone


def test_padding_after_the_piece_does_not_count_as_received() -> None:
    # Padding in piece 1 only; piece 0 is fetched whole.
    picker = make_picker(num_pieces=2, padding=[(PIECE + 3 * BLOCK_SIZE, 2 * PIECE)])
    everything = bits(2, [0, 1])
    picker.peer_has_bitfield(everything)
    assert len(picker.pick("a", bits(2, [0]), 8)) == 4
    assert len(picker.pick("a", bits(2, [1]), 8)) == 3


def test_rarest_first_passes_over_pieces_the_peer_lacks() -> None:
    picker = make_picker(num_pieces=4)
    picker.peer_has_bitfield(bits(4, [0, 1]))  # 0 and 1 are the rarest
    picker.peer_has_bitfield(bits(4, [2, 3]))
    picker.peer_has_bitfield(bits(4, [3]))
    # This peer has only piece 3: the rarer buckets hold nothing it can send.
    assert {index for index, _, _ in picker.pick("a", bits(4, [3]), 4)} == {3}


def test_sequential_mode_skips_pieces_the_peer_lacks_and_had_ones() -> None:
    picker = make_picker(num_pieces=4, sequential=True, have=bits(4, [0]))
    picker.peer_has_bitfield(bits(4, [1, 2, 3]))
    assert {index for index, _, _ in picker.pick("a", bits(4, [2]), 4)} == {2}
    assert picker.pick("b", bits(4, [2]), 4) == []  # 2 is taken, it has nothing else
    assert {index for index, _, _ in picker.pick("c", bits(4, [1, 3]), 4)} == {1}


def test_endgame_stops_at_the_count_asked_for() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    blocks = picker.pick("a", has, 4)
    assert picker.pick("b", has, 2) == blocks[:2]
    assert picker.pick("b", has, 2) == blocks[2:]


def test_releasing_a_mirror_run_leaves_a_piece_abandoned_by_a_peer_in_progress() -> None:
    picker = make_picker(num_pieces=2)
    everything = bits(2, [0, 1])
    picker.peer_has_bitfield(everything)
    taken = picker.pick("gone", bits(2, [0]), 2)
    picker.peer_lost("gone", None)  # piece 0 is begun, asked of nobody now
    picker.release_run("mirror")  # a mirror that never had it gives up
    # Piece 0 is still in progress: a late block for it is accepted as new.
    assert picker.block_received("gone", taken[0]) == (True, set())


def test_a_failed_piece_handed_from_its_single_source_and_released_is_new_once() -> None:
    picker = make_picker(num_pieces=1)
    has = bits(1, [0])
    picker.peer_has_bitfield(has)
    picker.pick("a", has, 4)
    picker.piece_failed(0, single_source=True)
    picker.pick("b", has, 4)  # b is the single source now
    assert picker.hand_over("b", "mirror", [0]) == [0]
    picker.release_run("mirror")  # piece 0 is new again
    assert picker.peer_lost("b", None) == []  # b owned it, but it is no longer in progress
    assert len(picker.pick("c", has, 8)) == 4  # fetched whole, from one peer, once
    assert picker.pick("d", has, 8) == []
