"""Strict, bounded bencoding.

Encoding is delegated to the ``bencode.py`` package. Decoding is our own
because BitTorrent needs three things a general-purpose decoder does not give:

* the exact byte span of a value (the info-hash is the hash of the info
  dictionary *as found in the file*, not of a re-encoding of it);
* decoding a prefix and leaving the rest (a ``ut_metadata`` message is a
  bencoded dictionary followed by raw bytes);
* limits on nesting depth and on how many containers one document builds, so
  hostile input costs bounded time and memory and fails with
  :class:`~opendistro.errors.BencodeError`.

Decoded values use ``bytes`` for strings and dictionary keys, ``int``,
``list`` and ``dict``; nothing is guessed to be text.
"""

from __future__ import annotations

from typing import Any

import bencodepy

from .errors import BencodeError

__all__ = ["decode", "decode_prefix", "dict_value_span", "encode"]

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_CONTAINERS = 1_000_000
"""Lists and dictionaries one decode may build. Two input bytes (``le``) make
an empty list of about 60 bytes in memory, so without a cap a 64 MiB document
could cost gigabytes; a million is far above any real torrent, index or
tracker answer and keeps the worst case near 100 MB."""
_DIGITS = frozenset(b"0123456789")

_encoder = bencodepy.Bencode(encoding=None)


def _normalise(value: Any) -> Any:
    """Turn str into UTF-8 bytes and sort dictionary keys, so encodings are canonical."""
    if isinstance(value, bool):
        raise BencodeError("booleans have no bencoding")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | int):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        items = {_normalise(key): _normalise(item) for key, item in value.items()}
        if not all(isinstance(key, bytes) for key in items):
            raise BencodeError("dictionary keys must be strings")
        return dict(sorted(items.items()))
    raise BencodeError(f"cannot bencode a {type(value).__name__}")


def encode(value: Any) -> bytes:
    """Bencode ``value`` (str keys and values are encoded as UTF-8)."""
    result = _encoder.encode(_normalise(value))
    assert isinstance(result, bytes)
    return result


class _Decoder:
    def __init__(self, data: bytes, max_depth: int, max_containers: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.containers_left = max_containers

    def _count_container(self) -> None:
        self.containers_left -= 1
        if self.containers_left < 0:
            raise BencodeError("bencoding holds too many lists and dictionaries")

    def value(self, pos: int, depth: int) -> tuple[Any, int]:
        data = self.data
        if pos >= len(data):
            raise BencodeError("truncated bencoding")
        lead = data[pos]
        if lead == 0x69:  # i
            return self._int(pos)
        if lead in _DIGITS:
            return self._bytes(pos)
        if depth >= self.max_depth:
            raise BencodeError(f"bencoding nested deeper than {self.max_depth}")
        if lead == 0x6C:  # l
            return self._list(pos, depth)
        if lead == 0x64:  # d
            return self._dict(pos, depth)
        raise BencodeError(f"unexpected byte {lead:#04x} at offset {pos}")

    def _int(self, pos: int) -> tuple[int, int]:
        end = self.data.find(b"e", pos + 1, pos + 2 + 64)
        if end < 0:
            raise BencodeError("unterminated or oversized integer")
        text = self.data[pos + 1 : end]
        negative = text.startswith(b"-")
        digits = text[1:] if negative else text
        if not digits or not all(c in _DIGITS for c in digits):
            raise BencodeError(f"malformed integer {text[:20]!r}")
        if (digits[0] == 0x30 and len(digits) > 1) or (negative and digits == b"0"):
            raise BencodeError(f"non-canonical integer {text[:20]!r}")
        return int(text), end + 1

    def _bytes(self, pos: int) -> tuple[bytes, int]:
        colon = self.data.find(b":", pos, pos + 21)
        if colon < 0:
            raise BencodeError("malformed string length")
        digits = self.data[pos:colon]
        if (
            not digits
            or not all(c in _DIGITS for c in digits)
            or (digits[0] == 0x30 and len(digits) > 1)
        ):
            raise BencodeError(f"malformed string length {digits!r}")
        start = colon + 1
        end = start + int(digits)
        if end > len(self.data):
            raise BencodeError("string runs past the end of the data")
        return self.data[start:end], end

    def _list(self, pos: int, depth: int) -> tuple[list[Any], int]:
        self._count_container()
        items: list[Any] = []
        pos += 1
        while True:
            if pos >= len(self.data):
                raise BencodeError("unterminated list")
            if self.data[pos] == 0x65:  # e
                return items, pos + 1
            item, pos = self.value(pos, depth + 1)
            items.append(item)

    def _dict(self, pos: int, depth: int) -> tuple[dict[bytes, Any], int]:
        self._count_container()
        result: dict[bytes, Any] = {}
        pos += 1
        while True:
            if pos >= len(self.data):
                raise BencodeError("unterminated dictionary")
            if self.data[pos] == 0x65:
                return result, pos + 1
            if self.data[pos] not in _DIGITS:
                raise BencodeError("dictionary key is not a string")
            key, pos = self._bytes(pos)
            if key in result:
                raise BencodeError(f"duplicate dictionary key {key[:40]!r}")
            result[key], pos = self.value(pos, depth + 1)


def decode_prefix(
    data: bytes,
    start: int = 0,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_containers: int = DEFAULT_MAX_CONTAINERS,
) -> tuple[Any, int]:
    """Decode one value starting at ``start``; return it and the offset just past it."""
    try:
        return _Decoder(bytes(data), max_depth, max_containers).value(start, 0)
    except RecursionError as exc:  # pragma: no cover - max_depth keeps us far from it
        raise BencodeError("bencoding nested too deeply") from exc


def decode(
    data: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_containers: int = DEFAULT_MAX_CONTAINERS,
) -> Any:
    """Decode exactly one bencoded value that must fill all of ``data``."""
    value, end = decode_prefix(data, 0, max_depth=max_depth, max_containers=max_containers)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} trailing bytes after bencoded value")
    return value


def dict_value_span(data: bytes, key: bytes) -> tuple[int, int] | None:
    """Return the ``(start, end)`` byte span of ``key``'s value in a top-level dictionary.

    This is how the info-hash is computed from the bytes as found in the file.
    Returns None when the key is absent.
    """
    data = bytes(data)
    decoder = _Decoder(data, DEFAULT_MAX_DEPTH, DEFAULT_MAX_CONTAINERS)
    if not data.startswith(b"d"):
        raise BencodeError("not a bencoded dictionary")
    pos = 1
    while pos < len(data) and data[pos] != 0x65:
        found, pos = decoder._bytes(pos)
        start = pos
        _, pos = decoder.value(pos, 1)
        if found == key:
            return start, pos
    return None
