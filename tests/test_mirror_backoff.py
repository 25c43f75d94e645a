"""Per-mirror health: exponential back-off with jitter, speed averages, dropping bad mirrors."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendistro.errors import MirrorDataError, MirrorNotFound, MirrorUnavailable
from opendistro.mirrors.backoff import MAX_DELAY, MirrorHealth


def test_a_new_mirror_is_available() -> None:
    health = MirrorHealth()
    assert health.available(0.0)
    assert health.last_error is None and health.throughput is None and health.latency is None


def test_failures_double_the_wait_up_to_the_cap() -> None:
    health = MirrorHealth(rng=random.Random(1))
    now = 1000.0
    ceilings = []
    for _ in range(14):
        delay = health.failed(now, MirrorUnavailable("http://m/a: HTTP 503"))
        ceiling = min(MAX_DELAY, 2.0 ** (health.consecutive_failures - 1))
        assert ceiling / 2 <= delay <= ceiling
        assert not health.available(now + delay - 0.001)
        assert health.available(now + delay)
        ceilings.append(ceiling)
        now += delay
    assert ceilings[:4] == [1.0, 2.0, 4.0, 8.0]
    assert ceilings[-1] == MAX_DELAY == 300.0


def test_jitter_spreads_clients_that_failed_together() -> None:
    delays = {
        MirrorHealth(rng=random.Random(seed)).failed(0.0, MirrorUnavailable("x"))
        for seed in range(20)
    }
    assert len(delays) == 20
    assert all(0.5 <= delay <= 1.0 for delay in delays)


def test_a_success_resets_the_back_off_and_feeds_the_averages() -> None:
    health = MirrorHealth(rng=random.Random(2))
    for _ in range(5):
        health.failed(0.0, MirrorUnavailable("x"))
    health.succeeded(1.0, 1_000_000, 2.0, latency=0.1)
    assert health.available(1.0) and health.consecutive_failures == 0
    assert health.throughput == 500_000 and health.latency == 0.1
    health.succeeded(2.0, 1_000_000, 1.0, latency=0.2)
    assert 500_000 < health.throughput < 1_000_000
    assert 0.1 < health.latency < 0.2
    assert health.bytes_received == 2_000_000
    # The next failure starts over at the base delay.
    assert health.failed(3.0, MirrorUnavailable("x")) <= 1.0


def test_last_error_is_kept_for_the_report() -> None:
    health = MirrorHealth()
    first = MirrorNotFound("http://m/a: HTTP 404")
    second = MirrorUnavailable("http://m/a: HTTP 503")
    health.failed(0.0, first)
    health.failed(5.0, second)
    assert health.last_error is second
    health.succeeded(600.0, 10, 1.0)
    assert health.last_error is second  # still the reason of the latest failure


def test_a_dropped_mirror_never_comes_back() -> None:
    health = MirrorHealth()
    error = MirrorDataError("piece 3 from http://m/ failed its hash")
    health.drop(error)
    health.succeeded(10.0, 100, 1.0)
    assert health.dropped and not health.available(1e12)
    assert health.last_error is error


@given(
    events=st.lists(
        st.tuples(st.booleans(), st.floats(0, 1000, allow_nan=False)), min_size=1, max_size=60
    ),
    seed=st.integers(0, 2**32),
)
def test_the_wait_never_exceeds_the_cap(events: list[tuple[bool, float]], seed: int) -> None:
    health = MirrorHealth(rng=random.Random(seed))
    now = 0.0
    for ok, step in events:
        now += step
        if ok:
            health.succeeded(now, 1, 1.0)
            assert health.available(now)
        else:
            delay = health.failed(now, MirrorUnavailable("x"))
            assert 0 < delay <= MAX_DELAY
            assert health.available(now + MAX_DELAY)


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_instant_transfers_do_not_divide_by_zero(seconds: float) -> None:
    health = MirrorHealth()
    health.succeeded(0.0, 100, seconds)
    assert health.throughput is None and health.bytes_received == 100
