"""A running torrent's swarm health, and surveying a swarm without downloading from it.

:func:`~opendistro.swarm.health.swarm_health` is pure: it wants our bitfield
and a :class:`~opendistro.swarm.health.PeerView` per peer. This module
gathers those from a live :class:`~opendistro.io.torrent.Torrent` (the
bitfields each connection has seen, the session's rates, the credit each
proved identity earned with us) and keeps the one figure nobody else tracks:
how fast each peer completes, from how its piece count grew over the last
:data:`COMPLETION_WINDOW` seconds.

:func:`survey_swarm` is ``opendistro health TORRENT``'s look at a swarm: it
joins as an *observer* (a torrent that never sends Interested or Request, so
it takes nothing from anyone), lets the trackers and peers introduce
themselves for a while, and reports what it saw; :func:`tracker_reports` adds
what each tracker says (our ``/health.json``, or a plain scrape).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import trio

from ..bitfield import Bitfield
from ..errors import ConfigError, DownloadError, TrackerError
from ..magnet import MagnetLink
from ..metainfo import Metainfo
from ..swarm.health import PeerView, SwarmHealth, swarm_health
from ..tracker.client import scrape
from ..tracker.health_client import fetch_tracker_health

if TYPE_CHECKING:
    from .client import Client
    from .torrent import Torrent

__all__ = [
    "COMPLETION_WINDOW",
    "CompletionRates",
    "HealthMonitor",
    "SwarmSurvey",
    "survey_swarm",
    "tracker_reports",
]

COMPLETION_WINDOW: Final = 30.0
"""Seconds of piece counts a completion rate is measured over."""
SURVEY_TRACKER_TIMEOUT: Final = 10.0

K = TypeVar("K", bound=Hashable)


class CompletionRates(Generic[K]):
    """How fast each member's piece count grows, from counts sampled over time.

    Samples older than ``window`` seconds are dropped, but the newest of them
    is kept as the baseline, so a rate always spans at least the window once
    there is that much history. A member not in a sample is forgotten: memory
    is bounded by the peers connected.
    """

    def __init__(self, *, window: float = COMPLETION_WINDOW) -> None:
        if window <= 0:
            raise ConfigError("the completion window must be positive")
        self.window = window
        self._samples: dict[K, collections.deque[tuple[float, int]]] = {}

    def sample(self, now: float, counts: dict[K, int]) -> None:
        """Record each member's piece count at ``now``; forget members not given."""
        for key in [key for key in self._samples if key not in counts]:
            del self._samples[key]
        for key, count in counts.items():
            samples = self._samples.setdefault(key, collections.deque())
            if samples and samples[-1][0] >= now:
                samples[-1] = (samples[-1][0], count)
                continue
            samples.append((now, count))
            while len(samples) > 2 and samples[1][0] <= now - self.window:
                samples.popleft()

    def rate(self, key: K, bytes_per_piece: float) -> float | None:
        """Bytes per second ``key`` completed over the window; None before two samples."""
        samples = self._samples.get(key)
        if not samples or len(samples) < 2:
            return None
        (first_time, first_count), (last_time, last_count) = samples[0], samples[-1]
        gained = max(last_count - first_count, 0)
        return gained * bytes_per_piece / (last_time - first_time)


_SELF: Final = "self"


class HealthMonitor:
    """Builds one torrent's :class:`SwarmHealth` from its live session state."""

    def __init__(self, torrent: Torrent) -> None:
        self._torrent = torrent
        self.completion: CompletionRates[object] = CompletionRates()

    def _bitfields(self) -> dict[object, Bitfield] | None:
        torrent = self._torrent
        if torrent.metainfo is None or torrent.have is None:
            return None
        count = torrent.metainfo.num_pieces
        fields: dict[object, Bitfield] = {_SELF: torrent.have}
        for peer in torrent.peers:
            has = peer.connection.peer_has
            # A peer with nothing may say nothing at all (BEP 3).
            fields[peer] = has if has is not None and has.length == count else Bitfield(count)
        return fields

    def sample(self, now: float) -> None:
        """Note every member's piece count (the torrent's tick does this each second)."""
        fields = self._bitfields()
        if fields is not None:
            self.completion.sample(now, {key: field.count for key, field in fields.items()})

    def health(self, now: float, *, count_self: bool = True) -> SwarmHealth:
        """The swarm as this torrent sees it now (see :mod:`opendistro.swarm.health`).

        ``count_self=False`` leaves us out of the figures: an observer is no member.
        """
        torrent = self._torrent
        metainfo = torrent.metainfo
        if metainfo is None or torrent.have is None:
            raise ConfigError(f"{torrent.name}: the swarm's health needs the torrent's pieces")
        self.sample(now)
        fields = self._bitfields()
        assert fields is not None
        per_piece = metainfo.total_length / max(metainfo.num_pieces, 1)
        session = torrent.session
        known = set(session.peers) if session is not None else set()
        views = []
        for peer in torrent.peers:
            live = session if session is not None and peer in known else None
            credit_session = torrent.credit.session(peer) if torrent.credit else None
            earned = torrent.credit.peer_credit(peer) if torrent.credit else None
            views.append(
                PeerView(
                    key=peer.label,
                    have=fields[peer],
                    download_rate=live.download_rate(peer, now) if live is not None else 0.0,
                    upload_rate=live.upload_rate(peer, now) if live is not None else 0.0,
                    identity=credit_session.peer_identity if credit_session else None,
                    # Our own ledger's standing of it, floored like a tracker's score.
                    score=max(0, earned) if earned is not None else None,
                    completion_rate=self.completion.rate(peer, per_piece),
                )
            )
        return swarm_health(
            have=torrent.have,
            peers=views,
            piece_length=metainfo.piece_length,
            total_length=metainfo.total_length,
            self_completion_rate=self.completion.rate(_SELF, per_piece),
            count_self=count_self,
        )


# -- opendistro health TORRENT -------------------------------------------------------


@dataclass(frozen=True)
class SwarmSurvey:
    """What an observer saw of a swarm in ``seconds``."""

    seconds: float
    peers_seen: int
    """Peers that completed a handshake with us."""
    health: SwarmHealth | None
    """None: the torrent's metadata never arrived (a magnet with no reachable peer)."""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"seconds": self.seconds, "peers_seen": self.peers_seen}
        if self.health is None:
            document["error"] = "no peer sent the torrent's metadata"
        else:
            document.update(self.health.to_json())
        return document


async def survey_swarm(
    client: Client,
    source: Metainfo | MagnetLink,
    scratch_dir: str | os.PathLike[str],
    *,
    seconds: float,
    peers: Sequence[tuple[str, int]] = (),
) -> SwarmSurvey:
    """Join ``source``'s swarm as an observer for ``seconds`` and report its health.

    The observer announces to the torrent's trackers and connects to the
    peers they (and ``peers``) name, but never declares interest, so it
    downloads nothing and costs the swarm only handshakes and bitfields.
    Its files (sparse and empty) go to ``scratch_dir``, which must outlive
    ``client``. We are left out of the figures.
    """
    if not seconds > 0:
        raise ConfigError("a survey needs a positive number of seconds")
    if isinstance(source, Metainfo):
        torrent = await client.add_torrent(source, scratch_dir, peers=peers, observe=True)
    else:
        torrent = await client.add_magnet(source, scratch_dir, peers=peers, observe=True)
    # Peers by peer id, not by connection: one that dialled us as we dialled it, or
    # came back, is one peer.
    seen: set[bytes | None] = set()
    deadline = trio.current_time() + seconds
    while (left := deadline - trio.current_time()) > 0:
        seen.update(peer.connection.remote_peer_id for peer in torrent.peers)
        if torrent.error is not None:
            raise DownloadError(torrent.error)
        await trio.sleep(min(0.25, left))
    seen.update(peer.connection.remote_peer_id for peer in torrent.peers)
    health = torrent.health(count_self=False) if torrent.have is not None else None
    return SwarmSurvey(seconds, len(seen), health)


async def tracker_reports(
    trackers: Iterable[str], info_hash: bytes, *, timeout: float = SURVEY_TRACKER_TIMEOUT
) -> list[dict[str, Any]]:
    """What each tracker says about ``info_hash``, one JSON-ready dictionary per tracker.

    An HTTP(S) tracker is first asked for ``/health.json`` (ours serves it);
    one without it, and every UDP tracker, is scraped (seeders, leechers,
    completed). A tracker that answers neither is reported with its error.
    """
    reports: list[dict[str, Any]] = []
    for url in dict.fromkeys(trackers):
        report: dict[str, Any] = {"url": url}
        health_error: str | None = None
        if url.lower().startswith(("http://", "https://")):
            try:
                document = await fetch_tracker_health(url, info_hash, timeout=timeout)
            except TrackerError as exc:
                health_error = str(exc)
            else:
                listed = document["torrents"]
                report.update(source="health", torrent=listed[0] if listed else None)
                reports.append(report)
                continue
        try:
            stats = (await scrape(url, [info_hash[:20]], timeout=timeout)).get(info_hash[:20])
        except TrackerError as exc:
            report.update(source=None, error=str(exc) if health_error is None else
                          f"{health_error}; scrape: {exc}")
        else:
            report["source"] = "scrape"
            if stats is None:
                report.update(seeders=None, leechers=None, completed=None)
            else:
                report.update(
                    seeders=stats.complete, leechers=stats.incomplete, completed=stats.downloaded
                )
        reports.append(report)
    return reports
