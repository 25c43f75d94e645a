"""The delta index on the wire: ``NAME.odindex.xz`` beside ``NAME.odindex``.

The compressed copy only changes what travels: a client checks what it
decompresses to exactly as it checks the plain index (the SHA-256 a release
signature names, the info-hashes), and falls back to the plain index when the
copy is missing, broken or another index.
"""

from __future__ import annotations

import hashlib
import lzma
import zipfile
from pathlib import Path

import trio

from opendistro.create import create_torrent
from opendistro.delta.publish import (
    COMPRESSED_INDEX_SUFFIX,
    compress_index,
    decompress_index,
    publish_delta,
)
from opendistro.io.delta_update import DeltaOutcome, update_from_previous
from opendistro.metainfo import Metainfo

from .mirror_server import MirrorServer
from .test_delta_update import members


def wheel(path: Path, contents: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in contents.items():
            out.writestr(name, data)
    return path


def release(tmp_path: Path) -> tuple[Path, Path, Metainfo, Path]:
    """An old and a new wheel-like zip, the new one published; and its index's path.

    Many small members: the index is mostly recipes and structure, which compress.
    """
    old_members = members(31, count=60, size=3000)
    new_members = dict(old_members)
    new_members["pkg/module0.py"] = old_members["pkg/module0.py"][:1000] + b"# changed\n"
    old = wheel(tmp_path / "old" / "pkg-1.0-py3-none-any.whl", old_members)
    new = wheel(tmp_path / "new" / "pkg-1.1-py3-none-any.whl", new_members)
    metainfo = create_torrent(new, version="hybrid", piece_length=65536)
    published = publish_delta(metainfo, new.parent)
    return old, new, metainfo, published.index_path


async def rebuild(
    root: Path, metainfo: Metainfo, old: Path, target: Path, sha256: bytes | None = None
) -> DeltaOutcome:
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(root)
        await nursery.start(mirror.serve)
        outcome = await update_from_previous(metainfo, target, [old], [mirror.url],
                                             index_sha256=sha256)
        nursery.cancel_scope.cancel()
    return outcome


def test_the_compressed_index_holds_exactly_the_index(tmp_path: Path) -> None:
    _, _, _, index_path = release(tmp_path)
    plain = index_path.read_bytes()
    packed = index_path.with_name(index_path.name + COMPRESSED_INDEX_SUFFIX).read_bytes()
    assert len(packed) < len(plain)
    assert decompress_index(packed, len(plain)) == plain


def test_a_broken_or_oversized_compressed_index_decompresses_to_nothing() -> None:
    data = b"index " * 1000
    packed = compress_index(data)
    assert decompress_index(packed, len(data)) == data
    assert decompress_index(packed, len(data) - 1) is None, "beyond the limit"
    assert decompress_index(packed[:-3], len(data)) is None
    assert decompress_index(packed + b"\0", len(data)) is None
    assert decompress_index(b"not xz at all", len(data)) is None


async def test_a_client_fetches_the_compressed_index_and_checks_it_as_the_index(
    tmp_path: Path,
) -> None:
    old, new, metainfo, index_path = release(tmp_path)
    plain = index_path.read_bytes()
    packed_path = index_path.with_name(index_path.name + COMPRESSED_INDEX_SUFFIX)
    outcome = await rebuild(new.parent, metainfo, old, tmp_path / "dl",
                            hashlib.sha256(plain).digest())
    assert outcome.index is not None and outcome.index.encode() == plain
    assert outcome.index_bytes == packed_path.stat().st_size < len(plain)
    assert not outcome.failures and outcome.bytes_reused > 0


async def test_a_substituted_compressed_index_falls_back_to_the_signed_one(
    tmp_path: Path,
) -> None:
    old, new, metainfo, index_path = release(tmp_path)
    plain = index_path.read_bytes()
    packed_path = index_path.with_name(index_path.name + COMPRESSED_INDEX_SUFFIX)
    # Another index (of the old release) where the compressed copy should be.
    other = publish_delta(create_torrent(old, version="hybrid"), old.parent).index.encode()
    packed_path.write_bytes(lzma.compress(other))
    outcome = await rebuild(new.parent, metainfo, old, tmp_path / "dl",
                            hashlib.sha256(plain).digest())
    assert outcome.index is not None and outcome.index.encode() == plain
    assert outcome.index_bytes == packed_path.stat().st_size + len(plain)
    assert not outcome.failures and outcome.bytes_reused > 0


async def test_without_a_compressed_index_the_plain_one_is_used(tmp_path: Path) -> None:
    old, new, metainfo, index_path = release(tmp_path)
    index_path.with_name(index_path.name + COMPRESSED_INDEX_SUFFIX).unlink()
    outcome = await rebuild(new.parent, metainfo, old, tmp_path / "dl")
    assert outcome.index_bytes == index_path.stat().st_size
    assert not outcome.failures and outcome.bytes_reused > 0
