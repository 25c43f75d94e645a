"""When a complete torrent may stop seeding: a share-ratio target, a time target, or both.

A client that seeds forever spends upload nobody asked it to, and one that
leaves the moment it completes gives nothing back; users settle between the two
with a target. This module only decides: the caller passes in the byte counts
and how long the torrent has been complete, and stops seeding (announces
``stopped``, closes connections) when :meth:`SeedingPolicy.should_stop` says so.
It keeps no state and does no I/O, so the trio client and the simulator share it.

The share ratio is bytes uploaded over bytes downloaded, as every mainstream
client shows it. A torrent that downloaded nothing (we created it, or had the
data already) counts against its size instead, so an initial seed with
``ratio_target=2`` stops after uploading two copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

__all__ = ["SeedingPolicy"]


@dataclass(frozen=True, slots=True)
class SeedingPolicy:
    """Stop seeding at ``ratio_target``, after ``time_target`` seconds, or both.

    With neither target the torrent seeds forever. ``require`` says whether
    reaching ``"either"`` target is enough (the default: whichever comes first)
    or ``"both"`` must be reached (a set target that is None counts as reached,
    so ``"both"`` with one target means that target).
    """

    ratio_target: float | None = None
    """Stop once uploaded / downloaded reaches this (None: no ratio target)."""
    time_target: float | None = None
    """Stop once complete for this many seconds (None: no time target)."""
    require: Literal["either", "both"] = "either"

    def __post_init__(self) -> None:
        for name in ("ratio_target", "time_target"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be finite and non-negative, got {value!r}")
        if self.require not in ("either", "both"):
            raise ConfigError(f"require must be 'either' or 'both', got {self.require!r}")

    @property
    def seeds_forever(self) -> bool:
        """No target is set: :meth:`should_stop` is always False."""
        return self.ratio_target is None and self.time_target is None

    def ratio(self, *, uploaded: int, downloaded: int, total_length: int) -> float:
        """The share ratio as targets count it (uploaded over downloaded, else over size)."""
        if uploaded < 0 or downloaded < 0 or total_length < 0:
            raise ConfigError("byte counts cannot be negative")
        base = downloaded if downloaded > 0 else total_length
        if base == 0:
            return math.inf  # nothing to give back for
        return uploaded / base

    def should_stop(
        self, *, uploaded: int, downloaded: int, total_length: int, seeding_for: float
    ) -> bool:
        """Whether a complete torrent that has seeded for ``seeding_for`` seconds should stop.

        ``uploaded`` and ``downloaded`` are payload bytes over the torrent's
        life (this session's, or carried over from resume data).
        """
        if not seeding_for >= 0:
            raise ConfigError(f"seeding time must be non-negative, got {seeding_for!r}")
        if self.seeds_forever:
            return False
        ratio = self.ratio(uploaded=uploaded, downloaded=downloaded, total_length=total_length)
        reached = []
        if self.ratio_target is not None:
            reached.append(ratio >= self.ratio_target)
        if self.time_target is not None:
            reached.append(seeding_for >= self.time_target)
        return all(reached) if self.require == "both" else any(reached)
