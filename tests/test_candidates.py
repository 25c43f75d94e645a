"""Choosing whom to dial: fresh addresses first, back-off after failures, bounded memory."""

from __future__ import annotations

import random

from opendistro.swarm.candidates import PeerCandidates


def make(**kwargs: object) -> PeerCandidates:
    return PeerCandidates(rng=random.Random(3), **kwargs)  # type: ignore[arg-type]


def test_each_address_is_dialled_once_until_it_fails_or_disconnects() -> None:
    candidates = make()
    for port in range(10):
        candidates.add(("127.0.0.1", 6000 + port))
    first = candidates.next_to_dial(0.0, 4)
    second = candidates.next_to_dial(0.0, 10)
    assert len(first) == 4 and len(second) == 6
    assert not set(first) & set(second)
    assert candidates.next_to_dial(0.0, 10) == []


def test_a_failed_address_backs_off_exponentially_and_is_forgotten() -> None:
    candidates = make(retry_base=10.0, max_failures=3)
    address = ("127.0.0.1", 7000)
    candidates.add(address)
    assert candidates.next_to_dial(0.0, 1) == [address]
    candidates.failed(address, 0.0)
    assert candidates.next_to_dial(9.9, 1) == []
    assert candidates.next_to_dial(10.0, 1) == [address]
    candidates.failed(address, 10.0)
    assert candidates.next_to_dial(29.9, 1) == []
    assert candidates.next_to_dial(30.0, 1) == [address]
    candidates.failed(address, 30.0)
    assert address not in candidates


def test_retry_now_waives_the_back_off_of_an_address_the_user_asks_for() -> None:
    candidates = make(retry_base=30.0, max_candidates=2)
    address = ("127.0.0.1", 7010)
    assert candidates.retry_now(address)  # unknown: added, due at once
    assert candidates.next_to_dial(0.0, 1) == [address]
    candidates.failed(address, 0.0)
    assert candidates.next_to_dial(1.0, 1) == []
    assert candidates.retry_now(address)
    assert candidates.next_to_dial(1.0, 1) == [address]
    assert candidates.next_to_dial(1.0, 1) == []  # dialling: not offered twice
    candidates.add(("127.0.0.1", 7011))
    assert not candidates.retry_now(("127.0.0.1", 7012))  # full


def test_untried_addresses_come_before_ones_that_failed() -> None:
    candidates = make(retry_base=1.0)
    flaky = ("127.0.0.1", 7001)
    candidates.add(flaky)
    candidates.next_to_dial(0.0, 1)
    candidates.failed(flaky, 0.0)
    fresh = ("127.0.0.1", 7002)
    candidates.add(fresh)
    assert candidates.next_to_dial(5.0, 1) == [fresh]


def test_a_disconnected_peer_may_be_dialled_again_after_a_pause() -> None:
    candidates = make(retry_base=30.0)
    address = ("127.0.0.1", 7003)
    candidates.add(address)
    candidates.next_to_dial(0.0, 1)
    candidates.connected(address)
    assert candidates.next_to_dial(1.0, 1) == []
    candidates.disconnected(address, 1.0)
    assert candidates.next_to_dial(30.0, 1) == []
    assert candidates.next_to_dial(31.0, 1) == [address]


def test_the_list_is_bounded_and_duplicates_ignored() -> None:
    candidates = make(max_candidates=5)
    assert candidates.add(("127.0.0.1", 1))
    assert not candidates.add(("127.0.0.1", 1))
    for port in range(2, 20):
        candidates.add(("127.0.0.1", port))
    assert len(candidates) == 5


def test_asking_for_no_addresses_dials_nothing() -> None:
    candidates = make()
    candidates.add(("127.0.0.1", 7004))
    assert candidates.next_to_dial(0.0, 0) == []
    # The address was not marked as being dialled, so it is still offered.
    assert candidates.next_to_dial(0.0, 1) == [("127.0.0.1", 7004)]


def test_reports_about_unknown_addresses_are_ignored() -> None:
    candidates = make()
    unknown = ("127.0.0.1", 7005)
    candidates.failed(unknown, 0.0)
    candidates.disconnected(unknown, 0.0)
    assert unknown not in candidates
    assert len(candidates) == 0


def test_a_forgotten_address_is_not_offered_until_added_again() -> None:
    candidates = make()
    banned = ("127.0.0.1", 7006)
    candidates.add(banned)
    candidates.forget(banned)
    candidates.forget(banned)  # forgetting twice is harmless
    assert banned not in candidates
    assert candidates.next_to_dial(0.0, 5) == []
    assert candidates.add(banned)
    assert candidates.next_to_dial(0.0, 5) == [banned]
