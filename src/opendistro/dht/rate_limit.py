"""A token bucket per source IP, so one host cannot make us do unbounded work.

Each query costs one token; a source's bucket refills at ``rate`` per second
up to ``burst``. The table of sources is bounded: when full, the source seen
least recently is forgotten (it starts again with a full bucket, which costs
an attacker nothing it did not already have).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SourceRateLimiter"]


class SourceRateLimiter:
    def __init__(
        self, *, rate: float = 50.0, burst: float = 100.0, max_sources: int = 4096
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        """Spend a token of ``source``'s bucket; False when it has none left."""
        entry = self._buckets.pop(source, None)
        if entry is None:
            while len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            tokens = self.burst
        else:
            tokens, then = entry
            tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def prune(self, now: float) -> None:
        """Forget sources whose bucket has refilled: they are indistinguishable from new ones."""
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        for source in [s for s, (_, then) in self._buckets.items() if now - then >= full_after]:
            del self._buckets[source]
