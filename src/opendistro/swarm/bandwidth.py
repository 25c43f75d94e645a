"""Token buckets: how many bytes may pass now, and how long to wait for the rest.

This is the arithmetic of bandwidth limits with nothing else attached: the
caller passes the current time in, so the same buckets run under trio's clock
(:mod:`opendistro.io.throttle`), a test's explicit numbers and the simulator.

A bucket holds up to ``burst`` tokens (bytes) and refills at ``rate`` bytes per
second. Two ways to spend them:

* :meth:`TokenBucket.try_consume` passes bytes only if the tokens are there
  now; it never borrows, so a caller that polls can never exceed the limit.
* :meth:`TokenBucket.consume` books bytes *now*, even into debt, and returns
  how long the caller must wait before sending them. Debt is what lets a write
  bigger than the burst through at all, and at the right average rate: a
  10 MiB write under a 1 MiB/s limit waits about ten seconds instead of
  waiting forever for a bucket that can never hold 10 MiB. Whoever books next
  waits for the debt to be repaid first, so bookings form a FIFO queue.

Either way the bucket keeps one promise: bytes *released* (passed by
``try_consume``, or booked by ``consume`` and released after its wait) within
any span of time never exceed ``rate * span + burst``.

The default burst is ``max(64 KiB, rate * 0.1 s)``. The 64 KiB floor means one
full grant of :data:`GRANT_QUANTUM` always fits, so a steady stream of quanta
never needs debt. The tenth of a second keeps bursts short next to a one-second
reporting window (a limit should *look* like a limit on a progress bar) while
letting fast links send in sizable writes.
"""

from __future__ import annotations

import math

from ..errors import ConfigError, LocalProtocolError

__all__ = [
    "DEFAULT_BURST_SECONDS",
    "GRANT_QUANTUM",
    "MIN_BURST",
    "RateLimiter",
    "TokenBucket",
    "default_burst",
]

GRANT_QUANTUM = 65536
"""Largest grant handed out at once when connections share a limit.

Granting in small quanta, in FIFO order, is what makes sharing fair: a
connection with 10 MiB to send takes one quantum and goes to the back of the
queue, so one with 16 KiB to send waits for at most one quantum per peer.
"""

MIN_BURST = 65536.0
DEFAULT_BURST_SECONDS = 0.1

# Tolerance for float rounding: after sleeping exactly the computed delay, the
# refilled tokens can fall a hair short of the amount. A millionth of a byte of
# overdraft is repaid by the next booking and cannot add up.
_EPSILON = 1e-6


def default_burst(rate: float) -> float:
    """The burst used when none is given: ``max(64 KiB, rate * 0.1 s)``."""
    return max(MIN_BURST, rate * DEFAULT_BURST_SECONDS)


def _check_rate(rate: float | None) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ConfigError(f"rate must be a number of bytes per second or None, not {rate!r}")
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"rate must be positive and finite (None means unlimited), not {rate!r}")
    return float(rate)


def _check_burst(burst: float | None) -> float | None:
    if burst is None:
        return None
    if isinstance(burst, bool) or not isinstance(burst, int | float):
        raise ConfigError(f"burst must be a number of bytes, not {burst!r}")
    if not math.isfinite(burst) or burst <= 0:
        raise ConfigError(f"burst must be positive and finite, not {burst!r}")
    return float(burst)


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise LocalProtocolError(f"amount must be a non-negative integer, not {amount!r}")


class TokenBucket:
    """One limit: ``rate`` bytes per second with bursts of up to ``burst`` bytes.

    ``rate=None`` means unlimited: everything passes at once and no debt is
    kept. A new bucket starts full. Time that runs backwards (a ``now`` older
    than one already seen) counts as no time passing, never as a refund, and
    waits are then measured from the latest time seen.
    """

    def __init__(self, rate: float | None, *, burst: float | None = None, now: float = 0.0) -> None:
        self._rate = _check_rate(rate)
        self._explicit_burst = _check_burst(burst)
        self._tokens = self.burst
        self._last = now

    @property
    def rate(self) -> float | None:
        """Bytes per second, or ``None`` for unlimited. Change it with :meth:`set_rate`."""
        return self._rate

    @property
    def burst(self) -> float:
        """Most tokens the bucket holds: the explicit burst, or the default for the rate."""
        if self._explicit_burst is not None:
            return self._explicit_burst
        return default_burst(self._rate) if self._rate is not None else MIN_BURST

    @property
    def last_update(self) -> float:
        """Latest time the bucket has been told about."""
        return self._last

    def tokens(self, now: float) -> float:
        """Tokens available at ``now``; negative while a booking's debt is unpaid."""
        self._refill(now)
        return self._tokens

    def set_rate(self, rate: float | None, now: float) -> None:
        """Change the rate from ``now`` on; time before ``now`` refills at the old rate.

        Outstanding debt is repaid at the new rate. A bucket that was unlimited
        comes back full (nothing was being counted); with a default burst the
        burst follows the new rate, and tokens above it are dropped.
        """
        rate = _check_rate(rate)
        self._refill(now)
        was_unlimited = self._rate is None
        self._rate = rate
        if rate is None or was_unlimited:
            self._tokens = self.burst
        else:
            self._tokens = min(self._tokens, self.burst)

    def try_consume(self, amount: int, now: float) -> bool:
        """Take ``amount`` tokens if they are all there now; never borrow.

        Succeeds exactly when :meth:`delay_until_available` is zero. An amount
        larger than the burst can therefore never pass here; book it with
        :meth:`consume` instead.
        """
        _check_amount(amount)
        if self._rate is None:
            return True
        self._refill(now)
        if self._tokens + _EPSILON < amount:
            return False
        self._tokens -= amount
        return True

    def delay_until_available(self, amount: int, now: float) -> float:
        """Seconds until ``amount`` bytes may pass; the wait :meth:`consume` would return.

        For amounts up to the burst this is when :meth:`try_consume` starts to
        succeed. For larger amounts it counts the debt they would leave, so it
        is finite and matches the average rate. ``delay_until_available(0,
        now)`` is how long until the current debt is repaid.
        """
        _check_amount(amount)
        if self._rate is None:
            return 0.0
        self._refill(now)
        shortfall = amount - self._tokens
        if shortfall <= _EPSILON:
            return 0.0
        # Measured from the latest time seen, which is ``now`` unless time ran backwards.
        return shortfall / self._rate + max(0.0, self._last - now)

    def consume(self, amount: int, now: float) -> float:
        """Book ``amount`` bytes now, into debt if need be; return how long to wait before sending.

        The caller must wait the returned number of seconds before the bytes
        go out. The next booking queues behind this one's debt.
        """
        wait = self.delay_until_available(amount, now)
        if self._rate is not None:
            self._tokens -= amount
        return wait

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed <= 0:
            return
        if self._rate is not None:
            self._tokens = min(self.burst, self._tokens + elapsed * self._rate)
        self._last = now


class RateLimiter:
    """A chain of buckets that a transfer must pass together, e.g. per-torrent then global.

    Every booking is charged to every bucket, and the wait is that of the
    strictest one, so the sum of everything under the global bucket respects
    it while each torrent also respects its own. Bookings are FIFO, so callers
    who book equal quanta in turn get equal shares.
    """

    def __init__(self, *buckets: TokenBucket) -> None:
        self.buckets: tuple[TokenBucket, ...] = buckets

    def reserve(self, amount: int, now: float) -> float:
        """Book ``amount`` in every bucket; return the longest wait among them."""
        _check_amount(amount)
        return max((bucket.consume(amount, now) for bucket in self.buckets), default=0.0)

    def delay_until_available(self, amount: int, now: float) -> float:
        """How long :meth:`reserve` would make the caller wait, without booking anything."""
        _check_amount(amount)
        return max(
            (bucket.delay_until_available(amount, now) for bucket in self.buckets), default=0.0
        )

    def try_consume(self, amount: int, now: float) -> bool:
        """Take ``amount`` from every bucket if all of them have it now, else from none."""
        if self.delay_until_available(amount, now) > 0:
            return False
        for bucket in self.buckets:
            bucket.try_consume(amount, now)
        return True
