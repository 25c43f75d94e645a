"""Binary patches in the delta pack: made by the publisher, checked and applied by the client.

Recompiled native code differs from its previous build in almost every chunk
(every moved function shifts the addresses that refer to it), yet most bytes
equal old bytes at a nearby offset. The generated "programs" below behave the
same: instructions with 4-byte targets, a few instructions inserted, every
target after them shifted. A patch must rebuild such content bit-exact, be far
smaller than the chunks, and never be used unchecked: a wrong base, corrupt
bytes or a broken header end in DeltaError and a fallback to chunks.
"""

from __future__ import annotations

import hashlib
import lzma
import random
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.delta.archives import segment_file
from opendistro.delta.binpatch import (
    anchors,
    apply_patch,
    byte_difference,
    byte_sum,
    make_patch,
    patch_info,
)
from opendistro.delta.chunker import ChunkerParams, chunk_bytes
from opendistro.delta.index import DeltaIndex, IndexedFile, Segment
from opendistro.delta.pack import PATCH_PACK_VERSION, PackedPatch, PackHeader
from opendistro.delta.patchapply import OldContent, apply_checked, find_bases
from opendistro.delta.plan import ChunkCatalogue, Fetch, Reuse, plan_update
from opendistro.delta.publish import pack_paths, publish_delta
from opendistro.errors import DeltaError
from opendistro.metainfo import Metainfo

from .delta_mirror_update import update_over_mirror

LOOPBACK = "127.0.0.1"


def program(seed: int, count: int, *, inserted: int = 0, at: float = 0.4) -> bytes:
    """Machine-code-like bytes: an opcode and a 4-byte absolute target per instruction.

    With ``inserted``, that many new instructions appear at ``at`` of the way in
    and every target past them moves by their size, as after a rebuild.
    """
    rng = random.Random(seed)
    size = 5
    targets = [rng.randrange(count) for _ in range(count)]
    opcodes = [rng.choice(b"\x48\x89\x8b\xe8\xe9\x0f\xff") for _ in range(count)]
    where = int(count * at)
    out = bytearray()
    extra = random.Random(seed + 1)
    for number in range(count):
        if number == where:
            for _ in range(inserted):
                out.append(0xE8)
                out += struct.pack("<I", 0x400000 + size * extra.randrange(count))
        target = targets[number]
        moved = target + (inserted if target >= where else 0)
        out.append(opcodes[number])
        out += struct.pack("<I", 0x400000 + size * moved)
    return bytes(out)


# -- the patch format --------------------------------------------------------------------


def test_byte_arithmetic_wraps_per_byte_without_carries() -> None:
    new, old = bytes([0, 255, 1, 128, 7]), bytes([255, 0, 1, 129, 7])
    difference = byte_difference(new, old)
    assert difference == bytes([1, 255, 0, 255, 0])
    assert byte_sum(old, difference) == new


def test_a_rebuilt_program_patches_bit_exact_and_small() -> None:
    old = program(1, 60_000)
    new = program(1, 60_000, inserted=40)
    chunks_old = {c.hash for c in chunk_bytes(old, ChunkerParams())}
    new_chunks = chunk_bytes(new, ChunkerParams())
    assert sum(c.length for c in new_chunks if c.hash not in chunks_old) > len(new) * 0.5, (
        "chunks barely match: the case patches are for"
    )
    patch = make_patch(old, new)
    assert b"".join(apply_patch(patch, old)) == new
    assert len(patch) < len(lzma.compress(new)) // 8, "far smaller than the content, xz-ed"
    info = patch_info(patch)
    assert (info.base_length, info.result_length) == (len(old), len(new))


@settings(max_examples=40, deadline=None)
@given(
    old=st.binary(max_size=3000),
    edits=st.lists(
        st.tuples(st.integers(0, 3000), st.integers(0, 40), st.binary(max_size=60)), max_size=6
    ),
)
def test_any_edit_of_any_content_round_trips(
    old: bytes, edits: list[tuple[int, int, bytes]]
) -> None:
    new = bytearray(old)
    for position, removed, inserted in edits:
        position = min(position, len(new))
        new[position : position + removed] = inserted
    patch = make_patch(old, bytes(new))
    assert b"".join(apply_patch(patch, old)) == bytes(new)


def test_shifted_and_repeated_content_round_trips() -> None:
    rng = random.Random(3)
    block = rng.randbytes(5000)
    old = block * 4 + bytes(3000) + rng.randbytes(20_000)
    new = rng.randbytes(100) + old[7:40_000] + b"\x00" * 999 + old[10_000:] + block[:77]
    assert b"".join(apply_patch(make_patch(old, new), old)) == new


def test_a_base_of_another_length_is_refused_before_anything_is_produced() -> None:
    old, new = program(4, 2000), program(4, 2000, inserted=3)
    patch = make_patch(old, new)
    with pytest.raises(DeltaError, match="another length"):
        next(apply_patch(patch, old + b"x"))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: b"XXXX" + p[4:],  # magic
        lambda p: p[:-1],  # truncated
        lambda p: p + b"\x00",  # trailing bytes
        lambda p: p[:5] + b"\xff" * 12,  # header numbers out of range / truncated
    ],
)
def test_a_malformed_patch_is_refused(mangle: object) -> None:
    old, new = program(5, 3000), program(5, 3000, inserted=5)
    bad = mangle(make_patch(old, new))  # type: ignore[operator]
    with pytest.raises(DeltaError):
        b"".join(apply_patch(bad, old))


def chunks_of(data: bytes) -> list[tuple[int, bytes]]:
    return [(c.length, c.hash) for c in chunk_bytes(data, ChunkerParams())]


def test_every_corrupted_byte_of_a_patch_is_caught_and_leaves_no_result(tmp_path: Path) -> None:
    old, new = program(6, 20_000), program(6, 20_000, inserted=20)
    base = tmp_path / "old"
    base.write_bytes(old)
    patch = make_patch(old, new)
    target = tmp_path / "result"
    assert apply_checked(patch, OldContent(base, 0, len(old)), chunks_of(new),
                         hashlib.sha256(new).digest(), target) == len(new)
    assert target.read_bytes() == new
    rng = random.Random(7)
    for position in rng.sample(range(len(patch)), 40):
        corrupt = bytearray(patch)
        corrupt[position] ^= 1 << rng.randrange(8)
        with pytest.raises(DeltaError):
            apply_checked(bytes(corrupt), OldContent(base, 0, len(old)), chunks_of(new),
                          hashlib.sha256(new).digest(), target)
        assert not target.exists()
    assert base.read_bytes() == old, "the old content is only read"


def test_a_base_with_the_same_length_but_other_bytes_fails_the_chunk_check(
    tmp_path: Path,
) -> None:
    old, new = program(8, 10_000), program(8, 10_000, inserted=10)
    other = bytearray(old)
    other[len(other) // 2] ^= 0xFF
    base = tmp_path / "other"
    base.write_bytes(bytes(other))
    with pytest.raises(DeltaError, match="delta index"):
        apply_checked(make_patch(old, new), OldContent(base, 0, len(old)), chunks_of(new),
                      hashlib.sha256(new).digest(), tmp_path / "result")
    assert not (tmp_path / "result").exists()


def test_bases_are_found_by_length_and_sha256_only(tmp_path: Path) -> None:
    old = program(9, 4000)
    holder = tmp_path / "old.bin"
    holder.write_bytes(b"head" + old + b"tail")
    index = DeltaIndex.decode(_tiny_index())
    right = PackedPatch(0, 0, len(old), hashlib.sha256(old).digest(), bytes(32), 0, 10)
    wrong = PackedPatch(0, 0, len(old), hashlib.sha256(b"x" + old[1:]).digest(), bytes(32), 0, 10)
    missing = PackedPatch(0, 5, len(old), hashlib.sha256(old).digest(), bytes(32), 0, 10)
    contents = [OldContent(holder, 0, 4), OldContent(holder, 4, len(old))]
    assert find_bases([right], index, contents) == {(0, 0): (right, contents[1])}
    assert find_bases([wrong], index, contents) == {}
    assert find_bases([missing], index, contents) == {}, "no such segment in the index"


def _tiny_index() -> bytes:
    data = b"x" * 100
    return bencode.encode({
        b"chunker": {b"algorithm": b"od-cdc-1", b"avg-size": 8192, b"max-size": 65536,
                     b"min-size": 2048, b"seed": b"opendistro"},
        b"files": [{b"length": 100, b"path": [b"a"], b"segments": [{
            b"chunks": struct.pack(">I", 100) + hashlib.sha256(data).digest()[:16],
            b"content-length": 100, b"kind": b"raw", b"length": 100, b"offset": 0,
        }]}],
        b"info-hash-v1": bytes(20),
        b"name": b"a",
        b"version": 1,
    })


# -- the pack header, version 2 ------------------------------------------------------------


def _patch_entry(**changes: object) -> dict[bytes, object]:
    entry: dict[bytes, object] = {
        b"base-length": 5000, b"base-sha256": bytes(32), b"file": 0, b"length": 700,
        b"result-sha256": bytes(range(32)), b"segment": 3,
    }
    for key, value in changes.items():
        entry[key.replace("_", "-").encode()] = value
    return entry


def _v2_header(patches: object, version: int = PATCH_PACK_VERSION) -> bytes:
    return bencode.encode({
        b"blocks": struct.pack(">II", 100, 5000),
        b"chunks": b"",
        b"codec": b"xz",
        b"index-sha256": bytes(32),
        b"patches": patches,
        b"version": version,
    })


def test_a_version_2_header_lists_patches_after_the_blocks() -> None:
    data = _v2_header([_patch_entry(), _patch_entry(segment=4, length=50)])
    header = PackHeader.decode(data)
    assert header.encode() == data
    first, second = header.patches
    assert (first.file, first.segment, first.base_length, first.length) == (0, 3, 5000, 700)
    assert first.result_sha256 == bytes(range(32))
    assert (first.offset, second.offset) == (100, 800)
    assert header.blocks_size == 850


@pytest.mark.parametrize(
    "data",
    [
        _v2_header([]),
        _v2_header([_patch_entry()], version=1),
        _v2_header([_patch_entry(), _patch_entry()]),  # one segment twice
        _v2_header([_patch_entry(length=0)]),
        _v2_header([_patch_entry(file=-1)]),
        _v2_header([_patch_entry(base_sha256=bytes(31))]),
        _v2_header([_patch_entry(extra=1)]),
        _v2_header([{k: v for k, v in _patch_entry().items() if k != b"segment"}]),
        _v2_header([b"not a dictionary"]),
        _v2_header(b"not a list"),
        _v2_header([_patch_entry()], version=3),
    ],
)
def test_a_hostile_version_2_header_is_refused(data: bytes) -> None:
    with pytest.raises(DeltaError):
        PackHeader.decode(data)


# -- end to end: a wheel whose native member was rebuilt ----------------------------------


def wheel(path: Path, native: bytes, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("pkg/__init__.py", f"__version__ = '{version}'\n" * 40)
        out.writestr("pkg/_core.so", native)
        out.writestr("pkg-1.dist-info/METADATA", f"Name: pkg\nVersion: {version}\n")
    return path


def publish_pair(
    tmp_path: Path, old_native: bytes, new_native: bytes, *, patches: bool
) -> tuple[Path, Path, Metainfo]:
    old = wheel(tmp_path / "old-pub" / "pkg-1.0-py3-none-any.whl", old_native, "1.0")
    previous = publish_delta(create_torrent(old, version="hybrid"), old.parent).index
    new = wheel(tmp_path / "new" / "pkg-1.1-py3-none-any.whl", new_native, "1.1")
    metainfo = create_torrent(new, version="hybrid", piece_length=65536)
    publish_delta(metainfo, new.parent, previous_index=previous, previous_files=[old],
                  patches=patches)
    return old, new, metainfo


OLD_NATIVE = program(10, 50_000)
NEW_NATIVE = program(10, 50_000, inserted=30)


async def test_a_pack_with_a_patch_rebuilds_bit_exact_and_fetches_less(tmp_path: Path) -> None:
    figures = {}
    for patches in (False, True):
        where = tmp_path / ("patches" if patches else "chunks")
        old, new, metainfo = publish_pair(where, OLD_NATIVE, NEW_NATIVE, patches=patches)
        header = PackHeader.decode(pack_paths(new.parent, metainfo)[0].read_bytes())
        assert len(header.patches) == (1 if patches else 0)
        outcome, from_mirrors = await update_over_mirror(new.parent, metainfo, [old],
                                                         where / "dl")
        assert (where / "dl" / new.name).read_bytes() == new.read_bytes()
        assert from_mirrors == 0, "the rebuild was right: the download fetched nothing more"
        assert not outcome.failures and not outcome.patch_failures
        figures[patches] = outcome
    chunks, patched = figures[False], figures[True]
    assert chunks.patches_applied == 0 and patched.patches_applied == 1
    assert 0 < patched.patch_bytes < patched.bytes_fetched
    assert patched.bytes_fetched < chunks.bytes_fetched / 3


async def test_a_client_whose_old_member_differs_falls_back_to_chunks(tmp_path: Path) -> None:
    old, new, metainfo = publish_pair(tmp_path, OLD_NATIVE, NEW_NATIVE, patches=True)
    assert PackHeader.decode(pack_paths(new.parent, metainfo)[0].read_bytes()).patches
    tweaked = bytearray(OLD_NATIVE)
    tweaked[1000:1010] = b"0123456789"
    mine = wheel(tmp_path / "mine" / old.name, bytes(tweaked), "1.0")
    outcome, from_mirrors = await update_over_mirror(new.parent, metainfo, [mine],
                                                     tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert outcome.patches_applied == 0 and outcome.patch_bytes == 0
    assert from_mirrors == 0 and not outcome.failures


async def test_corrupt_patch_bytes_on_the_mirror_fall_back_to_chunks(tmp_path: Path) -> None:
    old, new, metainfo = publish_pair(tmp_path, OLD_NATIVE, NEW_NATIVE, patches=True)
    header_path, blocks_path = pack_paths(new.parent, metainfo)
    (patch,) = PackHeader.decode(header_path.read_bytes()).patches
    blocks = bytearray(blocks_path.read_bytes())
    blocks[patch.offset + patch.length // 2] ^= 0x40
    blocks_path.write_bytes(bytes(blocks))
    before = old.read_bytes()
    outcome, from_mirrors = await update_over_mirror(new.parent, metainfo, [old],
                                                     tmp_path / "dl")
    assert (tmp_path / "dl" / new.name).read_bytes() == new.read_bytes()
    assert outcome.patches_applied == 0 and len(outcome.patch_failures) == 1
    assert from_mirrors == 0 and not outcome.failures
    assert old.read_bytes() == before


def test_the_patch_binds_the_old_and_new_member_content(tmp_path: Path) -> None:
    _, new, metainfo = publish_pair(tmp_path, OLD_NATIVE, NEW_NATIVE, patches=True)
    (patch,) = PackHeader.decode(pack_paths(new.parent, metainfo)[0].read_bytes()).patches
    assert patch.base_sha256 == hashlib.sha256(OLD_NATIVE).digest()
    assert patch.base_length == len(OLD_NATIVE)
    assert patch.result_sha256 == hashlib.sha256(NEW_NATIVE).digest()
    layouts = segment_file(new)
    assert layouts[patch.segment].kind == "deflate"


def test_anchors_do_not_depend_on_the_window_they_are_computed_in() -> None:
    data = program(12, 30_000)
    whole = list(anchors(data, window=len(data)))
    assert len(whole) > len(data) // 200
    for window in (1000, 4096, 65_537):
        assert list(anchors(data, window=window)) == whole


# -- the plan's choice ---------------------------------------------------------------------


def _digest(n: int) -> bytes:
    return hashlib.sha256(b"%d" % n).digest()[:16]


def test_the_plan_takes_a_patch_only_where_it_is_cheaper_and_keeps_the_chunks_beside_it() -> None:
    params = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")
    raw = Segment("raw", 0, 400, 400, ((200, _digest(1)), (200, _digest(2))))
    gzip = Segment("gzip", 400, 150, 300, ((150, _digest(3)), (150, _digest(4))),
                   {"level": 9}, bytes(32))
    same = Segment("raw", 550, 100, 100, ((100, _digest(5)),))
    index = DeltaIndex(1, params, bytes(20), None, "r",
                       (IndexedFile(("f",), 650, (raw, gzip, same)),))
    old: ChunkCatalogue[str] = ChunkCatalogue()
    old.add_chunks("old", [(0, 200, _digest(1)), (0, 100, _digest(5))])
    prices = {(0, 0): 150, (0, 1): 149, (0, 2): 1}

    def patch_cost(file: int, segment: int, _: Segment) -> int | None:
        return prices.get((file, segment))

    plan = plan_update(index, old, patch_cost=patch_cost)
    first, second, third = plan.segments
    assert first.patch_bytes == 150, "cheaper than the 200 missing bytes"
    assert first.ops == [Reuse("old", 0, 0, 200), Fetch(200, 200)], "the fallback stays"
    assert second.patch_bytes == 149 and second.whole, "cheaper than the whole segment"
    assert third.patch_bytes is None, "nothing is missing: no patch"
    assert (plan.patch_bytes, plan.whole_bytes, plan.content_fetched) == (299, 0, 0)
    assert plan.bytes_to_transfer == 299
    prices[(0, 0)] = 200
    prices[(0, 1)] = 150
    dearer = plan_update(index, old, patch_cost=patch_cost)
    assert [p.patch_bytes for p in dearer.segments] == [None, None, None]
    assert dearer.bytes_to_transfer == 200 + 150


def test_a_plain_binary_release_gets_a_patch_only_against_related_old_content(
    tmp_path: Path,
) -> None:
    def publish(old_bytes: bytes, where: str) -> tuple[Path, PackHeader]:
        old = tmp_path / where / "old" / "tool.bin"
        old.parent.mkdir(parents=True)
        old.write_bytes(old_bytes)
        previous = publish_delta(create_torrent(old, version="hybrid"), old.parent).index
        new = tmp_path / where / "new" / "tool.bin"
        new.parent.mkdir(parents=True)
        new.write_bytes(NEW_NATIVE)
        metainfo = create_torrent(new, version="hybrid")
        published = publish_delta(metainfo, new.parent, previous_index=previous,
                                  previous_files=[old])
        assert published.pack is not None
        return new, published.pack

    new, related = publish(OLD_NATIVE, "related")
    (patch,) = related.patches
    assert (patch.file, patch.segment) == (0, 0)
    assert patch.result_sha256 == hashlib.sha256(new.read_bytes()).digest()
    _, unrelated = publish(random.Random(13).randbytes(len(OLD_NATIVE)), "unrelated")
    assert unrelated.patches == (), "nothing in common: no base, no patch"
