"""BEP 5's compact encodings: peers in 6 bytes, nodes in 26.

A compact peer is an IPv4 address and a port, both big-endian; compact node
info is a node id followed by a compact peer. We speak the IPv4 DHT, so the
18-byte IPv6 peer form is recognised only to be skipped.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..errors import DHTError
from .node_id import ID_LENGTH

__all__ = [
    "COMPACT_NODE_LENGTH",
    "COMPACT_PEER_LENGTH",
    "Address",
    "NodeInfo",
    "pack_nodes",
    "pack_peer",
    "unpack_nodes",
    "unpack_peer",
]

Address = tuple[str, int]
COMPACT_PEER_LENGTH = 6
COMPACT_NODE_LENGTH = ID_LENGTH + COMPACT_PEER_LENGTH
_PORT = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node as other nodes describe it: its id and UDP address."""

    node_id: bytes
    address: Address


def pack_peer(address: Address) -> bytes:
    host, port = address
    try:
        return socket.inet_aton(host) + _PORT.pack(port)
    except (OSError, struct.error) as exc:
        raise DHTError(f"cannot pack {host}:{port} as an IPv4 address") from exc


def unpack_peer(data: bytes) -> Address:
    if len(data) != COMPACT_PEER_LENGTH:
        raise DHTError(f"a compact IPv4 peer is 6 bytes, got {len(data)}")
    return socket.inet_ntoa(data[:4]), _PORT.unpack_from(data, 4)[0]


def pack_nodes(nodes: list[NodeInfo]) -> bytes:
    return b"".join(node.node_id + pack_peer(node.address) for node in nodes)


def unpack_nodes(data: bytes) -> list[NodeInfo]:
    """Decode compact node info; entries with port 0 (undialable) are dropped."""
    if len(data) % COMPACT_NODE_LENGTH:
        raise DHTError(f"compact node info is a multiple of 26 bytes, got {len(data)}")
    nodes = []
    for start in range(0, len(data), COMPACT_NODE_LENGTH):
        host, port = unpack_peer(data[start + ID_LENGTH : start + COMPACT_NODE_LENGTH])
        if port:
            nodes.append(NodeInfo(data[start : start + ID_LENGTH], (host, port)))
    return nodes
