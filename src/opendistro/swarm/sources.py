"""When to use HTTP mirrors beside the swarm: the source policy.

Mirror bandwidth costs the publisher money, and a swarm that carries the load
is free, so by default (``prefer-p2p``) mirrors only fill in: they take work
while the swarm delivers less than ``min_swarm_rate``, or nothing at all,
for ``stall_after`` seconds (at once when the last peer left), and stop
taking new work once the swarm has delivered well again for
``recover_after`` seconds. The other policies are
plain: ``fastest`` uses every source at once, ``mirrors-only`` and
``p2p-only`` just one kind.

This is policy only, sans I/O: the driver reports the swarm's recent
download rate with the time, and asks whether mirrors should fetch now.
"""

from __future__ import annotations

import enum

from ..errors import ConfigError

__all__ = ["MirrorGate", "SourcePolicy"]


class SourcePolicy(enum.Enum):
    """Which sources a download may use (``--sources`` on the command line)."""

    PREFER_P2P = "prefer-p2p"
    FASTEST = "fastest"
    MIRRORS_ONLY = "mirrors-only"
    P2P_ONLY = "p2p-only"

    @property
    def uses_peers(self) -> bool:
        return self is not SourcePolicy.MIRRORS_ONLY

    @property
    def uses_mirrors(self) -> bool:
        return self is not SourcePolicy.P2P_ONLY


class MirrorGate:
    """Opens mirrors when the swarm falls short, and closes them when it recovers."""

    def __init__(
        self,
        policy: SourcePolicy = SourcePolicy.PREFER_P2P,
        *,
        min_swarm_rate: float = 64 * 1024,
        stall_after: float = 1.0,
        recover_after: float = 5.0,
    ) -> None:
        if min_swarm_rate < 0 or stall_after < 0 or recover_after < 0:
            raise ConfigError("mirror gate thresholds cannot be negative")
        self.policy = policy
        self.min_swarm_rate = min_swarm_rate
        self.stall_after = stall_after
        self.recover_after = recover_after
        self._short_since: float | None = None
        self._had_peers = False
        self._good_since: float | None = None
        self._open = False
        self.opened_at: float | None = None
        """When mirrors were last opened because the swarm fell short (for reports)."""

    def update(self, now: float, swarm_rate: float, *, peers_connected: bool = True) -> None:
        """The swarm delivered ``swarm_rate`` bytes/s lately.

        When the last peer has gone there is nothing to wait for: mirrors open
        at once rather than after ``stall_after``. (Before any peer connected,
        the swarm gets ``stall_after`` to show up.)
        """
        self._had_peers |= peers_connected
        if self._had_peers and not peers_connected and not self._open:
            self._open = True
            self.opened_at = now
        if swarm_rate < self.min_swarm_rate:
            self._good_since = None
            if self._short_since is None:
                self._short_since = now
            if not self._open and now - self._short_since >= self.stall_after:
                self._open = True
                self.opened_at = now
        else:
            self._short_since = None
            if self._good_since is None:
                self._good_since = now
            if self._open and now - self._good_since >= self.recover_after:
                self._open = False

    def mirrors_wanted(self) -> bool:
        """Whether mirrors should take new work now."""
        if self.policy is SourcePolicy.P2P_ONLY:
            return False
        if self.policy is not SourcePolicy.PREFER_P2P:
            return True
        return self._open
