"""How healthy is a swarm, as one client sees it? Pure functions over bitfields and rates.

The input is what a client knows about one torrent: its own bitfield and, for
each connected peer, the peer's bitfield, the rates data flows each way, and
the peer's credit identity and standing if known. :func:`swarm_health` turns
that into a :class:`SwarmHealth`, whose :meth:`~SwarmHealth.to_json` is what an
API or ``opendistro health`` shows. Nothing here does I/O or reads a clock, so
the numbers are exact for hand-built inputs.

Definitions (the local client counts as a member of the swarm unless
``count_self=False``):

* *availability* of a piece: how many members hold it. The *rarest piece's
  availability* is the minimum over pieces.
* *distributed copies* (as BitTorrent clients show it): the rarest
  availability plus the fraction of pieces held more often than that. 2.25
  means every piece has two copies and a quarter of them a third.
* *seed-only pieces*: held by seeds but by no leecher. If the seeds left now,
  those pieces would be gone.
* *time to death if seeders leave*: suppose every seed leaves now, each
  leecher leaves the moment it would finish at its current completion rate
  (bytes it lacks / rate; a leecher of unknown or zero rate stays) and
  nobody gains pieces meanwhile. The swarm is dead once some piece has no
  holder left: for a piece that is when its last holder leaves, for the
  swarm the earliest such time. 0: it would die at once (seed-only or
  missing pieces); None: no end in sight. Ignoring the pieces leechers trade
  meanwhile makes this a pessimistic estimate.
* *time to independence*: the least time until leechers could hold every
  seed-only piece, if all their download went to those pieces: seed-only
  bytes / the leechers' summed completion rate. Seeds leaving sooner kill
  the swarm; 0 when there are no seed-only pieces, None when no leecher is
  known to progress.

Availability is counted with bit-sliced integer adders (one Python integer
per bit of the count), so the cost is O(peers x log(peers)) big-integer
operations, not O(peers x pieces) Python steps: fine for thousands of pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..bitfield import Bitfield
from ..errors import ConfigError

__all__ = ["PeerHealth", "PeerView", "SwarmHealth", "swarm_health"]


@dataclass(frozen=True, slots=True)
class PeerView:
    """What the client knows about one connected peer of the torrent."""

    key: str
    """How to name the peer in the output (an address, a peer id in hex...)."""
    have: Bitfield
    download_rate: float = 0.0
    """Bytes per second it sends us."""
    upload_rate: float = 0.0
    """Bytes per second we send it."""
    identity: bytes | None = None
    """Its od_credit identity, if it proved one."""
    score: int | None = None
    """Its standing's score (``Standing.score``), if known."""
    completion_rate: float | None = None
    """Bytes per second its bitfield grows (from its HAVE messages); None: unknown."""


@dataclass(frozen=True, slots=True)
class PeerHealth:
    """One peer in the health report."""

    key: str
    seed: bool
    completion: float
    download_rate: float
    upload_rate: float
    identity: bytes | None
    score: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "seed": self.seed,
            "completion": round(self.completion, 4),
            "download_rate": self.download_rate,
            "upload_rate": self.upload_rate,
            "identity": self.identity.hex() if self.identity is not None else None,
            "score": self.score,
        }


@dataclass(frozen=True, slots=True)
class SwarmHealth:
    """The health of one torrent's swarm (see the module docstring for each figure)."""

    num_pieces: int
    seeders: int
    leechers: int
    distributed_copies: float
    rarest_availability: int
    rarest_pieces: int
    """How many pieces have only the rarest availability."""
    missing_pieces: int
    """Pieces nobody in view holds: while above 0, nobody here can complete."""
    seed_only_pieces: int
    time_to_death: float | None
    time_to_independence: float | None
    download_rate: float
    upload_rate: float
    peers: tuple[PeerHealth, ...]
    ranking: tuple[str, ...]
    """Peer keys by contribution: standing score (unknown as 0), then rate to us."""

    def to_json(self) -> dict[str, Any]:
        return {
            "num_pieces": self.num_pieces,
            "seeders": self.seeders,
            "leechers": self.leechers,
            "distributed_copies": round(self.distributed_copies, 4),
            "rarest_availability": self.rarest_availability,
            "rarest_pieces": self.rarest_pieces,
            "missing_pieces": self.missing_pieces,
            "seed_only_pieces": self.seed_only_pieces,
            "time_to_death_if_seeders_leave": _seconds(self.time_to_death),
            "time_to_independence": _seconds(self.time_to_independence),
            "download_rate": self.download_rate,
            "upload_rate": self.upload_rate,
            "peers": [peer.to_json() for peer in self.peers],
            "contribution_ranking": list(self.ranking),
        }


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _bits(bitfield: Bitfield) -> int:
    """The pieces as one integer: piece i is bit ``length - 1 - i`` (wire order, no padding)."""
    spare = (-bitfield.length) % 8
    return int.from_bytes(bitfield.to_bytes(), "big") >> spare


class _Counter:
    """Per-piece counts, bit-sliced: ``planes[b]`` holds bit b of every piece's count."""

    def __init__(self, full: int) -> None:
        self.full = full
        self.planes: list[int] = []

    def add(self, pieces: int) -> None:
        carry = pieces
        for bit, plane in enumerate(self.planes):
            if not carry:
                return
            self.planes[bit], carry = plane ^ carry, plane & carry
        if carry:
            self.planes.append(carry)

    def at_least(self, threshold: int) -> int:
        """The pieces whose count is at least ``threshold``."""
        less = 0
        equal = self.full
        for bit in reversed(range(max(len(self.planes), threshold.bit_length()))):
            plane = self.planes[bit] if bit < len(self.planes) else 0
            if (threshold >> bit) & 1:
                less |= equal & ~plane
                equal &= plane
            else:
                equal &= ~plane
        return self.full & ~less


def _check_rate(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite, non-negative number of bytes per second")


def swarm_health(
    *,
    have: Bitfield,
    peers: Iterable[PeerView],
    piece_length: int,
    total_length: int,
    self_completion_rate: float | None = None,
    count_self: bool = True,
) -> SwarmHealth:
    """The health of a torrent from our bitfield ``have`` and our view of ``peers``.

    ``self_completion_rate`` is how fast we complete (bytes/s), used when we
    are a leecher. Inconsistent inputs (a peer bitfield of another length, a
    layout that does not fit the piece count, negative rates) raise
    :class:`~opendistro.errors.ConfigError`.
    """
    views: Sequence[PeerView] = list(peers)
    count = have.length
    if piece_length <= 0 or not (
        (count == 0 and total_length == 0)
        or (count > 0 and (count - 1) * piece_length < total_length <= count * piece_length)
    ):
        raise ConfigError(
            f"{count} pieces of {piece_length} bytes cannot make {total_length} bytes"
        )
    _check_rate("self_completion_rate", self_completion_rate)
    for view in views:
        if view.have.length != count:
            raise ConfigError(
                f"peer {view.key}: bitfield of {view.have.length} pieces, not {count}"
            )
        _check_rate(f"peer {view.key} download_rate", view.download_rate)
        _check_rate(f"peer {view.key} upload_rate", view.upload_rate)
        _check_rate(f"peer {view.key} completion_rate", view.completion_rate)
    last_size = total_length - (count - 1) * piece_length if count else 0
    full = (1 << count) - 1

    def size_of(pieces: int) -> int:
        """Bytes in the pieces of ``pieces`` (the last piece, bit 0, may be short)."""
        return pieces.bit_count() * piece_length - (piece_length - last_size) * (pieces & 1)

    # (pieces held, completion rate) of every member; seeds and leechers apart.
    members = [(_bits(view.have), view.completion_rate) for view in views]
    if count_self:
        members.append((_bits(have), self_completion_rate))
    counter = _Counter(full)
    leecher_union = 0
    seeders = 0
    for pieces, _ in members:
        counter.add(pieces)
        if pieces == full and count:
            seeders += 1
        else:
            leecher_union |= pieces
    leechers = len(members) - seeders

    rarest, above = _rarest(counter, len(members), count)
    held = counter.at_least(1)
    missing = count - held.bit_count()
    seed_only = (full & ~leecher_union & held) if seeders else 0
    ttd = _time_to_death([member for member in members if member[0] != full], full, size_of)
    progress = math.fsum(rate or 0.0 for pieces, rate in members if pieces != full)
    if not seed_only:
        independence: float | None = 0.0
    elif progress > 0:
        independence = size_of(seed_only) / progress
    else:
        independence = None

    peer_health = tuple(
        PeerHealth(
            key=view.key,
            seed=view.have.complete and count > 0,
            completion=view.have.count / count if count else 1.0,
            download_rate=view.download_rate,
            upload_rate=view.upload_rate,
            identity=view.identity,
            score=view.score,
        )
        for view in views
    )
    ranking = tuple(
        view.key
        for view in sorted(
            views, key=lambda view: (-(view.score or 0), -view.download_rate, view.key)
        )
    )
    return SwarmHealth(
        num_pieces=count,
        seeders=seeders,
        leechers=leechers,
        distributed_copies=rarest + (above / count if count else 0.0),
        rarest_availability=rarest,
        rarest_pieces=count - above,
        missing_pieces=missing,
        seed_only_pieces=seed_only.bit_count(),
        time_to_death=ttd,
        time_to_independence=independence,
        download_rate=math.fsum(view.download_rate for view in views),
        upload_rate=math.fsum(view.upload_rate for view in views),
        peers=peer_health,
        ranking=ranking,
    )


def _rarest(counter: _Counter, members: int, count: int) -> tuple[int, int]:
    """(the rarest availability, how many pieces are held more often than that)."""
    if count == 0:
        return 0, 0
    low, high = 0, members  # at_least(low) is every piece; find the largest such low
    while low < high:
        middle = (low + high + 1) // 2
        if counter.at_least(middle) == counter.full:
            low = middle
        else:
            high = middle - 1
    return low, counter.at_least(low + 1).bit_count()


def _time_to_death(
    leechers: list[tuple[int, float | None]], full: int, size_of: Callable[[int], int]
) -> float | None:
    """When the first piece loses its last leecher (see the module docstring)."""
    if not full:
        return None  # an empty torrent cannot lose a piece

    def departure(member: tuple[int, float | None]) -> float:
        pieces, rate = member
        lacking = size_of(full & ~pieces)
        return lacking / rate if rate else math.inf

    covered = 0
    earliest: float | None = None
    # Latest leavers first: the first holder met of a piece is its last to leave.
    for member in sorted(leechers, key=departure, reverse=True):
        fresh = member[0] & ~covered
        if fresh:
            covered |= fresh
            earliest = departure(member)
    if covered != full or earliest is None:
        return 0.0
    return None if math.isinf(earliest) else earliest
