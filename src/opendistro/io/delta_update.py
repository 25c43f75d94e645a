"""Building a new release from the previous one plus what changed, before the swarm starts.

``get --previous OLD`` runs this first. It fetches the release's delta index
(``spec/delta-index.md``) from a peer over ``od_delta`` or from a mirror, chunks
the old files the same way (their compressed segments by content, so a
.tar.gz or a wheel diffs well), plans what to reuse and what to fetch
(:mod:`opendistro.delta.plan`), fetches the missing content (compressed blocks
of the release's pack when the peer or mirror has one,
:mod:`opendistro.delta.pack`; else content ranges from the peer, or from the
mirror file bytes for raw segments and the ``.odcontent`` sidecar for
compressed ones),
applies the pack's binary patches to old contents it holds where they cost
less than the chunks (each result checked against the index's chunk hashes
before use; a patch that does not apply falls back to the chunks),
and writes the rebuilt files into the torrent's staging folder through
:class:`~opendistro.storage.files.FileStorage`. What content costs to fetch
(compressed in a pack or from a peer that compresses, plain otherwise) decides
which compressed segments are fetched whole instead.

It never decides what is correct: the torrent engine then hash-checks every
piece of the staging folder, keeps those that match and downloads the rest
from peers and mirrors as usual. A wrong index, a mirror serving bad content
or a recompression that comes out different only costs those pieces. Chunks cut
from pack blocks are still checked against their hashes as they are written,
and those of a block that does not decompress or check out are fetched again
as plain content, so a lying peer or mirror costs a little traffic. The old
files are only read. Memory stays bounded: content moves in chunks, old
compressed content and fetched ranges are spilled to scratch files that are
deleted afterwards.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .. import http_get
from ..delta.archives import SegmentLayout, read_range, rebuild
from ..delta.chunker import HASH_SIZE
from ..delta.index import DeltaIndex, IndexedFile, Segment
from ..delta.pack import PackedPatch, PackHeader, decompress_block
from ..delta.patchapply import OldContent, apply_checked, find_bases
from ..delta.plan import (
    ChunkCatalogue,
    Fetch,
    FetchCost,
    PatchCost,
    Reuse,
    SegmentPlan,
    UpdatePlan,
    plan_update,
)
from ..delta.previous import files_below, old_chunks, old_layouts
from ..delta.publish import (
    COMPRESSED_INDEX_SUFFIX,
    PACK_BLOCKS_SUFFIX,
    PACK_SUFFIX,
    decompress_index,
)
from ..errors import DeltaError, DeltaPeerError, IntegrityError, MirrorError, OpenDistroError
from ..metainfo import FileEntry, Metainfo
from ..mirrors.http import HttpMirror
from ..mirrors.webseed import (
    DELTA_INDEX_SUFFIX,
    HttpSpan,
    content_url,
    delta_index_url,
    file_url,
)
from ..storage.files import FileStorage
from .delta_peer import DeltaPeer, PackSink

__all__ = [
    "ChooseFiles",
    "DeltaOutcome",
    "FileCost",
    "catalogue_old_files",
    "file_costs",
    "update_from_previous",
]

_MAX_INDEX_BYTES = 64 << 20
_FETCH_GAP = 512
"""Missing ranges closer than this are fetched in one request (the gap is thrown away).

About what a separate request costs in HTTP headers (~500 bytes on loopback):
merging wider gaps fetches more than it saves (a wheel's changed local
headers lie a small member apart), while the round trips are hidden by
running requests in parallel."""
_MAX_PACK_RUN = 8
"""Adjacent pack blocks fetched in one request at most (runs are fetched in parallel)."""
_PARALLEL_REQUESTS = 4
"""Mirror requests in flight at once (a given ``http`` client's per-origin limit applies too)."""

OldSource = tuple[int, int, bool]
"""Bytes of the old version: (old file number, segment number, whether its *content*).

A compressed old segment is catalogued twice: by its content, which a new
compressed segment reuses, and by its bytes as they are, which a new raw
segment reuses (the publisher could not make that stream reproducible, so
the new index describes it as raw bytes)."""


@dataclass
class DeltaOutcome:
    """What the update reused, fetched and rebuilt."""

    index_bytes: int = 0
    bytes_reused: int = 0
    bytes_fetched: int = 0
    """Everything the rebuild fetched, pack and compressed peer answers as sent."""
    pack_bytes: int = 0
    """Of those, the pack's header and blocks (0 without a pack)."""
    segments: int = 0
    segments_whole: int = 0
    raw_fallbacks: list[str] = field(default_factory=list)
    """Index notes on compressed data the publisher could not make reproducible."""
    failures: list[str] = field(default_factory=list)
    """Segments that could not be rebuilt; the swarm fetches their pieces instead."""
    patches_applied: int = 0
    """Segments rebuilt from a binary patch of the pack."""
    patch_bytes: int = 0
    """Bytes of the patches fetched (also counted in ``bytes_fetched`` and ``pack_bytes``)."""
    patch_failures: list[str] = field(default_factory=list)
    """Patches that did not apply or check out; their segments were fetched as chunks."""
    pack_chunks_refetched: int = 0
    """Chunks wanted from pack blocks that did not arrive, decompress or match their hash;
    they were fetched again as content (or left to the ordinary download)."""
    index: DeltaIndex | None = None
    """The index used (a client that completes serves it on to others)."""
    file_costs: list[FileCost] = field(default_factory=list)
    """Per new file, what its delta would fetch (as planned, before any choice)."""
    files_rebuilt: list[int] = field(default_factory=list)
    """Numbers (in ``data_files()``) of the files rebuilt here; the others are left to the
    ordinary download."""


@dataclass(frozen=True)
class FileCost:
    """What rebuilding one new file from the old version would fetch, as planned."""

    file: int
    """Its number among the torrent's data files."""
    path: tuple[str, ...]
    length: int
    bytes_to_fetch: int
    """Content ranges to fetch (near ones merged, as requested) plus segments fetched whole."""
    bytes_reused: int


ChooseFiles = Callable[[int, Sequence[FileCost]], Collection[int]]
"""Given the index's size and every file's cost, the files worth rebuilding by delta."""


@dataclass
class _OldFile:
    path: Path
    layouts: list[SegmentLayout]
    spills: dict[int, Path]
    """Segment number to a scratch file with that compressed segment's content."""


def catalogue_old_files(
    previous: Sequence[Path], index: DeltaIndex, scratch: Path
) -> tuple[ChunkCatalogue[OldSource], dict[int, _OldFile]]:
    """Chunk every old file's segments with the index's parameters (blocking).

    Compressed segments' content is spilled to ``scratch`` as it is chunked,
    so that reusing a chunk of it later is a positioned read (see
    :func:`opendistro.delta.previous.old_chunks`).
    """
    catalogue: ChunkCatalogue[OldSource] = ChunkCatalogue()
    olds: dict[int, _OldFile] = {}
    for number, path in enumerate(files_below(previous)):
        layouts = old_layouts(path)
        if layouts is None:
            continue
        old = olds[number] = _OldFile(path, layouts, {})

        def spill(segment: int, old: _OldFile = old, number: int = number) -> Path:
            old.spills[segment] = scratch / f"old-{number}-{segment}"
            return old.spills[segment]

        for segment, is_content, chunk in old_chunks(path, layouts, index.params, spill):
            catalogue.add(chunk.hash, (number, segment, is_content), chunk.offset, chunk.length)
    return catalogue, olds


async def update_from_previous(
    metainfo: Metainfo,
    download_dir: Path,
    previous: Sequence[Path],
    mirrors: Sequence[str],
    *,
    peers: Sequence[tuple[str, int]] = (),
    http: HttpMirror | None = None,
    choose: ChooseFiles | None = None,
    index_sha256: bytes | None = None,
) -> DeltaOutcome:
    """Rebuild what can be rebuilt of ``metainfo``'s files into its staging folder.

    ``index_sha256`` (from a verified release signature) pins the delta
    index: one that does not match is refused wherever it came from.

    The index and missing content come from the first of ``peers`` that
    serves a good index over ``od_delta`` (its compressed form when announced),
    else from ``mirrors``; the pack from that
    peer when it announces one, else from the first mirror. Segments not worth
    a delta (fetched whole) come from a mirror, or with only peers are left
    to the ordinary download, which fetches whatever pieces are still wrong.

    ``choose``, when given, sees every file's planned cost (and the index's
    size) before anything is fetched and returns the files worth rebuilding;
    the others are left to the ordinary download, as if there were no delta.
    """
    if not mirrors and not peers:
        raise MirrorError("a delta update needs a peer or a mirror serving the delta index")
    outcome = DeltaOutcome()
    async with (
        http or HttpMirror(max_connections=_PARALLEL_REQUESTS)
    ) as client, AsyncExitStack() as stack:
        found = await _delta_peer(stack, metainfo, peers, index_sha256, bool(mirrors))
        peer: DeltaPeer | None = None
        pack: _Pack | None = None
        if found is not None:
            peer, (delta_index, index_data), outcome.index_bytes = found
            base = mirrors[0] if mirrors else None
            pack = await _peer_pack_header(peer, index_data)
            if pack is None and base is not None:
                pack = await _fetch_pack_header(metainfo, base, index_data)
        else:
            (delta_index, index_data), base, outcome.index_bytes = await _fetch_index(
                client, metainfo, mirrors, index_sha256
            )
            pack = await _fetch_pack_header(metainfo, base, index_data)
        if pack is not None:
            outcome.pack_bytes = pack.header_size
        outcome.index = delta_index
        download_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".opendistro-delta-", dir=download_dir))
        try:
            catalogue, olds = await trio.to_thread.run_sync(
                catalogue_old_files, previous, delta_index, scratch
            )
            header_bytes = pack.header_size if pack is not None else 0
            patches: dict[tuple[int, int], tuple[PackedPatch, OldContent]] = {}
            patch_source = pack
            if pack is not None and pack.header.patches:
                patches = await trio.to_thread.run_sync(
                    find_bases, pack.header.patches, delta_index, _old_contents(olds)
                )
            if pack is not None:
                pack = _worth_fetching(pack, delta_index, catalogue)
            cost = _fetch_cost(pack, peer)
            plan = plan_update(delta_index, catalogue, cost, _patch_cost(patches))
            outcome.file_costs = file_costs(delta_index, plan, cost)
            if choose is not None:
                wanted = set(choose(outcome.index_bytes, outcome.file_costs))
                plan = _only_files(plan, delta_index, wanted)
            outcome.files_rebuilt = sorted({segment.file for segment in plan.segments})
            if choose is not None and not plan.segments:
                return outcome  # no delta pays: the ordinary download fetches everything
            patched = await _fetch_patches(client, patch_source, plan, patches, scratch)
            await trio.to_thread.run_sync(
                _apply_patches, delta_index, plan, patches, scratch, outcome
            )
            source = _Sources(client, base, peer, pack)
            fetched, from_pack, outcome.pack_chunks_refetched = await _fetch_missing(
                source, metainfo, delta_index, plan, scratch
            )
            outcome.patch_bytes = patched
            outcome.pack_bytes += from_pack + patched
            outcome.bytes_fetched = fetched + patched + header_bytes
            await trio.to_thread.run_sync(
                _assemble, metainfo, download_dir, delta_index, plan, olds, scratch, outcome
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    outcome.segments = len(plan.segments)
    outcome.segments_whole = sum(1 for segment in plan.segments if segment.whole)
    outcome.bytes_reused = plan.content_reused
    outcome.raw_fallbacks = [
        f"{'/'.join(indexed.path)}: {segment.fallback_reason}"
        for indexed in delta_index.files
        for segment in indexed.segments
        if segment.fallback_reason
    ]
    return outcome


def _old_contents(olds: dict[int, _OldFile]) -> list[OldContent]:
    """Every old segment content the client holds: a patch's base may be any of them."""
    contents = []
    for old in olds.values():
        for number, layout in enumerate(old.layouts):
            if layout.kind == "raw":
                contents.append(OldContent(old.path, layout.offset, layout.length))
            elif number in old.spills and old.spills[number].exists():
                spill = old.spills[number]
                contents.append(OldContent(spill, 0, spill.stat().st_size))
    return contents


def _patch_cost(
    patches: dict[tuple[int, int], tuple[PackedPatch, OldContent]],
) -> PatchCost | None:
    """What each usable patch costs (its length), for the plan."""
    if not patches:
        return None

    def cost(file: int, segment: int, _: Segment) -> int | None:
        found = patches.get((file, segment))
        return None if found is None else found[0].length

    return cost


def _patch_path(scratch: Path, plan: SegmentPlan[OldSource]) -> Path:
    return scratch / f"patch-{plan.file}-{plan.segment}"


def _patched_path(scratch: Path, plan: SegmentPlan[OldSource]) -> Path:
    return scratch / f"patched-{plan.file}-{plan.segment}"


async def _fetch_patches(
    client: HttpMirror,
    pack: _Pack | None,
    plan: UpdatePlan[OldSource],
    patches: dict[tuple[int, int], tuple[PackedPatch, OldContent]],
    scratch: Path,
) -> int:
    """Fetch the patches the plan applies into scratch files; return the bytes fetched.

    From a peer that fails, what did not arrive leaves its patch short: it then
    fails to apply and its segment is fetched as chunks.
    """
    wants: list[_Want] = []
    for segment_plan in plan.segments:
        if segment_plan.patch_bytes is None:
            continue
        patch, _ = patches[(segment_plan.file, segment_plan.segment)]
        target = _patch_path(scratch, segment_plan)
        target.touch()
        wants.append(_Want(patch.offset, patch.length, target, 0))
    if not wants or pack is None:
        return 0
    if pack.peer is not None:
        return await _fetch_patches_from_peer(pack.peer, wants)
    requests = _coalesce({(pack.blocks_url, pack.header.blocks_size): wants})
    await _run_jobs([functools.partial(_fetch_request, client, request) for request in requests])
    return sum(request.end - request.start for request in requests)


async def _fetch_patches_from_peer(peer: DeltaPeer, wants: list[_Want]) -> int:
    files = _ScratchFiles()
    written = [0] * len(wants)

    def sink(number: int, data: bytes) -> None:
        want = wants[number]
        files.write(want.target, written[number], memoryview(data))
        written[number] += len(data)

    before = peer.bytes_received
    try:
        await peer.fetch_blocks([(want.offset, want.offset + want.length) for want in wants],
                                sink)
    except DeltaPeerError:
        pass  # the short patches fail to apply: their segments come as chunks
    finally:
        files.close()
    return peer.bytes_received - before


def _apply_patches(
    index: DeltaIndex,
    plan: UpdatePlan[OldSource],
    patches: dict[tuple[int, int], tuple[PackedPatch, OldContent]],
    scratch: Path,
    outcome: DeltaOutcome,
) -> None:
    """Apply every fetched patch, checked (blocking); one that fails reverts to its chunks."""
    for segment_plan in plan.segments:
        if segment_plan.patch_bytes is None:
            continue
        indexed = index.files[segment_plan.file]
        segment = indexed.segments[segment_plan.segment]
        patch, base = patches[(segment_plan.file, segment_plan.segment)]
        try:
            data = _patch_path(scratch, segment_plan).read_bytes()
            apply_checked(data, base, segment.chunks, patch.result_sha256,
                          _patched_path(scratch, segment_plan))
            outcome.patches_applied += 1
        except (OSError, OpenDistroError) as exc:
            outcome.patch_failures.append(
                f"{'/'.join(indexed.path)} segment {segment_plan.segment}: {exc}"
            )
            segment_plan.patch_bytes = None  # fetched as chunks (or whole) instead


async def _delta_peer(
    stack: AsyncExitStack,
    metainfo: Metainfo,
    peers: Sequence[tuple[str, int]],
    sha256: bytes | None,
    mirrors: bool,
) -> tuple[DeltaPeer, tuple[DeltaIndex, bytes], int] | None:
    """The first peer that serves a good delta index, the index, and the bytes its transfer
    took on the wire (every form fetched, framing included); None if no peer serves one.

    A peer whose index fails (refused, does not match, breaks the protocol) is
    dropped for the next one. When every peer that serves an index fails and
    there is no mirror to turn to, the last failure is raised.
    """
    peer_id = b"-OD0001-" + os.urandom(12)  # not the client's: this is a side connection
    failure: DeltaPeerError | None = None
    for address in peers:
        try:
            peer = await stack.enter_async_context(
                DeltaPeer(address, metainfo.wire_info_hash, peer_id)
            )
        except DeltaPeerError:
            continue
        if peer.index_size is None:
            await peer.aclose()
            continue
        before = peer.bytes_received
        try:
            data = await peer.fetch_index(sha256)
            index = _decode_index(data, metainfo, peer.label)
        except OpenDistroError as exc:
            await peer.aclose()
            failure = exc if isinstance(exc, DeltaPeerError) else DeltaPeerError(
                f"{peer.label} sent a bad index: {exc}"
            )
            continue
        return peer, (index, data), peer.bytes_received - before
    if failure is not None and not mirrors:
        raise failure
    return None


def _decode_index(data: bytes, metainfo: Metainfo, where: str) -> DeltaIndex:
    index = DeltaIndex.decode(data)
    if (index.info_hash_v1, index.info_hash_v2) != (metainfo.info_hash_v1, metainfo.info_hash_v2):
        raise DeltaPeerError(f"{where}: the delta index belongs to another release")
    return index


@dataclass
class _Sources:
    """Where missing bytes come from: a peer over od_delta and/or a mirror."""

    http: HttpMirror
    base: str | None
    peer: DeltaPeer | None
    pack: _Pack | None = None


@dataclass(frozen=True)
class _Pack:
    """The release's pack of new chunks: its header and where its blocks are (a mirror's
    ``NAME.odblocks``, or the peer that announced it)."""

    header: PackHeader
    header_size: int
    blocks_url: str
    useful: dict[int, int] = field(default_factory=dict)
    """Blocks worth fetching for this update: block number to the content bytes needed of
    it. A block the update needs little of (the client has more of the previous release
    than the previous index lists) costs more whole than its chunks as plain ranges."""
    peer: DeltaPeer | None = None
    """The peer serving the blocks over ``od_delta`` (then ``blocks_url`` is unused)."""

    def cost(self, length: int, digest: bytes) -> int | None:
        """What a missing chunk costs from the pack (its share of its block), if it is there."""
        where = self.header.chunks.get(digest)
        if where is None or where.length != length or where.block not in self.useful:
            return None
        compressed, _ = self.header.blocks[where.block]
        return -(-length * compressed // self.useful[where.block])


def _worth_fetching(
    pack: _Pack, index: DeltaIndex, catalogue: ChunkCatalogue[OldSource]
) -> _Pack | None:
    """``pack`` with the blocks this update needs enough of to fetch them (None: none).

    A first plan that never fetches a segment whole lists every missing chunk; a block
    is worth fetching when it is smaller than the content it provides.
    """
    missing: set[bytes] = set()

    def record(segment: Segment, chunks: Sequence[tuple[int, bytes]]) -> int:
        missing.update(digest for _, digest in chunks)
        return 0

    plan_update(index, catalogue, record)
    header = pack.header
    needed: dict[int, int] = {}
    for digest in missing:
        where = header.chunks.get(digest)
        if where is not None:
            needed[where.block] = needed.get(where.block, 0) + where.length
    useful = {block: size for block, size in needed.items() if header.blocks[block][0] < size}
    if not useful:
        return None
    return dataclasses.replace(pack, useful=useful)


async def _fetch_pack_header(metainfo: Metainfo, base: str, index_data: bytes) -> _Pack | None:
    """The mirror's pack for this index, or None (none there, or unusable: plain ranges then)."""
    index_url = delta_index_url(metainfo, base)
    stem = index_url.removesuffix(DELTA_INDEX_SUFFIX)
    try:
        status, body = await http_get.get(
            stem + PACK_SUFFIX, error=MirrorError, what="mirror", max_body=_MAX_INDEX_BYTES,
            timeout=30,
        )
        if status != 200:
            return None
        header = PackHeader.decode(body)
    except (OpenDistroError, OSError):
        return None
    if header.index_sha256 != hashlib.sha256(index_data).digest():
        return None  # a pack of another index: its chunks may still be right, but why guess
    return _Pack(header, len(body), stem + PACK_BLOCKS_SUFFIX)


async def _peer_pack_header(peer: DeltaPeer, index_data: bytes) -> _Pack | None:
    """The peer's pack for this index, or None (none announced, or unusable).

    The header is used exactly as a mirror's: only when it names the index in
    use. A peer that fails to send it is dropped (content then comes from the
    mirror, or the ordinary download).
    """
    if peer.pack is None:
        return None
    try:
        header = PackHeader.decode(await peer.fetch_pack_header())
    except DeltaError:
        return None
    if header.index_sha256 != hashlib.sha256(index_data).digest():
        return None
    return _Pack(header, peer.pack.header_size, "", peer=peer)


def _fetch_cost(pack: _Pack | None, peer: DeltaPeer | None) -> FetchCost | None:
    """What missing chunks cost where they will come from (None: their length).

    A chunk in a useful block of the pack costs its share of the block; any
    other comes as content, from a peer that compresses at (we assume) the
    ratio of its segment as a whole, else at its length.
    """
    compresses = peer is not None and peer.compresses
    if pack is None and not compresses:
        return None

    def cost(segment: Segment, missing: Sequence[tuple[int, bytes]]) -> int:
        packed = plain = 0
        for length, digest in missing:
            share = pack.cost(length, digest) if pack is not None else None
            if share is None:
                plain += length
            else:
                packed += share
        if compresses:
            # Unknown until sent: assume the missing content compresses as well as the
            # segment as a whole does.
            plain = plain * segment.length // max(segment.content_length, 1)
        return packed + plain

    return cost


async def _fetch_index(
    client: HttpMirror, metainfo: Metainfo, mirrors: Sequence[str], sha256: bytes | None
) -> tuple[tuple[DeltaIndex, bytes], str, int]:
    """The index from the first mirror that serves a good one, where, and the bytes fetched.

    The compressed copy is tried first; whatever it decompresses to is checked
    exactly as the plain index is, and the plain index is fetched when it fails.
    """
    errors = []
    for base in mirrors:
        url = delta_index_url(metainfo, base)
        compressed, fetched = await _fetch_compressed_index(url + COMPRESSED_INDEX_SUFFIX)
        attempts: list[bytes | None] = [compressed, None] if compressed is not None else [None]
        for attempt in attempts:
            try:
                data = attempt
                if data is None:
                    data = await _fetch_small(url)
                    fetched += len(data)
                return (_checked_index(data, metainfo, sha256), data), base, fetched
            except OpenDistroError as exc:
                where = url + (COMPRESSED_INDEX_SUFFIX if attempt is not None else "")
                errors.append(f"{where}: {exc}")
    raise MirrorError("no delta index: " + "; ".join(errors))


def _checked_index(data: bytes, metainfo: Metainfo, sha256: bytes | None) -> DeltaIndex:
    if sha256 is not None and hashlib.sha256(data).digest() != sha256:
        raise IntegrityError("not the delta index the release signature names")
    index = DeltaIndex.decode(data)
    if index.info_hash_v1 not in (None, metainfo.info_hash_v1) or index.info_hash_v2 not in (
        None,
        metainfo.info_hash_v2,
    ):
        raise MirrorError("the index belongs to another release")
    return index


async def _fetch_compressed_index(url: str) -> tuple[bytes | None, int]:
    """A mirror's ``NAME.odindex.xz`` decompressed (None: none there or broken), and its size."""
    try:
        status, body = await http_get.get(
            url, error=MirrorError, what="mirror", max_body=_MAX_INDEX_BYTES, timeout=30
        )
    except (OpenDistroError, OSError):
        return None, 0
    if status != 200:
        return None, 0
    return decompress_index(body, _MAX_INDEX_BYTES), len(body)


async def _fetch_small(url: str) -> bytes:
    status, body = await http_get.get(
        url, error=MirrorError, what="mirror", max_body=_MAX_INDEX_BYTES, timeout=30
    )
    if status != 200:
        raise MirrorError(f"{url} answered HTTP {status}")
    return body


def _content_offsets(indexed: IndexedFile) -> dict[int, int]:
    """Segment number to where its content starts in the file's ``.odcontent`` sidecar."""
    offsets, position = {}, 0
    for number, segment in enumerate(indexed.segments):
        if segment.kind != "raw":
            offsets[number] = position
            position += segment.content_length
    return offsets


@dataclass(frozen=True)
class _Target:
    """A segment whose missing content is fetched into one scratch file."""

    plan: SegmentPlan[OldSource]
    indexed: IndexedFile
    segment: Segment
    entry: FileEntry


async def _fetch_missing(
    sources: _Sources,
    metainfo: Metainfo,
    index: DeltaIndex,
    plan: UpdatePlan[OldSource],
    scratch: Path,
) -> tuple[int, int, int]:
    """Fetch every missing range into scratch files, one per segment.

    Returns the bytes fetched, of those the bytes of pack blocks, and how many
    chunks of blocks failed and were fetched again. Chunks
    the pack holds come from there, compressed (from the peer that announced
    it, or the mirror); the rest from the peer as content ranges, or from the
    mirror: there the ranges of every segment are gathered first and near ones
    merged across segments, then fetched a few at a time: a wheel's changed
    local headers and members become a handful of requests instead of one round
    trip each, and bytes stream to disk as they arrive. Chunks of blocks that
    fail are fetched again as content.
    """
    entries = metainfo.data_files()
    total = 0
    wanted: dict[tuple[str, int], list[_Want]] = {}
    from_pack: dict[bytes, list[_Want]] = {}
    targets: dict[Path, _Target] = {}
    for segment_plan in plan.segments:
        indexed = index.files[segment_plan.file]
        segment = indexed.segments[segment_plan.segment]
        if segment_plan.patch_bytes is not None:
            continue  # rebuilt from its patch
        ranges = _ranges(segment_plan, segment)
        if not ranges or (segment_plan.whole and sources.base is None):
            continue  # whole without a mirror: fetched by the ordinary download
        target = scratch / f"new-{segment_plan.file}-{segment_plan.segment}"
        target.touch()
        where = targets[target] = _Target(segment_plan, indexed, segment,
                                          entries[segment_plan.file])
        if sources.pack is not None and not segment_plan.whole:
            ranges = _take_packed(sources.pack, segment_plan, segment, target, from_pack)
        total += await _fetch_plain(sources, metainfo, where, target, ranges, wanted)
    pack = sources.pack
    runs = _pack_runs(pack, from_pack) if pack is not None else []
    failed: list[_Want] = []
    requests = _coalesce(wanted)
    jobs: list[Callable[[], Awaitable[None]]] = [
        functools.partial(_fetch_request, sources.http, request) for request in requests
    ]
    packed = 0
    if pack is not None and pack.peer is None:
        jobs += [functools.partial(_fetch_pack_run, sources.http, run, failed) for run in runs]
        packed = sum(run.span.length for run in runs)
    await _run_jobs(jobs)
    if pack is not None and pack.peer is not None and runs:
        packed = await _fetch_runs_from_peer(sources, pack.peer, runs, failed)
    total += packed + sum(request.end - request.start for request in requests)
    if failed:
        total += await _refetch(sources, metainfo, targets, failed)
    return total, packed, len(failed)


async def _fetch_plain(
    sources: _Sources,
    metainfo: Metainfo,
    where: _Target,
    target: Path,
    ranges: Sequence[tuple[int, int]],
    wanted: dict[tuple[str, int], list[_Want]],
) -> int:
    """Fetch content ``ranges`` of one segment from the peer now (returning the bytes
    received), or note them in ``wanted`` for the mirror (when the peer fails too)."""
    if not ranges:
        return 0
    segment_plan, peer = where.plan, sources.peer
    if peer is not None and not segment_plan.whole:
        wanted_content = [(segment_plan.file, segment_plan.segment, start, length)
                          for start, length in ranges]
        before = peer.bytes_received
        try:
            await peer.fetch_content(wanted_content, target)
            return peer.bytes_received - before
        except DeltaPeerError:
            sources.peer = None  # the mirror, if any, takes over from here
            received = peer.bytes_received - before
    else:
        received = 0
    base = sources.base
    if base is None:
        return received  # left to the ordinary download: its pieces will fail the check
    sidecar = _content_offsets(where.indexed)
    for start, length in ranges:
        span = _span(metainfo, base, where.entry, where.indexed, where.segment, segment_plan,
                     sidecar, start, length)
        wanted.setdefault((span.url, span.file_length), []).append(
            _Want(span.start, length, target, start)
        )
    return received


async def _refetch(
    sources: _Sources, metainfo: Metainfo, targets: dict[Path, _Target], failed: list[_Want]
) -> int:
    """Fetch the chunks of pack blocks that failed as plain content; the bytes fetched."""
    per_target: dict[Path, list[tuple[int, int]]] = {}
    for want in sorted(failed, key=lambda want: (want.target, want.at)):
        ranges = per_target.setdefault(want.target, [])
        if ranges and want.at - (ranges[-1][0] + ranges[-1][1]) <= _FETCH_GAP:
            ranges[-1] = (ranges[-1][0], want.at + want.length - ranges[-1][0])
        else:
            ranges.append((want.at, want.length))
    wanted: dict[tuple[str, int], list[_Want]] = {}
    total = 0
    for target, ranges in per_target.items():
        total += await _fetch_plain(sources, metainfo, targets[target], target, ranges, wanted)
    requests = _coalesce(wanted)
    await _run_jobs([functools.partial(_fetch_request, sources.http, request)
                     for request in requests])
    return total + sum(request.end - request.start for request in requests)


def _take_packed(
    pack: _Pack,
    plan: SegmentPlan[OldSource],
    segment: Segment,
    target: Path,
    from_pack: dict[bytes, list[_Want]],
) -> list[tuple[int, int]]:
    """Note the missing chunks to take from ``pack`` in ``from_pack``; return the other ranges.

    The ranges left are merged as :func:`_ranges` does (near ones into one).
    """
    fetches = [(op.offset, op.offset + op.length) for op in plan.ops if isinstance(op, Fetch)]
    left: list[tuple[int, int]] = []
    position, number = 0, 0
    for length, digest in segment.chunks:
        start, end = position, position + length
        position = end
        while number < len(fetches) and fetches[number][1] <= start:
            number += 1
        if number == len(fetches):
            break
        if not fetches[number][0] <= start < fetches[number][1]:
            continue  # a reused chunk
        if pack.cost(length, digest) is not None:
            where = pack.header.chunks[digest]
            from_pack.setdefault(digest, []).append(_Want(where.offset, length, target, start))
        elif left and start - (left[-1][0] + left[-1][1]) <= _FETCH_GAP:
            left[-1] = (left[-1][0], end - left[-1][0])
        else:
            left.append((start, length))
    return left


@dataclass
class _PackRun:
    """Adjacent pack blocks fetched with one request, and what to cut out of each."""

    span: HttpSpan
    codec: str
    blocks: list[tuple[int, int, int, list[tuple[bytes, _Want]]]]
    """Per block: its start in the blocks file, compressed length, content length, wanted
    chunks as their hash and want (``_Want.offset`` being the offset in the block's
    content)."""


def _pack_runs(pack: _Pack, from_pack: dict[bytes, list[_Want]]) -> list[_PackRun]:
    header = pack.header
    per_block: dict[int, list[tuple[bytes, _Want]]] = {}
    for digest, wants in from_pack.items():
        where = header.chunks[digest]
        per_block.setdefault(where.block, []).extend((digest, want) for want in wants)
    runs: list[_PackRun] = []
    previous = -2
    for block in sorted(per_block):
        compressed, content = header.blocks[block]
        start = header.offsets[block]
        entry = (start, compressed, content, per_block[block])
        if block == previous + 1 and len(runs[-1].blocks) < _MAX_PACK_RUN:
            run = runs[-1]
            run.blocks.append(entry)
            span = run.span
            run.span = HttpSpan(span.url, span.start, start + compressed - 1, span.start,
                                span.file_length)
        else:
            runs.append(_PackRun(
                HttpSpan(pack.blocks_url, start, start + compressed - 1, start,
                         header.blocks_size),
                header.codec, [entry],
            ))
        previous = block
    return runs


class _RunReader:
    """Cuts the wanted chunks out of a run of blocks as its bytes arrive, in order.

    Only the block being received is held (at most ~4 MiB compressed and its
    content). Each block is inflated once complete, and each chunk checked
    against its hash before it is written; the chunks of a block that does not
    decompress, does not check out or never arrives are noted in ``failed``.
    """

    def __init__(self, run: _PackRun, files: _ScratchFiles, failed: list[_Want]) -> None:
        self._codec = run.codec
        self._blocks = iter(run.blocks)
        self._current = next(self._blocks, None)
        self._buffer = bytearray()
        self._files = files
        self._failed = failed

    def feed(self, data: bytes | memoryview) -> None:
        self._buffer.extend(data)
        while self._current is not None and len(self._buffer) >= self._current[1]:
            _, compressed, content, wants = self._current
            compressed_bytes = bytes(self._buffer[:compressed])
            del self._buffer[:compressed]
            self._current = next(self._blocks, None)
            try:
                block = decompress_block(self._codec, compressed_bytes, content)
            except DeltaError:
                self._failed.extend(want for _, want in wants)
                continue
            self._cut(memoryview(block), wants)

    def _cut(self, block: memoryview, wants: list[tuple[bytes, _Want]]) -> None:
        checked: dict[bytes, bool] = {}
        for digest, want in wants:
            chunk = block[want.offset : want.offset + want.length]
            good = checked.get(digest)
            if good is None:
                good = checked[digest] = hashlib.sha256(chunk).digest()[:HASH_SIZE] == digest
            if good:
                self._files.write(want.target, want.at, chunk)
            else:
                self._failed.append(want)

    def finish(self) -> None:
        """The run ended: the chunks of blocks that did not arrive whole failed."""
        while self._current is not None:
            self._failed.extend(want for _, want in self._current[3])
            self._current = next(self._blocks, None)
        self._buffer.clear()


async def _fetch_pack_run(client: HttpMirror, run: _PackRun, failed: list[_Want]) -> None:
    """Stream a run of blocks from the mirror, cutting out the wanted chunks as they come."""
    files = _ScratchFiles()
    reader = _RunReader(run, files, failed)
    try:
        await client.stream_span(run.span, lambda _, data: reader.feed(data))
    finally:
        files.close()
        reader.finish()


async def _fetch_runs_from_peer(
    sources: _Sources, peer: DeltaPeer, runs: list[_PackRun], failed: list[_Want]
) -> int:
    """Fetch every run of blocks from the peer, pipelined; the bytes received.

    A peer that fails is dropped: what it did not send is fetched again as
    content (from the mirror, if any).
    """
    files = _ScratchFiles()
    readers = [_RunReader(run, files, failed) for run in runs]
    sink: PackSink = lambda number, data: readers[number].feed(data)  # noqa: E731
    spans = [(run.span.start, run.span.start + run.span.length) for run in runs]
    before = peer.bytes_received
    try:
        await peer.fetch_blocks(spans, sink)
    except DeltaPeerError:
        sources.peer = None
    finally:
        files.close()
        for reader in readers:
            reader.finish()
    return peer.bytes_received - before


@dataclass(frozen=True)
class _Want:
    """``length`` bytes at ``offset`` of a mirror's file, for scratch file ``target`` at ``at``."""

    offset: int
    length: int
    target: Path
    at: int


@dataclass
class _Request:
    """One ``Range`` request: bytes ``start..end`` of ``url``, covering ``wants`` in order."""

    url: str
    file_length: int
    start: int
    end: int
    wants: list[_Want]


def _coalesce(wanted: dict[tuple[str, int], list[_Want]]) -> list[_Request]:
    """Requests covering every want, those less than ``_FETCH_GAP`` apart merged."""
    requests: list[_Request] = []
    for (url, file_length), wants in wanted.items():
        current: _Request | None = None
        for want in sorted(wants, key=lambda want: want.offset):
            if current is not None and want.offset - current.end <= _FETCH_GAP:
                current.end = max(current.end, want.offset + want.length)
                current.wants.append(want)
            else:
                current = _Request(url, file_length, want.offset, want.offset + want.length,
                                   [want])
                requests.append(current)
    return requests


async def _run_jobs(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run mirror requests, a few at once; the first failure stops the rest and is raised."""
    pending = iter(jobs)
    failed: list[Exception] = []

    async def work(cancel_scope: trio.CancelScope) -> None:
        for job in pending:
            try:
                await job()
            except (OpenDistroError, OSError) as exc:
                failed.append(exc)
                cancel_scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        for _ in range(min(_PARALLEL_REQUESTS, len(jobs))):
            nursery.start_soon(work, nursery.cancel_scope)
    if failed:
        raise failed[0]


async def _fetch_request(client: HttpMirror, request: _Request) -> None:
    """Stream one request's bytes into the scratch files of its wants (gaps dropped)."""
    span = HttpSpan(request.url, request.start, request.end - 1, request.start,
                    request.file_length)
    wants = request.wants
    starts = [want.offset for want in wants]
    files = _ScratchFiles()

    def sink(position: int, data: memoryview) -> None:
        end = position + len(data)
        number = max(bisect.bisect_right(starts, position) - 1, 0)
        while number < len(wants) and wants[number].offset < end:
            want = wants[number]
            low, high = max(position, want.offset), min(end, want.offset + want.length)
            if low < high:
                files.write(want.target, want.at + low - want.offset,
                            data[low - position : high - position])
            number += 1

    try:
        await client.stream_span(span, sink)
    finally:
        files.close()


class _ScratchFiles:
    """Positioned writes into scratch files; the current one stays open (writes come in order)."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._fd = -1

    def write(self, path: Path, offset: int, data: memoryview) -> None:
        if path != self._path:
            self.close()
            self._fd = os.open(path, os.O_WRONLY)
            self._path = path
        while data:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path = -1, None


def file_costs(
    index: DeltaIndex, plan: UpdatePlan[OldSource], fetch_cost: FetchCost | None = None
) -> list[FileCost]:
    """What the plan would fetch and reuse for each file of the new release.

    ``fetch_cost`` prices missing chunks where they travel compressed (as for
    :func:`~opendistro.delta.plan.plan_update`); without it, content ranges
    count by their length.
    """
    fetch = [0] * len(index.files)
    reuse = [0] * len(index.files)
    for segment_plan in plan.segments:
        segment = index.files[segment_plan.file].segments[segment_plan.segment]
        if segment_plan.patch_bytes is not None:
            fetch[segment_plan.file] += segment_plan.patch_bytes
            continue
        if fetch_cost is not None and not segment_plan.whole:
            missing = _missing_chunks(segment_plan, segment)
            fetch[segment_plan.file] += fetch_cost(segment, missing) if missing else 0
        else:
            fetch[segment_plan.file] += sum(
                length for _, length in _ranges(segment_plan, segment)
            )
        if not segment_plan.whole:
            reuse[segment_plan.file] += segment_plan.reused
    return [
        FileCost(number, indexed.path, indexed.length, fetch[number], reuse[number])
        for number, indexed in enumerate(index.files)
    ]


def _missing_chunks(plan: SegmentPlan[OldSource], segment: Segment) -> list[tuple[int, bytes]]:
    """The ``(length, hash)`` chunks of ``segment`` that ``plan`` fetches."""
    fetches = [(op.offset, op.offset + op.length) for op in plan.ops if isinstance(op, Fetch)]
    missing: list[tuple[int, bytes]] = []
    position, number = 0, 0
    for length, digest in segment.chunks:
        while number < len(fetches) and fetches[number][1] <= position:
            number += 1
        if number == len(fetches):
            break
        if fetches[number][0] <= position:
            missing.append((length, digest))
        position += length
    return missing


def _only_files(
    plan: UpdatePlan[OldSource], index: DeltaIndex, files: set[int]
) -> UpdatePlan[OldSource]:
    """The part of ``plan`` that rebuilds ``files``; the rest is left to the download."""
    kept = [segment for segment in plan.segments if segment.file in files]
    whole = sum(
        index.files[segment.file].segments[segment.segment].length
        for segment in kept
        if segment.whole and segment.patch_bytes is None
    )
    return UpdatePlan(kept, whole)


def _ranges(plan: SegmentPlan[OldSource], segment: Segment) -> list[tuple[int, int]]:
    """The byte ranges to fetch: content ranges, or the whole segment; near ones merged."""
    if plan.whole:
        return [(0, segment.length)]
    merged: list[tuple[int, int]] = []
    for op in plan.ops:
        if not isinstance(op, Fetch):
            continue
        if merged and op.offset - (merged[-1][0] + merged[-1][1]) <= _FETCH_GAP:
            start = merged[-1][0]
            merged[-1] = (start, op.offset + op.length - start)
        else:
            merged.append((op.offset, op.length))
    return merged


def _span(
    metainfo: Metainfo,
    base: str,
    entry: FileEntry,
    indexed: IndexedFile,
    segment: Segment,
    plan: SegmentPlan[OldSource],
    sidecar: dict[int, int],
    start: int,
    length: int,
) -> HttpSpan:
    if plan.whole or segment.kind == "raw":
        offset = segment.offset + start
        return HttpSpan(file_url(metainfo, base, entry), offset, offset + length - 1,
                        entry.offset + offset, entry.length)
    sidecar_length = sum(s.content_length for s in indexed.segments if s.kind != "raw")
    offset = sidecar[plan.segment] + start
    return HttpSpan(content_url(metainfo, base, entry), offset, offset + length - 1, offset,
                    sidecar_length)


def _assemble(
    metainfo: Metainfo,
    download_dir: Path,
    index: DeltaIndex,
    plan: UpdatePlan[OldSource],
    olds: dict[int, _OldFile],
    scratch: Path,
    outcome: DeltaOutcome,
) -> None:
    """Write every segment's bytes into the staging folder (blocking)."""
    storage = FileStorage(
        download_dir=download_dir,
        name=metainfo.name,
        files=metainfo.files,
        piece_length=metainfo.piece_length,
        total_length=metainfo.total_length,
        is_multi_file=metainfo.is_multi_file,
        mode="download",
    )
    entries = metainfo.data_files()
    try:
        storage.preallocate()
        for segment_plan in plan.segments:
            indexed = index.files[segment_plan.file]
            segment = indexed.segments[segment_plan.segment]
            entry = entries[segment_plan.file]
            fetched = scratch / f"new-{segment_plan.file}-{segment_plan.segment}"
            try:
                if segment_plan.patch_bytes is not None:
                    data = _patched_bytes(segment, _patched_path(scratch, segment_plan))
                else:
                    data = _segment_bytes(segment, segment_plan, olds, fetched)
                _write(storage, metainfo, entry.offset + segment.offset, data)
            except (OSError, OpenDistroError) as exc:
                outcome.failures.append(f"{'/'.join(indexed.path)} segment "
                                        f"{segment_plan.segment}: {exc}")
        storage.flush()
    finally:
        storage.close()


def _patched_bytes(segment: Segment, patched: Path) -> Iterator[bytes]:
    """A segment's bytes from its content rebuilt by a patch (checked when it was applied)."""
    content = read_range(patched, 0, segment.content_length)
    if segment.kind == "raw":
        yield from content
        return
    yield from rebuild(segment, content)


def _segment_bytes(
    segment: Segment, plan: SegmentPlan[OldSource], olds: dict[int, _OldFile], fetched: Path
) -> Iterator[bytes]:
    if plan.whole and not fetched.exists():
        return  # left to the ordinary download
    if plan.whole:
        yield from read_range(fetched, 0, segment.length)
        return
    content = _content(plan, olds, fetched)
    if segment.kind == "raw":
        yield from content
        return
    yield from rebuild(segment, content)


def _content(
    plan: SegmentPlan[OldSource], olds: dict[int, _OldFile], fetched: Path
) -> Iterator[bytes]:
    for op in plan.ops:
        if isinstance(op, Fetch):
            yield from read_range(fetched, op.offset, op.length)
            continue
        assert isinstance(op, Reuse)
        old_number, segment_number, is_content = op.source
        old = olds[old_number]
        if is_content:
            yield from read_range(old.spills[segment_number], op.source_offset, op.length)
        else:
            start = old.layouts[segment_number].offset + op.source_offset
            yield from read_range(old.path, start, op.length)


def _write(storage: FileStorage, metainfo: Metainfo, offset: int, data: Iterator[bytes]) -> None:
    """Write ``data`` at torrent offset ``offset`` (piece space), piece by piece."""
    piece_length = metainfo.piece_length
    for block in data:
        view = memoryview(block)
        while view:
            index, begin = divmod(offset, piece_length)
            count = min(len(view), piece_length - begin)
            storage.write_block(index, begin, view[:count])
            view = view[count:]
            offset += count
