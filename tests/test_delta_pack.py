"""Compressed transfer of missing content: the mirror pack and zlib answers over od_delta.

The pack (spec/delta-index.md §5.2) holds the chunks a release has that the
previous one lacks, compressed in blocks; peers compress answers with zlib
(spec/od-delta.md). Both must be bounded against hostile input and must make a
package update cheaper than plain content ranges.
"""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import lzma
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import trio

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.delta.archives import read_content, segment_file
from opendistro.delta.chunker import ChunkerParams
from opendistro.delta.index import DeltaIndex, build_index
from opendistro.delta.pack import (
    CODECS,
    MAX_BLOCK_CONTENT,
    MAX_HEADER_SIZE,
    PackHeader,
    decompress_block,
    file_chunk_hashes,
    write_pack,
)
from opendistro.delta.publish import pack_paths, publish_delta
from opendistro.errors import DeltaError
from opendistro.io.client import Client
from opendistro.io.delta_update import update_from_previous
from opendistro.metainfo import Metainfo

from .delta_mirror_update import update_over_mirror
from .test_delta_update import members, tarball

LOOPBACK = "127.0.0.1"


def edited(old: dict[str, bytes], changed: int, seed: int) -> dict[str, bytes]:
    """``old`` with ``changed`` members edited all through (every chunk of them new)."""
    rng = random.Random(seed)
    new = dict(old)
    for name in list(old)[:changed]:
        data = bytearray(old[name])
        for position in range(0, len(data), 4000):
            data[position : position + 4] = b"%04d" % rng.randrange(10_000)
        new[name] = bytes(data)
    return new


def publish_pair(
    tmp_path: Path, old_members: dict[str, bytes], new_members: dict[str, bytes], *, pack: bool
) -> tuple[Path, Path, Metainfo]:
    """Old release (published in a folder of its own) and the new one, with or without pack."""
    old = tarball(tmp_path / "old-pub" / "pkg-1.0.tar.gz", old_members)
    previous: DeltaIndex | None = None
    if pack:
        previous = publish_delta(create_torrent(old, version="hybrid"), old.parent).index
    new = tarball(tmp_path / "new" / "pkg-1.1.tar.gz", new_members)
    metainfo = create_torrent(new, version="hybrid", piece_length=65536)
    publish_delta(metainfo, new.parent, previous_index=previous)
    return old, new, metainfo


# -- the pack format ---------------------------------------------------------------------


def test_a_pack_holds_exactly_the_new_chunks_once_and_they_decompress(tmp_path: Path) -> None:
    old_members = members(11)
    new_members = edited(old_members, 3, seed=12)
    new_members["pkg/copy.py"] = new_members["pkg/module0.py"]  # a duplicate: packed once
    old, new, metainfo = publish_pair(tmp_path, old_members, new_members, pack=True)
    header_path, blocks_path = pack_paths(new.parent, metainfo)
    header = PackHeader.decode(header_path.read_bytes())
    old_index = DeltaIndex.decode((old.parent / (old.name + ".odindex")).read_bytes())
    new_index_bytes = (new.parent / (new.name + ".odindex")).read_bytes()
    new_index = DeltaIndex.decode(new_index_bytes)
    chunks_of = lambda index: {  # noqa: E731
        digest for f in index.files for s in f.segments for _, digest in s.chunks
    }
    assert set(header.chunks) == chunks_of(new_index) - chunks_of(old_index)
    assert header.index_sha256 == hashlib.sha256(new_index_bytes).digest()
    blocks = blocks_path.read_bytes()
    assert len(blocks) == header.blocks_size
    contents = [
        decompress_block(header.codec, blocks[header.offsets[n] : header.offsets[n + 1]], length)
        for n, (_, length) in enumerate(header.blocks)
    ]
    assert all(len(content) <= MAX_BLOCK_CONTENT for content in contents)
    for digest, where in header.chunks.items():
        data = contents[where.block][where.offset : where.offset + where.length]
        assert hashlib.sha256(data).digest()[:16] == digest
    assert header.blocks_size < sum(len(c) for c in contents) // 2, "compressible text shrank"


def test_without_a_previous_index_no_pack_is_written(tmp_path: Path) -> None:
    _, new, metainfo = publish_pair(tmp_path, members(13), members(14), pack=False)
    assert not any(path.exists() for path in pack_paths(new.parent, metainfo))


@pytest.mark.parametrize("codec", ["xz", "zlib"])
def test_a_block_never_decompresses_beyond_its_stated_length(codec: str) -> None:
    bomb = (
        lzma.compress(bytes(64 << 20), format=lzma.FORMAT_XZ) if codec == "xz"
        else zlib.compress(bytes(64 << 20))
    )
    with pytest.raises(DeltaError):
        decompress_block(codec, bomb, 1000)
    good = lzma.compress(b"abc" * 100) if codec == "xz" else zlib.compress(b"abc" * 100)
    assert decompress_block(codec, good, 300) == b"abc" * 100
    for wrong in (299, 301):
        with pytest.raises(DeltaError):
            decompress_block(codec, good, wrong)
    with pytest.raises(DeltaError):
        decompress_block(codec, good + b"X", 300)


def _header(**changes: object) -> bytes:
    fields: dict[bytes, object] = {
        b"blocks": (100).to_bytes(4, "big") + (5000).to_bytes(4, "big"),
        b"chunks": bytes(16) + (0).to_bytes(4, "big") + (10).to_bytes(4, "big")
        + (4000).to_bytes(4, "big"),
        b"codec": b"xz",
        b"index-sha256": bytes(32),
        b"version": 1,
    }
    for key, value in changes.items():
        name = key.replace("_", "-").encode()
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    return bencode.encode(fields)


def _chunk(digest: bytes, block: int, offset: int, length: int) -> bytes:
    return digest + b"".join(n.to_bytes(4, "big") for n in (block, offset, length))


def test_a_well_formed_header_decodes() -> None:
    header = PackHeader.decode(_header())
    assert header.blocks == ((100, 5000),) and header.blocks_size == 100
    assert header.chunks[bytes(16)].length == 4000
    assert PackHeader.decode(header.encode()) == header


@pytest.mark.parametrize(
    "payload",
    [
        _header(version=2),
        _header(codec=b"gzip"),
        _header(index_sha256=bytes(31)),
        _header(extra=b"x"),
        _header(codec=None),
        _header(blocks=bytes(7)),
        _header(blocks=(0).to_bytes(4, "big") + (5000).to_bytes(4, "big")),
        _header(blocks=(100).to_bytes(4, "big") + (MAX_BLOCK_CONTENT + 1).to_bytes(4, "big")),
        _header(chunks=_chunk(bytes(16), 1, 0, 10)),  # no block 1
        _header(chunks=_chunk(bytes(16), 0, 4995, 10)),  # past the block's end
        _header(chunks=_chunk(bytes(16), 0, 0, 0)),  # empty
        _header(chunks=_chunk(bytes(16), 0, 0, 10) * 2),  # listed twice
        _header(chunks=bytes(27)),
        _header()[:-1] + b"e" + b"e",  # not canonical: trailing data
        b"d7:versioni1ee" + b" " * (MAX_HEADER_SIZE - 13),
        b"not bencode",
    ],
    ids=[
        "version", "codec", "sha256", "unknown key", "missing key", "block entry",
        "empty block", "huge block", "no such block", "past block", "empty chunk",
        "duplicate", "chunk entry", "trailing", "oversized", "garbage",
    ],
)
def test_a_hostile_header_is_refused(payload: bytes) -> None:
    with pytest.raises(DeltaError):
        PackHeader.decode(payload)


# -- updates over a mirror with a pack, and over a peer with zlib answers -----------------


async def test_a_mirror_pack_makes_a_package_update_cheaper_and_bit_exact(tmp_path: Path) -> None:
    old_members = members(21)
    new_members = edited(old_members, 5, seed=22)
    figures = {}
    for pack in (False, True):
        where = tmp_path / ("pack" if pack else "plain")
        old, new, metainfo = publish_pair(where, old_members, new_members, pack=pack)
        outcome, from_mirrors = await update_over_mirror(new.parent, metainfo, [old],
                                                         where / "dl")
        assert (where / "dl" / new.name).read_bytes() == new.read_bytes()
        assert from_mirrors == 0 and not outcome.failures
        figures[pack] = outcome
    plain, packed = figures[False], figures[True]
    assert plain.pack_bytes == 0 and packed.pack_bytes > 0
    assert plain.segments_whole == 1, "plain content costs more than the compressed tarball"
    assert packed.segments_whole == 0, "from the pack the delta pays"
    assert packed.bytes_fetched < plain.bytes_fetched * 0.6
    assert packed.bytes_reused > 500_000


async def test_a_broken_pack_header_on_the_mirror_is_ignored(tmp_path: Path) -> None:
    old_members = members(23)
    new_members = edited(old_members, 1, seed=24)
    old, new, metainfo = publish_pair(tmp_path, old_members, new_members, pack=True)
    header_path, _ = pack_paths(new.parent, metainfo)
    header_path.write_bytes(b"d7:versioni9ee")
    outcome, _ = await update_over_mirror(new.parent, metainfo, [old], tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert outcome.pack_bytes == 0 and outcome.bytes_reused > 500_000


async def test_a_seeder_answers_compressed_and_the_update_is_bit_exact(tmp_path: Path) -> None:
    old_members = members(25)
    new_members = edited(old_members, 2, seed=26)
    old, new, metainfo = publish_pair(tmp_path, old_members, new_members, pack=False)
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        seeding = await seeder.seed(metainfo, new.parent)
        address = (LOOPBACK, seeder.port)
        outcome = await update_from_previous(metainfo, tmp_path / "dl", [old], [],
                                             peers=[address])
        torrent = await leecher.add_torrent(metainfo, tmp_path / "dl", peers=[address])
        with trio.fail_after(60):
            await torrent.complete.wait()
        served = seeding.delta_server.requests_served
        status = torrent.status()
    assert torrent.error is None
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert served > 0 and status.bytes_from_peers == 0 and outcome.segments_whole == 0
    assert outcome.index is not None
    content = sum(s.content_length for f in outcome.index.files for s in f.segments)
    content_missing = content - outcome.bytes_reused
    assert content_missing > 200_000
    assert outcome.bytes_fetched < content_missing * 0.5, "answers travelled compressed"


async def test_create_writes_a_pack_with_previous_index(tmp_path: Path) -> None:
    old_members = members(27)
    old = tarball(tmp_path / "old" / "pkg-1.0.tar.gz", old_members)
    new = tarball(tmp_path / "new" / "pkg-1.1.tar.gz", edited(old_members, 1, seed=28))
    cli = [sys.executable, "-m", "opendistro.cli", "create", "--json"]
    await trio.run_process([*cli, str(old), "-o", str(tmp_path / "old.torrent")])
    await trio.run_process([*cli, str(new), "-o", str(tmp_path / "new.torrent"),
                            "--previous-index", str(old.parent / (old.name + ".odindex"))],
                           capture_stdout=True)
    header = PackHeader.decode((new.parent / "pkg-1.1.tar.gz.odpack").read_bytes())
    assert header.chunks and (new.parent / "pkg-1.1.tar.gz.odblocks").stat().st_size == (
        header.blocks_size
    )


@pytest.mark.skipif(shutil.which("gzip") is None, reason="the gzip tool is not installed")
def test_with_the_previous_files_the_pack_holds_only_what_their_users_lack(
    tmp_path: Path,
) -> None:
    old_members = members(11)
    new_members = edited(old_members, 1, 12)
    # GNU gzip's deflate is not Python's: the old index can describe that tarball only by its
    # raw bytes, while a client (and now the publisher) looks inside it.
    plain = tmp_path / "old" / "pkg-1.0.tar"
    tarball(tmp_path / "old" / "pkg-1.0.tar.gz", old_members)
    plain.write_bytes(gzip_module.decompress((tmp_path / "old" / "pkg-1.0.tar.gz").read_bytes()))
    subprocess.run(["gzip", "-6", "-f", "-n", str(plain)], check=True)
    old = tmp_path / "old" / "pkg-1.0.tar.gz"
    old_metainfo = create_torrent(old, version="hybrid", piece_length=65536)
    old_index = publish_delta(old_metainfo, old.parent).index
    assert any(s.fallback_reason for f in old_index.files for s in f.segments)

    def pack_size(name: str, **previous: object) -> int:
        root = tmp_path / name
        new = tarball(root / "pkg-1.1.tar.gz", new_members)
        metainfo = create_torrent(new, version="hybrid", piece_length=65536)
        published = publish_delta(metainfo, root, **previous)  # type: ignore[arg-type]
        assert published.pack is not None
        return published.pack.blocks_size

    by_index = pack_size("by-index", previous_index=old_index)
    by_files = pack_size("by-files", previous_index=old_index, previous_files=[old])
    assert by_files * 5 < by_index


def test_a_header_that_is_not_canonical_or_over_the_counts_is_refused() -> None:
    with pytest.raises(DeltaError, match="canonical bencoded dictionary"):
        PackHeader.decode(b"i1e")
    unsorted = _header()
    unsorted = b"d7:versioni1e" + unsorted[1 : -len(b"7:versioni1ee")] + b"e"
    assert bencode.decode(unsorted)[b"version"] == 1
    with pytest.raises(DeltaError, match="canonical bencoded dictionary"):
        PackHeader.decode(unsorted)
    block = (100).to_bytes(4, "big") + (5000).to_bytes(4, "big")
    with pytest.raises(DeltaError, match="at most 1000000 blocks"):
        PackHeader.decode(_header(blocks=block * 1_000_001))
    with pytest.raises(DeltaError, match="at most 2000000 chunks"):
        PackHeader.decode(_header(chunks=_chunk(bytes(16), 0, 0, 10) * 2_000_001))


def test_blocks_of_an_unknown_codec_or_corrupt_data_do_not_decompress() -> None:
    with pytest.raises(DeltaError, match="unknown pack codec"):
        decompress_block("gzip", zlib.compress(b"abc"), 3)
    for codec in CODECS:
        with pytest.raises(DeltaError, match="does not decompress"):
            decompress_block(codec, b"\x00garbage that is no stream", 10)


def test_write_pack_fills_blocks_up_to_their_limit_and_skips_empty_segments(
    tmp_path: Path,
) -> None:
    """A chunk that would overflow the block starts a new one; chunkless segments add nothing."""
    release = tmp_path / "rel"
    release.mkdir()
    # An empty gzip member (a segment without chunks) before one of 1000 zeros.
    (release / "0.gz").write_bytes(
        gzip_module.compress(b"", mtime=0) + gzip_module.compress(bytes(1000), mtime=0)
    )
    rng = random.Random(21)
    (release / "a.bin").write_bytes(rng.randbytes(100 << 10))
    (release / "b.bin").write_bytes(rng.randbytes(MAX_BLOCK_CONTENT))  # one chunk: a full block
    params = ChunkerParams(
        min_size=MAX_BLOCK_CONTENT, avg_size=MAX_BLOCK_CONTENT, max_size=MAX_BLOCK_CONTENT
    )
    metainfo = create_torrent(release, version="hybrid")
    index = build_index(tmp_path, metainfo, params, segment_file, read_content)
    gz_segments = index.files[0].segments
    assert [len(s.chunks) for s in gz_segments] == [0, 1]
    index_bytes = index.encode()
    paths = {"header_path": tmp_path / "x.odpack", "blocks_path": tmp_path / "x.odblocks"}
    known = {gz_segments[1].chunks[0][1]}
    header = write_pack(tmp_path, index, index_bytes, known, multi_file=True, codec="zlib", **paths)
    assert PackHeader.decode(paths["header_path"].read_bytes()) == header
    assert header.blocks == (
        (header.blocks[0][0], 100 << 10),
        (header.blocks[1][0], MAX_BLOCK_CONTENT),
    )
    blocks = paths["blocks_path"].read_bytes()
    expected = {(release / "a.bin").read_bytes(), (release / "b.bin").read_bytes()}
    found = set()
    for where in header.chunks.values():
        start, end = header.offsets[where.block], header.offsets[where.block + 1]
        content = decompress_block("zlib", blocks[start:end], header.blocks[where.block][1])
        found.add(content[where.offset : where.offset + where.length])
    assert found == expected

    with pytest.raises(DeltaError, match="unknown pack codec"):
        write_pack(tmp_path, index, index_bytes, known, multi_file=True, codec="gz", **paths)
    # The same compressed size, other content: the index no longer describes the file.
    (release / "0.gz").write_bytes(
        gzip_module.compress(b"", mtime=0) + gzip_module.compress(bytes(1005), mtime=0)
    )
    with pytest.raises(DeltaError, match="no longer holds the content"):
        write_pack(tmp_path, index, index_bytes, set(), multi_file=True, **paths)


def test_chunks_of_previous_files_skip_files_that_cannot_be_read(tmp_path: Path) -> None:
    sysfs = Path("/sys/devices/system/cpu/online")  # reports 4096 bytes, holds fewer
    if not sysfs.is_file():
        pytest.skip("needs Linux sysfs, whose files report a size larger than their content")
    readable = tmp_path / "old.bin"
    readable.write_bytes(random.Random(4).randbytes(10_000))
    params = ChunkerParams()
    assert file_chunk_hashes([sysfs, readable], params) == file_chunk_hashes([readable], params)
    assert file_chunk_hashes([sysfs], params) == set()
