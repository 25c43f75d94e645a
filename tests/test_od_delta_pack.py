"""The publisher's pack over od_delta: a peer-only update costs what a mirror update does.

A seeder that has the pack beside the release (``NAME.odpack``,
``NAME.odblocks``, written by ``publish_delta`` with the previous release)
announces it in its extension handshake and serves ranges of it
(spec/od-delta.md). The updating client fetches the header, the blocks it
needs and the binary patches from that peer, over real TCP on 127.0.0.1,
checks them as it checks a mirror's, and falls back to content ranges, then
to pieces, when the peer lies or fails. The result is always bit-exact and
the old version is never written.

The seeder also serves the publisher's xz-compressed index
(``NAME.odindex.xz``) when it holds exactly the index; the client takes that
form, and falls back to the plain index when the compressed one is refused,
does not decompress, is too big or is not the index.
"""

from __future__ import annotations

import hashlib
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.delta.index import DeltaIndex
from opendistro.delta.pack import PackedChunk, PackHeader
from opendistro.delta.publish import compress_index, index_path, pack_paths, publish_delta
from opendistro.errors import DeltaPeerError, OpenDistroError
from opendistro.io.client import Client
from opendistro.io.delta_peer import DeltaPeer
from opendistro.io.delta_server import DeltaServer
from opendistro.io.delta_update import DeltaOutcome, update_from_previous
from opendistro.metainfo import Metainfo
from opendistro.wire.extensions.od_delta import CompressedIndex

from .test_delta_binpatch import NEW_NATIVE, OLD_NATIVE, wheel
from .test_delta_pack import edited
from .test_delta_update import members, tarball

LOOPBACK = "127.0.0.1"


def publish_wheels(where: Path, *, pack: bool) -> tuple[Path, Path, Metainfo]:
    """A wheel whose native member was rebuilt; published with its pack (and patch) or not."""
    old = wheel(where / "old-pub" / "pkg-1.0-py3-none-any.whl", OLD_NATIVE, "1.0")
    new = wheel(where / "new" / "pkg-1.1-py3-none-any.whl", NEW_NATIVE, "1.1")
    metainfo = create_torrent(new, version="hybrid", piece_length=65536)
    if pack:
        previous = publish_delta(create_torrent(old, version="hybrid"), old.parent).index
        publish_delta(metainfo, new.parent, previous_index=previous, previous_files=[old])
    else:
        publish_delta(metainfo, new.parent)
    return old, new, metainfo


def publish_tarballs(where: Path, *, pack: bool) -> tuple[Path, Path, Metainfo]:
    """A .tar.gz with five members edited all through; with its pack (chunks only) or not."""
    old_members = members(31)
    old = tarball(where / "old-pub" / "pkg-1.0.tar.gz", old_members)
    new = tarball(where / "new" / "pkg-1.1.tar.gz", edited(old_members, 5, seed=32))
    metainfo = create_torrent(new, version="hybrid", piece_length=65536)
    previous = publish_delta(create_torrent(old, version="hybrid"), old.parent).index
    publish_delta(metainfo, new.parent, previous_index=previous if pack else None)
    return old, new, metainfo


async def update_from_seeder(
    root: Path, metainfo: Metainfo, old: Path, target: Path
) -> tuple[DeltaOutcome, int, int]:
    """Seed ``root``, rebuild from ``old`` with the seeder as the only source, then let the
    ordinary download finish from it; returns the outcome, the bytes the download took
    from peers and the pack requests the seeder answered."""
    before = hashlib.sha256(old.read_bytes()).digest()
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        seeding = await seeder.seed(metainfo, root)
        address = (LOOPBACK, seeder.port)
        with trio.fail_after(60):
            outcome = await update_from_previous(metainfo, target, [old], [], peers=[address])
        torrent = await leecher.add_torrent(metainfo, target, peers=[address])
        with trio.fail_after(60):
            await torrent.complete.wait()
        served = seeding.delta_server.pack_requests_served
        status = torrent.status()
    assert torrent.error is None
    assert hashlib.sha256(old.read_bytes()).digest() == before, "the old version is only read"
    return outcome, status.bytes_from_peers, served


async def test_a_peer_only_update_applies_the_packs_patch_and_fetches_far_less(
    tmp_path: Path,
) -> None:
    figures = {}
    for pack in (False, True):
        where = tmp_path / ("pack" if pack else "plain")
        old, new, metainfo = publish_wheels(where, pack=pack)
        outcome, from_peers, served = await update_from_seeder(new.parent, metainfo, old,
                                                               where / "dl")
        assert (where / "dl" / new.name).read_bytes() == new.read_bytes()
        assert not outcome.failures and not outcome.patch_failures
        assert (served > 0) == pack
        figures[pack] = outcome, outcome.index_bytes + outcome.bytes_fetched + from_peers
    (plain, plain_traffic), (packed, packed_traffic) = figures[False], figures[True]
    assert plain.pack_bytes == 0 and plain.patches_applied == 0
    assert packed.patches_applied == 1 and 0 < packed.patch_bytes < packed.pack_bytes
    assert packed_traffic < plain_traffic / 3


async def test_a_peer_only_update_takes_new_chunks_from_the_packs_blocks(tmp_path: Path) -> None:
    figures = {}
    for pack in (False, True):
        where = tmp_path / ("pack" if pack else "plain")
        old, new, metainfo = publish_tarballs(where, pack=pack)
        outcome, from_peers, served = await update_from_seeder(new.parent, metainfo, old,
                                                               where / "dl")
        assert (where / "dl" / new.name).read_bytes() == new.read_bytes()
        assert from_peers == 0 and not outcome.failures
        assert (served > 0) == pack and outcome.pack_chunks_refetched == 0
        figures[pack] = outcome
    plain, packed = figures[False], figures[True]
    assert packed.pack_bytes > 0 and packed.segments_whole == 0
    assert packed.bytes_fetched < plain.bytes_fetched * 0.9, "xz blocks beat zlib answers"


def corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    for position in range(offset, min(offset + 64, len(data))):
        data[position] ^= 0x5A
    path.write_bytes(bytes(data))


async def test_a_peer_sending_wrong_block_bytes_costs_traffic_not_correctness(
    tmp_path: Path,
) -> None:
    old, new, metainfo = publish_tarballs(tmp_path, pack=True)
    header_path, blocks_path = pack_paths(new.parent, metainfo)
    header = PackHeader.decode(header_path.read_bytes())
    assert header.blocks
    for block in range(len(header.blocks)):  # every block lies: every chunk must be refetched
        compressed, _ = header.blocks[block]
        corrupt(blocks_path, header.offsets[block] + compressed // 2)
    outcome, from_peers, served = await update_from_seeder(new.parent, metainfo, old,
                                                           tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert served > 0 and outcome.pack_bytes > 0
    assert outcome.pack_chunks_refetched > 0
    assert from_peers == 0, "the chunks of the bad blocks came again as content ranges"
    assert not outcome.failures


async def test_a_peer_sending_a_wrong_patch_falls_back_to_chunks(tmp_path: Path) -> None:
    old, new, metainfo = publish_wheels(tmp_path, pack=True)
    header_path, blocks_path = pack_paths(new.parent, metainfo)
    (patch,) = PackHeader.decode(header_path.read_bytes()).patches
    corrupt(blocks_path, patch.offset + patch.length // 2)
    outcome, from_peers, _ = await update_from_seeder(new.parent, metainfo, old,
                                                      tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert outcome.patches_applied == 0 and len(outcome.patch_failures) == 1
    assert from_peers == 0 and not outcome.failures


async def test_a_pack_header_pointing_chunks_at_other_bytes_is_caught_by_chunk_hashes(
    tmp_path: Path,
) -> None:
    old, new, metainfo = publish_tarballs(tmp_path, pack=True)
    header_path, _ = pack_paths(new.parent, metainfo)
    header = PackHeader.decode(header_path.read_bytes())
    shifted = {
        digest: PackedChunk(where.block, where.offset + 1, where.length)
        if where.offset + 1 + where.length <= header.blocks[where.block][1] else where
        for digest, where in header.chunks.items()
    }
    lying = PackHeader(header.codec, header.index_sha256, header.blocks, shifted, header.patches)
    header_path.write_bytes(lying.encode())  # still names the index: only the hashes tell
    outcome, from_peers, served = await update_from_seeder(new.parent, metainfo, old,
                                                           tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert served > 0 and outcome.pack_chunks_refetched > 0
    assert from_peers == 0 and not outcome.failures


@pytest.mark.parametrize("publish", [publish_tarballs, publish_wheels], ids=["blocks", "patch"])
async def test_a_peer_that_stops_serving_its_pack_is_dropped_and_pieces_finish(
    tmp_path: Path, publish: Callable[..., tuple[Path, Path, Metainfo]]
) -> None:
    old, new, metainfo = publish(tmp_path, pack=True)
    _, blocks_path = pack_paths(new.parent, metainfo)
    before = hashlib.sha256(old.read_bytes()).digest()
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        seeding = await seeder.seed(metainfo, new.parent)
        assert seeding.delta_server.pack is not None
        os.truncate(blocks_path, 1000)  # announced, then gone: the seeder refuses the ranges
        address = (LOOPBACK, seeder.port)
        with trio.fail_after(60):
            outcome = await update_from_previous(metainfo, tmp_path / "dl", [old], [],
                                                 peers=[address])
        torrent = await leecher.add_torrent(metainfo, tmp_path / "dl", peers=[address])
        with trio.fail_after(60):
            await torrent.complete.wait()
        status = torrent.status()
    assert torrent.error is None
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert outcome.pack_bytes > 0 and status.bytes_from_peers > 0
    assert outcome.patches_applied == 0
    assert hashlib.sha256(old.read_bytes()).digest() == before


async def test_the_seeder_serves_exactly_the_pack_files_and_only_with_their_index(
    tmp_path: Path,
) -> None:
    _, new, metainfo = publish_wheels(tmp_path, pack=True)
    header_path, blocks_path = pack_paths(new.parent, metainfo)
    header_bytes, blocks = header_path.read_bytes(), blocks_path.read_bytes()
    async with Client(host=LOOPBACK) as seeder:
        seeding = await seeder.seed(metainfo, new.parent)
        server = seeding.delta_server
        assert server.pack is not None and server.pack.blocks_size == len(blocks)
        peer_id = b"-OD0001-" + bytes(12)
        async with DeltaPeer((LOOPBACK, seeder.port), metainfo.wire_info_hash, peer_id) as peer:
            assert peer.pack == server.pack
            assert await peer.fetch_pack_header() == header_bytes
            size = len(blocks)
            assert size > 140_000, "spans of several requests"
            spans = [(0, 10), (size - 70_000, size), (5, 5), (100, size // 2)]
            got: dict[int, bytearray] = {}

            def sink(number: int, data: bytes) -> None:
                got.setdefault(number, bytearray()).extend(data)

            await peer.fetch_blocks(spans, sink)
            for number, (start, end) in enumerate(spans):
                assert bytes(got.get(number, b"")) == blocks[start:end]
            with pytest.raises(DeltaPeerError, match="beyond"):
                await peer.fetch_blocks([(0, len(blocks) + 1)], lambda n, data: None)
        async with DeltaPeer((LOOPBACK, seeder.port), metainfo.wire_info_hash, peer_id) as peer:
            # The seeder itself refuses a range past the end (a client would not ask).
            end = server.pack.total_size
            with pytest.raises(DeltaPeerError, match="refused"):
                await peer._fetch_pack([(end - 1, end + 1)], lambda n, data: None)
            with pytest.raises(DeltaPeerError, match="closed"):
                await peer.fetch_pack_header()  # a peer that failed is dropped
        # A pack of another index, or whose blocks are not the size it gives, is refused.
        other = tmp_path / "other"
        other.mkdir()
        (other / "x.odpack").write_bytes(PackHeader(
            "xz", bytes(32), ((10, 10),), {}).encode())
        (other / "x.odblocks").write_bytes(bytes(10))
        with pytest.raises(OpenDistroError, match="another delta index"):
            server.load_pack(other / "x.odpack", other / "x.odblocks")
        (other / "short.odblocks").write_bytes(blocks[:-1])
        with pytest.raises(OpenDistroError, match="size"):
            server.load_pack(header_path, other / "short.odblocks")
        assert server.pack is not None, "a refused pack leaves the one served in place"


async def test_without_a_pack_beside_the_release_none_is_announced(tmp_path: Path) -> None:
    old, new, metainfo = publish_wheels(tmp_path, pack=True)
    header_path, _ = pack_paths(new.parent, metainfo)
    header_path.write_bytes(b"not a pack")
    async with Client(host=LOOPBACK) as seeder:
        seeding = await seeder.seed(metainfo, new.parent)
        assert seeding.delta_server.index is not None
        assert seeding.delta_server.pack is None, "a broken header is not served"
        assert b"od_delta_pack_size" not in seeding.delta_server.handshake_extra()
        peer_id = b"-OD0001-" + bytes(12)
        async with DeltaPeer((LOOPBACK, seeder.port), metainfo.wire_info_hash, peer_id) as peer:
            assert peer.pack is None
            with pytest.raises(DeltaPeerError, match="no pack"):
                await peer.fetch_pack_header()
            with pytest.raises(DeltaPeerError, match="no pack"):
                await peer.fetch_blocks([(0, 1)], lambda n, data: None)
    index = DeltaIndex.decode(index_path(new.parent, metainfo).read_bytes())
    assert index.name == metainfo.name
    assert old.exists()


def compressed_path(root: Path, metainfo: Metainfo) -> Path:
    plain = index_path(root, metainfo)
    return plain.with_name(plain.name + ".xz")


def serve_compressed(server: DeltaServer, data: bytes, sha256: bytes | None = None) -> None:
    """Make the seeder a lying peer: announce and serve ``data`` as the compressed index
    (with ``sha256`` as its announced hash), as a peer that is not opendistro could."""
    server._compressed_bytes = data
    server.compressed_index = CompressedIndex(
        len(data) or 40_000, sha256 or hashlib.sha256(data).digest()
    )


async def test_a_peer_only_update_takes_the_compressed_index(tmp_path: Path) -> None:
    old, new, metainfo = publish_wheels(tmp_path, pack=True)
    plain = index_path(new.parent, metainfo).read_bytes()
    packed = compressed_path(new.parent, metainfo).read_bytes()
    assert len(packed) < len(plain)
    async with Client(host=LOOPBACK) as seeder:
        server = (await seeder.seed(metainfo, new.parent)).delta_server
        assert server.compressed_index == CompressedIndex(
            len(packed), hashlib.sha256(packed).digest()
        )
        extra = server.handshake_extra()
        assert extra[b"od_delta_xz_size"] == len(packed)
        peer_id = b"-OD0001-" + bytes(12)
        async with DeltaPeer((LOOPBACK, seeder.port), metainfo.wire_info_hash, peer_id) as peer:
            assert peer.compressed_index == server.compressed_index
            before = peer.bytes_received
            assert await peer.fetch_index() == plain
            assert peer.index_failures == []
            assert peer.bytes_received - before < len(plain), "the compressed form travelled"
    outcome, from_peers, _ = await update_from_seeder(new.parent, metainfo, old, tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert from_peers == 0 and not outcome.failures
    assert len(packed) < outcome.index_bytes < len(plain), "index bytes counted as received"


@pytest.mark.parametrize(
    ("lie", "failure"),
    [
        ("truncated", "does not decompress"),
        ("too big", "does not decompress"),
        ("wrong hash", "bad compressed index"),
        ("another index", "of another index"),
        ("refused", "refused compressed index piece"),
    ],
)
async def test_a_bad_compressed_index_falls_back_to_the_plain_one(
    tmp_path: Path, lie: str, failure: str
) -> None:
    _, new, metainfo = publish_wheels(tmp_path, pack=True)
    plain = index_path(new.parent, metainfo).read_bytes()
    packed = compressed_path(new.parent, metainfo).read_bytes()
    async with Client(host=LOOPBACK) as seeder:
        server = (await seeder.seed(metainfo, new.parent)).delta_server
        if lie == "truncated":
            serve_compressed(server, packed[:-8])
        elif lie == "too big":
            too_big = lzma.compress(bytes((64 << 20) + 1), format=lzma.FORMAT_XZ, preset=0)
            serve_compressed(server, too_big)
        elif lie == "wrong hash":
            serve_compressed(server, packed, bytes(32))
        elif lie == "another index":
            serve_compressed(server, compress_index(plain[:-1] + b"!"))
        else:
            serve_compressed(server, b"")  # announces 40000 bytes: three pieces, all refused
        peer_id = b"-OD0001-" + bytes(12)
        async with DeltaPeer((LOOPBACK, seeder.port), metainfo.wire_info_hash, peer_id) as peer:
            assert await peer.fetch_index() == plain
            (reason,) = peer.index_failures
            assert failure in reason
            assert await peer.fetch_index() == plain, "the connection still serves"


async def test_after_a_corrupt_compressed_index_the_update_is_still_bit_exact(
    tmp_path: Path,
) -> None:
    old, new, metainfo = publish_wheels(tmp_path, pack=True)
    plain = index_path(new.parent, metainfo).read_bytes()
    packed = compressed_path(new.parent, metainfo).read_bytes()
    corrupted = packed[:40] + bytes([packed[40] ^ 0x5A]) + packed[41:]
    async with Client(host=LOOPBACK) as seeder, Client(host=LOOPBACK) as leecher:
        seeding = await seeder.seed(metainfo, new.parent)
        serve_compressed(seeding.delta_server, corrupted)
        address = (LOOPBACK, seeder.port)
        with trio.fail_after(60):
            outcome = await update_from_previous(metainfo, tmp_path / "dl", [old], [],
                                                 peers=[address])
        torrent = await leecher.add_torrent(metainfo, tmp_path / "dl", peers=[address])
        with trio.fail_after(60):
            await torrent.complete.wait()
        status = torrent.status()
    assert torrent.error is None and status.bytes_from_peers == 0
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert outcome.patches_applied == 1 and not outcome.failures
    assert outcome.index_bytes > len(corrupted) + len(plain), "both forms were fetched"


async def test_a_stale_compressed_index_is_not_served_and_the_plain_one_is(
    tmp_path: Path,
) -> None:
    _, new, metainfo = publish_wheels(tmp_path, pack=True)
    plain = index_path(new.parent, metainfo).read_bytes()
    stale = compressed_path(new.parent, metainfo)
    stale.write_bytes(compress_index(plain + b"x"))  # the index of another release
    async with Client(host=LOOPBACK) as seeder:
        seeding = await seeder.seed(metainfo, new.parent)
        server = seeding.delta_server
        assert server.compressed_index is None
        assert b"od_delta_xz_size" not in server.handshake_extra()
        peer_id = b"-OD0001-" + bytes(12)
        async with DeltaPeer((LOOPBACK, seeder.port), metainfo.wire_info_hash, peer_id) as peer:
            assert peer.compressed_index is None  # asked for the plain form only, as in v1
            assert await peer.fetch_index() == plain and peer.index_failures == []
        with pytest.raises(OpenDistroError, match="only beside"):
            DeltaServer(seeding).load_compressed_index(stale)
        stale.write_bytes(compress_index(plain))
        server.load_compressed_index(stale)
        assert server.compressed_index is not None
