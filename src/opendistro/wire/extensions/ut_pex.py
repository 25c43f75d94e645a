"""BEP 11 ``ut_pex``: peers tell each other which peers they are connected to.

A PEX message is a bencoded dictionary of compact address strings: ``added``
and ``dropped`` (6 bytes per IPv4 peer), ``added6`` and ``dropped6`` (18 bytes
per IPv6 peer), and one flag byte per added peer in ``added.f`` /
``added6.f``. Each side sends at most one message a minute, the first one
listing current peers and every later one only the difference since the last.

Three jobs, three pieces, none of which touches a socket or a clock:

* :func:`encode_pex` / :func:`decode_pex` turn :class:`PexMessage` into bytes
  and back. Decoding is strict about structure (wrong types or a compact
  string whose length is not a multiple of the entry size is the sender's
  fault) but lenient where real clients differ: a missing or short flags
  string means "no flags", unknown keys are ignored, and a message longer
  than :data:`MAX_DECODED_PEERS` entries is truncated rather than refused,
  because libtorrent caps only the ``added`` side of its messages and a
  legitimate peer with a large swarm must not be disconnected for it.
* :class:`PexSender` decides what to tell one peer: the difference between
  the peers we are connected to now and what that peer has already heard.
* :class:`PexReceiver` decides what to believe from one peer: it drops
  messages that come too often, addresses that cannot be dialled, and keeps
  what it remembers bounded, so a hostile peer cannot make us dial the world.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ...bencode import decode, encode
from ...errors import BencodeError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "EXTENSION_NAME",
    "MAX_ADDED",
    "MAX_DECODED_PEERS",
    "MAX_DROPPED",
    "MAX_PEX_PAYLOAD",
    "NO_FLAGS",
    "PEX_INTERVAL",
    "PexFlags",
    "PexMessage",
    "PexPeer",
    "PexReceiver",
    "PexSender",
    "decode_pex",
    "encode_pex",
    "is_local_address",
]

EXTENSION_NAME: Final = "ut_pex"
PEX_INTERVAL: Final = 60.0
"""Seconds between two messages to the same peer (BEP 11: at most once a minute)."""
MAX_ADDED: Final = 50
"""Added peers per message we send (the limit uTorrent and Azureus agreed on)."""
MAX_DROPPED: Final = 50
"""Dropped peers per message we send; the rest wait for the next message."""
MAX_DECODED_PEERS: Final = 200
"""Added, and separately dropped, entries we read from one received message; more are ignored."""
MAX_PEX_PAYLOAD: Final = 500 * 1024
"""A larger payload is refused outright, as libtorrent does: no honest message comes close."""

_V4_SIZE: Final = 6
_V6_SIZE: Final = 18
_T = TypeVar("_T")
_THIS_NETWORK: Final = ipaddress.ip_network("0.0.0.0/8")


class PexFlags(enum.IntFlag):
    """What the sender knows about an added peer (one byte per peer, BEP 11)."""

    ENCRYPTION = 0x01
    """The peer prefers encryption (``e`` in its extension handshake)."""
    SEED = 0x02
    """The peer is a seed or upload-only."""
    UTP = 0x04
    """The peer supports uTP."""
    HOLEPUNCH = 0x08
    """The peer supports ``ut_holepunch``."""
    REACHABLE = 0x10
    """The sender connected out to the peer, so it accepts incoming connections."""


NO_FLAGS: Final = PexFlags(0)
_KNOWN_FLAGS: Final = int(
    PexFlags.ENCRYPTION | PexFlags.SEED | PexFlags.UTP | PexFlags.HOLEPUNCH | PexFlags.REACHABLE
)


@dataclass(frozen=True)
class PexPeer:
    """An added peer: its listening address and what the sender knows about it."""

    host: str
    port: int
    flags: PexFlags = NO_FLAGS


@dataclass(frozen=True)
class PexMessage:
    """One ut_pex message; IPv4 and IPv6 peers travel in the same tuples here."""

    added: tuple[PexPeer, ...] = ()
    dropped: tuple[tuple[str, int], ...] = ()


# ---------------------------------------------------------------- encoding


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError as exc:
        raise LocalProtocolError(f"PEX peers are IP addresses, not {host!r}") from exc


def _compact(host: str, port: int) -> bytes:
    if not 0 < port <= 0xFFFF:
        raise LocalProtocolError(f"PEX port {port} outside 1..65535")
    return _ip(host).packed + port.to_bytes(2, "big")


def encode_pex(message: PexMessage) -> bytes:
    """The payload of an :class:`~opendistro.wire.messages.Extended` ut_pex message.

    All six keys are always written, empty ones included, which is the layout
    libtorrent sends; IPv4 peers go to ``added``/``dropped`` and IPv6 peers to
    ``added6``/``dropped6``.
    """
    if len(message.added) > MAX_DECODED_PEERS or len(message.dropped) > MAX_DECODED_PEERS:
        raise LocalProtocolError(f"a PEX message carries at most {MAX_DECODED_PEERS} of each")
    added = {4: bytearray(), 6: bytearray()}
    flags = {4: bytearray(), 6: bytearray()}
    dropped = {4: bytearray(), 6: bytearray()}
    for peer in message.added:
        compact = _compact(peer.host, peer.port)
        family = 4 if len(compact) == _V4_SIZE else 6
        added[family] += compact
        flags[family].append(int(peer.flags) & 0xFF)
    for host, port in message.dropped:
        compact = _compact(host, port)
        dropped[4 if len(compact) == _V4_SIZE else 6] += compact
    return encode(
        {
            b"added": bytes(added[4]),
            b"added.f": bytes(flags[4]),
            b"added6": bytes(added[6]),
            b"added6.f": bytes(flags[6]),
            b"dropped": bytes(dropped[4]),
            b"dropped6": bytes(dropped[6]),
        }
    )


# ---------------------------------------------------------------- decoding


def _compact_field(raw: dict[bytes, Any], key: bytes, size: int) -> bytes:
    value = raw.get(key, b"")
    if not isinstance(value, bytes):
        raise RemoteProtocolError(f"ut_pex {key.decode()} must be a string")
    if len(value) % size:
        raise RemoteProtocolError(f"ut_pex {key.decode()} is not a multiple of {size} bytes")
    return value


def _flags_field(raw: dict[bytes, Any], key: bytes) -> bytes:
    value = raw.get(key, b"")
    if not isinstance(value, bytes):
        raise RemoteProtocolError(f"ut_pex {key.decode()} must be a string")
    return value


def _entry(compact: bytes, offset: int, size: int) -> tuple[str, int]:
    """The address and port of the compact entry at ``offset``."""
    address = compact[offset : offset + size - 2]
    port = int.from_bytes(compact[offset + size - 2 : offset + size], "big")
    host = ipaddress.IPv4Address(address) if size == _V4_SIZE else ipaddress.IPv6Address(address)
    return str(host), port


def _entries(compact: bytes, size: int) -> Iterator[tuple[str, int]]:
    """Addresses in a compact string, skipping port 0 (nobody listens there)."""
    for offset in range(0, len(compact), size):
        host, port = _entry(compact, offset, size)
        if port:
            yield host, port


def _added(compact: bytes, flag_bytes: bytes, size: int) -> Iterator[PexPeer]:
    # A missing or short flags string is read as zero flags for the rest; libtorrent instead
    # ignores the whole list then, but an address without flags is still a usable candidate.
    for index, offset in enumerate(range(0, len(compact), size)):
        host, port = _entry(compact, offset, size)
        if port:
            raw_flags = flag_bytes[index] if index < len(flag_bytes) else 0
            yield PexPeer(host, port, PexFlags(raw_flags & _KNOWN_FLAGS))


def _first(items: Iterable[_T], limit: int) -> list[_T]:
    result: list[_T] = []
    for item in items:
        if len(result) >= limit:
            break
        result.append(item)
    return result


def decode_pex(payload: bytes) -> PexMessage:
    """Parse a peer's ut_pex payload; RemoteProtocolError when it is malformed.

    Entries with port 0 are skipped, unknown flag bits are cleared, and only
    the first :data:`MAX_DECODED_PEERS` added and dropped entries are kept.
    """
    if len(payload) > MAX_PEX_PAYLOAD:
        raise RemoteProtocolError(f"ut_pex message of {len(payload)} bytes is too large")
    try:
        raw = decode(payload)
    except BencodeError as exc:
        raise RemoteProtocolError(f"ut_pex message is not bencoded: {exc}") from exc
    if not isinstance(raw, dict):
        raise RemoteProtocolError("ut_pex message must be a dictionary")
    added4 = _compact_field(raw, b"added", _V4_SIZE)
    added6 = _compact_field(raw, b"added6", _V6_SIZE)
    dropped4 = _compact_field(raw, b"dropped", _V4_SIZE)
    dropped6 = _compact_field(raw, b"dropped6", _V6_SIZE)
    flags4 = _flags_field(raw, b"added.f")
    flags6 = _flags_field(raw, b"added6.f")

    def all_added() -> Iterator[PexPeer]:
        yield from _added(added4, flags4, _V4_SIZE)
        yield from _added(added6, flags6, _V6_SIZE)

    def all_dropped() -> Iterator[tuple[str, int]]:
        yield from _entries(dropped4, _V4_SIZE)
        yield from _entries(dropped6, _V6_SIZE)

    return PexMessage(
        added=tuple(_first(all_added(), MAX_DECODED_PEERS)),
        dropped=tuple(_first(all_dropped(), MAX_DECODED_PEERS)),
    )


# ---------------------------------------------------------------- addresses


def _address_key(host: str, port: int) -> tuple[str, int]:
    """One spelling per address, so ``::1`` and ``0::1`` are the same peer."""
    return _ip(host).compressed, port


def is_local_address(host: str) -> bool:
    """Loopback, private or link-local: only worth passing on between local peers.

    libtorrent ignores such addresses in PEX unless the peer that sent them
    is itself local; a session does the same by constructing its
    :class:`PexReceiver` with ``accept_local=is_local_address(peer_host)``.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_private


# ---------------------------------------------------------------- policy


class PexSender:
    """What to tell one peer: the diff between the swarm we know now and what we told it last time.

    The session calls :meth:`make_message` whenever it likes (every tick is
    fine) with the peers it is connected to and could pass on: those whose
    listening port is known, without the receiving peer itself. A peer
    enters the "told" set once it has been sent as added and leaves it once
    it has been sent as dropped, so every added is eventually matched by a
    dropped, as BEP 11 requires. Peers beyond the per-message caps simply
    wait for the next message.
    """

    def __init__(self, *, interval: float = PEX_INTERVAL) -> None:
        self.interval = interval
        self._told: dict[tuple[str, int], None] = {}
        self._last_sent: float | None = None
        self.messages_sent = 0

    @property
    def told(self) -> frozenset[tuple[str, int]]:
        """Addresses the peer has heard as added and not yet as dropped."""
        return frozenset(self._told)

    def due(self, now: float) -> bool:
        """True when a message may be sent: never sent yet, or ``interval`` has passed."""
        return self._last_sent is None or now - self._last_sent >= self.interval

    def make_message(self, connected: Iterable[PexPeer], now: float) -> PexMessage | None:
        """The next message to send, or None when it is not due or nothing changed.

        A returned message is taken as sent: its time is recorded and the
        told set updated. An empty message is never produced (uTorrent is
        known to disconnect on one), and the time is not recorded then, so a
        change after a quiet minute goes out at once. Peers with port 0 are
        left out; a host that is not an IP address is LocalProtocolError.
        """
        if not self.due(now):
            return None
        current: dict[tuple[str, int], PexPeer] = {}
        for peer in connected:
            if peer.port == 0:
                continue  # no known listening port: nobody could dial it
            current.setdefault(_address_key(peer.host, peer.port), peer)
        dropped = _first((key for key in self._told if key not in current), MAX_DROPPED)
        added_keys = _first((key for key in current if key not in self._told), MAX_ADDED)
        if not dropped and not added_keys:
            return None
        for key in dropped:
            del self._told[key]
        for key in added_keys:
            self._told[key] = None
        self._last_sent = now
        self.messages_sent += 1
        return PexMessage(
            added=tuple(current[key] for key in added_keys),
            dropped=tuple(dropped),
        )


class PexReceiver:
    """Rate-limits and validates what one peer tells us.

    A message that arrives sooner than ``min_interval`` after the last one
    we accepted is ignored and counted in :attr:`ignored_messages`, not
    treated as a protocol error: a rate-limited connection can deliver
    messages that were sent a minute apart back to back, and ignoring costs
    nothing. (libtorrent disconnects only when six arrive within a minute.)

    The receiver remembers the addresses this peer currently reports (added
    and not since dropped), at most ``max_candidates`` of them, and returns
    only addresses it did not already remember: so one peer can never put
    more than ``max_candidates`` addresses in front of the dialler at once,
    however many messages it sends.
    """

    def __init__(
        self,
        *,
        min_interval: float = 45.0,
        max_candidates: int = 500,
        accept_local: bool = False,
    ) -> None:
        if min_interval < 0 or max_candidates < 0:
            raise LocalProtocolError("min_interval and max_candidates must not be negative")
        self.min_interval = min_interval
        self.max_candidates = max_candidates
        self.accept_local = accept_local
        self._last_accepted: float | None = None
        self._remembered: dict[tuple[str, int], None] = {}
        self.ignored_messages = 0
        self.rejected_addresses = 0

    @property
    def remembered(self) -> frozenset[tuple[str, int]]:
        """The addresses this peer reported and has not dropped (bounded by max_candidates)."""
        return frozenset(self._remembered)

    def _dialable(self, host: str, port: int) -> tuple[str, int] | None:
        """The canonical address to dial, or None for one that must not be dialled."""
        if not 0 < port <= 0xFFFF:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_unspecified or address.is_multicast:
            return None
        if address.is_loopback:
            return (address.compressed, port) if self.accept_local else None
        # Before the private check: Python counts 240.0.0.0/4 and the broadcast address as private.
        if address.is_reserved or address in _THIS_NETWORK:
            return None
        if address.is_link_local or address.is_private:
            return (address.compressed, port) if self.accept_local else None
        return address.compressed, port

    def receive(self, message: PexMessage, now: float) -> list[tuple[str, int]]:
        """New candidate addresses to consider dialling, in the order the peer sent them."""
        if self._last_accepted is not None and now - self._last_accepted < self.min_interval:
            self.ignored_messages += 1
            return []
        self._last_accepted = now
        for host, port in message.dropped:
            key = self._dialable(host, port)
            if key is not None:
                self._remembered.pop(key, None)
        fresh: list[tuple[str, int]] = []
        for peer in message.added:
            key = self._dialable(peer.host, peer.port)
            if key is None:
                self.rejected_addresses += 1
                continue
            if key in self._remembered:
                continue
            if len(self._remembered) >= self.max_candidates:
                break
            self._remembered[key] = None
            fresh.append(key)
        return fresh
