"""Serving a release's delta index and content ranges to peers over ``od_delta``.

A peer updating from an older version asks us, once we hold the whole
release, for the delta index (in 16 KiB pieces) and for ranges of file
segments' *content* (``spec/od-delta.md``). A raw segment's content is the
file's own bytes, read through the torrent's storage. A compressed segment's
content is its decompressed stream: it is decompressed once, on the first
request, into a cache file under the download folder's ``.opendistro``, and
served from there with positioned reads; the cache is bounded in files and
removed with the torrent. To a peer that accepts it (``od_delta_enc``), an
answer goes zlib-compressed when that makes it smaller.

When the publisher's pack (``NAME.odpack`` and ``NAME.odblocks``, written by
``opendistro create --previous``) lies beside the index, and belongs to it,
the handshake announces it too and peers fetch ranges of it (the header,
then the blocks) with pack requests: the same compressed blocks and binary
patches a mirror serves, so an update from peers costs what one from a
mirror does. Pack and content requests share the per-peer limit.

When the publisher's xz-compressed index (``NAME.odindex.xz``) lies beside
the index and decompresses to exactly it, the handshake announces it and
index requests for that form are answered from it: the index is a large part
of a small package's update, and the compressed form is a sixth or so smaller
for the npm packages of the delta benchmark.

Nothing here is trusted by the asker (it checks every piece it rebuilds), and
nothing is served before every piece of the release has been verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..delta.archives import read_content
from ..delta.index import DeltaIndex, Segment
from ..delta.pack import PackHeader
from ..delta.publish import (
    COMPRESSED_INDEX_SUFFIX,
    decompress_index,
    index_path,
    pack_paths,
)
from ..errors import OpenDistroError, RemoteProtocolError
from ..wire.extensions.od_delta import (
    ENCODING_ZLIB,
    EXTENSION_NAME,
    HANDSHAKE_ENC_KEY,
    HANDSHAKE_SHA256_KEY,
    HANDSHAKE_SIZE_KEY,
    MAX_INDEX_SIZE,
    MAX_OUTSTANDING,
    MAX_PACK_HEADER_SIZE,
    CompressedIndex,
    ContentData,
    ContentReject,
    ContentRequest,
    DeltaMessage,
    IndexRequest,
    PackAnnouncement,
    PackData,
    PackReject,
    PackRequest,
    compress_content,
    decode_delta_message,
    encode_delta_message,
    index_response,
    lists_zlib,
)
from ..wire.messages import Extended

if TYPE_CHECKING:
    from .peer import PeerSession
    from .torrent import Torrent

__all__ = ["DeltaServer"]

MAX_CACHED_SEGMENTS = 64
"""Decompressed segments kept on disk at once (oldest removed first)."""


class DeltaServer:
    """One torrent's ``od_delta`` service; see the module docstring."""

    def __init__(self, torrent: Torrent) -> None:
        self._torrent = torrent
        self.index_bytes: bytes | None = None
        self.index: DeltaIndex | None = None
        self._outstanding: dict[PeerSession, int] = {}
        self._readers = trio.CapacityLimiter(2)
        self._cache: dict[tuple[int, int], str] = {}
        self._building: dict[tuple[int, int], trio.Event] = {}
        self.requests_served = 0
        self.pack: PackAnnouncement | None = None
        """The pack we serve beside the index, if any."""
        self._pack_header = b""
        self._blocks_path: Path | None = None
        self.pack_requests_served = 0
        self.compressed_index: CompressedIndex | None = None
        """The xz-compressed index we serve beside the index, if any."""
        self._compressed_bytes = b""

    def load(self, index_bytes: bytes) -> None:
        """Serve ``index_bytes`` (an encoded delta index of this very torrent), and the
        pack published beside the data (``NAME.odpack``, ``NAME.odblocks``) if it is
        there and belongs to that index."""
        index = DeltaIndex.decode(index_bytes)
        metainfo = self._torrent.metainfo
        if metainfo is None or (index.info_hash_v1, index.info_hash_v2) != (
            metainfo.info_hash_v1,
            metainfo.info_hash_v2,
        ):
            raise OpenDistroError("the delta index belongs to another release")
        self.index, self.index_bytes = index, bytes(index_bytes)
        self.pack, self._pack_header, self._blocks_path = None, b"", None
        self.compressed_index, self._compressed_bytes = None, b""
        plain = index_path(self._torrent.download_dir, metainfo)
        compressed = plain.with_name(plain.name + COMPRESSED_INDEX_SUFFIX)
        if compressed.exists():
            try:
                self.load_compressed_index(compressed)
            except (OSError, OpenDistroError) as exc:
                self._torrent.client.log(f"od_delta: not serving the compressed index: {exc}")
        header, blocks = pack_paths(self._torrent.download_dir, metainfo)
        if header.exists():
            try:
                self.load_pack(header, blocks)
            except (OSError, OpenDistroError) as exc:
                self._torrent.client.log(f"od_delta: not serving the pack: {exc}")

    def load_compressed_index(self, path: Path) -> None:
        """Serve the xz-compressed index in ``path``; it must hold exactly the index we serve
        (a stale one beside a newer index would only make peers fetch twice)."""
        if self.index_bytes is None:
            raise OpenDistroError("a compressed index is served only beside its delta index")
        with open(path, "rb") as handle:
            data = handle.read(MAX_INDEX_SIZE + 1)
        if len(data) > MAX_INDEX_SIZE or decompress_index(data, MAX_INDEX_SIZE) != self.index_bytes:
            raise OpenDistroError(f"{path} is not the delta index compressed")
        self._compressed_bytes = data
        self.compressed_index = CompressedIndex(len(data), hashlib.sha256(data).digest())

    def load_pack(self, header_path: Path, blocks_path: Path) -> None:
        """Serve the pack in these two files; it must be the pack of the index we serve."""
        if self.index_bytes is None:
            raise OpenDistroError("a pack is served only beside its delta index")
        with open(header_path, "rb") as handle:
            header_bytes = handle.read(MAX_PACK_HEADER_SIZE + 1)
        header = PackHeader.decode(header_bytes)
        if header.index_sha256 != hashlib.sha256(self.index_bytes).digest():
            raise OpenDistroError(f"{header_path} is the pack of another delta index")
        blocks_size = os.stat(blocks_path).st_size
        if blocks_size != header.blocks_size or blocks_size == 0:
            raise OpenDistroError(f"{blocks_path} is not the size its pack header gives")
        self._pack_header, self._blocks_path = header_bytes, blocks_path
        self.pack = PackAnnouncement(
            len(header_bytes), hashlib.sha256(header_bytes).digest(), blocks_size
        )

    def handshake_extra(self) -> dict[bytes, Any]:
        """What our BEP 10 handshake says about the index (and pack) we serve."""
        if self.index_bytes is None:
            return {}
        extra = {
            HANDSHAKE_SIZE_KEY: len(self.index_bytes),
            HANDSHAKE_SHA256_KEY: hashlib.sha256(self.index_bytes).digest(),
            HANDSHAKE_ENC_KEY: [ENCODING_ZLIB],
        }
        if self.compressed_index is not None:
            extra.update(self.compressed_index.extra())
        if self.pack is not None:
            extra.update(self.pack.extra())
        return extra

    def peer_gone(self, peer: PeerSession) -> None:
        self._outstanding.pop(peer, None)

    def close(self) -> None:
        """Remove the decompressed content cache."""
        for path in self._cache.values():
            _remove(path)
        self._cache.clear()

    def handle(self, peer: PeerSession, payload: bytes) -> None:
        """An ``od_delta`` message from ``peer``."""
        try:
            message = decode_delta_message(payload)
        except RemoteProtocolError as exc:
            peer.close(f"bad od_delta message: {exc}")
            return
        if isinstance(message, IndexRequest):
            self._reply(
                peer, index_response(self.index_bytes or b"", message, self._compressed_bytes)
            )
        elif isinstance(message, ContentRequest | PackRequest):
            if self._outstanding.get(peer, 0) >= MAX_OUTSTANDING:
                self._reply(peer, _reject(message))
                return
            self._outstanding[peer] = self._outstanding.get(peer, 0) + 1
            nursery = self._torrent.nursery
            assert nursery is not None
            if isinstance(message, PackRequest):
                nursery.start_soon(self._serve_pack, peer, message)
            else:
                nursery.start_soon(self._serve, peer, message)
        # Answers to requests we never make as a server are ignored.

    def _reply(self, peer: PeerSession, message: DeltaMessage) -> None:
        remote = peer.connection.remote_extensions
        if remote is None or not remote.supports(EXTENSION_NAME):
            return
        peer.send(Extended(remote.m[EXTENSION_NAME], encode_delta_message(message)))

    async def _serve(self, peer: PeerSession, request: ContentRequest) -> None:
        answer: DeltaMessage | None = None
        try:
            data = await self._content(request)
            if data is not None and _accepts_zlib(peer):
                answer = await trio.to_thread.run_sync(
                    compress_content, request.request_id, data
                )
        except (OSError, OpenDistroError) as exc:
            self._torrent.client.log(f"od_delta: cannot serve {request}: {exc}")
            data = None
        finally:
            self._outstanding[peer] = max(0, self._outstanding.get(peer, 1) - 1)
        if answer is None:
            answer = (
                ContentReject(request.request_id) if data is None
                else ContentData(request.request_id, data)
            )
        self._reply(peer, answer)
        if data is not None:
            self.requests_served += 1

    async def _serve_pack(self, peer: PeerSession, request: PackRequest) -> None:
        data: bytes | None = None
        try:
            data = await self._pack_bytes(request)
        except OSError as exc:
            self._torrent.client.log(f"od_delta: cannot serve {request}: {exc}")
        finally:
            self._outstanding[peer] = max(0, self._outstanding.get(peer, 1) - 1)
        if data is None:
            self._reply(peer, PackReject(request.request_id))
            return
        self._reply(peer, PackData(request.request_id, data))
        self.pack_requests_served += 1

    async def _pack_bytes(self, request: PackRequest) -> bytes | None:
        """The pack's bytes the request asks for: from the header, then the blocks file."""
        pack, blocks_path = self.pack, self._blocks_path
        if pack is None or blocks_path is None:
            return None
        start, end = request.offset, request.offset + request.length
        if end > pack.total_size:
            return None
        data = self._pack_header[start:end]
        if end > pack.header_size:
            offset = max(start, pack.header_size) - pack.header_size
            length = end - pack.header_size - offset
            async with self._readers:
                data += await trio.to_thread.run_sync(_pread, blocks_path, offset, length)
        return data if len(data) == request.length else None  # the file shrank

    async def _content(self, request: ContentRequest) -> bytes | None:
        index, torrent = self.index, self._torrent
        if index is None or not torrent.is_seeding or torrent.storage is None:
            return None
        if not request.file < len(index.files):
            return None
        indexed = index.files[request.file]
        if not request.segment < len(indexed.segments):
            return None
        segment = indexed.segments[request.segment]
        if request.offset + request.length > segment.content_length:
            return None
        async with self._readers:
            if segment.kind == "raw":
                return await trio.to_thread.run_sync(
                    self._read_raw, request.file, segment.offset + request.offset, request.length
                )
            cache = await self._cached(request.file, request.segment, segment)
            return await trio.to_thread.run_sync(_pread, cache, request.offset, request.length)

    def _read_raw(self, file: int, offset: int, length: int) -> bytes:
        """File bytes, through the storage (piece space), across piece boundaries."""
        torrent = self._torrent
        assert torrent.metainfo is not None and torrent.storage is not None
        metainfo, storage = torrent.metainfo, torrent.storage
        position = metainfo.data_files()[file].offset + offset
        parts = []
        while length > 0:
            index, begin = divmod(position, metainfo.piece_length)
            count = min(length, metainfo.piece_size(index) - begin)
            parts.append(storage.read_block(index, begin, count))
            position += count
            length -= count
        return b"".join(parts)

    async def _cached(self, file: int, number: int, segment: Segment) -> str:
        """The path of the decompressed content of one segment, made on first use."""
        key = (file, number)
        while key not in self._cache:
            building = self._building.get(key)
            if building is not None:
                await building.wait()
                continue
            self._building[key] = event = trio.Event()
            try:
                self._cache[key] = await trio.to_thread.run_sync(self._decompress, file, segment)
                while len(self._cache) > MAX_CACHED_SEGMENTS:
                    oldest = next(iter(self._cache))
                    _remove(self._cache.pop(oldest))
            finally:
                del self._building[key]
                event.set()
        return self._cache[key]

    def _decompress(self, file: int, segment: Segment) -> str:
        torrent = self._torrent
        assert torrent.metainfo is not None and torrent.storage is not None
        metainfo = torrent.metainfo
        entry = metainfo.data_files()[file]
        source = torrent.storage.final_path
        if metainfo.is_multi_file:
            source = source.joinpath(*entry.path)
        folder = torrent.download_dir / ".opendistro" / "delta-cache"
        folder = folder / metainfo.wire_info_hash.hex()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{file}-{segment.offset}"
        written = 0
        with open(target, "wb") as out:
            for data in read_content(source, segment):
                written += len(data)
                if written > segment.content_length:
                    raise OpenDistroError("the segment holds more content than the index says")
                out.write(data)
        if written != segment.content_length:
            raise OpenDistroError("the segment holds less content than the index says")
        return os.fspath(target)


def _accepts_zlib(peer: PeerSession) -> bool:
    remote = peer.connection.remote_extensions
    return remote is not None and lists_zlib(remote.extra)


def _reject(request: ContentRequest | PackRequest) -> ContentReject | PackReject:
    if isinstance(request, PackRequest):
        return PackReject(request.request_id)
    return ContentReject(request.request_id)


def _pread(path: str | os.PathLike[str], offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        return os.pread(handle.fileno(), length, offset)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
