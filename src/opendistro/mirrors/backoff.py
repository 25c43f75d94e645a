"""How well one mirror is doing: when to try it again, how fast it is, why it failed.

A mirror that fails is left alone for a while, twice as long after each
failure in a row (from :data:`BASE_DELAY` up to :data:`MAX_DELAY`), so a dead
or overloaded server is not hammered by every client at once. The wait is
jittered, a random point in its upper half, so clients that failed together
do not come back together. One success resets it.

A mirror whose data failed hash verification is :attr:`MirrorHealth.dropped`
for good: unlike a time-out, that will not heal by waiting, and every byte it
sends would have to be thrown away.

Throughput and latency are exponentially weighted moving averages, which the
scheduler can use to give big requests to fast mirrors. Time is whatever
clock the caller passes in (``trio.current_time()`` in practice, a plain
number in tests); nothing here reads a clock or sleeps.
"""

from __future__ import annotations

import random

__all__ = ["BASE_DELAY", "EWMA_WEIGHT", "MAX_DELAY", "MirrorHealth"]

BASE_DELAY = 1.0
MAX_DELAY = 300.0
#: Weight of the newest sample in the moving averages.
EWMA_WEIGHT = 0.3


def _ewma(average: float | None, sample: float) -> float:
    return sample if average is None else average + EWMA_WEIGHT * (sample - average)


class MirrorHealth:
    """Back-off and speed bookkeeping for one mirror (sans-I/O)."""

    def __init__(
        self,
        *,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        rng: random.Random | None = None,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._rng = rng or random.Random()
        #: Failures since the last success.
        self.consecutive_failures = 0
        #: When the mirror may be tried again (same clock as ``now``).
        self.retry_at = float("-inf")
        #: Set by :meth:`drop`; a dropped mirror is never available again.
        self.dropped = False
        #: The most recent failure, for the report when a download gives up.
        self.last_error: BaseException | None = None
        #: Moving average of bytes per second over successful transfers.
        self.throughput: float | None = None
        #: Moving average of seconds to the first byte.
        self.latency: float | None = None
        self.bytes_received = 0

    def available(self, now: float) -> bool:
        """Whether the mirror may be given a request at time ``now``."""
        return not self.dropped and now >= self.retry_at

    def failed(self, now: float, error: BaseException) -> float:
        """Record a failure at ``now``; returns how long the mirror is now left alone."""
        self.consecutive_failures += 1
        self.last_error = error
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (self.consecutive_failures - 1))
        delay = self._rng.uniform(ceiling / 2, ceiling)
        self.retry_at = max(self.retry_at, now + delay)
        return delay

    def succeeded(
        self, now: float, size: int, seconds: float, *, latency: float | None = None
    ) -> None:
        """Record ``size`` bytes fetched in ``seconds`` (``latency``: time to the first byte)."""
        self.consecutive_failures = 0
        self.retry_at = min(self.retry_at, now)
        self.bytes_received += size
        if seconds > 0:
            self.throughput = _ewma(self.throughput, size / seconds)
        if latency is not None:
            self.latency = _ewma(self.latency, latency)

    def drop(self, error: BaseException) -> None:
        """Stop using the mirror: its data failed verification."""
        self.dropped = True
        self.last_error = error
