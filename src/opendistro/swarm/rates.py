"""Byte counters with a decaying recent rate, for progress reports and pipelining."""

from __future__ import annotations

__all__ = ["RateMeter"]


class RateMeter:
    """Counts bytes and keeps an exponentially weighted rate over roughly ``window`` seconds.

    The caller passes the current time, so the same meter works under trio's
    clock, a test's fake clock and the simulator's virtual clock. Slotted:
    every connection has two, and a simulated swarm has hundreds of thousands.
    """

    __slots__ = ("_last", "_pending", "_rate", "_window", "total")

    def __init__(self, now: float, window: float = 5.0) -> None:
        self.total = 0
        self._window = window
        self._rate = 0.0
        self._pending = 0
        self._last = now

    def add(self, amount: int, now: float) -> None:
        self.total += amount
        self._pending += amount
        self._fold(now)

    def rate(self, now: float) -> float:
        """Recent bytes per second."""
        self._fold(now)
        return self._rate

    def _fold(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed < 0.1:
            return
        weight = min(1.0, elapsed / self._window)
        self._rate += weight * (self._pending / elapsed - self._rate)
        self._pending = 0
        self._last = now
