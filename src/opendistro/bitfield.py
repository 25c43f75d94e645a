"""A fixed-length set of piece indices in BitTorrent's bit order.

BEP 3 sends piece availability as a bitfield whose high bit of byte 0 is
piece 0. Peers, the picker and resume data all speak that format, so one
class holds it: the bytes stay in wire order (sending our bitfield is a plain
copy) and the number of set bits is kept up to date on every change, because
"is this peer a seed?" and "are we done?" are asked far more often than a bit
changes.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import RemoteProtocolError

__all__ = ["Bitfield"]


def _byte_length(length: int) -> int:
    return (length + 7) >> 3


class Bitfield:
    """A set of indices in ``range(length)`` stored as BitTorrent wire bytes."""

    __slots__ = ("_bits", "_count", "length")

    length: int

    def __init__(self, length: int, data: bytes | bytearray | memoryview | None = None) -> None:
        """Make an empty bitfield, or one from wire ``data``.

        ``data`` comes from a peer, so a wrong size or set spare bits past the
        last piece raise :class:`RemoteProtocolError` (BEP 3 says clients
        should drop such a connection).
        """
        if length < 0:
            raise ValueError("a bitfield cannot have a negative length")
        self.length = length
        size = _byte_length(length)
        if data is None:
            self._bits = bytearray(size)
            self._count = 0
            return
        if len(data) != size:
            raise RemoteProtocolError(
                f"bitfield of {len(data)} bytes for {length} pieces (expected {size})"
            )
        bits = bytearray(data)
        spare = size * 8 - length
        if spare and bits[-1] & ((1 << spare) - 1):
            raise RemoteProtocolError("bitfield has spare bits set past the last piece")
        self._bits = bits
        self._count = int.from_bytes(bits, "big").bit_count()

    @classmethod
    def full(cls, length: int) -> Bitfield:
        """A bitfield with every piece set (a seed's)."""
        result = cls(length)
        if length:
            result._bits[:] = b"\xff" * len(result._bits)
            spare = len(result._bits) * 8 - length
            result._bits[-1] &= (0xFF << spare) & 0xFF
        result._count = length
        return result

    def _check(self, index: int) -> None:
        if not 0 <= index < self.length:
            raise IndexError(f"piece {index} outside 0..{self.length - 1}")

    def has(self, index: int) -> bool:
        """True when ``index`` is set; False for any index out of range."""
        if not 0 <= index < self.length:
            return False
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and self.has(index)

    def set(self, index: int) -> None:
        """Add ``index`` (IndexError when out of range: a caller bug, not peer input)."""
        self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if not byte & mask:
            self._bits[index >> 3] = byte | mask
            self._count += 1

    def add(self, index: int) -> bool:
        """Set ``index``; True if it was not set before.

        ``has`` and then ``set`` in one call, for the hottest caller: a peer's
        Have updates the pieces counted for it, once per neighbour per piece.
        """
        self._check(index)
        position = index >> 3
        mask = 0x80 >> (index & 7)
        bits = self._bits
        byte = bits[position]
        if byte & mask:
            return False
        bits[position] = byte | mask
        self._count += 1
        return True

    def clear(self, index: int) -> None:
        """Remove ``index``."""
        self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if byte & mask:
            self._bits[index >> 3] = byte & ~mask & 0xFF
            self._count -= 1

    @property
    def count(self) -> int:
        """How many indices are set, kept up to date in O(1)."""
        return self._count

    @property
    def complete(self) -> bool:
        """True when every index is set."""
        return self._count == self.length

    def __len__(self) -> int:
        return self.length

    def to_bytes(self) -> bytes:
        """The wire form, ready for a BEP 3 bitfield message."""
        return bytes(self._bits)

    def __iter__(self) -> Iterator[int]:
        """The set indices, in increasing order."""
        bits = self._bits
        for byte_index, byte in enumerate(bits):
            if byte:
                base = byte_index << 3
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        yield base + bit

    def missing(self) -> Iterator[int]:
        """The indices not set, in increasing order."""
        bits = self._bits
        for byte_index, byte in enumerate(bits):
            if byte != 0xFF:
                base = byte_index << 3
                for bit in range(8):
                    index = base + bit
                    if index >= self.length:
                        return
                    if not byte & (0x80 >> bit):
                        yield index

    def copy(self) -> Bitfield:
        """An independent copy."""
        result = Bitfield(self.length)
        result._bits[:] = self._bits
        result._count = self._count
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitfield):
            return NotImplemented
        return self.length == other.length and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Bitfield(length={self.length}, count={self._count})"
