"""Node ids: the XOR metric of Kademlia (BEP 5) and the BEP 42 tie between id and IP.

A node id and an info-hash live in the same 160-bit space; how close two of
them are is their XOR read as an unsigned integer. BEP 42 makes ids expensive
to choose: the first 21 bits must be the CRC32-C of the node's (masked) IPv4
address mixed with three random bits, which the id's last byte repeats. Then
an attacker cannot place nodes next to any info-hash it likes without owning
many addresses. Addresses that are not publicly routable (loopback, private,
link-local...) are exempt, as BEP 42 says: nodes behind them cannot know the
address others see.
"""

from __future__ import annotations

import ipaddress
import random
from functools import lru_cache

__all__ = [
    "ID_BITS",
    "ID_LENGTH",
    "crc32c",
    "distance",
    "is_bep42_exempt",
    "is_secure_id",
    "random_id",
    "random_id_in_range",
    "secure_id",
]

ID_LENGTH = 20
ID_BITS = 160

_IPV4_MASK = 0x030F3FFF
#: Networks BEP 42 names as exempt; anything else that is not globally routable is, too.
_EXEMPT_NETWORKS = tuple(
    ipaddress.IPv4Network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ 0x82F63B78 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum BEP 42 derives id prefixes from.

    A table-driven loop is plenty: BEP 42 only ever hashes four bytes.
    """
    value = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
    return value ^ 0xFFFFFFFF


def distance(a: bytes, b: bytes) -> int:
    """The Kademlia distance between two ids (or an id and an info-hash)."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def random_id(rng: random.Random) -> bytes:
    return rng.randbytes(ID_LENGTH)


def random_id_in_range(low: int, high: int, rng: random.Random) -> bytes:
    """A random id ``low <= id < high`` (a bucket's range), for refreshing that bucket."""
    return rng.randrange(low, high).to_bytes(ID_LENGTH, "big")


@lru_cache(maxsize=4096)
def is_bep42_exempt(ip: str) -> bool:
    """Whether BEP 42 does not apply to ``ip``: not IPv4, or not a public address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return True
    if not isinstance(address, ipaddress.IPv4Address):
        return True  # we speak the IPv4 DHT only; IPv6 ids are not checked
    return not address.is_global or any(address in net for net in _EXEMPT_NETWORKS)


def _prefix(ip: str, r: int) -> int:
    masked = (int(ipaddress.IPv4Address(ip)) & _IPV4_MASK) | ((r & 0x7) << 29)
    return crc32c(masked.to_bytes(4, "big"))


def secure_id(ip: str, rng: random.Random) -> bytes:
    """A BEP 42 id for a node whose public address is ``ip`` (random if ``ip`` is exempt)."""
    if is_bep42_exempt(ip):
        return random_id(rng)
    r = rng.randrange(256)
    crc = _prefix(ip, r)
    head = bytes(
        [(crc >> 24) & 0xFF, (crc >> 16) & 0xFF, ((crc >> 8) & 0xF8) | rng.randrange(8)]
    )
    return head + rng.randbytes(16) + bytes([r])


def is_secure_id(node_id: bytes, ip: str) -> bool:
    """Whether ``node_id`` is one a node at ``ip`` may use under BEP 42 (exempt IPs: always)."""
    if is_bep42_exempt(ip):
        return True
    if len(node_id) != ID_LENGTH:
        return False
    crc = _prefix(ip, node_id[19])
    return (
        node_id[0] == (crc >> 24) & 0xFF
        and node_id[1] == (crc >> 16) & 0xFF
        and node_id[2] & 0xF8 == (crc >> 8) & 0xF8
    )
