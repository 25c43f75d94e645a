"""Fetching and serving v2 piece layers with BEP 52 hash messages, sans I/O.

A v2 torrent started from a magnet link gets its info dict from peers (BEP 9)
but not the ``piece layers`` that live beside it, so until they arrive no piece
of a multi-piece file can be checked. BEP 52 lets peers ask each other for
them: ``hash request`` (21) names a file by its ``pieces root`` and a range of
one layer of its merkle tree, ``hashes`` (22) answers with those hashes plus the
uncle hashes that prove them against the root, ``hash reject`` (23) declines.

:class:`PieceLayerFetcher` is the asking side. It cuts each missing layer into
chunks of at most 512 hashes, the size libtorrent asks for, and hands each
chunk to one peer at a time. A file of up to 512 pieces is asked for whole with
no proof layers, which every implementation serves (anacrolix refuses any
request that carries proof layers) and which is checked by hashing the layer up
to the root. Longer files are asked for in 512-hash chunks carrying the uncles
up to the root, so each chunk is checked on its own: a peer that lies is caught
at once and nothing it sent is kept. :class:`HashServer` is the answering side,
built from piece layers we trust.

Both are plain objects: the caller moves messages and passes the time in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ..errors import ConfigError, IntegrityError, RemoteProtocolError
from ..wire.messages import Hashes, HashReject, HashRequest
from . import merkle

if TYPE_CHECKING:
    from ..metainfo import FileEntry, Metainfo

__all__ = [
    "DEFAULT_HASH_TIMEOUT",
    "DEFAULT_RETRY_AFTER",
    "MAX_CHUNK",
    "MAX_SERVED_HASHES",
    "HashServer",
    "LeafHashes",
    "PieceLayerFetcher",
    "piece_height",
]

#: Hashes asked for in one request; BEP 52 says a request SHOULD NOT ask for more.
MAX_CHUNK: Final = 512
#: Base hashes we answer in one reply: a whole piece of leaves for 128 MiB pieces,
#: the limit libtorrent and anacrolix apply (256 KiB of hashes, under the message limit).
MAX_SERVED_HASHES: Final = 8192
#: Seconds a peer has to answer before its chunk may go to another peer.
DEFAULT_HASH_TIMEOUT: Final = 20.0
#: Seconds before a peer that refused or timed out is asked for the same chunk again.
DEFAULT_RETRY_AFTER: Final = 30.0

#: ``leaf_hashes(pieces_root, piece_in_file)``: the 16 KiB block hashes of one piece
#: of a file we hold, or None when we do not have that piece.
LeafHashes = Callable[[bytes, int], Sequence[bytes] | None]


def piece_height(piece_length: int) -> int:
    """Height of the piece layer above the 16 KiB blocks (BEP 52 ``base layer`` of piece hashes)."""
    return max(0, (piece_length // merkle.BLOCK_SIZE - 1).bit_length())


def _pieces_in(entry: FileEntry, piece_length: int) -> int:
    return -(-entry.length // piece_length)


def _has_layer(entry: FileEntry, piece_length: int) -> bool:
    """Files of one piece or less have no piece layer: their root is their piece hash."""
    return not entry.is_padding and entry.pieces_root is not None and entry.length > piece_length


def _request_key(message: Hashes | HashReject) -> HashRequest:
    return HashRequest(
        message.pieces_root,
        message.base_layer,
        message.index,
        message.length,
        message.proof_layers,
    )


# ---------------------------------------------------------------- fetching


@dataclass(eq=False)
class _FileLayer:
    """The piece layer of one ``pieces root`` being assembled from verified chunks."""

    root: bytes
    height: int
    first_pieces: list[int]
    hashes: list[bytes]
    chunks_left: int


@dataclass(eq=False)
class _Chunk:
    layer: _FileLayer
    request: HashRequest
    stored: bool = False
    sent_at: float = 0.0
    #: Peers not to ask for this chunk before the given time (inf: they lied about it).
    refused: dict[Hashable, float] = field(default_factory=dict)


def _chunk_requests(root: bytes, pieces: int, base: int, height: int) -> list[HashRequest]:
    """The requests that cover a layer of ``pieces`` hashes in a tree ``height`` high.

    Lengths are powers of two and indices multiples of them (BEP 52); the last
    chunk is rounded up, its tail being padding hashes the reply carries too.
    """
    top = height - base
    if pieces <= MAX_CHUNK:
        return [HashRequest(root, base, 0, 1 << top, 0)]
    requests = []
    for index in range(0, pieces, MAX_CHUNK):
        remaining = min(MAX_CHUNK, pieces - index)
        length = max(2, 1 << (remaining - 1).bit_length())
        requests.append(HashRequest(root, base, index, length, top - 1))
    return requests


class PieceLayerFetcher:
    """Gets the piece layers a torrent lacks from peers, trusting only what proves out.

    Peers are named by any hashable key the caller likes (not None). The caller
    sends what :meth:`next_request` returns, feeds back every ``hashes`` and
    ``hash reject`` from the peer, calls :meth:`expire` now and then, and
    :meth:`peer_lost` when a connection ends. Completed layers come out of
    :meth:`piece_layers`, ready for :meth:`Metainfo.with_piece_layers`.
    """

    def __init__(
        self,
        metainfo: Metainfo,
        *,
        timeout: float = DEFAULT_HASH_TIMEOUT,
        retry_after: float = DEFAULT_RETRY_AFTER,
        max_requests_per_peer: int = 4,
    ) -> None:
        if timeout <= 0 or retry_after < 0 or max_requests_per_peer < 1:
            raise ConfigError("hash fetch timeout and requests per peer must be positive")
        self._timeout = timeout
        self._retry_after = retry_after
        self._max_per_peer = max_requests_per_peer
        self._piece_height = piece_height(metainfo.piece_length)
        layers: dict[bytes, _FileLayer] = {}
        for entry in metainfo.files:
            if not _has_layer(entry, metainfo.piece_length):
                continue
            root = entry.pieces_root
            assert root is not None
            if root in metainfo.piece_layers:
                continue
            first_piece = entry.offset // metainfo.piece_length
            if root in layers:
                # Identical files share a root and so a layer; any copy's pieces serve.
                layers[root].first_pieces.append(first_piece)
                continue
            pieces = _pieces_in(entry, metainfo.piece_length)
            layers[root] = _FileLayer(
                root, merkle.tree_height(entry.length), [first_piece], [b""] * pieces, 0
            )
        self._layers = list(layers.values())
        self._chunks: list[_Chunk] = []
        for layer in self._layers:
            requests = _chunk_requests(
                layer.root, len(layer.hashes), self._piece_height, layer.height
            )
            layer.chunks_left = len(requests)
            self._chunks.extend(_Chunk(layer, request) for request in requests)
        self._by_request = {chunk.request: chunk for chunk in self._chunks}
        #: request -> (peer, deadline): at most one peer works on a chunk at a time.
        self._in_flight: dict[HashRequest, tuple[Hashable, float]] = {}
        self._outstanding: dict[Hashable, set[HashRequest]] = {}
        #: Requests that timed out: a late answer is still checked, and used if it proves out.
        self._late: dict[Hashable, set[HashRequest]] = {}

    # -- state ----------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every missing piece layer has been fetched and verified."""
        return all(layer.chunks_left == 0 for layer in self._layers)

    def wanted(self) -> bool:
        """Some chunk is neither verified nor being fetched: worth asking a peer."""
        return any(
            not chunk.stored and chunk.request not in self._in_flight for chunk in self._chunks
        )

    def piece_layers(self) -> dict[bytes, bytes]:
        """The layers fetched completely so far, by ``pieces root``."""
        return {
            layer.root: b"".join(layer.hashes) for layer in self._layers if layer.chunks_left == 0
        }

    # -- asking ---------------------------------------------------------------------

    def next_request(
        self,
        peer: Hashable,
        now: float,
        *,
        peer_has: Callable[[int], bool] | None = None,
    ) -> HashRequest | None:
        """The next chunk to ask ``peer`` for, or None when there is nothing for it.

        ``peer_has(piece_index)`` says which pieces the peer announced; BEP 52 only
        obliges a peer to serve hashes covering pieces it has, so a chunk goes to a
        peer holding at least one of its pieces. Without it every peer is taken for
        a seed. A peer gets at most ``max_requests_per_peer`` requests at a time.
        """
        outstanding = self._outstanding.setdefault(peer, set())
        if len(outstanding) >= self._max_per_peer:
            return None
        for chunk in self._chunks:
            if chunk.stored or chunk.request in self._in_flight:
                continue
            if chunk.refused.get(peer, now) > now:
                continue
            if peer_has is not None and not self._covers_a_piece_of(chunk, peer_has):
                continue
            chunk.sent_at = now
            self._in_flight[chunk.request] = (peer, now + self._timeout)
            outstanding.add(chunk.request)
            return chunk.request
        return None

    @staticmethod
    def _covers_a_piece_of(chunk: _Chunk, peer_has: Callable[[int], bool]) -> bool:
        layer = chunk.layer
        start = chunk.request.index
        stop = min(start + chunk.request.length, len(layer.hashes))
        return any(
            peer_has(first + piece) for first in layer.first_pieces for piece in range(start, stop)
        )

    def expire(self, now: float) -> list[tuple[Hashable, HashRequest]]:
        """Free the chunks whose peer did not answer in time; returns who timed out on what.

        The chunk can then go to another peer; the slow one is not asked for it
        again for ``retry_after`` seconds, but its answer is still taken if it
        comes and proves out.
        """
        expired = [
            (peer, request)
            for request, (peer, deadline) in self._in_flight.items()
            if deadline <= now
        ]
        for peer, request in expired:
            self._drop_outstanding(peer, request)
            self._late.setdefault(peer, set()).add(request)
            self._by_request[request].refused[peer] = now + self._retry_after
        return expired

    def peer_lost(self, peer: Hashable) -> None:
        """Forget ``peer``: its chunks go back to the pool and its refusals are cleared."""
        for request in self._outstanding.pop(peer, set()):
            del self._in_flight[request]
        self._late.pop(peer, None)
        for chunk in self._chunks:
            chunk.refused.pop(peer, None)

    def _drop_outstanding(self, peer: Hashable, request: HashRequest) -> bool:
        outstanding = self._outstanding.get(peer)
        if outstanding is None or request not in outstanding:
            return False
        outstanding.discard(request)
        del self._in_flight[request]
        return True

    # -- answers --------------------------------------------------------------------

    def hashes_received(self, peer: Hashable, message: Hashes) -> bool:
        """Check and keep a ``hashes`` answer; True when it completed a chunk.

        False means the answer proved out but the chunk was already done (a late
        or duplicate answer). Raises RemoteProtocolError when the message answers
        nothing we asked this peer, and IntegrityError when its hashes do not lead
        to the file's root; in both cases nothing is kept and the caller should
        drop (and, for IntegrityError, ban) the peer.
        """
        request = _request_key(message)
        was_outstanding = self._drop_outstanding(peer, request)
        late = self._late.get(peer, set())
        was_late = request in late
        late.discard(request)
        if not (was_outstanding or was_late):
            raise RemoteProtocolError("hashes message answers no hash request we sent this peer")
        chunk = self._by_request[request]
        layer = chunk.layer
        try:
            base = merkle.verify_hashes(
                layer.root,
                self._piece_height,
                layer.height,
                request.index,
                request.length,
                request.proof_layers,
                merkle.split_layer(message.hashes),
            )
        except IntegrityError as exc:
            chunk.refused[peer] = float("inf")
            raise IntegrityError(
                f"hashes {request.index}+{request.length} of file {layer.root.hex()[:16]}: {exc}"
            ) from exc
        if chunk.stored:
            return False
        stop = min(request.index + len(base), len(layer.hashes))
        layer.hashes[request.index : stop] = base[: stop - request.index]
        chunk.stored = True
        layer.chunks_left -= 1
        return True

    def hash_rejected(self, peer: Hashable, message: HashReject) -> None:
        """The peer declined a request: the chunk goes to others for ``retry_after`` seconds.

        A reject that matches nothing we asked is ignored: it does no harm.
        """
        request = _request_key(message)
        if self._drop_outstanding(peer, request):
            chunk = self._by_request[request]
            chunk.refused[peer] = chunk.sent_at + self._retry_after
        else:
            self._late.get(peer, set()).discard(request)


# ---------------------------------------------------------------- serving


class HashServer:
    """Answers peers' ``hash request`` messages from piece layers we trust.

    Requests for the piece layer and the layers above it are answered from the
    metainfo's piece layers. Requests for the 16 KiB leaf layer (base layer 0),
    which a peer sends to find the bad block of a piece that failed, are answered
    for one piece at a time through ``leaf_hashes`` when it is given; the leaves
    are checked against the piece hash first, so a damaged copy on our disk is
    never served. Anything else, malformed or out of range, gets a ``hash
    reject``, as BEP 52 requires of every request we do not answer.
    """

    def __init__(
        self,
        metainfo: Metainfo,
        *,
        leaf_hashes: LeafHashes | None = None,
        max_length: int = MAX_SERVED_HASHES,
    ) -> None:
        self._metainfo = metainfo
        self._leaf_hashes = leaf_hashes
        self._max_length = max_length
        self._piece_height = piece_height(metainfo.piece_length)
        self._files: dict[bytes, FileEntry] = {}
        for entry in metainfo.files:
            if not entry.is_padding and entry.pieces_root is not None:
                self._files.setdefault(entry.pieces_root, entry)
        self._trees: dict[bytes, merkle.PieceLayerTree] = {}

    @property
    def metainfo(self) -> Metainfo:
        """The torrent whose piece layers this server answers from."""
        return self._metainfo

    def answer(self, request: HashRequest) -> Hashes | HashReject:
        """The reply to send for ``request``; never raises for what a peer asks."""
        try:
            hashes = self._hashes_for(request)
        except IntegrityError:
            return HashReject(
                request.pieces_root,
                request.base_layer,
                request.index,
                request.length,
                request.proof_layers,
            )
        return Hashes(
            request.pieces_root,
            request.base_layer,
            request.index,
            request.length,
            request.proof_layers,
            b"".join(hashes),
        )

    def _hashes_for(self, request: HashRequest) -> list[bytes]:
        entry = self._files.get(request.pieces_root)
        if entry is None:
            raise IntegrityError("no file with this pieces root")
        if request.length > self._max_length:
            raise IntegrityError("too many hashes asked for at once")
        height = merkle.tree_height(entry.length)
        if not 0 <= request.base_layer < height:
            raise IntegrityError("base layer outside the file's tree")
        if request.base_layer >= self._piece_height:
            tree = self._tree(entry)
            return tree.hashes(
                request.index,
                request.length,
                request.proof_layers,
                layer=request.base_layer - self._piece_height,
            )
        if request.base_layer == 0 and self._leaf_hashes is not None:
            return self._leaves_for(entry, request, height)
        raise IntegrityError("we do not serve this layer")

    def _tree(self, entry: FileEntry) -> merkle.PieceLayerTree:
        root = entry.pieces_root
        assert root is not None
        tree = self._trees.get(root)
        if tree is None:
            layer = self._metainfo.piece_layers.get(root)
            if layer is None:
                raise IntegrityError("we do not have this file's piece layer")
            tree = merkle.PieceLayerTree(
                merkle.split_layer(layer), self._metainfo.piece_length, entry.length
            )
            self._trees[root] = tree
        return tree

    def _leaves_for(self, entry: FileEntry, request: HashRequest, height: int) -> list[bytes]:
        """Leaf hashes within one piece, proven up to the piece node and on to the root."""
        assert self._leaf_hashes is not None
        root = request.pieces_root
        merkle.check_hash_request(1 << height, request.index, request.length, request.proof_layers)
        # A file of one piece has a tree shorter than a piece: the piece is the whole tree.
        span_height = min(self._piece_height, height)
        count = min(request.length, 1 << height)
        if count > 1 << span_height:
            raise IntegrityError("leaf requests are served one piece at a time")
        piece = request.index >> span_height
        leaves = self._leaf_hashes(root, piece)
        if leaves is None:
            raise IntegrityError("we do not have this piece")
        if any(len(leaf) != merkle.HASH_SIZE for leaf in leaves):
            raise IntegrityError("leaf hashes must be 32 bytes")
        subtree = merkle.merkle_layers(leaves, span_height)
        tree = self._tree(entry) if height > span_height else None
        expected = root if tree is None else tree.node(0, piece)
        if subtree[-1][0] != expected:
            raise IntegrityError("our copy of this piece does not match its hash")
        offset = request.index - (piece << span_height)
        result = subtree[0][offset : offset + count]
        for node_height, node in merkle.uncle_positions(
            1 << height, request.index, request.length, request.proof_layers
        ):
            if node_height < span_height:
                result.append(subtree[node_height][node - (piece << (span_height - node_height))])
            else:
                assert tree is not None
                result.append(tree.node(node_height - span_height, node))
        return result
