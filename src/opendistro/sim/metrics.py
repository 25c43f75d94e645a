"""What a simulated run is judged by: completion times against the fluid bound, and fairness.

The reference point is the Kumar & Ross fluid bound on distributing a file of
``F`` bytes from one seed (upload ``u_s``) to ``N`` peers (uploads ``u_i``,
downloads ``d_i``): no scheme at all can finish everyone sooner than

    T_min = max(F / u_s, F / d_min, N * F / (u_s + sum(u_i)))

(the seed must send every byte once, the slowest downlink must receive every
byte, and all ``N * F`` bytes must be uploaded by someone). A run whose last
peer finishes within a small factor of ``T_min`` is using the swarm's upload
capacity well; the ratio is the headline figure of every scenario.

Fairness is measured with Jain's index over share ratios (uploaded /
downloaded): 1.0 when every peer gave back in the same proportion, ``1/n``
when one peer did all the giving.

Incentives are judged by how much longer free riders (peers that never
upload) take than contributors, by the Jain index of contributors' share
ratios alone (a free rider's ratio is 0 by definition), and, with several
seeds, by the Jain index of what each seed uploaded (even when seeds share
the load).
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .scenario import Scenario

__all__ = [
    "RunMetrics",
    "fluid_lower_bound",
    "jain_index",
    "peak_rss_mb",
    "percentiles",
    "scenario_bound",
]


def fluid_lower_bound(
    file_size: float,
    seed_upload: float,
    peer_uploads: Sequence[float],
    peer_downloads: Sequence[float],
) -> float:
    """Kumar & Ross's minimum time for every peer to hold the whole file (seconds).

    0.0 when there are no peers; ``inf`` when some term divides by zero capacity
    (no upload anywhere, or a peer that cannot download).
    """
    if file_size < 0 or seed_upload < 0:
        raise ConfigError("file size and seed upload must be non-negative")
    if len(peer_uploads) != len(peer_downloads):
        raise ConfigError(
            f"{len(peer_uploads)} peer uploads but {len(peer_downloads)} peer downloads"
        )
    if any(u < 0 for u in peer_uploads) or any(d < 0 for d in peer_downloads):
        raise ConfigError("peer capacities must be non-negative")
    n = len(peer_uploads)
    if n == 0 or file_size == 0:
        return 0.0
    return max(
        _ratio(file_size, seed_upload),
        _ratio(file_size, min(peer_downloads)),
        _ratio(n * file_size, seed_upload + math.fsum(peer_uploads)),
    )


def scenario_bound(scenario: Scenario) -> float:
    """The fluid bound for ``scenario``'s peers, as if they all arrived at once.

    For steady arrivals and churn this is only a yardstick: the bound is
    derived for a flash crowd that stays to the end.
    """
    uploads = [c.upload for c in scenario.peers for _ in range(c.count)]
    downloads = [c.download for c in scenario.peers for _ in range(c.count)]
    seed_upload = scenario.seeds * scenario.seed_upload
    return fluid_lower_bound(scenario.file_size, seed_upload, uploads, downloads)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)``, in ``[1/n, 1]``.

    Defined as 1.0 for no values and for all zeros (nobody is treated worse
    than anybody else). Values must be non-negative.
    """
    if any(v < 0 for v in values):
        raise ConfigError("Jain's index is defined for non-negative values only")
    n = len(values)
    squares = math.fsum(v * v for v in values)
    if n == 0 or squares == 0:
        return 1.0
    total = math.fsum(values)
    return min(1.0, total * total / (n * squares))


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """``min``, ``median``, ``p95`` and ``max`` of a non-empty sample.

    Percentiles interpolate linearly between order statistics (numpy's
    default method), so the median of an even-sized sample is the mean of
    its two middle values.
    """
    if not values:
        raise ConfigError("percentiles of an empty sample are undefined")
    ordered = sorted(values)
    return {
        "min": float(ordered[0]),
        "median": _quantile(ordered, 0.5),
        "p95": _quantile(ordered, 0.95),
        "max": float(ordered[-1]),
    }


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class RunMetrics:
    """The raw outcome of one simulated run; :meth:`summary` turns it into figures.

    ``completion_times`` maps a peer id to the seconds from its arrival to
    its having the whole file (peers that never finished are absent);
    ``uploaded`` and ``downloaded`` count payload bytes per peer.
    """

    completion_times: dict[int, float]
    uploaded: dict[int, int]
    downloaded: dict[int, int]
    seed_uploaded: int
    file_size: int
    bound: float
    wall_seconds: float
    events: int
    peak_rss_mb: float
    peers: int = 0
    """How many peers took part (0: infer from the per-peer dicts)."""
    timeline: list[tuple[float, float, float]] = field(default_factory=list)
    """(virtual time, mean fraction downloaded, fraction of peers complete), once a second."""
    free_riders: frozenset[int] = frozenset()
    """The peers that never upload; every other peer in the dicts is a contributor."""
    seeds_uploaded: list[int] = field(default_factory=list)
    """Bytes each initial seed uploaded (one entry per seed)."""

    @property
    def peer_count(self) -> int:
        if self.peers:
            return self.peers
        return len(set(self.completion_times) | set(self.uploaded) | set(self.downloaded))

    def share_ratios(self) -> list[float]:
        """uploaded / downloaded for every peer that downloaded anything."""
        return [
            self.uploaded.get(peer, 0) / got
            for peer, got in sorted(self.downloaded.items())
            if got > 0
        ]

    def incentive_figures(self) -> dict[str, Any]:
        """Free riders against contributors, contributors' ratio fairness, seeds' load split.

        ``free_rider_slowdown`` is the median free rider's completion time
        over the median contributor's (None unless both groups have finishers;
        ``free_riders_completed`` says how many free riders finished at all).
        """
        contributors = [t for p, t in self.completion_times.items() if p not in self.free_riders]
        riders = [t for p, t in self.completion_times.items() if p in self.free_riders]
        contributor_ratios = [
            self.uploaded.get(peer, 0) / got
            for peer, got in sorted(self.downloaded.items())
            if got > 0 and peer not in self.free_riders
        ]
        slowdown = None
        if contributors and riders:
            slowdown = percentiles(riders)["median"] / percentiles(contributors)["median"]
        return {
            "free_riders": len(self.free_riders),
            "free_riders_completed": len(riders),
            "contributor_completion_seconds": _maybe_percentiles(contributors),
            "free_rider_completion_seconds": _maybe_percentiles(riders),
            "free_rider_slowdown": slowdown,
            "contributor_share_ratio_jain": jain_index(contributor_ratios),
            "seeds": len(self.seeds_uploaded),
            "seeds_upload_jain": jain_index([float(b) for b in self.seeds_uploaded]),
        }

    def summary(self) -> dict[str, Any]:
        """Headline figures as plain JSON-able values (None where undefined)."""
        times = list(self.completion_times.values())
        completion = _maybe_percentiles(times)
        last = completion["max"] if completion else None
        ratios = self.share_ratios()
        return {
            "peers": self.peer_count,
            "completed": len(times),
            "file_size": self.file_size,
            "completion_seconds": completion,
            "bound_seconds": _finite_or_none(self.bound),
            "last_over_bound": (
                _finite_or_none(last / self.bound) if last is not None and self.bound > 0 else None
            ),
            "seed_upload_copies": (
                self.seed_uploaded / self.file_size if self.file_size > 0 else None
            ),
            "share_ratio": _maybe_percentiles(ratios),
            "share_ratio_jain": jain_index(ratios),
            "events": self.events,
            "wall_seconds": self.wall_seconds,
            "events_per_wall_second": (
                self.events / self.wall_seconds if self.wall_seconds > 0 else None
            ),
            "peak_rss_mb": self.peak_rss_mb,
            **self.incentive_figures(),
        }


def _maybe_percentiles(values: Sequence[float]) -> dict[str, float] | None:
    return percentiles(values) if values else None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def merge_counts(*counters: Mapping[int, int]) -> dict[int, int]:
    """Sum several per-peer byte counters (helper for drivers that count per connection)."""
    merged: dict[int, int] = {}
    for counter in counters:
        for peer, count in counter.items():
            merged[peer] = merged.get(peer, 0) + count
    return merged
