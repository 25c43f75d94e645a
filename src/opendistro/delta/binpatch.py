"""Binary patches: a new byte string as the old one plus what changed, bsdiff-style.

Content-defined chunks find what is *unchanged*. Recompiled native code (the
``.so`` members of a wheel) is unchanged almost nowhere: every function that
moved shifts the addresses in every instruction referring to it, so nearly
every KB-sized chunk differs, yet most bytes are the same as before at a
nearby offset. A patch captures that: the new content is cut into stretches
that are either *added* to an aligned stretch of the old content (byte by
byte, modulo 256: the differences are mostly zero, and shifted addresses make
the same small difference over and over) or *inserted* as literal bytes. Three
streams, each compressed with xz, carry the operations, the differences and
the literal bytes (``spec/delta-index.md`` §5.3).

Pure Python at C speed: alignments come from *anchors*, positions chosen by
content in both versions (so no per-byte loop scans the new content), looked up
in a dictionary of the old content's anchors; each 128-byte block of the new
content then takes whichever candidate alignment leaves the most bytes equal,
counted with one XOR of two big integers. Byte-wise sums and differences
also run on big integers, each byte in a 16-bit lane so no carry crosses bytes.

Applying is strict and bounded: every length is checked against the header,
each stream must end exactly where the operations say, and nothing is ever
decompressed beyond the lengths the header states. Whether the result is the
intended content is the caller's check (chunk hashes of the delta index).
"""

from __future__ import annotations

import lzma
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from ..errors import DeltaError
from .chunker import DEFAULT_SEED, symbol_table

__all__ = [
    "MAGIC",
    "MAX_CONTROL",
    "OldAnchors",
    "PatchInfo",
    "anchor_keys",
    "anchors",
    "apply_patch",
    "make_patch",
    "patch_info",
]

MAGIC: Final = b"ODBP\x01"
MAX_CONTROL: Final = 64 << 20
"""The most bytes a patch's operations may decompress to (bounds a client's memory)."""
_MAX_LENGTH: Final = 1 << 40
_BLOCK: Final = 128
"""Granularity of alignment choices in the new content."""
_KEY_BEFORE: Final = 8
_KEY_AFTER: Final = 8
_ANCHOR_PATTERN: Final = re.compile(b"\x01\x01\x01\x01\x01\x00")
"""Anchors end where these symbols end: one position in 64 on random content."""
_MIN_EQUAL: Final = _BLOCK * 3 // 8
"""A block diffs against old content when at least this many bytes are equal; else literal."""
_PIECE: Final = 1 << 20
_WINDOW: Final = 4 << 20
"""Content whose symbols are computed at once (big-integer arithmetic on a window)."""
_XZ_FILTERS: Final[list[dict[str, int]]] = [
    {"id": lzma.FILTER_LZMA2, "preset": 6 | lzma.PRESET_EXTREME, "dict_size": 8 << 20}
]
_XZ_MEMLIMIT: Final = 64 << 20
_ADD, _INSERT = 0, 1


class Base(Protocol):
    """The old content: anything with a length that slices into bytes (bytes, mmap)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...


# -- byte-wise arithmetic on big integers ------------------------------------------------


def _lanes(data: bytes) -> int:
    """``data`` as an integer with byte i in bits 16i..16i+7 (a 16-bit lane per byte)."""
    spread = bytearray(2 * len(data))
    spread[0::2] = data
    return int.from_bytes(spread, "little")


def _low_bytes(value: int, count: int) -> bytes:
    return value.to_bytes(2 * count + 2, "little")[0 : 2 * count : 2]


def _ones(count: int) -> int:
    """0x0100 in each of ``count`` lanes: added before subtracting, so no lane borrows."""
    return int.from_bytes(b"\x00\x01" * count, "little")


def byte_difference(new: bytes, old: bytes) -> bytes:
    """``(new[i] - old[i]) mod 256`` for every i (equal lengths)."""
    count = len(new)
    return _low_bytes(_lanes(new) + _ones(count) - _lanes(old), count)


def byte_sum(old: bytes, difference: bytes) -> bytes:
    """``(old[i] + difference[i]) mod 256`` for every i (equal lengths)."""
    return _low_bytes(_lanes(old) + _lanes(difference), len(old))


def _equal_bytes(a: bytes, b: bytes) -> int:
    """How many positions hold the same byte in ``a`` and ``b`` (equal lengths)."""
    return (
        (int.from_bytes(a, "little") ^ int.from_bytes(b, "little"))
        .to_bytes(len(a), "little")
        .count(0)
    )


# -- varints -----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise DeltaError("a patch holds a truncated or oversized number")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if not value & 1 else -(value + 1) // 2


# -- making a patch ----------------------------------------------------------------------


def anchors(data: bytes, window: int = _WINDOW) -> Iterator[int]:
    """Positions chosen by the few bytes before them; the same bytes give the same anchors.

    A symbol mixes table bits of four consecutive bytes (as od-cdc-1 mixes bytes
    further apart); an anchor ends where five 1-symbols and a 0-symbol end, so it
    depends on the 9 bytes before it only and survives changes a few bytes away.
    Runs of one byte value give no anchors. Symbols are computed a window at a
    time; the last five of a window lead the next, so no anchor is missed or
    reported twice.
    """
    if len(data) < _KEY_BEFORE + _KEY_AFTER:
        return
    table = symbol_table(DEFAULT_SEED)
    window = min(len(data), window)
    mask = int.from_bytes(b"\x01" * (window + 3), "little")
    last = len(data) - _KEY_AFTER
    carried = b""
    lead = len(_ANCHOR_PATTERN.pattern) - 1
    for start in range(0, len(data), window):
        # Three bytes before the window: a symbol mixes each byte with the three before it.
        context = min(start, 3)
        piece = data[start - context : start + window]
        value = int.from_bytes(piece.translate(table), "little")
        mixed = value ^ (value << 7) ^ (value << 14) ^ (value << 21)
        symbols = carried + (mixed & mask).to_bytes(len(piece) + 3, "little")[
            context : len(piece)
        ]
        origin = start - len(carried)
        for match in _ANCHOR_PATTERN.finditer(symbols):
            end = origin + match.end()
            if _KEY_BEFORE <= end <= last:
                yield end
        carried = symbols[-lead:]


def anchor_keys(data: bytes) -> list[bytes]:
    """The bytes around every anchor of ``data``: what two versions' anchors are matched by."""
    return [data[anchor - _KEY_BEFORE : anchor + _KEY_AFTER] for anchor in anchors(data)]


class OldAnchors:
    """The anchors of an old content, by the bytes around them, for :func:`make_patch`."""

    def __init__(self, old: bytes) -> None:
        self.old = old
        # Keyed by the key's hash: a collision only adds a candidate that scores badly.
        where: dict[int, int] = {}
        for anchor in anchors(old):
            where.setdefault(hash(old[anchor - _KEY_BEFORE : anchor + _KEY_AFTER]), anchor)
        self.where = where


def _alignments(new: bytes, old: OldAnchors) -> list[int | None]:
    """Per block of ``new``: the offset to add to reach the old bytes it diffs against.

    ``None``: the block's bytes are inserted literally.
    """
    base = old.old
    # At most two hints per block (the first and the last anchor found in the old content).
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for anchor in anchors(new):
        found = old.where.get(hash(new[anchor - _KEY_BEFORE : anchor + _KEY_AFTER]))
        if found is not None:
            block = anchor // _BLOCK
            first.setdefault(block, found - anchor)
            last[block] = found - anchor
    hinted = sorted(first)
    following = 0
    choices: list[int | None] = []
    current: int | None = None
    for block in range(-(-len(new) // _BLOCK)):
        start = block * _BLOCK
        end = min(start + _BLOCK, len(new))
        piece = new[start:end]
        # The alignment so far, this block's own hints, and the next block's with a hint
        # (a block between two alignments may belong to the later one).
        while following < len(hinted) and hinted[following] <= block:
            following += 1
        upcoming = first[hinted[following]] if following < len(hinted) else None
        best, best_equal = None, _MIN_EQUAL * (end - start) // _BLOCK
        seen: set[int] = set()
        for shift in (current, first.get(block), last.get(block), upcoming):
            if shift is None or shift in seen or start + shift < 0 or end + shift > len(base):
                continue
            seen.add(shift)
            equal = _equal_bytes(piece, base[start + shift : end + shift])
            if equal > best_equal or (equal == best_equal and best is None and equal):
                best, best_equal = shift, equal
                if equal == end - start:
                    break
        choices.append(best)
        if best is not None:
            current = best
    return choices


class _Packer:
    """One stream of a patch, compressed as it is written."""

    def __init__(self) -> None:
        self._compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE,
                                               filters=_XZ_FILTERS)
        self._out: list[bytes] = []
        self.length = 0

    def write(self, data: bytes) -> None:
        self.length += len(data)
        self._out.append(self._compressor.compress(data))

    def finish(self) -> bytes:
        self._out.append(self._compressor.flush())
        return b"".join(self._out)


def make_patch(old: bytes | OldAnchors, new: bytes) -> bytes:
    """A patch that turns ``old`` into ``new`` (blocking; about 1 s per MB of ``new``)."""
    anchors = old if isinstance(old, OldAnchors) else OldAnchors(old)
    base = anchors.old
    choices = _alignments(new, anchors)
    control = bytearray()
    difference = _Packer()  # one compressor at a time: each holds ~100 MB
    literal: list[bytes] = []
    old_end = 0
    block = 0
    while block < len(choices):
        shift = choices[block]
        run = block + 1
        while run < len(choices) and choices[run] == shift:
            run += 1
        start, end = block * _BLOCK, min(run * _BLOCK, len(new))
        if shift is None:
            control += _varint((end - start) << 1 | _INSERT)
            literal.append(new[start:end])
        else:
            control += _varint((end - start) << 1 | _ADD)
            control += _varint(_zigzag(start + shift - old_end))
            old_end = end + shift
            for at in range(start, end, _PIECE):
                stop = min(at + _PIECE, end)
                difference.write(byte_difference(new[at:stop], base[at + shift : stop + shift]))
        block = run
    packed_difference = difference.finish()
    packed = []
    for stream in (bytes(control), b"".join(literal)):
        packer = _Packer()
        packer.write(stream)
        packed.append(packer.finish())
    lengths = (len(control), difference.length, sum(map(len, literal)))
    packed.insert(1, packed_difference)
    header = MAGIC + b"".join(
        _varint(value) for value in (len(base), len(new), *lengths, *(len(p) for p in packed))
    )
    return header + b"".join(packed)


# -- reading and applying ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatchInfo:
    """What a patch's header states."""

    base_length: int
    result_length: int
    lengths: tuple[int, int, int]
    """Decompressed lengths of the operations, differences and literal bytes."""
    packed: tuple[int, int, int]
    """Compressed lengths of the three streams."""
    body: int
    """Where the first stream starts."""


def patch_info(patch: bytes) -> PatchInfo:
    """Parse and check a patch's header (DeltaError when it is malformed)."""
    if not patch.startswith(MAGIC):
        raise DeltaError("not an opendistro binary patch (or an unknown version)")
    position = len(MAGIC)
    values = []
    for _ in range(8):
        value, position = _read_varint(patch, position)
        if value > _MAX_LENGTH:
            raise DeltaError("a patch length is out of range")
        values.append(value)
    base_length, result_length, control, difference, literal, *packed = values
    if difference + literal != result_length or control > MAX_CONTROL:
        raise DeltaError("a patch's stream lengths do not add up")
    if position + sum(packed) != len(patch) or not all(packed):
        raise DeltaError("a patch's compressed streams do not fill it exactly")
    return PatchInfo(base_length, result_length, (control, difference, literal),
                     (packed[0], packed[1], packed[2]), position)


class _Stream:
    """An xz stream read in exact, bounded steps."""

    def __init__(self, data: bytes, length: int) -> None:
        self._decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
        self._data = data
        self._left = length

    def read(self, count: int) -> bytes:
        if count > self._left:
            raise DeltaError("a patch stream is shorter than its operations need")
        out = bytearray()
        try:
            while len(out) < count:
                if self._decompressor.eof:
                    raise DeltaError("a patch stream ends before its stated length")
                piece = self._decompressor.decompress(self._data, count - len(out))
                self._data = b""
                if not piece and self._decompressor.needs_input:
                    raise DeltaError("a patch stream ends before its stated length")
                out += piece
        except lzma.LZMAError as exc:
            raise DeltaError(f"a patch stream does not decompress: {exc}") from exc
        self._left -= count
        return bytes(out)

    def finish(self) -> None:
        """Check the stream ends exactly here (and has nothing after it)."""
        try:
            if self._left or (
                not self._decompressor.eof and self._decompressor.decompress(self._data, 1)
            ):
                raise DeltaError("a patch stream is longer than its operations")
        except lzma.LZMAError as exc:
            raise DeltaError(f"a patch stream does not decompress: {exc}") from exc
        if not self._decompressor.eof or self._decompressor.unused_data:
            raise DeltaError("a patch stream does not end where its header says")


def apply_patch(patch: bytes, base: Base) -> Iterator[bytes]:
    """The patched content, in pieces of at most 1 MiB (DeltaError when the patch is bad).

    ``base`` must be exactly the content the patch was made from; a base of
    another length is refused before anything is produced. The caller checks
    the result against the hashes it expects.
    """
    info = patch_info(patch)
    if len(base) != info.base_length:
        raise DeltaError("the patch was made for content of another length")
    at = info.body
    streams = []
    for length, packed in zip(info.lengths, info.packed, strict=True):
        streams.append(_Stream(patch[at : at + packed], length))
        at += packed
    control_stream, difference, literal = streams
    control = control_stream.read(info.lengths[0])
    control_stream.finish()
    yield from _run(control, difference, literal, base, info.result_length)
    difference.finish()
    literal.finish()


def _run(control: bytes, difference: _Stream, literal: _Stream, base: Base,
         result_length: int) -> Iterator[bytes]:
    position, produced, old_end = 0, 0, 0
    while position < len(control):
        value, position = _read_varint(control, position)
        kind, length = value & 1, value >> 1
        if length == 0 or produced + length > result_length:
            raise DeltaError("a patch operation is empty or overruns the result")
        produced += length
        if kind == _INSERT:
            for done in range(0, length, _PIECE):
                yield literal.read(min(_PIECE, length - done))
            continue
        delta, position = _read_varint(control, position)
        start = old_end + _unzigzag(delta)
        if start < 0 or start + length > len(base):
            raise DeltaError("a patch operation reads outside the old content")
        old_end = start + length
        for done in range(0, length, _PIECE):
            count = min(_PIECE, length - done)
            old = base[start + done : start + done + count]
            yield byte_sum(old, difference.read(count))
    if produced != result_length:
        raise DeltaError("a patch's operations do not produce its stated length")
