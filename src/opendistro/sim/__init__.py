"""The discrete-event simulator: the real swarm logic on a virtual clock and network.

The engine below the driver is small and independent of BitTorrent:
:class:`EventLoop` (virtual time, a heap of timers), :class:`Network` (hosts
with access links, flows re-rated as they start and end), :class:`Scenario`
(what to simulate, loaded from TOML) and :mod:`~opendistro.sim.metrics`
(how well it went, against the Kumar & Ross fluid bound).
"""

from .loop import EventLoop, Timer
from .metrics import (
    RunMetrics,
    fluid_lower_bound,
    jain_index,
    peak_rss_mb,
    percentiles,
    scenario_bound,
)
from .network import Flow, Host, Network
from .scenario import PeerClass, PeerPlan, Scenario, builtin_scenarios, plan_peers

__all__ = [
    "EventLoop",
    "Flow",
    "Host",
    "Network",
    "PeerClass",
    "PeerPlan",
    "RunMetrics",
    "Scenario",
    "Timer",
    "builtin_scenarios",
    "fluid_lower_bound",
    "jain_index",
    "peak_rss_mb",
    "percentiles",
    "plan_peers",
    "scenario_bound",
]
