"""Using a pack's binary patches on the client: finding their bases, applying them, checking.

A patch (:mod:`opendistro.delta.binpatch`) names the exact old content it
applies to by length and SHA-256; :func:`find_bases` looks for it among the
old version's segment contents (only those of the right length are hashed).
:func:`apply_checked` then writes the result to a scratch file and checks it
while writing: every chunk against the delta index (the signed part), and the
whole against the SHA-256 the pack states. Anything wrong raises
:class:`~opendistro.errors.DeltaError` and the caller falls back to chunks;
old files are only read (memory-mapped).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeltaError
from .binpatch import apply_patch
from .chunker import chunk_hash
from .index import DeltaIndex
from .pack import PackedPatch

__all__ = ["OldContent", "apply_checked", "find_bases"]


@dataclass(frozen=True)
class OldContent:
    """``length`` bytes at ``offset`` of ``path``: the content of one old segment."""

    path: Path
    offset: int
    length: int

    def sha256(self) -> bytes:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            left = self.length
            while left:
                data = handle.read(min(left, 1 << 20))
                if not data:
                    raise DeltaError(f"{self.path} is shorter than it was")
                digest.update(data)
                left -= len(data)
        return digest.digest()


def find_bases(
    patches: Sequence[PackedPatch], index: DeltaIndex, olds: Iterable[OldContent]
) -> dict[tuple[int, int], tuple[PackedPatch, OldContent]]:
    """The patches whose segment exists and whose base the client holds (blocking).

    Keyed by ``(file number, segment number)``. An old content is hashed
    only if some patch wants its length, and at most once.
    """
    by_length: dict[int, list[OldContent]] = {}
    for old in olds:
        if old.length > 0:
            by_length.setdefault(old.length, []).append(old)
    hashes: dict[OldContent, bytes | None] = {}
    found: dict[tuple[int, int], tuple[PackedPatch, OldContent]] = {}
    for patch in patches:
        if patch.file >= len(index.files) or patch.segment >= len(
            index.files[patch.file].segments
        ):
            continue
        for old in by_length.get(patch.base_length, ()):
            if old not in hashes:
                try:
                    hashes[old] = old.sha256()
                except (OSError, DeltaError):
                    hashes[old] = None
            if hashes[old] == patch.base_sha256:
                found[(patch.file, patch.segment)] = (patch, old)
                break
    return found


class _Window:
    """A read-only view of ``length`` bytes at ``offset`` of a memory map, sliced as bytes."""

    def __init__(self, mapped: mmap.mmap, offset: int, length: int) -> None:
        self._mapped, self._offset, self._length = mapped, offset, length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key: slice, /) -> bytes:
        start, stop, _ = key.indices(self._length)
        return self._mapped[self._offset + start : self._offset + max(start, stop)]


class _ChunkCheck:
    """Checks a stream against a segment's ``(length, hash)`` chunk list as it passes."""

    def __init__(self, chunks: Sequence[tuple[int, bytes]]) -> None:
        self._chunks: Iterator[tuple[int, bytes]] = iter(chunks)
        self._next = next(self._chunks, None)
        self._carry = bytearray()

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        position = 0
        while self._next is not None:
            length, digest = self._next
            need = length - len(self._carry)
            if len(view) - position < need:
                self._carry += view[position:]
                return
            piece = view[position : position + need]
            if self._carry:
                self._carry += piece
                actual = chunk_hash(self._carry)
                self._carry.clear()
            else:
                actual = chunk_hash(piece)
            position += need
            if actual != digest:
                raise DeltaError("a patched chunk does not match the delta index")
            self._next = next(self._chunks, None)
        if position < len(view):
            raise DeltaError("a patch produced more content than the delta index lists")

    def finish(self) -> None:
        if self._next is not None or self._carry:
            raise DeltaError("a patch produced less content than the delta index lists")


def apply_checked(
    patch: bytes,
    base: OldContent,
    chunks: Sequence[tuple[int, bytes]],
    result_sha256: bytes,
    target: Path,
) -> int:
    """Apply ``patch`` to ``base`` into ``target``, checked; return the content's length.

    ``target`` is removed again when anything is wrong (DeltaError, or
    OSError reading the base).
    """
    check = _ChunkCheck(chunks)
    digest = hashlib.sha256()
    written = 0
    try:
        with open(base.path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size < base.offset + base.length:
                raise DeltaError(f"{base.path} is shorter than it was")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped, open(
                target, "wb"
            ) as out:
                for piece in apply_patch(patch, _Window(mapped, base.offset, base.length)):
                    check.feed(piece)
                    digest.update(piece)
                    out.write(piece)
                    written += len(piece)
        check.finish()
        if digest.digest() != result_sha256:
            raise DeltaError("a patch's result is not the content its pack names")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return written
