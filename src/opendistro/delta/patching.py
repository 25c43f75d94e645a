"""Which segments of a new release get a binary patch, and against which old content.

The publisher runs this when it has the previous release's files
(``opendistro create --previous OLD``): for every new segment with at least
16 KiB of content in chunks the previous release lacks, it finds the old
segment content that shares the most anchors with it (same member or file
under another name: ``libarrow.so.1600`` becomes ``libarrow.so.1601``) and
makes a patch (:mod:`opendistro.delta.binpatch`). :func:`~opendistro.delta.pack.write_pack`
keeps the patches that are cheaper than the chunks they replace.

Old contents are read once to sketch them (a sample of their anchors, a few
KB each), then once more for each patch made against them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import OpenDistroError
from .archives import SegmentLayout, read_content, read_range
from .binpatch import OldAnchors, anchor_keys, make_patch
from .index import DeltaIndex
from .pack import SegmentPatch
from .previous import files_below, old_layouts

__all__ = ["MIN_MISSING", "find_patches"]

MIN_MISSING: Final = 16 << 10
"""A segment gets a patch only when at least this much of its content is in new chunks.

Whatever the share: a patch of a large tar with a few changed files is small too
(unchanged stretches become zero differences), and beats their whole chunks."""
MIN_BASE: Final = 4 << 10
_SKETCH_RATE: Final = 16
"""One anchor key in this many goes into a content's sketch."""
_MIN_SHARED: Final = 4
"""Sketch keys an old content must share with a new one to be its base."""


@dataclass(frozen=True)
class _OldContent:
    """One segment of an old file, whose content may become a patch's base."""

    path: Path
    layout: SegmentLayout

    def read(self) -> bytes:
        layout = self.layout
        if layout.kind == "raw":
            return b"".join(read_range(self.path, layout.offset, layout.length))
        return b"".join(read_content(self.path, layout))


def _sketch(content: bytes) -> set[int]:
    return {key for key in map(hash, anchor_keys(content)) if key % _SKETCH_RATE == 0}


def find_patches(
    root: Path,
    index: DeltaIndex,
    known: Collection[bytes],
    previous_files: Sequence[Path],
    *,
    multi_file: bool,
) -> list[SegmentPatch]:
    """Patches for the segments of ``index``'s release (in ``root``) that changed throughout.

    ``known`` are the chunk hashes users of the previous release have
    (blocking; about a second per MB of content patched).
    """
    candidates = []
    for file_number, indexed in enumerate(index.files):
        for segment_number, segment in enumerate(indexed.segments):
            if segment.fallback_reason is not None:
                continue  # compressed bytes nobody can rebuild: no content to patch
            missing = sum(length for length, digest in segment.chunks if digest not in known)
            if missing >= MIN_MISSING:
                candidates.append((file_number, segment_number))
    if not candidates:
        return []
    olds = _old_contents(previous_files)
    if not olds:
        return []
    patches: list[SegmentPatch] = []
    for file_number, segment_number in candidates:
        indexed = index.files[file_number]
        segment = indexed.segments[segment_number]
        parts = (index.name, *indexed.path) if multi_file else (index.name,)
        source = root.joinpath(*parts)
        if segment.kind == "raw":
            new = b"".join(read_range(source, segment.offset, segment.length))
        else:
            new = b"".join(read_content(source, segment))
        sketch = _sketch(new)
        best = max(olds, key=lambda old: len(sketch & old[1]))
        if len(sketch & best[1]) < _MIN_SHARED:
            continue
        try:
            base = best[0].read()
        except (OSError, OpenDistroError):  # pragma: no cover - read fine when sketched,
            continue  # so only fails if the old file changes meanwhile (a race, not testable)
        data = make_patch(OldAnchors(base), new)
        patches.append(SegmentPatch(
            file_number, segment_number, len(base), hashlib.sha256(base).digest(),
            hashlib.sha256(new).digest(), data,
        ))
    return patches


def _old_contents(previous_files: Sequence[Path]) -> list[tuple[_OldContent, set[int]]]:
    """Every old segment content worth patching against, with its sketch."""
    olds = []
    for path in files_below(previous_files):
        layouts = old_layouts(path)
        for layout in layouts or ():
            old = _OldContent(path, layout)
            try:
                content = old.read()
            except (OSError, OpenDistroError):  # pragma: no cover - old_layouts read it fine,
                continue  # so only fails if the file changes meanwhile (a race, not testable)
            if len(content) >= MIN_BASE:
                olds.append((old, _sketch(content)))
    return olds
