"""Content-defined chunking, algorithm ``od-cdc-1`` (normative text: spec/delta-index.md).

Chunk boundaries are chosen by the bytes just before them, not by their offset,
so an edit early in a file moves the boundaries near the edit and no others: the
chunks after it are the same byte strings as before and a client that has them
need not fetch them again.

Python cannot afford a rolling hash per byte, so the boundary test is built from
operations that run in C over whole buffers:

1. ``bytes.translate`` maps every byte to four table bits, derived from a seed;
2. one big-integer XOR of shifted copies folds bits of the bytes 0, 7, 19 and
   37 positions back into one *symbol* bit per position. Mixing several bytes
   keeps symbols balanced on skewed data (executables full of zeros, text), for
   which one byte's table bit alone is far from a fair coin;
3. ``bytes.find`` looks for a fixed run of symbols ``1...10`` ending where a
   chunk may end. A pattern that ends in its only ``0`` lets CPython's search
   skip ahead by the pattern length at most positions.

As in FastCDC, the chunk's first ``min_size`` bytes are never searched, a longer
(rarer) pattern is used up to ``avg_size`` and a shorter one after it
("normalised chunking", which keeps sizes near the average), and a chunk is cut
at ``max_size`` if nothing matched. Every cut depends only on the chunk's own
bytes, which makes boundaries resynchronise right after an edit.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..errors import ConfigError, LocalProtocolError

__all__ = [
    "ALGORITHM",
    "DEFAULT_SEED",
    "HASH_SIZE",
    "Chunk",
    "Chunker",
    "ChunkerParams",
    "CutFinder",
    "chunk_bytes",
    "chunk_hash",
    "chunk_stream",
    "symbol_table",
]

ALGORITHM = "od-cdc-1"
DEFAULT_SEED = b"opendistro"
#: Bytes of SHA-256 kept per chunk: ample against accidental collisions, and a
#: forged one only makes the final piece check fail.
HASH_SIZE = 16

#: How far back (in bytes) each of the four table bits of a symbol looks.
TAPS = (0, 7, 19, 37)
_CONTEXT = TAPS[-1]

MIN_MIN_SIZE = 64
MAX_MAX_SIZE = 16 * 1024 * 1024
MIN_AVG_BITS = 8
MAX_AVG_BITS = 22
MAX_SEED_SIZE = 64
#: Normalised chunking: the pattern is this many symbols longer before the
#: average size and this many shorter after it.
NORMALISATION = 1

#: Symbols are computed over blocks of at most this many bytes, so the big
#: integers involved (and the mask cached for them) stay a few MiB.
_BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ChunkerParams:
    """Everything that decides where chunks end; recorded in a delta index.

    A client must chunk its old files with exactly the publisher's parameters,
    or no boundary would line up. ``avg_size`` is a power of two: the size up to
    which the rarer pattern is used; real chunks average slightly more.
    """

    algorithm: str = ALGORITHM
    min_size: int = 2 * 1024
    avg_size: int = 8 * 1024
    max_size: int = 64 * 1024
    seed: bytes = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.algorithm != ALGORITHM:
            raise ConfigError(f"unknown chunking algorithm {self.algorithm!r}")
        for name in ("min_size", "avg_size", "max_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"chunker {name} must be an integer")
        avg = self.avg_size
        if avg <= 0 or avg & (avg - 1) or not MIN_AVG_BITS <= avg.bit_length() - 1 <= MAX_AVG_BITS:
            raise ConfigError(
                f"chunker avg_size must be a power of two from 2^{MIN_AVG_BITS}"
                f" to 2^{MAX_AVG_BITS}, not {avg}"
            )
        if not MIN_MIN_SIZE <= self.min_size <= avg <= self.max_size <= MAX_MAX_SIZE:
            raise ConfigError(
                f"chunker sizes must satisfy {MIN_MIN_SIZE} <= min_size <= avg_size <= max_size"
                f" <= {MAX_MAX_SIZE}, not {self.min_size}/{avg}/{self.max_size}"
            )
        if not isinstance(self.seed, bytes) or not 1 <= len(self.seed) <= MAX_SEED_SIZE:
            raise ConfigError(f"chunker seed must be 1 to {MAX_SEED_SIZE} bytes")

    @property
    def hard_pattern(self) -> bytes:
        """The symbols that end a chunk shorter than ``avg_size``."""
        return _pattern(self.avg_size.bit_length() - 1 + NORMALISATION)

    @property
    def easy_pattern(self) -> bytes:
        """The symbols that end a chunk longer than ``avg_size``."""
        return _pattern(self.avg_size.bit_length() - 1 - NORMALISATION)


def _pattern(length: int) -> bytes:
    return b"\x01" * (length - 1) + b"\x00"


@functools.lru_cache(maxsize=16)
def symbol_table(seed: bytes) -> bytes:
    """The 256-entry translation table of ``seed``: bit t of entry v is table bit t of v.

    For each of the four bits, the byte values are ordered by SHA-256 of
    ``seed || t || v`` and the first half get the bit, so every table bit is
    1 for exactly 128 byte values.
    """
    table = bytearray(256)
    for bit in range(len(TAPS)):
        keys = {value: hashlib.sha256(seed + bytes((bit, value))).digest() for value in range(256)}
        for value in sorted(range(256), key=lambda v: (keys[v], v))[:128]:
            table[value] |= 1 << bit
    return bytes(table)


_mask = 0
_mask_bytes = 0


def _low_bits_mask(size: int) -> int:
    """An integer of at least ``size`` bytes 0x01, shared by all chunkers (it costs a pass)."""
    global _mask, _mask_bytes
    if size > _mask_bytes:
        _mask = int.from_bytes(b"\x01" * size, "little")
        _mask_bytes = size
    return _mask


class _Mixer:
    """Turns bytes into symbols (one 0/1 byte each), carrying context between calls."""

    def __init__(self, seed: bytes) -> None:
        self._table = symbol_table(seed)
        self._context = b""

    def symbols(self, data: bytes | bytearray | memoryview) -> bytes:
        window = self._context + data
        size = len(window)
        translated = window.translate(self._table)
        value = int.from_bytes(translated, "little")
        # Byte i of value holds the table bits of byte i. Shifting left by
        # 8*tap - t moves bit t of byte i - tap onto bit 0 of byte i.
        mixed = value
        for bit, tap in enumerate(TAPS[1:], start=1):
            mixed ^= value << (8 * tap - bit)
        total = size + _CONTEXT
        symbols = (mixed & _low_bits_mask(total)).to_bytes(total, "little")
        self._context = window[-_CONTEXT:]
        return symbols[len(window) - len(data) : size]


class Chunker:
    """Finds chunk boundaries in a byte stream fed in pieces of any size.

    :meth:`feed` returns the lengths of the chunks it completed, in order, and
    :meth:`finish` those of the rest (one chunk at most) at the end of the
    stream. A boundary is only reported once ``max_size`` bytes after the
    chunk's start have been fed (or at the end), so the lengths do not depend on
    how the stream was split. The chunker keeps one symbol byte per unreported
    byte: less than ``max_size`` plus the size of the last piece fed.
    """

    def __init__(self, params: ChunkerParams | None = None) -> None:
        self.params = params if params is not None else ChunkerParams()
        self._mixer = _Mixer(self.params.seed)
        self._symbols = bytearray()
        self._finished = False

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet reported as part of a chunk."""
        return len(self._symbols)

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Take the next bytes of the stream; return the lengths of completed chunks."""
        if self._finished:
            raise LocalProtocolError("the chunker was already finished")
        view = memoryview(data).cast("B")
        lengths: list[int] = []
        for start in range(0, len(view), _BLOCK):
            self._symbols += self._mixer.symbols(view[start : start + _BLOCK])
            if len(self._symbols) >= self.params.max_size:
                lengths += self._cut(final=False)
        return lengths

    def cut(self) -> list[int]:
        """Force a boundary after the bytes fed so far; return the chunks it completes.

        The bytes after it are chunked as a stream of their own. No symbol
        context needs resetting: a cut never looks at symbols that depend on
        bytes before its chunk's start (spec §2.5).
        """
        if self._finished:
            raise LocalProtocolError("the chunker was already finished")
        return self._cut(final=True)

    def finish(self) -> list[int]:
        """End the stream; return the lengths of the chunks still open (none or one)."""
        if self._finished:
            raise LocalProtocolError("the chunker was already finished")
        self._finished = True
        lengths = self._cut(final=True)
        self._symbols = bytearray()
        return lengths

    def _cut(self, *, final: bool) -> list[int]:
        symbols = self._symbols
        end = len(symbols)
        min_size, avg_size = self.params.min_size, self.params.avg_size
        max_size = self.params.max_size
        hard, easy = self.params.hard_pattern, self.params.easy_pattern
        find = symbols.find
        lengths = []
        start = 0
        while True:
            remaining = end - start
            if (remaining < max_size and not final) or remaining == 0:
                break
            if remaining <= min_size:
                cut = end
            else:
                found = find(hard, start + min_size - len(hard), min(start + avg_size, end))
                if found >= 0:
                    cut = found + len(hard)
                else:
                    limit = min(start + max_size, end)
                    found = find(easy, start + avg_size + 1 - len(easy), limit)
                    cut = found + len(easy) if found >= 0 else limit
            lengths.append(cut - start)
            start = cut
        del symbols[:start]
        return lengths


class Chunk(NamedTuple):
    """One chunk of a stream: where it starts, how long it is, its truncated SHA-256."""

    offset: int
    length: int
    hash: bytes


def chunk_hash(data: bytes | bytearray | memoryview) -> bytes:
    """The chunk hash: the first 16 bytes of SHA-256."""
    return hashlib.sha256(data).digest()[:HASH_SIZE]


def _hashed(view: memoryview, offset: int, lengths: list[int]) -> list[Chunk]:
    chunks = []
    position = 0
    for length in lengths:
        digest = hashlib.sha256(view[position : position + length]).digest()[:HASH_SIZE]
        chunks.append(Chunk(offset + position, length, digest))
        position += length
    return chunks


class CutFinder(Protocol):
    """Forced boundaries found in the stream itself (e.g. :class:`~.tarcuts.TarCuts`).

    ``feed`` sees every piece before the chunker does and returns, in increasing
    order, the stream offsets at which a chunk must end that lie within the
    bytes fed so far (an offset equal to their end is allowed).
    """

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]: ...


def _feed_with_cuts(
    chunker: Chunker, forced: CutFinder, view: memoryview, offset: int
) -> list[int]:
    """Feed ``view`` (at stream ``offset``), ending a chunk at every forced cut in it."""
    lengths: list[int] = []
    position = 0
    for cut in forced.feed(view):
        at = cut - offset
        if not position <= at <= len(view):
            raise LocalProtocolError(f"forced cut {cut} is outside the piece fed")
        lengths += chunker.feed(view[position:at])
        lengths += chunker.cut()
        position = at
    lengths += chunker.feed(view[position:])
    return lengths


def chunk_bytes(
    data: bytes | bytearray | memoryview,
    params: ChunkerParams | None = None,
    forced: CutFinder | None = None,
) -> list[Chunk]:
    """Chunk a buffer that is already in memory (with ``forced`` cuts, if given)."""
    chunker = Chunker(params)
    with memoryview(data).cast("B") as view:
        if forced is None:
            lengths = chunker.feed(view)
        else:
            lengths = _feed_with_cuts(chunker, forced, view, 0)
        lengths += chunker.finish()
        return _hashed(view, 0, lengths)


def chunk_stream(
    pieces: Iterable[bytes | bytearray | memoryview],
    params: ChunkerParams | None = None,
    forced: CutFinder | None = None,
) -> Iterator[Chunk]:
    """Chunk a stream given as successive pieces (e.g. 4 MiB reads of a file).

    Memory stays bounded by ``max_size`` plus the size of one piece: bytes are
    kept only until the chunk they belong to is hashed. ``forced`` adds cuts
    found in the content (spec §2.7: tar members); every stretch between two
    of them is chunked as a stream of its own.
    """
    chunker = Chunker(params)
    pending = bytearray()
    offset = 0
    fed = 0

    def take(lengths: list[int]) -> list[Chunk]:
        nonlocal offset
        with memoryview(pending) as view:
            chunks = _hashed(view, offset, lengths)
        done = sum(lengths)
        del pending[:done]
        offset += done
        return chunks

    for piece in pieces:
        pending += piece
        if forced is None:
            lengths = chunker.feed(piece)
        else:
            with memoryview(piece).cast("B") as view:
                lengths = _feed_with_cuts(chunker, forced, view, fed)
                fed += len(view)
        if lengths:
            yield from take(lengths)
    yield from take(chunker.finish())
