"""BEP 52 hash messages for one torrent, over trio: serve, fetch and blame.

Three jobs share the hash request / hashes / hash reject messages, and this
module is where the trio driver does them, so that :mod:`.torrent` only routes
the messages here:

* **serving**: peers without our piece layers (a v2 magnet) ask for them, and
  a peer whose piece failed asks for the 16 KiB leaf hashes of that piece,
  which we compute from our verified copy in a worker thread;
* **fetching**: a v2-only magnet download asks peers for the piece layers it
  lacks before it can check a single piece; every chunk is proved against
  the file root before it is kept, and a peer whose proof fails is banned;
* **blaming**: when a v2 piece sent by several peers fails, the true leaf
  hashes (from a peer, proved against our trusted piece hash) name the bad
  blocks at once, so smart ban need not wait for a second good copy.

The logic lives in the sans-I/O classes of :mod:`opendistro.integrity`
(:class:`HashServer`, :class:`PieceLayerFetcher`, :class:`BlockBlame`); this is
only the plumbing between them, the peers and the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ..errors import IntegrityError, MetainfoError, RemoteProtocolError
from ..integrity import merkle
from ..integrity.block_blame import BlockBlame
from ..integrity.hash_exchange import HashServer, PieceLayerFetcher
from ..metainfo import Metainfo
from ..wire.messages import Hashes, HashReject, HashRequest

if TYPE_CHECKING:
    from .peer import PeerSession
    from .torrent import Torrent

__all__ = ["V2Hashes", "lacks_piece_layers"]

MAX_BLAME_ASKS = 3
"""Peers asked at once for the leaf hashes of one failed piece."""


def lacks_piece_layers(metainfo: Metainfo) -> bool:
    """A v2-only torrent from a magnet: some file's pieces cannot be checked yet."""
    return not metainfo.has_v1 and any(
        not metainfo.has_piece_layer(entry) for entry in metainfo.data_files()
    )


def _reject(request: HashRequest) -> HashReject:
    return HashReject(
        request.pieces_root, request.base_layer, request.index, request.length, request.proof_layers
    )


class V2Hashes:
    """The BEP 52 hash exchange of one :class:`~.torrent.Torrent`."""

    def __init__(self, torrent: Torrent) -> None:
        self._torrent = torrent
        self._server: HashServer | None = None
        self._fetcher: PieceLayerFetcher | None = None
        self._fetched = trio.Event()
        self._blame: BlockBlame | None = None
        self._blame_for: Metainfo | None = None
        self._blamed_pieces: dict[tuple[bytes, int], int] = {}
        self._received_leaves: dict[int, list[bytes]] = {}
        self.requests_answered = 0
        """Hash requests we answered with hashes (not rejects)."""

    # -- serving ---------------------------------------------------------------

    def answer(self, peer: PeerSession, request: HashRequest) -> None:
        """Answer a peer's hash request (leaf requests read our copy in a thread)."""
        server = self._current_server()
        if server is None:
            peer.send(_reject(request))
        elif request.base_layer == 0:
            nursery = self._torrent.nursery
            assert nursery is not None
            nursery.start_soon(self._answer_in_thread, peer, server, request)
        else:
            self._send_answer(peer, server.answer(request))

    async def _answer_in_thread(
        self, peer: PeerSession, server: HashServer, request: HashRequest
    ) -> None:
        self._send_answer(peer, await trio.to_thread.run_sync(server.answer, request))

    def _send_answer(self, peer: PeerSession, answer: Hashes | HashReject) -> None:
        if isinstance(answer, Hashes):
            self.requests_answered += 1
        peer.send(answer)

    def _current_server(self) -> HashServer | None:
        metainfo = self._torrent.metainfo
        if metainfo is None or not metainfo.has_v2 or lacks_piece_layers(metainfo):
            return None
        if self._server is None or self._server.metainfo is not metainfo:
            self._server = HashServer(metainfo, leaf_hashes=self._leaf_hashes)
        return self._server

    def _leaf_hashes(self, pieces_root: bytes, piece_in_file: int) -> Sequence[bytes] | None:
        """Leaf hashes of one verified piece of ours (runs in a worker thread)."""
        torrent = self._torrent
        metainfo, storage, have = torrent.metainfo, torrent.storage, torrent.have
        blame = self._current_blame()
        if metainfo is None or storage is None or have is None or blame is None:
            return None
        entry = next((f for f in metainfo.data_files() if f.pieces_root == pieces_root), None)
        if entry is None:
            return None
        index = entry.offset // metainfo.piece_length + piece_in_file
        if not 0 <= index < metainfo.num_pieces or not have.has(index):
            return None
        return blame.block_hashes(index, storage.read_piece(index))

    # -- fetching piece layers -------------------------------------------------

    async def fetch_piece_layers(self, metainfo: Metainfo) -> Metainfo:
        """``metainfo`` with every piece layer, each chunk proved by a peer first."""
        if not lacks_piece_layers(metainfo):
            return metainfo
        fetcher = self._fetcher = PieceLayerFetcher(metainfo)
        self.request_more()
        await self._fetched.wait()
        self._fetcher = None
        return metainfo.with_piece_layers(fetcher.piece_layers())

    def request_more(self) -> None:
        """Keep every peer busy with hash requests while piece layers are missing."""
        fetcher = self._fetcher
        if fetcher is None:
            return
        now = trio.current_time()
        for peer in list(self._torrent.peers):
            while (request := fetcher.next_request(peer, now)) is not None:
                peer.send(request)

    def tick(self, now: float) -> None:
        if self._fetcher is not None:
            self._fetcher.expire(now)
            self.request_more()

    def peer_lost(self, peer: PeerSession) -> None:
        if self._fetcher is not None:
            self._fetcher.peer_lost(peer)
            self.request_more()

    # -- answers ---------------------------------------------------------------

    def received(self, peer: PeerSession, answer: Hashes | HashReject) -> None:
        """A peer answered one of our hash requests (or sent something unasked)."""
        key = (answer.pieces_root, answer.index)
        if answer.base_layer == 0 and key in self._blamed_pieces:
            self._leaves_received(peer, key, answer)
            return
        fetcher = self._fetcher
        if fetcher is None:
            return  # late, after the layers were complete
        if isinstance(answer, HashReject):
            fetcher.hash_rejected(peer, answer)
        else:
            try:
                fetcher.hashes_received(peer, answer)
            except IntegrityError as exc:
                self._torrent.client.ban(peer, f"sent piece hashes that do not prove out: {exc}")
                peer.close("sent bad piece hashes")
            except RemoteProtocolError as exc:
                peer.close(str(exc))
        if fetcher.complete:
            self._fetched.set()
        else:
            self.request_more()

    # -- blaming -------------------------------------------------------------

    def _current_blame(self) -> BlockBlame | None:
        metainfo = self._torrent.metainfo
        if metainfo is None or not metainfo.has_v2 or lacks_piece_layers(metainfo):
            return None
        if self._blame is None or self._blame_for is not metainfo:
            try:
                self._blame = BlockBlame(metainfo)
            except MetainfoError:
                return None
            self._blame_for = metainfo
        return self._blame

    async def piece_failed(self, index: int, data: bytearray) -> None:
        """A v2 piece from several senders failed: ask peers for its true leaf hashes."""
        blame = self._current_blame()
        if blame is None:
            return
        request = blame.leaf_request(index)
        if request is None:
            return  # a one-block piece has one sender, already banned
        received = await trio.to_thread.run_sync(blame.block_hashes, index, data)
        self._received_leaves[index] = received
        self._blamed_pieces[(request.pieces_root, request.index)] = index
        asked = 0
        for peer in list(self._torrent.peers):
            has = peer.connection.peer_has
            if has is not None and has.has(index):
                peer.send(request)
                asked += 1
                if asked == MAX_BLAME_ASKS:
                    break

    def _leaves_received(
        self, peer: PeerSession, key: tuple[bytes, int], answer: Hashes | HashReject
    ) -> None:
        index = self._blamed_pieces[key]
        received = self._received_leaves.get(index)
        blame = self._current_blame()
        session = self._torrent.session
        if isinstance(answer, HashReject) or received is None or blame is None or session is None:
            return
        try:
            leaves = blame.leaves_received(index, answer)
        except (IntegrityError, RemoteProtocolError) as exc:
            self._torrent.client.ban(peer, f"sent leaf hashes that do not prove out: {exc}")
            peer.close("sent bad leaf hashes")
            return
        del self._blamed_pieces[key]
        del self._received_leaves[index]
        bad = BlockBlame.bad_blocks(blame.piece_hash(index), received, leaves)
        offsets = [number * merkle.BLOCK_SIZE for number in bad]
        self._torrent.execute(session.blame_blocks(index, offsets))
