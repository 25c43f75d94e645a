"""Resource limits in one place, so whoever embeds opendistro can see and tune them.

Everything a remote party can make us hold or do is bounded: the size of one
wire message, of an info dictionary fetched from peers, the requests one peer
may queue with us, connections per torrent and per IP address, announces per
IP address and minute at the tracker, and the files and directory depth of a
torrent. The defaults are safe on the Internet; a :class:`Limits` is handed to
:class:`~opendistro.io.client.Client`,
:class:`~opendistro.tracker.server.TrackerServer` and
:meth:`~opendistro.metainfo.Metainfo.from_bytes`.

Per-IP limits do not apply to loopback addresses by default
(``loopback_exempt``): local swarms (tests, demos, a tracker and its clients
on one machine) legitimately put many peers on 127.0.0.1, and no remote host
can send from a loopback address.

The peer-behaviour bounds (``peer_stall_timeout``, ``max_rejects_without_block``)
decide when a peer that claims pieces but does not deliver them is dropped:
the swarm logic first takes its requests back (it is *snubbed* after
:attr:`~opendistro.swarm.session.SessionConfig.snub_timeout`), and these say
when holding the connection open is no longer worth it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .errors import ConfigError
from .metainfo import MAX_FILES, MAX_PATH_DEPTH
from .wire.codec import DEFAULT_MAX_MESSAGE_SIZE
from .wire.extensions.handshake import MAX_METADATA_SIZE

__all__ = ["Limits", "is_loopback"]

MIN_MESSAGE_SIZE = 16 * 1024 + 13
"""The smallest message-size limit allowed: a standard 16 KiB block in a Piece message."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what peers, trackers' clients and torrent files may make us hold or do."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    """Largest peer wire message accepted; a bigger length prefix closes the connection."""
    max_metadata_size: int = MAX_METADATA_SIZE
    """Largest info dictionary fetched from peers for a magnet link (BEP 9)."""
    max_pending_peer_requests: int = 500
    """Block requests one peer may have queued with us (also advertised as ``reqq``)."""
    max_peers_per_torrent: int = 50
    """Connections per torrent, dialled and accepted together."""
    max_connections_per_ip: int = 8
    """Connections to or from one IP address, over all torrents of a client."""
    max_announces_per_ip_per_minute: int = 60
    """Tracker announces (HTTP and UDP) one IP address may make per minute, in bursts of
    as many; beyond that the tracker answers with a failure instead of doing the work."""
    max_files: int = MAX_FILES
    """Files in one torrent."""
    max_path_depth: int = MAX_PATH_DEPTH
    """Directories plus file name of one path in a torrent."""
    peer_stall_timeout: float = 120.0
    """Seconds a peer may hold our block requests without delivering one before we
    disconnect it (it is snubbed, and its requests go to others, earlier)."""
    max_rejects_without_block: int = 64
    """Requests a peer that unchokes us may reject (BEP 6) without delivering any
    block before we disconnect it: it claims pieces it will not give."""
    loopback_exempt: bool = True
    """Per-IP limits do not apply to 127.0.0.0/8 and ::1 (local test swarms)."""

    def __post_init__(self) -> None:
        if self.max_message_size < MIN_MESSAGE_SIZE:
            raise ConfigError(f"max_message_size must be at least {MIN_MESSAGE_SIZE} bytes")
        if not 0 < self.max_metadata_size <= MAX_METADATA_SIZE:
            raise ConfigError(f"max_metadata_size must be 1..{MAX_METADATA_SIZE} bytes")
        positive = {
            "max_pending_peer_requests": self.max_pending_peer_requests,
            "max_peers_per_torrent": self.max_peers_per_torrent,
            "max_connections_per_ip": self.max_connections_per_ip,
            "max_announces_per_ip_per_minute": self.max_announces_per_ip_per_minute,
            "max_files": self.max_files,
            "max_path_depth": self.max_path_depth,
            "max_rejects_without_block": self.max_rejects_without_block,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.peer_stall_timeout > 0:
            raise ConfigError("peer_stall_timeout must be positive")

    def limits_ip(self, host: str) -> bool:
        """Whether the per-IP limits apply to ``host`` (not, by default, to loopback)."""
        return not (self.loopback_exempt and is_loopback(host))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for names and other IPs."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host == "localhost"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
