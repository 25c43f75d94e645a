"""Whom to dial next, among the addresses trackers, PEX and magnet links offered.

Candidates arrive far faster than a client may connect (a tracker returns 50,
every PEX message up to 50 more, many stale), so the client keeps a bounded
list and dials the most promising ones as connection slots free up: never
tried before first, then those that failed least, each failure pushing the
next attempt further out (exponential back-off), and addresses that keep
failing are forgotten. Ties are broken at random so that many clients given
the same tracker answer do not all dial the same peers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["PeerCandidates"]

Address = tuple[str, int]


@dataclass
class _Candidate:
    failures: int = 0
    retry_at: float = 0.0
    connected: bool = False
    dialing: bool = False


class PeerCandidates:
    """A bounded set of addresses to dial, ranked by past success."""

    def __init__(
        self,
        *,
        max_candidates: int = 1000,
        retry_base: float = 30.0,
        max_failures: int = 5,
        rng: random.Random | None = None,
    ) -> None:
        self.max_candidates = max_candidates
        self.retry_base = retry_base
        self.max_failures = max_failures
        self._rng = rng or random.Random()
        self._known: dict[Address, _Candidate] = {}

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, address: object) -> bool:
        return address in self._known

    def add(self, address: Address) -> bool:
        """Remember an address; False when it is known already or the list is full."""
        if address in self._known or len(self._known) >= self.max_candidates:
            return False
        self._known[address] = _Candidate()
        return True

    def retry_now(self, address: Address) -> bool:
        """Make ``address`` due at once, waiving its back-off (the user asked for this peer).

        False when the list is full and does not know it. A connected or
        already dialling address stays as it is.
        """
        candidate = self._known.get(address)
        if candidate is None:
            return self.add(address)
        candidate.retry_at = 0.0
        return True

    def next_to_dial(self, now: float, count: int) -> list[Address]:
        """Up to ``count`` addresses to dial now, marked as being dialled."""
        if count <= 0:
            return []
        ready = [
            (candidate.failures, self._rng.random(), address)
            for address, candidate in self._known.items()
            if not candidate.connected and not candidate.dialing and candidate.retry_at <= now
        ]
        ready.sort()
        chosen = [address for _, _, address in ready[:count]]
        for address in chosen:
            self._known[address].dialing = True
        return chosen

    def connected(self, address: Address) -> None:
        """A connection to ``address`` is up (we dialled it, or it dialled us)."""
        candidate = self._known.setdefault(address, _Candidate())
        candidate.connected = True
        candidate.dialing = False
        candidate.failures = 0

    def failed(self, address: Address, now: float) -> None:
        """Dialling ``address`` failed: back off, or forget it after too many failures."""
        candidate = self._known.get(address)
        if candidate is None:
            return
        candidate.dialing = False
        candidate.failures += 1
        if candidate.failures >= self.max_failures:
            del self._known[address]
            return
        candidate.retry_at = now + self.retry_base * 2 ** (candidate.failures - 1)

    def forget(self, address: Address) -> None:
        """Never offer ``address`` again unless it is added anew (it was banned)."""
        self._known.pop(address, None)

    def disconnected(self, address: Address, now: float) -> None:
        """A connection ended: the address may be dialled again after a pause."""
        candidate = self._known.get(address)
        if candidate is None:
            return
        candidate.connected = False
        candidate.dialing = False
        candidate.retry_at = now + self.retry_base
