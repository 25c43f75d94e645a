"""What the tracker tells observers: per-torrent health (JSON) and Prometheus metrics.

The tracker never sees piece maps, only each peer's ``left``, so its health
figures are estimates from that, defined here once and used by both
``/health.json`` and ``/metrics``:

* *size*: the largest ``left`` any peer of the swarm announced (every leecher
  starts with the whole torrent left); a leecher's *completion* is
  ``1 - left / size``.
* *distributed copies (estimate)*: seeders plus the leechers' completions
  added up: how many whole copies the data in the swarm would make. The real
  (BEP-style) figure is at most this: it is equal only when leechers hold
  different pieces. Seeders are a lower bound of the rarest piece's
  availability.
* *time to death if seeders leave*: suppose every seeder leaves now, every
  leecher leaves the moment it would finish at its current completion rate (a
  stalled one stays), and nobody gains data meanwhile. The torrent is dead
  once the leechers left hold less than one copy between them. 0: it would
  die at once (or already has); None (``+Inf`` in Prometheus): no end in
  sight. It is pessimistic about data (leechers gain pieces from each other)
  and optimistic about which pieces they hold; :mod:`opendistro.swarm.health`
  computes the piece-exact figure from a client's view.

Output is bounded: per-peer lists and rankings are cut to a few dozen
entries and carry no addresses, and ``/metrics`` lists the largest swarms
only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from .registry import PeerRecord, Swarm, TrackerRegistry

__all__ = [
    "ServerCounters",
    "TorrentHealth",
    "render_prometheus",
    "time_to_death",
    "torrent_health",
    "tracker_summary",
]

MAX_LISTED_PEERS: Final = 50
MAX_RANKED: Final = 20
MAX_METRIC_TORRENTS: Final = 1000
PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class ServerCounters:
    """What the server counts beyond the registry: scrapes, credit and queueing."""

    scrapes: int = 0
    credit_accepted: int = 0
    credit_stale: int = 0
    credit_rejected: int = 0
    credit_refused_submissions: int = 0
    """Submissions refused whole (not bencoded, too large, too many receipts)."""
    announces_shed: int = 0
    """Announces refused because the queue of waiting announces was full."""
    announces_waiting: int = 0
    """Announces waiting for their turn right now (a gauge)."""


@dataclass(frozen=True, slots=True)
class TorrentHealth:
    """The tracker's view of one swarm's health (see the module docstring)."""

    info_hash: bytes
    seeders: int
    leechers: int
    completed: int
    identified: int
    size_estimate: int
    distributed_copies: float
    time_to_death: float | None
    ranking: tuple[dict[str, Any], ...]
    peers: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "info_hash": self.info_hash.hex(),
            "seeders": self.seeders,
            "leechers": self.leechers,
            "completed": self.completed,
            "identified_peers": self.identified,
            "size_estimate": self.size_estimate,
            "distributed_copies_estimate": round(self.distributed_copies, 3),
            "rarest_availability_lower_bound": self.seeders,
            "time_to_death_if_seeders_leave": (
                None if self.time_to_death is None else round(self.time_to_death, 1)
            ),
            "contribution_ranking": list(self.ranking),
            "peers": list(self.peers),
        }


def time_to_death(swarm: Swarm) -> float | None:
    """Seconds until the leechers alone hold less than one copy (see the module docstring)."""
    leechers = [peer for peer in swarm.peers.values() if not peer.is_seed]
    completions = [swarm.completion(peer) for peer in leechers]
    remaining = math.fsum(completions)
    if swarm.size_hint <= 0 or remaining < 1.0:
        return 0.0

    def departure(peer: PeerRecord) -> float:
        return peer.left / peer.rate if peer.rate > 0 else math.inf

    for peer, completion in sorted(zip(leechers, completions, strict=True),
                                   key=lambda pair: departure(pair[0])):
        leaves = departure(peer)
        if math.isinf(leaves):
            return None
        remaining -= completion
        if remaining < 1.0 - 1e-9:
            return leaves
    return None  # pragma: no cover - unreachable: the sum starts at >= 1 and ends at 0


def torrent_health(
    registry: TrackerRegistry,
    info_hash: bytes,
    swarm: Swarm,
    *,
    max_peers: int = MAX_LISTED_PEERS,
    max_ranked: int = MAX_RANKED,
) -> TorrentHealth:
    """Health of one swarm; identities are ranked by the standings the registry was given."""
    peers = list(swarm.peers.values())
    identified = [peer for peer in peers if peer.identity is not None]
    ranking: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    for peer in identified if max_ranked > 0 else ():
        assert peer.identity is not None
        if peer.identity in seen:
            continue
        seen.add(peer.identity)
        standing = registry.standing_of(peer.identity)
        assert standing is not None
        ranking.append({
            "identity": peer.identity.hex(),
            "score": standing.score,
            "uploaded": standing.uploaded,
            "downloaded": standing.downloaded,
            "receivers": standing.receivers,
            "seeding_seconds": standing.seeding_seconds,
            "seeding_now": peer.is_seed,
        })
    ranking.sort(key=lambda entry: (-entry["score"], -entry["seeding_seconds"], entry["identity"]))
    listed = sorted(peers, key=lambda peer: (-peer.uploaded, peer.left))[:max_peers] if (
        max_peers > 0
    ) else []
    copies = swarm.seeders + math.fsum(swarm.completion(p) for p in peers if not p.is_seed)
    return TorrentHealth(
        info_hash=info_hash,
        seeders=swarm.seeders,
        leechers=swarm.leechers,
        completed=swarm.completed,
        identified=len(identified),
        size_estimate=swarm.size_hint,
        distributed_copies=copies,
        time_to_death=time_to_death(swarm),
        ranking=tuple(ranking[:max_ranked]),
        peers=tuple(
            {
                "identity": peer.identity.hex() if peer.identity is not None else None,
                "seed": peer.is_seed,
                "completion": round(swarm.completion(peer), 4),
                "left": peer.left,
                "uploaded": peer.uploaded,
                "downloaded": peer.downloaded,
                "completion_rate": round(peer.rate, 1),
            }
            for peer in listed
        ),
    )


def largest_swarms(registry: TrackerRegistry, limit: int) -> list[tuple[bytes, Swarm]]:
    """The ``limit`` swarms with the most peers (ties by info-hash, for a stable order)."""
    swarms = list(registry.swarms())
    swarms.sort(key=lambda item: (-len(item[1].peers), item[0]))
    return swarms[:limit]


def tracker_summary(registry: TrackerRegistry, counters: ServerCounters) -> dict[str, Any]:
    """The tracker-wide figures of ``/stats.json`` (its first four keys are the old ones)."""
    stats = registry.stats()
    return {
        "torrents": stats.torrents,
        "seeders": stats.seeders,
        "leechers": stats.leechers,
        "completed": stats.completed,
        "announces": registry.counters.announces,
        "announces_refused": registry.counters.refused,
        "announces_shed": counters.announces_shed,
        "announces_waiting": counters.announces_waiting,
        "scrapes": counters.scrapes,
        "identity_proofs_accepted": registry.counters.proofs_accepted,
        "identity_proofs_ignored": registry.counters.proofs_ignored,
        "seeding_seconds_observed": round(registry.counters.seeding_seconds, 1),
        "credit_receipts": {
            "accepted": counters.credit_accepted,
            "stale": counters.credit_stale,
            "rejected": counters.credit_rejected,
            "refused_submissions": counters.credit_refused_submissions,
        },
    }


# ---------------------------------------------------------------- Prometheus


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Exposition:
    """Collects metric families in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{_label(text)}"' for key, text in labels.items())
            self._lines.append(f"{name}{{{rendered}}} {_number(value)}" if rendered
                               else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_prometheus(
    registry: TrackerRegistry, counters: ServerCounters, *, max_torrents: int = MAX_METRIC_TORRENTS
) -> str:
    """The ``/metrics`` page: tracker-wide counters, then gauges per torrent (largest first)."""
    out = _Exposition()
    stats = registry.stats()
    rc = registry.counters
    prefix = "opendistro_tracker"
    out.family(f"{prefix}_torrents", "gauge", "Torrents with a swarm.", [({}, stats.torrents)])
    out.family(f"{prefix}_peers", "gauge", "Peers in all swarms, by role.",
               [({"role": "seeder"}, stats.seeders), ({"role": "leecher"}, stats.leechers)])
    out.family(f"{prefix}_announces_total", "counter", "Announces handled, by outcome.",
               [({"result": "answered"}, rc.announces), ({"result": "refused"}, rc.refused),
                ({"result": "shed"}, counters.announces_shed)])
    out.family(f"{prefix}_announces_waiting", "gauge", "Announces queued for their turn.",
               [({}, counters.announces_waiting)])
    out.family(f"{prefix}_scrapes_total", "counter", "HTTP scrapes answered.",
               [({}, counters.scrapes)])
    out.family(f"{prefix}_identity_proofs_total", "counter",
               "Announce identity proofs, by outcome.",
               [({"result": "accepted"}, rc.proofs_accepted),
                ({"result": "ignored"}, rc.proofs_ignored)])
    out.family(f"{prefix}_seeding_seconds_total", "counter",
               "Seeding time credited to identities.", [({}, rc.seeding_seconds)])
    out.family(f"{prefix}_credit_receipts_total", "counter", "Credit receipts, by outcome.",
               [({"result": "accepted"}, counters.credit_accepted),
                ({"result": "stale"}, counters.credit_stale),
                ({"result": "rejected"}, counters.credit_rejected)])
    out.family(f"{prefix}_credit_submissions_refused_total", "counter",
               "Credit submissions refused whole.", [({}, counters.credit_refused_submissions)])
    healths = [
        torrent_health(registry, info_hash, swarm, max_peers=0, max_ranked=0)
        for info_hash, swarm in largest_swarms(registry, max_torrents)
    ]

    def per_torrent(name: str, kind: str, help_text: str, value: str) -> None:
        out.family(f"{prefix}_torrent_{name}", kind, help_text, [
            ({"info_hash": health.info_hash.hex()}, _value(health, value)) for health in healths
        ])

    per_torrent("seeders", "gauge", "Seeders of the torrent.", "seeders")
    per_torrent("leechers", "gauge", "Leechers of the torrent.", "leechers")
    per_torrent("completed_total", "counter", "Finished downloads reported.", "completed")
    per_torrent("identified_peers", "gauge", "Peers that proved a credit identity.",
                "identified")
    per_torrent("distributed_copies", "gauge",
                "Copies the swarm's data would make (estimate from left).", "distributed_copies")
    per_torrent("time_to_death_seconds", "gauge",
                "Estimated seconds the torrent survives if seeders leave.", "time_to_death")
    return out.text()


def _value(health: TorrentHealth, name: str) -> float:
    if name == "time_to_death":
        return math.inf if health.time_to_death is None else health.time_to_death
    value = getattr(health, name)
    assert isinstance(value, int | float)
    return float(value)
