"""The Mainline DHT (BEP 5, with BEP 42 node ids) as a sans-I/O core.

:class:`DHTNode` is the whole node: feed it datagrams and the time, send what
it queues. Modules, one job each: :mod:`.krpc` (messages), :mod:`.compact`
(compact peers and nodes), :mod:`.node_id` (XOR metric, BEP 42),
:mod:`.routing` (k-buckets), :mod:`.tokens`, :mod:`.peer_store`,
:mod:`.rate_limit`, :mod:`.lookup` (iterative lookups).
"""

from __future__ import annotations

from .compact import Address, NodeInfo
from .lookup import Lookup, LookupKind
from .node import DHTConfig, DHTNode, DHTStats
from .node_id import is_secure_id, secure_id

__all__ = [
    "Address",
    "DHTConfig",
    "DHTNode",
    "DHTStats",
    "Lookup",
    "LookupKind",
    "NodeInfo",
    "is_secure_id",
    "secure_id",
]
