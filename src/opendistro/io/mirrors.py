"""HTTP mirrors (BEP 19 web seeds) as sources of one torrent, beside its peers.

Each mirror is a :class:`MirrorSource`: one task that, while the source
policy lets mirrors work (:class:`~opendistro.swarm.sources.MirrorGate`), asks
the swarm session for a run of consecutive whole pieces nobody has started
(rarest first, so what the swarm lacks comes first), fetches it with ranged
GETs, and hands each piece on the moment its last byte arrives, as if a peer
had sent it: the same hash check, the same smart ban (a mirror whose data
fails is dropped for this release), the same final path.

A run is sized to about two seconds of the mirror's measured rate, so a slow
mirror never holds much. A mirror with nothing new to start takes the untouched
tail of the run that would finish last, split by the two mirrors' rates; the
slower one stops its request when it reaches what it lost. Work so moves to
whichever source finishes it soonest.

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

RUN_SECONDS = 2.0
"""How much work one range request asks of a mirror: about this long at its measured rate.

Short enough that a slow mirror holds little the others must wait for, long
enough that a fast one spends most of its time sending, not waiting for replies."""
FIRST_RUN_BYTES = 1 << 20
"""A mirror's first run, before its rate is known."""
MAX_RUN_BYTES = 16 << 20
IDLE_POLL = 0.05
"""How often an idle mirror asks again whether there is work (seconds)."""


class _RunTaken(Exception):
    """The rest of a mirror's run went to another source: stop this request."""


@dataclass(eq=False)
class _Run:
    """Consecutive pieces ``next_index .. end-1`` one mirror is fetching in one go."""

    next_index: int
    end: int
    started: float

    @property
    def remaining(self) -> int:
        return self.end - self.next_index


@dataclass(eq=False)
class MirrorSource:
    """One mirror base URL: its health and what it delivered."""

    url: str
    health: MirrorHealth = field(default_factory=MirrorHealth)
    bytes_received: int = 0
    dropped_reason: str | None = None
    run: _Run | None = None

    @property
    def label(self) -> str:
        return self.url

    def close(self, reason: str) -> None:
        """Stop using this mirror for this release (its data failed verification)."""
        self.dropped_reason = reason
        self.health.drop(MirrorError(reason))


def _remaining(mirror: MirrorSource) -> int:
    return mirror.run.remaining if mirror.run is not None else 0


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
            rate = torrent.swarm_download_rate(now)
            self.gate.update(now, rate, peers_connected=bool(torrent.peers))
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
            pieces = session.mirror_pick(source, self._run_pieces(source, metainfo.piece_length))
            if not pieces:
                pieces = self._take_over(source)
            if not pieces:
                await trio.sleep(IDLE_POLL)
                continue
            source.run = _Run(pieces[0], pieces[-1] + 1, now)
            try:
                await self._fetch_run(source, source.run)
            except _RunTaken:
                pass
            except MirrorError as exc:
                delay = source.health.failed(trio.current_time(), exc)
                torrent.client.log(f"mirror {source.url} failed ({exc}); retry in {delay:.1f} s")
            finally:
                run, source.run = source.run, None
                if run.remaining and torrent.session is not None:
                    left = range(run.next_index, run.end)
                    now = trio.current_time()
                    torrent.execute(torrent.session.mirror_stopped(source, now, left))

    def _run_pieces(self, source: MirrorSource, piece_length: int) -> int:
        """Pieces for the next run: about :data:`RUN_SECONDS` at this mirror's rate."""
        rate = source.health.throughput
        budget = FIRST_RUN_BYTES if rate is None else rate * RUN_SECONDS
        return max(1, int(min(budget, MAX_RUN_BYTES)) // piece_length)

    def _take_over(self, source: MirrorSource) -> list[int]:
        """Nothing new to start: take the tail of the run that would finish last.

        The pieces a mirror has not begun to receive are split so both
        mirrors should finish at the same moment (by their measured rates;
        a mirror without a measurement counts as as fast as the other). The
        slower mirror keeps the head, and stops when its request reaches the
        pieces it lost.
        """
        session = self._torrent.session
        if session is None:
            return []

        def rate(mirror: MirrorSource, default: float) -> float:
            return mirror.health.throughput or default

        candidates = [
            other for other in self.sources
            if other is not source and other.run is not None and other.run.remaining > 1
        ]
        if not candidates:
            return []
        mine = rate(source, 1.0)
        slowest = max(candidates, key=lambda other: _remaining(other) / rate(other, mine))
        run = slowest.run
        assert run is not None
        theirs = rate(slowest, mine)
        share = int((run.remaining - 1) * mine / (mine + theirs))
        if share < 1:
            return []
        tail = range(run.end - share, run.end)
        moved = session.mirror_hand_over(slowest, source, tail)
        if moved != list(tail):  # a peer shares one of them: runs must stay contiguous
            session.mirror_hand_over(source, slowest, moved)
            return []
        run.end = tail.start
        return moved

    async def _fetch_run(self, source: MirrorSource, run: _Run) -> None:
        """Fetch the run's pieces with range requests, handing each on as soon as it is whole."""
        torrent = self._torrent
        metainfo = torrent.metainfo
        assert metainfo is not None
        piece_length = metainfo.piece_length
        first, end_offset = run.next_index, min(metainfo.total_length, run.end * piece_length)
        buffers: dict[int, bytearray] = {}

        def finish_up_to(offset: int) -> None:
            """Hand on every piece of the run that ends at or before ``offset``."""
            while run.next_index < run.end and (
                min((run.next_index + 1) * piece_length, metainfo.total_length) <= offset
            ):
                index = run.next_index
                piece = buffers.pop(index, None)
                if piece is None:  # all padding
                    piece = bytearray(metainfo.piece_size(index))
                run.next_index += 1
                source.bytes_received += len(piece)
                torrent.mirror_piece(source, index, piece)

        def sink(position: int, data: memoryview) -> None:
            if self.first_mirror_byte_at is None:
                self.first_mirror_byte_at = trio.current_time()
            while data:
                index = position // piece_length
                if index >= run.end:
                    raise _RunTaken
                piece_start = index * piece_length
                buffer = buffers.get(index)
                if buffer is None:
                    buffer = buffers[index] = bytearray(metainfo.piece_size(index))
                at = position - piece_start
                count = min(len(data), len(buffer) - at)
                buffer[at : at + count] = data[:count]
                position += count
                data = data[count:]
                finish_up_to(position)

        began = trio.current_time()
        try:
            for span in piece_spans(metainfo, source.url, first, run.end - first):
                if span.torrent_offset >= run.end * piece_length:
                    raise _RunTaken
                finish_up_to(span.torrent_offset)  # pieces that end in padding
                await self._http.stream_span(span, sink)
            finish_up_to(end_offset)
        finally:
            finished = trio.current_time()
            delivered = (run.next_index - first) * piece_length
            if delivered:
                source.health.succeeded(finished, delivered, max(finished - began, 1e-6))
