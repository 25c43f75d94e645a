"""Which bytes of a new release a client already has, and which it must fetch: the delta plan.

Sans I/O. The driver chunks the old version's files (each segment's content,
with the index's parameters) into a :class:`ChunkCatalogue`; :func:`plan_update`
then walks every segment of every new file and, chunk by chunk, either
reuses bytes from an old segment (any old file: renamed and moved files are
found too) or marks them to fetch. Neighbouring operations are merged, so a
long unchanged stretch is one copy and a changed region one fetch.

It also decides, per segment, whether a delta is worth it: when fetching the
missing content of a compressed segment costs at least its compressed size,
fetching the compressed bytes outright is cheaper than fetching the content
and recompressing, and the plan says so (``whole``). By default the cost is
the missing content's length (it travels uncompressed); a driver that gets
content compressed (a pack on a mirror, a peer answering with zlib) passes a
:data:`FetchCost` that says what the missing chunks really cost.

A segment may also have a binary patch against old content the client holds
(:mod:`opendistro.delta.binpatch`); with a :data:`PatchCost` the plan takes
it where it costs less than the missing chunks (or the whole segment) and
keeps the chunk plan beside it, for when the patch does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .index import DeltaIndex, Segment

__all__ = [
    "ChunkCatalogue",
    "Fetch",
    "FetchCost",
    "PatchCost",
    "Reuse",
    "SegmentPlan",
    "UpdatePlan",
    "plan_update",
]

SourceKey = TypeVar("SourceKey", bound=Hashable)

FetchCost = Callable[[Segment, Sequence[tuple[int, bytes]]], int]
"""Bytes it would take to fetch the given missing ``(length, hash)`` chunks of a segment."""


PatchCost = Callable[[int, int, Segment], int | None]
"""Bytes to fetch a usable patch for segment ``(file number, segment number)``; None: none."""


def _content_cost(segment: Segment, missing: Sequence[tuple[int, bytes]]) -> int:
    return sum(length for length, _ in missing)


@dataclass(frozen=True, slots=True)
class Reuse(Generic[SourceKey]):
    """Copy ``length`` content bytes from old segment ``source`` at ``source_offset``."""

    source: SourceKey
    source_offset: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch ``length`` content bytes at ``offset`` of the new segment."""

    offset: int
    length: int


@dataclass
class SegmentPlan(Generic[SourceKey]):
    """How to obtain one new segment: ``whole`` (its bytes as published) or ``ops`` in order."""

    file: int
    segment: int
    kind: str
    whole: bool
    ops: list[Reuse[SourceKey] | Fetch] = field(default_factory=list)
    patch_bytes: int | None = None
    """When set, the segment's content comes from a binary patch of this size; ``whole`` and
    ``ops`` are what to do instead if the patch turns out not to apply."""

    @property
    def reused(self) -> int:
        return sum(op.length for op in self.ops if isinstance(op, Reuse))

    @property
    def fetched(self) -> int:
        return sum(op.length for op in self.ops if isinstance(op, Fetch))


@dataclass
class UpdatePlan(Generic[SourceKey]):
    """The plan for a whole release: one :class:`SegmentPlan` per segment of every file."""

    segments: list[SegmentPlan[SourceKey]]
    whole_bytes: int
    """Bytes fetched as published (segments for which a delta does not pay)."""

    @property
    def content_reused(self) -> int:
        return sum(
            plan.reused for plan in self.segments if not plan.whole and plan.patch_bytes is None
        )

    @property
    def content_fetched(self) -> int:
        return sum(
            plan.fetched for plan in self.segments if not plan.whole and plan.patch_bytes is None
        )

    @property
    def patch_bytes(self) -> int:
        """Bytes of the binary patches the plan applies."""
        return sum(plan.patch_bytes or 0 for plan in self.segments)

    @property
    def bytes_to_transfer(self) -> int:
        """Content to fetch, segments fetched whole and patches: the update's traffic, index
        aside."""
        return self.content_fetched + self.whole_bytes + self.patch_bytes


class ChunkCatalogue(Generic[SourceKey]):
    """The chunks of the old version: chunk hash to where its bytes are."""

    def __init__(self) -> None:
        self._where: dict[bytes, tuple[SourceKey, int, int]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def add(self, digest: bytes, source: SourceKey, offset: int, length: int) -> None:
        """Chunk ``digest`` is ``length`` bytes at ``offset`` of old segment content ``source``."""
        self._where.setdefault(digest, (source, offset, length))

    def add_chunks(self, source: SourceKey, chunks: Iterable[tuple[int, int, bytes]]) -> None:
        """Add ``(offset, length, digest)`` chunks of one old segment's content."""
        for offset, length, digest in chunks:
            self.add(digest, source, offset, length)

    def find(self, digest: bytes, length: int) -> tuple[SourceKey, int] | None:
        """Where a chunk of this digest and length lies, if the old version has it."""
        found = self._where.get(digest)
        if found is None or found[2] != length:
            return None
        return found[0], found[1]


def plan_update(
    index: DeltaIndex,
    old: ChunkCatalogue[SourceKey],
    fetch_cost: FetchCost | None = None,
    patch_cost: PatchCost | None = None,
) -> UpdatePlan[SourceKey]:
    """Plan every segment of the release described by ``index`` against the old chunks.

    ``fetch_cost`` prices a compressed segment's missing chunks for the
    whole-or-delta decision (default: their length); ``patch_cost`` says which
    segments have a usable binary patch and what it costs.
    """
    plans: list[SegmentPlan[SourceKey]] = []
    whole_bytes = 0
    cost = fetch_cost or _content_cost
    for file_number, indexed in enumerate(index.files):
        for segment_number, segment in enumerate(indexed.segments):
            plan = _plan_segment(file_number, segment_number, segment, old, cost, patch_cost)
            if plan.whole and plan.patch_bytes is None:
                whole_bytes += segment.length
            plans.append(plan)
    return UpdatePlan(plans, whole_bytes)


def _plan_segment(
    file_number: int,
    segment_number: int,
    segment: Segment,
    old: ChunkCatalogue[SourceKey],
    cost: FetchCost,
    patch_cost: PatchCost | None,
) -> SegmentPlan[SourceKey]:
    plan: SegmentPlan[SourceKey] = SegmentPlan(file_number, segment_number, segment.kind, False)
    ops = plan.ops
    offset = 0
    missing: list[tuple[int, bytes]] = []
    for length, digest in segment.chunks:
        found = old.find(digest, length)
        if found is None:
            missing.append((length, digest))
            last = ops[-1] if ops else None
            if isinstance(last, Fetch) and last.offset + last.length == offset:
                ops[-1] = Fetch(last.offset, last.length + length)
            else:
                ops.append(Fetch(offset, length))
        else:
            source, source_offset = found
            last = ops[-1] if ops else None
            if (
                isinstance(last, Reuse)
                and last.source == source
                and last.offset + last.length == offset
                and last.source_offset + last.length == source_offset
            ):
                ops[-1] = Reuse(source, last.source_offset, last.offset, last.length + length)
            else:
                ops.append(Reuse(source, source_offset, offset, length))
        offset += length
    price: int | None = None
    if segment.kind != "raw" and missing:
        price = cost(segment, missing)
        if price >= segment.length:
            plan.whole = True
            plan.ops = []
            price = segment.length
    if missing and patch_cost is not None:
        patch = patch_cost(file_number, segment_number, segment)
        if patch is not None:
            if price is None:
                price = cost(segment, missing)
            if patch < price:
                plan.patch_bytes = patch
    return plan
