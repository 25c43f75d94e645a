#!/usr/bin/env python3
"""Fuzz both sides of the tracker protocols: HTTP (query strings, bencoded
responses, scrape) and UDP (BEP 15 packets). The first byte picks the parser.

Responses that decode must encode back to bytes that decode the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import _harness

from opendistro.tracker import protocol, udp
from opendistro.tracker.protocol import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
)

_TRANSACTION = 0x01020304
_HASHES = (bytes(range(20)), bytes(range(1, 21)))
_REQUEST = AnnounceRequest(
    info_hash=bytes(range(20)),
    peer_id=b"-OD0100-" + bytes(12),
    port=6881,
    uploaded=1,
    downloaded=2,
    left=3,
    event=AnnounceEvent.STARTED,
    key=0xDEADBEEF,
    ip="127.0.0.1",
    tracker_id=b"tid",
)
_RESPONSE = AnnounceResponse(
    interval=1800,
    peers=(("127.0.0.1", 6881), ("::1", 51413)),
    min_interval=60,
    complete=3,
    incomplete=4,
    warning="careful",
    tracker_id=b"tid",
)


def _announce_query(data: bytes) -> None:
    _harness.expect_typed(AnnounceRequest.from_query, data)
    _harness.expect_typed(AnnounceRequest.from_query, data.decode("utf-8", "surrogateescape"))


def _scrape_query(data: bytes) -> None:
    _harness.expect_typed(protocol.parse_scrape_query, data)


def _announce_response(data: bytes) -> None:
    response = _harness.expect_typed(AnnounceResponse.decode, data)
    if response is not None:
        # The dictionary form carries every peer (compact drops hostnames).
        again = AnnounceResponse.decode(response.encode(compact=False))
        assert set(again.peers) == set(response.peers), "peers did not round-trip"
        assert again.interval == response.interval


def _scrape_response(data: bytes) -> None:
    files = _harness.expect_typed(protocol.decode_scrape_response, data)
    if files is not None:
        assert protocol.decode_scrape_response(protocol.encode_scrape_response(files)) == files


def _udp_request(data: bytes) -> None:
    _harness.expect_typed(udp.parse_request, data)


def _udp_replies(data: bytes) -> None:
    _harness.expect_typed(udp.decode_connect_response, data, _TRANSACTION)
    for ipv6 in (False, True):
        _harness.expect_typed(udp.decode_announce_response, data, _TRANSACTION, ipv6=ipv6)
    _harness.expect_typed(udp.decode_scrape_response, data, _TRANSACTION, _HASHES)


_TARGETS = (
    _announce_query,
    _scrape_query,
    _announce_response,
    _scrape_response,
    _udp_request,
    _udp_replies,
)


def seeds() -> Iterator[bytes]:
    yield b"\x00" + _REQUEST.to_query().encode()
    yield b"\x00?info_hash=%00%01&peer_id=x&port=-1&numwant=99999999999999999999999&key=+f"
    yield b"\x01" + protocol.scrape_query(_HASHES).encode()
    yield b"\x02" + _RESPONSE.encode(compact=True)
    yield b"\x02" + _RESPONSE.encode(compact=False)
    yield b"\x02" + protocol.encode_failure("go away")
    stats = {_HASHES[0]: ScrapeStats(1, 2, 3)}
    yield b"\x03" + protocol.encode_scrape_response(stats)
    yield b"\x04" + udp.encode_connect_request(_TRANSACTION)
    yield b"\x04" + udp.encode_announce_request(7, _TRANSACTION, _REQUEST)
    yield b"\x04" + udp.encode_scrape_request(7, _TRANSACTION, _HASHES)
    yield b"\x05" + udp.encode_connect_response(_TRANSACTION, 99)
    yield b"\x05" + udp.encode_announce_response(_TRANSACTION, _RESPONSE, ipv6=False)
    yield b"\x05" + udp.encode_scrape_response(_TRANSACTION, _HASHES, stats)
    yield b"\x05" + udp.encode_error(_TRANSACTION, "nope")


def fuzz_one(data: bytes) -> None:
    choice, payload = _harness.pick(data, len(_TARGETS))
    _TARGETS[choice](payload)


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
