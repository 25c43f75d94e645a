#!/usr/bin/env python3
"""Fuzz magnet URI parsing; a link that parses must round-trip through ``to_uri``."""

from __future__ import annotations

from collections.abc import Iterator

import _harness

from opendistro.magnet import MagnetLink


def seeds() -> Iterator[bytes]:
    yield (
        b"magnet:?xt=urn:btih:" + b"ab" * 20 + b"&xt=urn:btmh:1220" + b"cd" * 32
        + b"&dn=hello+world%20x&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce"
        + b"&ws=http://127.0.0.1/&x.pe=127.0.0.1:6881&x.pe=[::1]:80"
    )
    yield b"magnet:?xt=urn:btih:CBVUHK3S6ZMFAOHI2NOTJBTCVA2HJXNT&tr.1=udp://127.0.0.1:9"


def fuzz_one(data: bytes) -> None:
    # Both readings of the bytes: UTF-8 (what a URI usually is) and Latin-1
    # (every byte a character), so the parser sees every code point below 256.
    for text in (data.decode("utf-8", "replace"), data.decode("latin-1")):
        link = _harness.expect_typed(MagnetLink.parse, text)
        if link is not None:
            assert MagnetLink.parse(link.to_uri()) == link, "magnet did not round-trip"


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
