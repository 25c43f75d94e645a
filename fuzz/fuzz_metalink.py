#!/usr/bin/env python3
"""Fuzz Metalink 3 and 4 parsing (untrusted XML from mirrors).

A document that parses must render to Metalink 4 and parse back equal, apart
from ``skipped_urls``, which rendering leaves out on purpose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

import _harness

from opendistro.mirrors.metalink import (
    Digest,
    Metalink,
    MetalinkFile,
    MetaUrl,
    MirrorUrl,
    Pieces,
    Signature,
    parse_metalink,
    render_metalink,
)

_V3 = b"""<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic"
          origin="http://127.0.0.1/x.metalink" pubdate="Mon, 15 May 2006 00:00:01 GMT">
  <files>
    <file name="dir/x.iso">
      <size>5</size>
      <verification>
        <hash type="sha256">2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824</hash>
        <pieces type="sha1" length="4">
          <hash piece="0">aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d</hash>
          <hash piece="1">aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d</hash>
        </pieces>
        <signature type="pgp">-----BEGIN PGP SIGNATURE-----</signature>
      </verification>
      <resources>
        <url type="http" location="de" preference="90">http://127.0.0.1/x.iso</url>
        <url type="ftp" preference="10">ftp://127.0.0.1/x.iso</url>
        <url type="bittorrent">http://127.0.0.1/x.torrent</url>
      </resources>
    </file>
  </files>
</metalink>
"""


def seeds() -> Iterator[bytes]:
    entry = MetalinkFile(
        path=("release", "x.iso"),
        size=5,
        identity="x",
        version="1.0",
        description="a <release> & more\r\n",
        hashes=(Digest("sha-256", bytes(32)), Digest("sha-1", bytes(20))),
        pieces=(Pieces("sha-1", 4, (bytes(20), bytes(20))),),
        signature=Signature("application/pgp-signature", "sig"),
        urls=(MirrorUrl("http://127.0.0.1/a", 1, "de"), MirrorUrl("https://127.0.0.1:8/b")),
        metaurls=(MetaUrl("http://127.0.0.1/x.torrent", "torrent", 1, "release/x.iso"),),
    )
    document = Metalink(
        files=(entry, dataclasses.replace(entry, path=("other",), pieces=())),
        generator="fuzz",
        published=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        origin="http://127.0.0.1/x.meta4",
        dynamic=True,
    )
    yield render_metalink(document)
    yield _V3


def _without_skipped(metalink: Metalink) -> Metalink:
    files = tuple(dataclasses.replace(entry, skipped_urls=()) for entry in metalink.files)
    return dataclasses.replace(metalink, files=files)


def fuzz_one(data: bytes) -> None:
    metalink = _harness.expect_typed(parse_metalink, data)
    if metalink is None:
        return
    expected = _without_skipped(metalink)
    if any(not (entry.urls or entry.metaurls) for entry in expected.files):
        return  # only skipped sources: nothing left to render
    if metalink.generator is not None and metalink.generator != metalink.generator.strip():
        return  # text content is stripped on reading
    again = parse_metalink(render_metalink(metalink))
    assert again == expected, "Metalink did not round-trip"


if __name__ == "__main__":
    _harness.main(fuzz_one, seeds)
