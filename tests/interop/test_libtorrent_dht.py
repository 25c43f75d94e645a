"""Our DHT node and libtorrent's, bootstrapped only from each other on 127.0.0.1.

libtorrent (2.x) needs its BEP 42 and IP-diversity defenses relaxed to route
through nodes that all share 127.0.0.1: ``dht_restrict_routing_ips`` and
``dht_restrict_search_ips`` (one node per IP), ``dht_prefer_verified_node_ids``,
``dht_enforce_node_id`` and ``dht_ignore_dark_internet``. It is given our node
with ``add_dht_node`` (a *router* from ``dht_bootstrap_nodes`` would never enter
its routing table). Nothing is sent outside 127.0.0.0/8: no public bootstrap
nodes, and the session's IP filter refuses every other address.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import trio

from opendistro.dht.node import DHTConfig
from opendistro.io.dht import DHTService
from tests.lt_session import LOOPBACK, loopback_session

pytestmark = pytest.mark.interop

OURS = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
THEIRS = bytes.fromhex("fedcba9876543210fedcba9876543210fedcba98")
DHT_SETTINGS: dict[str, Any] = {
    "enable_dht": True,
    "dht_bootstrap_nodes": "",
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_prefer_verified_node_ids": False,
    "dht_enforce_node_id": False,
    "dht_ignore_dark_internet": False,
}


def _lt() -> Any:
    return pytest.importorskip("libtorrent")


def _dht_nodes(session: Any) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return int(session.status().dht_nodes)


async def _lt_get_peers(lt: Any, session: Any, info_hash: bytes) -> set[tuple[str, int]]:
    """Ask libtorrent's DHT for peers until it reports some."""
    while True:
        session.dht_get_peers(lt.sha1_hash(info_hash))
        for _ in range(20):
            await trio.sleep(0.05)
            for alert in session.pop_alerts():
                if (
                    isinstance(alert, lt.dht_get_peers_reply_alert)
                    and bytes(alert.info_hash.to_bytes()) == info_hash
                    and alert.peers()
                ):
                    return {(str(host), int(port)) for host, port in alert.peers()}


async def test_our_node_and_libtorrent_resolve_each_others_announces() -> None:
    lt = _lt()
    categories = lt.alert.category_t
    session = loopback_session(
        **DHT_SETTINGS,
        alert_mask=categories.dht_notification | categories.dht_operation_notification,
    )
    lt_port = session.listen_port()
    async with DHTService(
        host=LOOPBACK, bootstrap=[(LOOPBACK, lt_port)], config=DHTConfig(query_timeout=1.0)
    ) as ours:
        session.add_dht_node((LOOPBACK, ours.port))
        with trio.fail_after(30):
            await ours.bootstrapped.wait()
            while _dht_nodes(session) == 0:
                await trio.sleep(0.05)
            assert len(ours.node.table) == 1  # libtorrent's node, and it answered us

            # we announce; libtorrent's lookup finds us
            await ours.announce(OURS, 40000)
            found_by_lt = await _lt_get_peers(lt, session, OURS)
            assert (LOOPBACK, 40000) in found_by_lt

            # libtorrent announces; our lookup finds it
            session.dht_announce(lt.sha1_hash(THEIRS), 41000, 0)
            while (LOOPBACK, 41000) not in await ours.get_peers(THEIRS):
                await trio.sleep(0.1)
    assert ours.node.stats.malformed == 0
    assert ours.node.stats.bad_tokens == 0
