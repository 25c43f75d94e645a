"""The version a user already has, seen as a delta client sees it (blocking file reads).

A client updating from old files, and a publisher packing what those
clients lack (:func:`opendistro.delta.pack.file_chunk_hashes`), must chunk
the old files identically, or the pack would miss what the client misses.
Both go through :func:`old_chunks`: every segment's bytes, and every
compressed segment's content, cut at tar member edges where the content is a
tar (spec/delta-index.md §2.7). A segment that cannot be read is skipped: it
is simply not reused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import OpenDistroError
from .archives import SegmentLayout, read_content, read_range, segment_file
from .chunker import Chunk, ChunkerParams, chunk_stream
from .tarcuts import TarCuts

__all__ = ["MAX_FILES", "files_below", "old_chunks", "old_layouts"]

MAX_FILES = 100_000
"""The most files a previous version may have."""


def files_below(paths: Sequence[Path]) -> list[Path]:
    """The regular files among ``paths`` and below the folders among them, in order.

    Symbolic links are not followed; more than :data:`MAX_FILES` files raise
    :class:`~opendistro.errors.OpenDistroError`.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()))
        elif path.is_file():
            files.append(path)
        if len(files) > MAX_FILES:
            raise OpenDistroError(f"more than {MAX_FILES} files in the previous version")
    return files


def old_layouts(path: Path) -> list[SegmentLayout] | None:
    """The segments of an old file (no recipes: only new releases need them); None if unreadable."""
    try:
        return segment_file(path, find_recipes=False)
    except (OSError, OpenDistroError):
        return None


def old_chunks(
    path: Path,
    layouts: Sequence[SegmentLayout],
    params: ChunkerParams,
    spill: Callable[[int], Path] | None = None,
) -> Iterator[tuple[int, bool, Chunk]]:
    """``(segment number, whether of its content, chunk)`` for every chunk of an old file.

    With ``spill``, the content of compressed segment ``n`` is also written
    to ``spill(n)`` as it is chunked, so a chunk of it can later be read back
    with a positioned read.
    """
    for number, layout in enumerate(layouts):
        try:
            raw = read_range(path, layout.offset, layout.length)
            for chunk in chunk_stream(raw, params, forced=TarCuts()):
                yield number, False, chunk
            if layout.kind == "raw":
                continue
            content = read_content(path, layout)
            if spill is None:
                for chunk in chunk_stream(content, params, forced=TarCuts()):
                    yield number, True, chunk
                continue
            with open(spill(number), "wb") as out:
                for chunk in chunk_stream(_tee(content, out.write), params, forced=TarCuts()):
                    yield number, True, chunk
        except (OSError, OpenDistroError):
            continue


def _tee(content: Iterator[bytes], write: Callable[[bytes], object]) -> Iterator[bytes]:
    for data in content:
        write(data)
        yield data
