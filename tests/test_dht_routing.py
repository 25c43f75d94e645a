"""Node ids (XOR metric, BEP 42) and the k-bucket routing table."""

from __future__ import annotations

import random

import pytest

from opendistro.dht.node_id import (
    crc32c,
    distance,
    is_bep42_exempt,
    is_secure_id,
    secure_id,
)
from opendistro.dht.routing import GOOD_FOR, K, NodeState, RoutingTable


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


# BEP 42's table: IP, rand, the id's first three bytes (last 3 bits random), last byte.
BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbf", "01"),
    ("21.75.31.124", 86, "5a3ce9", "56"),
    ("65.23.51.170", 22, "a5d432", "16"),
    ("84.124.73.14", 65, "1b0321", "41"),
    ("43.213.53.83", 90, "e56f6c", "5a"),
]


@pytest.mark.parametrize(("ip", "rand", "head", "tail"), BEP42_VECTORS)
def test_bep42_vectors(ip: str, rand: int, head: str, tail: str) -> None:
    node_id = bytes.fromhex(head) + bytes(16) + bytes.fromhex(tail)
    assert is_secure_id(node_id, ip)
    # flip a bit inside the 21-bit prefix: no longer valid
    assert not is_secure_id(bytes([node_id[0] ^ 0x01]) + node_id[1:], ip)
    assert not is_secure_id(node_id[:19] + bytes([(rand + 1) & 0xFF]), ip)


def test_secure_ids_generated_for_public_ips_verify() -> None:
    rng = random.Random(5)
    for _ in range(50):
        ip = ".".join(str(rng.randrange(1, 224)) for _ in range(4))
        node_id = secure_id(ip, rng)
        assert is_secure_id(node_id, ip)
        if not is_bep42_exempt(ip):
            assert not is_secure_id(node_id, "8.8.8.8") or ip.startswith("8.")


def test_bep42_exemptions() -> None:
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.9", "169.254.1.1", "::1"):
        assert is_bep42_exempt(ip)
        assert is_secure_id(bytes(20), ip)
    assert not is_bep42_exempt("8.8.8.8")
    assert not is_secure_id(bytes(20), "8.8.8.8")


def test_distance_is_xor() -> None:
    a = bytes(19) + b"\x01"
    b = bytes(19) + b"\x03"
    assert distance(a, b) == 2
    assert distance(a, a) == 0


def _id(value: int) -> bytes:
    return value.to_bytes(20, "big")


def test_table_splits_only_around_own_id_and_stays_bounded() -> None:
    rng = random.Random(1)
    own = _id(0)  # own id at the very bottom of the space
    table = RoutingTable(own, 0.0)
    for i in range(5000):
        table.node_responded(rng.randbytes(20), ("10.0.0.1", 1000 + i % 60000), 0.0)
    # nodes far from us fill one bucket per distance class; at most k each
    assert all(len(bucket.nodes) <= K for bucket in table.buckets)
    assert all(len(bucket.replacements) <= K for bucket in table.buckets)
    assert len(table.buckets) <= 160
    assert len(table) <= K * len(table.buckets)
    # the far half of the space never split: one bucket of k
    top = table.bucket_for(1 << 159)
    assert top.low == 1 << 159 and top.high == 1 << 160
    assert len(top.nodes) == K


def test_closest_returns_k_nearest_in_order() -> None:
    table = RoutingTable(_id(1 << 100), 0.0)
    for value in range(1, 40):
        table.node_responded(_id(value), ("10.0.0.2", 2000 + value), 0.0)
    closest = table.closest(_id(5))
    distances = [node.id_int ^ 5 for node in closest]
    assert distances == sorted(distances)
    assert closest[0].id_int == 5
    assert len(closest) == K


def test_full_bucket_pings_questionable_and_replaces_bad_nodes() -> None:
    table = RoutingTable(_id(0), 0.0)
    far = [_id((1 << 159) + i) for i in range(K)]
    for i, node_id in enumerate(far):
        table.node_responded(node_id, ("10.0.0.3", 3000 + i), 0.0)
    newcomer = _id((1 << 159) + 100)
    # all good: the newcomer waits in the replacement cache, nobody to ping
    assert table.node_responded(newcomer, ("10.0.0.3", 4000), 1.0) == []
    assert newcomer not in table
    # 15 minutes of silence: the old nodes are questionable, and get pinged
    later = GOOD_FOR + 10
    assert table.get(far[0]).state(later) is NodeState.QUESTIONABLE  # type: ignore[union-attr]
    to_ping = table.node_responded(_id((1 << 159) + 101), ("10.0.0.3", 4001), later)
    assert {node.node_id for node in to_ping} == set(far)
    # one node fails twice: bad, and the newest replacement takes its place
    table.node_failed(far[0], later)
    assert far[0] in table
    table.node_failed(far[0], later)
    assert far[0] not in table
    assert _id((1 << 159) + 101) in table


def test_address_of_a_known_id_cannot_be_hijacked() -> None:
    table = RoutingTable(_id(0), 0.0)
    table.node_responded(_id(7), ("10.0.0.4", 1), 0.0)
    table.node_responded(_id(7), ("10.6.6.6", 666), 1.0)
    assert table.get(_id(7)).address == ("10.0.0.4", 1)  # type: ignore[union-attr]


def test_stale_buckets_and_refresh_target_in_range() -> None:
    rng = random.Random(2)
    table = RoutingTable(_id(0), 0.0)
    for i in range(30):
        table.node_responded(rng.randbytes(20), ("10.0.0.5", 5000 + i), 0.0)
    assert table.stale_buckets(10.0) == []
    stale = table.stale_buckets(15 * 60.0)
    assert stale
    for bucket in stale:
        target = int.from_bytes(table.refresh_target(bucket, rng), "big")
        assert bucket.low <= target < bucket.high
