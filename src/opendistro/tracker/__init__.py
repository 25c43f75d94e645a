"""BitTorrent trackers: the sans-I/O protocol and registry, and trio client and server.

The pure parts (:mod:`.protocol`, :mod:`.udp`, :mod:`.registry`, :mod:`.tiers`)
import no I/O, so the simulator can run them; :mod:`.client`, :mod:`.server`
and :mod:`.store` are the drivers and are imported from their own modules.
"""

from __future__ import annotations

from .protocol import AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeStats
from .registry import TrackerRegistry
from .tiers import TrackerTiers

__all__ = [
    "AnnounceEvent",
    "AnnounceRequest",
    "AnnounceResponse",
    "ScrapeStats",
    "TrackerRegistry",
    "TrackerTiers",
]
