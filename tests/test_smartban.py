"""Smart ban: only the peers whose blocks were wrong are banned."""

from __future__ import annotations

import hashlib

from opendistro.swarm.smartban import SmartBan

BLOCK = 16384


def digest(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


GOOD = [bytes([n]) * BLOCK for n in range(4)]


def test_a_sole_sender_of_a_bad_piece_is_banned_at_once() -> None:
    ban: SmartBan[str] = SmartBan()
    senders = {n * BLOCK: "liar" for n in range(4)}
    digests = {n * BLOCK: digest(b"garbage" + bytes(n)) for n in range(4)}
    assert ban.piece_failed(0, senders, digests) == {"liar"}
    assert not ban.wants_digests(0)


def test_the_liar_is_found_once_a_good_copy_arrives_and_honest_senders_are_spared() -> None:
    ban: SmartBan[str] = SmartBan()
    senders = {0: "a", BLOCK: "liar", 2 * BLOCK: "b", 3 * BLOCK: "a"}
    received = {0: digest(GOOD[0]), BLOCK: digest(b"flipped"), 2 * BLOCK: digest(GOOD[2])}
    received[3 * BLOCK] = digest(GOOD[3])
    assert ban.piece_failed(7, senders, received) == set()
    assert ban.wants_digests(7)
    good = {n * BLOCK: digest(GOOD[n]) for n in range(4)}
    assert ban.piece_passed(7, good) == {"liar"}
    assert not ban.wants_digests(7)


def test_several_liars_in_one_piece_are_all_found() -> None:
    ban: SmartBan[str] = SmartBan()
    senders = {n * BLOCK: name for n, name in enumerate(["x", "honest", "y", "honest"])}
    received = {n * BLOCK: digest(GOOD[n] if n % 2 else b"bad") for n in range(4)}
    ban.piece_failed(1, senders, received)
    assert ban.piece_passed(1, {n * BLOCK: digest(GOOD[n]) for n in range(4)}) == {"x", "y"}


def test_the_same_piece_failing_whole_from_two_peers_blames_the_torrent_not_them() -> None:
    ban: SmartBan[str] = SmartBan()
    whole = {n * BLOCK: digest(GOOD[n]) for n in range(4)}
    assert ban.piece_failed(3, dict.fromkeys(whole, "first"), whole) == {"first"}
    assert not ban.suspect_metainfo(3)
    assert ban.piece_failed(3, dict.fromkeys(whole, "second"), whole) == set()
    assert ban.suspect_metainfo(3)


def test_a_passing_piece_clears_suspicion_and_records() -> None:
    ban: SmartBan[str] = SmartBan()
    whole = {n * BLOCK: digest(GOOD[n]) for n in range(4)}
    ban.piece_failed(3, dict.fromkeys(whole, "first"), whole)
    assert ban.piece_passed(3, whole) == set()
    assert ban.piece_failed(3, dict.fromkeys(whole, "second"), whole) == {"second"}
    assert not ban.suspect_metainfo(3)


def test_memory_is_bounded_to_the_newest_failed_pieces() -> None:
    ban: SmartBan[str] = SmartBan(max_records=3)
    for index in range(10):
        ban.piece_failed(index, {0: "a", BLOCK: "b"}, {0: b"x", BLOCK: b"y"})
    assert [ban.wants_digests(index) for index in range(10)] == [False] * 7 + [True] * 3


def test_a_piece_failing_again_and_again_from_mixed_senders_blames_the_torrent() -> None:
    ban: SmartBan[str] = SmartBan(max_failures=3)
    for attempt in range(3):
        assert not ban.suspect_metainfo(2)
        ban.piece_failed(2, {0: f"a{attempt}", BLOCK: f"b{attempt}"}, {0: b"x", BLOCK: b"y"})
    assert ban.suspect_metainfo(2)


def test_blocks_known_to_be_bad_name_their_senders_without_waiting_for_a_good_copy() -> None:
    ban: SmartBan[str] = SmartBan()
    senders = {0: "a", BLOCK: "liar", 2 * BLOCK: "b", 3 * BLOCK: "liar"}
    ban.piece_failed(4, senders, {begin: b"d" for begin in senders})
    assert ban.blame(4, [BLOCK]) == {"liar"}
    assert not ban.wants_digests(4)  # settled: a later good copy judges nobody
    assert ban.piece_passed(4, {0: b"x"}) == set()


def test_blame_for_a_piece_with_no_record_names_nobody() -> None:
    ban: SmartBan[str] = SmartBan()
    assert ban.blame(9, [0, BLOCK]) == set()
    # A sole-sender failure keeps no block record either: it was settled at once.
    ban.piece_failed(9, {0: "liar", BLOCK: "liar"}, {0: b"x", BLOCK: b"y"})
    assert ban.blame(9, [0]) == set()


def test_a_block_without_a_digest_is_not_recorded_so_its_sender_is_never_judged() -> None:
    ban: SmartBan[str] = SmartBan()
    senders = {0: "a", BLOCK: "b"}
    # The driver had no digest for b's block (say it was never written).
    assert ban.piece_failed(3, senders, {0: digest(b"wrong")}) == set()
    good = {0: digest(GOOD[0]), BLOCK: digest(GOOD[1])}
    assert ban.piece_passed(3, good) == {"a"}
