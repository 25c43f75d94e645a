"""BEP 12 ``announce-list`` ordering: which tracker URL to try next.

Within a tier the order is shuffled once (so a swarm spreads over equivalent
trackers); tiers are tried in order; a tracker that answers moves to the front
of its tier, so the next announce goes straight to the one that works. Pure:
the random source is injectable for deterministic tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

__all__ = ["TrackerTiers"]


class TrackerTiers:
    """The announce-list of one torrent, kept in BEP 12 order."""

    def __init__(self, tiers: Sequence[Sequence[str]], rng: random.Random | None = None) -> None:
        shuffler = rng or random.Random()
        self._tiers: list[list[str]] = []
        for tier in tiers:
            urls = list(dict.fromkeys(tier))  # duplicates would only be tried twice
            shuffler.shuffle(urls)
            if urls:
                self._tiers.append(urls)

    @property
    def tiers(self) -> list[list[str]]:
        """A copy of the current order, tier by tier."""
        return [list(tier) for tier in self._tiers]

    def urls(self) -> Iterator[str]:
        """Every URL in the order to try; safe to call :meth:`succeeded` while iterating."""
        return iter([url for tier in self._tiers for url in tier])

    def succeeded(self, url: str) -> None:
        """Promote ``url`` to the front of its tier (unknown URLs are ignored)."""
        for tier in self._tiers:
            if url in tier:
                tier.remove(url)
                tier.insert(0, url)
                return
