"""Cutting a peer-wire byte stream into whole messages, for the tests' tampering proxies.

A proxy that corrupts or cuts piece messages must see message boundaries, not
TCP chunks. :class:`WireFramer` is fed what one direction of a connection
carries and hands back the 68-byte handshake, then each length-prefixed
message, whole and in order.
"""

from __future__ import annotations

import struct

HANDSHAKE_LENGTH = 68
PIECE_ID = 7


class WireFramer:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._handshake_done = False

    def feed(self, chunk: bytes) -> list[bytearray]:
        """The handshake and the messages that ``chunk`` completed (possibly none)."""
        buffer = self._buffer
        buffer += chunk
        units: list[bytearray] = []
        if not self._handshake_done:
            if len(buffer) < HANDSHAKE_LENGTH:
                return units
            units.append(buffer[:HANDSHAKE_LENGTH])
            del buffer[:HANDSHAKE_LENGTH]
            self._handshake_done = True
        while len(buffer) >= 4:
            (length,) = struct.unpack(">I", buffer[:4])
            if len(buffer) < 4 + length:
                break
            units.append(buffer[: 4 + length])
            del buffer[: 4 + length]
        return units


def is_piece(unit: bytearray) -> bool:
    """Whether ``unit`` (from :meth:`WireFramer.feed`) is a piece message with data."""
    return len(unit) > 13 and unit[4] == PIECE_ID and unit[:4] == struct.pack(">I", len(unit) - 4)
