#!/usr/bin/env python3
"""Fuzz .torrent parsing: v1, v2 and hybrid info dicts, file trees and piece layers.

A torrent that parses must survive ``to_bytes`` and parse again to the same
info-hashes and piece space.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import _harness

from opendistro.create import create_torrent
from opendistro.metainfo import Metainfo

_SEEDS: list[bytes] = []


def seeds() -> Iterator[bytes]:
    if not _SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            single = root / "one.bin"
            single.write_bytes(bytes(range(256)) * 200)
            tree = root / "tree"
            (tree / "sub").mkdir(parents=True)
            (tree / "a.txt").write_bytes(b"a" * 40000)
            (tree / "sub" / "b.txt").write_bytes(b"b" * 5)
            for version in ("v1", "v2", "hybrid"):
                for path in (single, tree):
                    metainfo = create_torrent(
                        path,
                        version=version,
                        piece_length=16384,
                        trackers=["http://127.0.0.1:1/announce"],
                        webseeds=["http://127.0.0.1:2/"],
                        creation_date=0,
                    )
                    _SEEDS.append(metainfo.to_bytes())
    yield from _SEEDS


def fuzz_one(data: bytes) -> None:
    metainfo = _harness.expect_typed(Metainfo.from_bytes, data)
    if metainfo is not None:
        again = Metainfo.from_bytes(metainfo.to_bytes())
        assert again.info_hash_v1 == metainfo.info_hash_v1
        assert again.info_hash_v2 == metainfo.info_hash_v2
        assert again.files == metainfo.files
        assert again.piece_layers == metainfo.piece_layers
    _harness.expect_typed(Metainfo.from_info_bytes, data)


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
