"""Token bucket arithmetic with explicit times: rates, bursts, debt, rate changes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.errors import ConfigError, LocalProtocolError
from opendistro.swarm.bandwidth import (
    GRANT_QUANTUM,
    MIN_BURST,
    RateLimiter,
    TokenBucket,
    default_burst,
)

KIB = 1024
MIB = 1024 * 1024


def test_unlimited_bucket_passes_everything_at_once() -> None:
    bucket = TokenBucket(None)
    assert bucket.rate is None
    assert bucket.try_consume(10 * MIB, now=0.0)
    assert bucket.try_consume(10 * MIB, now=0.0)
    assert bucket.delay_until_available(100 * MIB, now=0.0) == 0.0
    assert bucket.consume(100 * MIB, now=0.0) == 0.0


def test_default_burst_is_64_kib_or_a_tenth_of_a_second() -> None:
    assert TokenBucket(10 * KIB).burst == MIN_BURST == 64 * KIB
    assert TokenBucket(10 * MIB).burst == pytest.approx(MIB)
    assert default_burst(10 * MIB) == pytest.approx(MIB)
    assert TokenBucket(10 * MIB, burst=5000).burst == 5000
    # One full grant always fits into a default burst.
    assert TokenBucket(1.0).burst >= GRANT_QUANTUM


def test_new_bucket_starts_full_then_refills_at_rate() -> None:
    bucket = TokenBucket(1000.0, burst=5000, now=10.0)
    assert bucket.try_consume(5000, now=10.0)
    assert not bucket.try_consume(1, now=10.0)
    assert bucket.delay_until_available(500, now=10.0) == pytest.approx(0.5)
    assert not bucket.try_consume(500, now=10.4)
    assert bucket.try_consume(500, now=10.5)
    assert bucket.tokens(now=10.5) == pytest.approx(0.0)


def test_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(1000.0, burst=2000, now=0.0)
    assert bucket.try_consume(2000, now=0.0)
    assert bucket.tokens(now=100.0) == 2000
    assert not bucket.try_consume(2001, now=1000.0)
    assert bucket.try_consume(2000, now=1000.0)


def test_amount_larger_than_burst_goes_into_debt_at_the_average_rate() -> None:
    bucket = TokenBucket(1000.0, burst=2000, now=0.0)
    # try_consume never borrows, so it can never pass more than the burst ...
    assert not TokenBucket(1000.0, burst=2000, now=0.0).try_consume(10_000, now=1e6)
    # ... but the delay is finite and consume books it, debt included.
    assert bucket.delay_until_available(10_000, now=0.0) == pytest.approx(8.0)
    assert bucket.consume(10_000, now=0.0) == pytest.approx(8.0)
    assert bucket.tokens(now=0.0) == pytest.approx(-8000.0)
    # The next booking queues behind the debt.
    assert bucket.consume(1000, now=0.0) == pytest.approx(9.0)
    assert bucket.delay_until_available(0, now=4.0) == pytest.approx(5.0)
    assert bucket.delay_until_available(0, now=9.0) == 0.0


def test_consume_with_tokens_available_needs_no_wait() -> None:
    bucket = TokenBucket(1000.0, burst=4000, now=0.0)
    assert bucket.consume(1500, now=0.0) == 0.0
    assert bucket.consume(2500, now=0.0) == 0.0
    assert bucket.consume(500, now=0.0) == pytest.approx(0.5)


def test_try_consume_succeeds_after_sleeping_exactly_the_delay() -> None:
    bucket = TokenBucket(3.0, burst=7, now=0.1)
    assert bucket.try_consume(7, now=0.1)
    now = 0.1
    for _ in range(100):
        now += bucket.delay_until_available(7, now)
        assert bucket.try_consume(7, now)
    assert now == pytest.approx(0.1 + 100 * 7 / 3)


def test_rate_change_midway_refills_at_old_rate_then_new() -> None:
    bucket = TokenBucket(1000.0, burst=100_000, now=0.0)
    assert bucket.consume(100_000, now=0.0) == 0.0
    bucket.set_rate(4000.0, now=2.0)  # 2 s at 1000/s refilled 2000
    assert bucket.rate == 4000.0
    assert bucket.tokens(now=2.0) == pytest.approx(2000.0)
    assert bucket.tokens(now=3.0) == pytest.approx(6000.0)
    # Debt is repaid at the rate in force while it is being repaid.
    assert bucket.consume(26_000, now=3.0) == pytest.approx(5.0)
    bucket.set_rate(10_000.0, now=4.0)
    assert bucket.delay_until_available(0, now=4.0) == pytest.approx(1.6)


def test_default_burst_follows_a_rate_change_but_an_explicit_one_stays() -> None:
    following = TokenBucket(10 * MIB, now=0.0)
    assert following.tokens(0.0) == pytest.approx(MIB)
    following.set_rate(100 * KIB, now=0.0)
    assert following.burst == MIN_BURST
    assert following.tokens(0.0) == MIN_BURST
    fixed = TokenBucket(10 * MIB, burst=3000, now=0.0)
    fixed.set_rate(1.0, now=0.0)
    assert fixed.burst == 3000


def test_switching_between_limited_and_unlimited() -> None:
    bucket = TokenBucket(1000.0, burst=2000, now=0.0)
    bucket.consume(50_000, now=0.0)
    bucket.set_rate(None, now=1.0)
    assert bucket.rate is None
    assert bucket.consume(10 * MIB, now=1.0) == 0.0
    # The debt was forgotten; the bucket comes back full.
    bucket.set_rate(1000.0, now=2.0)
    assert bucket.try_consume(2000, now=2.0)
    assert not bucket.try_consume(1, now=2.0)


def test_time_running_backwards_refunds_nothing() -> None:
    bucket = TokenBucket(1000.0, burst=1000, now=5.0)
    assert bucket.try_consume(1000, now=5.0)
    assert not bucket.try_consume(1, now=1.0)
    # The wait is measured from the latest time seen, so it is longer from an older now.
    assert bucket.delay_until_available(500, now=4.0) == pytest.approx(1.5)
    assert bucket.try_consume(500, now=5.5)


@pytest.mark.parametrize("rate", [0, -1.0, math.nan, math.inf, True, "100"])
def test_bad_rates_are_config_errors(rate: object) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate)  # type: ignore[arg-type]
    bucket = TokenBucket(1000.0)
    with pytest.raises(ConfigError):
        bucket.set_rate(rate, now=0.0)  # type: ignore[arg-type]
    assert bucket.rate == 1000.0


@pytest.mark.parametrize("burst", [0, -5, math.nan, math.inf, True, "64k"])
def test_bad_bursts_are_config_errors(burst: float) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(1000.0, burst=burst)


@pytest.mark.parametrize("amount", [-1, 1.5, True])
def test_bad_amounts_are_local_protocol_errors(amount: object) -> None:
    bucket = TokenBucket(1000.0)
    limiter = RateLimiter(bucket)
    with pytest.raises(LocalProtocolError):
        bucket.try_consume(amount, 0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        bucket.consume(amount, 0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        limiter.reserve(amount, 0.0)  # type: ignore[arg-type]


def test_rate_limiter_waits_for_the_stricter_bucket_and_charges_both() -> None:
    torrent = TokenBucket(1000.0, burst=1000, now=0.0)
    global_ = TokenBucket(4000.0, burst=1000, now=0.0)
    limiter = RateLimiter(torrent, global_)
    assert limiter.reserve(1000, now=0.0) == 0.0
    assert limiter.reserve(2000, now=0.0) == pytest.approx(2.0)  # torrent: 2000/1000
    assert global_.tokens(now=0.0) == pytest.approx(-2000.0)
    assert limiter.delay_until_available(0, now=1.0) == pytest.approx(1.0)
    # The other way round the global bucket is the stricter one.
    slow_global = TokenBucket(500.0, burst=1000, now=0.0)
    fast_torrent = TokenBucket(1e6, burst=1000, now=0.0)
    assert RateLimiter(fast_torrent, slow_global).reserve(2000, now=0.0) == pytest.approx(2.0)


def test_rate_limiter_try_consume_is_all_or_nothing() -> None:
    roomy = TokenBucket(1000.0, burst=5000, now=0.0)
    tight = TokenBucket(1000.0, burst=1000, now=0.0)
    limiter = RateLimiter(roomy, tight)
    assert not limiter.try_consume(2000, now=0.0)
    assert roomy.tokens(0.0) == 5000  # nothing taken from the bucket that had room
    assert limiter.try_consume(1000, now=0.0)
    assert roomy.tokens(0.0) == 4000
    assert tight.tokens(0.0) == 0


def test_empty_rate_limiter_never_waits() -> None:
    assert RateLimiter().reserve(10 * MIB, now=0.0) == 0.0
    assert RateLimiter().try_consume(10 * MIB, now=0.0)


_operations = st.lists(
    st.tuples(
        st.booleans(),  # True: consume (may borrow); False: try_consume
        st.integers(min_value=0, max_value=50_000),
        st.floats(min_value=0.0, max_value=3.0, allow_nan=False),  # time step
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=100.0, max_value=1e6, allow_nan=False),
    burst=st.integers(min_value=1, max_value=100_000),
    start=st.floats(min_value=0.0, max_value=1e5, allow_nan=False),
    operations=_operations,
)
def test_bucket_never_releases_more_than_rate_times_elapsed_plus_burst(
    rate: float, burst: int, start: float, operations: list[tuple[bool, int, float]]
) -> None:
    """Whatever is booked from time ``a`` on and released by ``b`` fits ``rate*(b-a)+burst``."""
    bucket = TokenBucket(rate, burst=burst, now=start)
    now = start
    grants: list[tuple[float, float, int]] = []  # (booked at, released at, amount)
    for borrow, amount, step in operations:
        now += step
        delay = bucket.delay_until_available(amount, now)
        if borrow:
            wait = bucket.consume(amount, now)
            assert wait == delay
            grants.append((now, now + wait, amount))
        else:
            passed = bucket.try_consume(amount, now)
            assert passed == (delay == 0.0)
            if passed:
                grants.append((now, now, amount))
    starts = {start} | {booked for booked, _, _ in grants}
    ends = {released for _, released, _ in grants}
    for a in starts:
        for b in ends:
            if b < a:
                continue
            through = sum(n for booked, released, n in grants if booked >= a and released <= b)
            assert through <= rate * (b - a) + burst + 1e-3 + 1e-9 * rate * b


def test_last_update_is_the_latest_time_seen_even_when_time_runs_backwards() -> None:
    bucket = TokenBucket(1000.0, now=2.0)
    assert bucket.last_update == 2.0
    bucket.tokens(5.0)
    assert bucket.last_update == 5.0
    bucket.tokens(3.0)
    assert bucket.last_update == 5.0
