"""The delta plan: which content a client reuses from old segments and which it fetches."""

from __future__ import annotations

import hashlib

from opendistro.delta.chunker import ChunkerParams
from opendistro.delta.index import DeltaIndex, IndexedFile, Segment
from opendistro.delta.plan import ChunkCatalogue, Fetch, Reuse, plan_update

PARAMS = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")


def digest(n: int) -> bytes:
    return hashlib.sha256(b"%d" % n).digest()[:16]


def test_plan_reuses_known_chunks_and_fetches_the_rest() -> None:
    raw = Segment("raw", 0, 400, 400, ((100, digest(1)), (100, digest(2)), (200, digest(3))))
    # A compressed segment missing little of its content: delta, not whole.
    gzip = Segment(
        "gzip", 400, 250, 300, ((100, digest(1)), (100, digest(4)), (100, digest(2))),
        {"level": 9}, bytes(32),
    )  # fmt: skip
    index = DeltaIndex(1, PARAMS, bytes(20), None, "r", (IndexedFile(("f",), 650, (raw, gzip)),))
    old: ChunkCatalogue[str] = ChunkCatalogue()
    old.add_chunks("old-a", [(0, 100, digest(1)), (100, 100, digest(2))])
    old.add_chunks("old-b", [(0, 200, digest(2)), (50, 200, digest(3))])  # a second copy: kept
    assert len(old) == 3
    assert old.find(digest(3), 200) == ("old-b", 50)
    assert old.find(digest(3), 100) is None  # same hash, other length: not the same chunk
    plan = plan_update(index, old)
    first, second = plan.segments
    assert first.ops == [Reuse("old-a", 0, 0, 200), Reuse("old-b", 50, 200, 200)]
    assert (first.reused, first.fetched) == (400, 0)
    assert second.ops == [Reuse("old-a", 0, 0, 100), Fetch(100, 100), Reuse("old-a", 100, 200, 100)]
    assert (second.reused, second.fetched, second.whole) == (200, 100, False)
    assert (plan.content_reused, plan.content_fetched, plan.whole_bytes) == (600, 100, 0)
    assert plan.bytes_to_transfer == 100


def test_a_compressed_segment_is_fetched_whole_when_its_content_costs_more() -> None:
    gzip = Segment("gzip", 0, 150, 300, ((150, digest(5)), (150, digest(6))), {"l": 1}, bytes(32))
    index = DeltaIndex(1, PARAMS, bytes(20), None, "r", (IndexedFile(("f",), 150, (gzip,)),))
    plan = plan_update(index, ChunkCatalogue[str]())
    (only,) = plan.segments
    assert only.whole and only.ops == []
    assert (plan.content_fetched, plan.whole_bytes, plan.bytes_to_transfer) == (0, 150, 150)
