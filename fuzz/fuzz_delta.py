#!/usr/bin/env python3
"""Fuzz delta indexes (bencoded) and release manifests (JSON). The first byte
picks the parser. An index that decodes must encode back to the same bytes
(the format is canonical); a manifest must encode to one that decodes equal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import _harness

from opendistro.delta.index import DeltaIndex
from opendistro.delta.manifest import Manifest


def _release(name: str, version: str, sequence: int, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "version": version,
        "sequence": sequence,
        "torrent": f"torrents/{name}-{version}.torrent",
        "info_hash": "ab" * 20,
        **extra,
    }


_MANIFEST = {
    "format": "opendistro-release-manifest",
    "version": 1,
    "channel": "stable",
    "releases": [
        _release("base", "1.0", 1),
        _release("base", "1.1", 2, previous="1.0", mirrors=["https://127.0.0.1/base/"]),
        _release("app", "2.0", 5, depends=[{"name": "base", "min_version": "1.1"}]),
    ],
}


def _index(data: bytes) -> None:
    index = _harness.expect_typed(DeltaIndex.decode, data)
    if index is not None:
        assert index.encode() == data, "delta index is not canonical"


def _manifest(data: bytes) -> None:
    manifest = _harness.expect_typed(Manifest.decode, data)
    if manifest is not None:
        assert Manifest.decode(manifest.to_bytes()).releases == manifest.releases


_TARGETS = (_index, _manifest)


def seeds() -> Iterator[bytes]:
    for raw in _harness.vector_hex("delta_index_vectors.json", "index"):
        yield b"\x00" + raw
    yield b"\x01" + json.dumps(_MANIFEST).encode()
    yield b"\x01" + b"[" * 3000 + b"]" * 3000


def fuzz_one(data: bytes) -> None:
    choice, payload = _harness.pick(data, len(_TARGETS))
    _TARGETS[choice](payload)


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
