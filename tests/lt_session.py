"""One place for the libtorrent session settings that keep it on 127.0.0.1.

As in ../shared/interop/lt_peer.py: listen and dial on loopback only, DHT, LSD,
UPnP, NAT-PMP and uTP off, several connections per IP allowed (every peer is
127.0.0.1), and an IP filter that refuses everything outside 127.0.0.0/8.
Tests skip before calling this when libtorrent is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

LOOPBACK = "127.0.0.1"


def loopback_session(**overrides: Any) -> Any:
    """A libtorrent session confined to loopback; ``overrides`` adjust its settings."""
    lt: Any = importlib.import_module("libtorrent")
    settings: dict[str, Any] = {
        "listen_interfaces": f"{LOOPBACK}:0",
        "outgoing_interfaces": LOOPBACK,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
    }
    settings.update(overrides)
    session = lt.session(settings)
    ip_filter = lt.ip_filter()
    ip_filter.add_rule("0.0.0.0", "255.255.255.255", 1)
    ip_filter.add_rule("127.0.0.0", "127.255.255.255", 0)
    session.set_ip_filter(ip_filter)
    return session
