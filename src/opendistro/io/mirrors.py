"""HTTP mirrors (BEP 19 web seeds) as sources of one torrent, beside its peers.

Each mirror is a :class:`MirrorSource`: one task that, while the source
policy lets mirrors work (:class:`~opendistro.swarm.sources.MirrorGate`), asks
the swarm session for a run of consecutive whole pieces nobody has started
(rarest first, so what the swarm lacks comes first), fetches it with ranged
GETs, and hands each piece to the session as if a peer had sent it: the same
hash check, the same smart ban (a mirror whose data fails is dropped for this
release), the same final path.

A failing mirror backs off exponentially and is retried
(:class:`~opendistro.mirrors.backoff.MirrorHealth`). When no peer is connected
and every mirror has failed ``give_up_after`` times in a row, or was dropped,
the download stops with an error naming each source and its last failure;
what was verified stays on disk for the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ..errors import MirrorError
from ..mirrors.backoff import MirrorHealth
from ..mirrors.http import HttpMirror
from ..mirrors.webseed import check_base_url, piece_spans
from ..swarm.sources import MirrorGate, SourcePolicy

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["MirrorSource", "MirrorSources"]

RUN_BYTES = 4 << 20
"""About how much one range request fetches (whole pieces, at least one)."""
IDLE_POLL = 0.2
"""How often an idle mirror asks again whether there is work (seconds)."""


@dataclass(eq=False)
class MirrorSource:
    """One mirror base URL: its health and what it delivered."""

    url: str
    health: MirrorHealth = field(default_factory=MirrorHealth)
    bytes_received: int = 0
    dropped_reason: str | None = None

    @property
    def label(self) -> str:
        return self.url

    def close(self, reason: str) -> None:
        """Stop using this mirror for this release (its data failed verification)."""
        self.dropped_reason = reason
        self.health.drop(MirrorError(reason))


class MirrorSources:
    """Runs a torrent's mirrors under the source policy; see the module docstring."""

    def __init__(
        self,
        torrent: Torrent,
        urls: list[str],
        policy: SourcePolicy,
        *,
        http: HttpMirror | None = None,
        give_up_after: int = 5,
    ) -> None:
        self._torrent = torrent
        self.sources: list[MirrorSource] = []
        for url in urls:
            try:
                check_base_url(url)
            except MirrorError as exc:
                torrent.client.log(f"ignoring web seed {url!r}: {exc}")
                continue
            self.sources.append(MirrorSource(url))
        self.gate = MirrorGate(policy)
        self._http = http or HttpMirror()
        self.give_up_after = give_up_after
        self.first_mirror_byte_at: float | None = None

    @property
    def bytes_received(self) -> int:
        return sum(source.bytes_received for source in self.sources)

    async def run(self) -> None:
        if not self.sources or not self.gate.policy.uses_mirrors:
            return
        async with self._http, trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_swarm)
            for source in self.sources:
                nursery.start_soon(self._feed, source)

    async def _watch_swarm(self) -> None:
        """Tell the gate how the swarm is doing, and give up when nothing can deliver."""
        torrent = self._torrent
        while not torrent.complete.is_set():
            now = trio.current_time()
            self.gate.update(now, torrent.swarm_download_rate(now))
            if not torrent.peers and self._all_sources_down():
                torrent.fail_with_sources(self._describe_failures())
                return
            await trio.sleep(IDLE_POLL)

    def _all_sources_down(self) -> bool:
        return all(
            source.dropped_reason is not None
            or source.health.consecutive_failures >= self.give_up_after
            for source in self.sources
        )

    def _describe_failures(self) -> str:
        parts = []
        for source in self.sources:
            error = source.dropped_reason or source.health.last_error or "no answer"
            parts.append(f"{source.url}: {error}")
        return "no peers, and every mirror failed: " + "; ".join(parts)

    async def _feed(self, source: MirrorSource) -> None:
        torrent = self._torrent
        while not torrent.complete.is_set() and source.dropped_reason is None:
            now = trio.current_time()
            session, metainfo = torrent.session, torrent.metainfo
            if session is None or metainfo is None or not self.gate.mirrors_wanted():
                await trio.sleep(IDLE_POLL)
                continue
            if not source.health.available(now):
                await trio.sleep(min(IDLE_POLL, max(0.0, source.health.retry_at - now)))
                continue
            run_pieces = max(1, RUN_BYTES // metainfo.piece_length)
            pieces = session.mirror_pick(source, run_pieces)
            if not pieces:
                await trio.sleep(IDLE_POLL)
                continue
            first, count = pieces[0], len(pieces)
            start = first * metainfo.piece_length
            end = min(metainfo.total_length, (first + count) * metainfo.piece_length)
            buffer = bytearray(end - start)
            began = trio.current_time()
            try:
                spans = piece_spans(metainfo, source.url, first, count)
                await self._http.fetch_run(spans, memoryview(buffer), offset=start)
            except MirrorError as exc:
                delay = source.health.failed(trio.current_time(), exc)
                torrent.client.log(f"mirror {source.url} failed ({exc}); retry in {delay:.1f} s")
                torrent.execute(session.mirror_failed(source, trio.current_time()))
                continue
            finished = trio.current_time()
            source.health.succeeded(finished, len(buffer), max(finished - began, 1e-6))
            source.bytes_received += len(buffer)
            if self.first_mirror_byte_at is None:
                self.first_mirror_byte_at = finished
            for offset, index in enumerate(pieces):
                piece_start = offset * metainfo.piece_length
                piece = buffer[piece_start : piece_start + metainfo.piece_size(index)]
                torrent.mirror_piece(source, index, piece)
