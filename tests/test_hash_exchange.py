"""BEP 52 hash exchange: piece layers fetched from peers, served, and used to blame blocks.

Torrents are real (made by ``create_torrent`` from files on disk) and stripped of
their piece layers as a magnet download would be; every message crosses the real
wire codec, so the byte layout is exercised too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.errors import (
    ConfigError,
    IntegrityError,
    MetainfoError,
    RemoteProtocolError,
)
from opendistro.integrity import PieceVerifier, merkle
from opendistro.integrity.block_blame import BlockBlame
from opendistro.integrity.hash_exchange import (
    MAX_CHUNK,
    HashServer,
    PieceLayerFetcher,
    piece_height,
)
from opendistro.metainfo import Metainfo
from opendistro.wire.codec import MessageDecoder, encode
from opendistro.wire.messages import Hashes, HashReject, HashRequest

KIB = 1024
BLOCK = 16 * KIB


# ---------------------------------------------------------------- helpers


def over_the_wire(message: HashRequest | Hashes | HashReject) -> HashRequest | Hashes | HashReject:
    """Encode and decode ``message`` with the real codec."""
    [decoded] = MessageDecoder(expect_handshake=False).feed(encode(message))
    assert isinstance(decoded, HashRequest | Hashes | HashReject)
    assert decoded == message
    return decoded


def ask(server: HashServer, request: HashRequest) -> Hashes | HashReject:
    wired = over_the_wire(request)
    assert isinstance(wired, HashRequest)
    reply = over_the_wire(server.answer(wired))
    assert isinstance(reply, Hashes | HashReject)
    return reply


def strip(full: Metainfo) -> Metainfo:
    """The torrent as a magnet download has it: the info dict and no piece layers."""
    return Metainfo.from_info_bytes(full.info_bytes, expected_v2=full.info_hash_v2)


def exchange(
    fetcher: PieceLayerFetcher, servers: Mapping[str, HashServer], now: float = 0.0
) -> list[HashRequest]:
    """Ask every peer in turn until nothing more can be fetched; returns what was asked."""
    asked: list[HashRequest] = []
    progressed = True
    while progressed and not fetcher.complete:
        progressed = False
        for peer, server in servers.items():
            request = fetcher.next_request(peer, now)
            if request is None:
                continue
            progressed = True
            asked.append(request)
            reply = ask(server, request)
            if isinstance(reply, Hashes):
                assert fetcher.hashes_received(peer, reply)
            else:
                fetcher.hash_rejected(peer, reply)
    return asked


def piece_space(metainfo: Metainfo, source: Path) -> bytes:
    """The torrent's data laid out as pieces see it (padding reads as zeros)."""
    parts = []
    for entry in metainfo.files:
        if entry.is_padding:
            parts.append(bytes(entry.length))
        elif metainfo.is_multi_file:
            parts.append((source / Path(*entry.path)).read_bytes())
        else:
            parts.append(source.read_bytes())
    return b"".join(parts)


def pieces_of(metainfo: Metainfo, data: bytes) -> list[bytes]:
    length = metainfo.piece_length
    return [data[i * length : (i + 1) * length] for i in range(metainfo.num_pieces)]


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def write(path: Path, size: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Metainfo, Path]:
    """One file of 1100 pieces of 16 KiB: three chunks (512, 512, 76 rounded to 128)."""
    path = write(tmp_path_factory.mktemp("big") / "big.bin", 1100 * BLOCK - 1000, seed=7)
    return create_torrent(path, version="v2", piece_length=BLOCK, creation_date=0), path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Metainfo, Path]:
    """One file of 37 pieces of 64 KiB (4 blocks each), the last one short: one chunk."""
    path = write(tmp_path_factory.mktemp("small") / "small.bin", 36 * 64 * KIB + 20_000, seed=8)
    return create_torrent(path, version="v2", piece_length=64 * KIB, creation_date=0), path


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Metainfo, Path]:
    """Two different files of 600 pieces, one file of one piece and an empty one."""
    folder = tmp_path_factory.mktemp("twins") / "twins"
    write(folder / "a.bin", 600 * BLOCK, seed=1)
    write(folder / "b.bin", 600 * BLOCK - 5, seed=2)
    write(folder / "c" / "tiny.bin", 3000, seed=3)
    write(folder / "c" / "empty", 0, seed=4)
    return create_torrent(folder, version="v2", piece_length=BLOCK, creation_date=0), folder


def data_roots(metainfo: Metainfo) -> list[bytes]:
    return [
        entry.pieces_root
        for entry in metainfo.data_files()
        if entry.pieces_root is not None and entry.length > metainfo.piece_length
    ]


# ---------------------------------------------------------------- fetching, end to end


@pytest.mark.parametrize(
    ("sizes", "piece_length", "version"),
    [
        pytest.param((30_000,), 32 * KIB, "v2", id="one piece: nothing to fetch"),
        pytest.param((BLOCK + 1,), BLOCK, "v2", id="two pieces"),
        pytest.param((2 * 64 * KIB + 5,), 64 * KIB, "v2", id="three pieces of four blocks"),
        pytest.param((512 * BLOCK,), BLOCK, "v2", id="512 pieces: one whole chunk"),
        pytest.param((513 * BLOCK - 7,), BLOCK, "v2", id="513 pieces: a tail chunk of two"),
        pytest.param((1100 * BLOCK,), BLOCK, "v2", id="1100 pieces: three chunks"),
        pytest.param(
            (700 * BLOCK + 3, 1000, 3 * 32 * KIB, 0, 40 * 32 * KIB - 1),
            32 * KIB,
            "v2",
            id="multi-file with a one-piece and an empty file",
        ),
        pytest.param((5 * 32 * KIB + 1, 2000), 32 * KIB, "hybrid", id="hybrid"),
    ],
)
def test_fetched_layers_equal_the_originals_and_verify_every_piece(
    make_release: Callable[..., Path],
    sizes: tuple[int, ...],
    piece_length: int,
    version: str,
) -> None:
    source = make_release(sizes=sizes)
    full = create_torrent(source, version=version, piece_length=piece_length)  # type: ignore[arg-type]
    bare = strip(full)
    assert bare.piece_layers == {}
    fetcher = PieceLayerFetcher(bare)
    asked = exchange(fetcher, {"seed": HashServer(full)})

    assert fetcher.complete and not fetcher.wanted()
    assert fetcher.piece_layers() == full.piece_layers
    for request in asked:
        assert 2 <= request.length <= MAX_CHUNK
        assert request.length & (request.length - 1) == 0
        assert request.index % request.length == 0
        assert request.base_layer == piece_height(piece_length)
    pieces = pieces_of(full, piece_space(full, source))
    restored = bare.with_piece_layers(fetcher.piece_layers())
    verifier = PieceVerifier(restored)
    for index, piece in enumerate(pieces):
        assert verifier.can_verify(index)
        assert verifier.verify(index, piece)
    if full.piece_layers and version == "v2":
        assert not all(PieceVerifier(bare).can_verify(i) for i in range(full.num_pieces))


def test_chunks_follow_bep52_and_carry_proofs_only_when_split(
    big: tuple[Metainfo, Path], small: tuple[Metainfo, Path]
) -> None:
    full, _ = big
    fetcher = PieceLayerFetcher(strip(full))
    asked = [fetcher.next_request("seed", 0.0) for _ in range(4)]
    assert asked[3] is None  # three chunks in all
    top = merkle.tree_height(full.files[0].length)  # piece layer is the leaf layer here
    assert [(r.index, r.length, r.proof_layers) for r in asked if r] == [
        (0, 512, top - 1),
        (512, 512, top - 1),
        (1024, 128, top - 1),
    ]
    full, _ = small
    [request] = [PieceLayerFetcher(strip(full)).next_request("seed", 0.0)]
    assert request is not None
    # 37 pieces: asked whole (padded to 64), with no proof layers, as anacrolix serves.
    shape = (request.base_layer, request.index, request.length, request.proof_layers)
    assert shape == (2, 0, 64, 0)


def test_identical_files_share_one_layer(make_release: Callable[..., Path]) -> None:
    folder = make_release(sizes=(3 * BLOCK + 1, 10))
    data = (folder / "dir0" / "file0.bin").read_bytes()
    (folder / "dir0" / "copy.bin").write_bytes(data)
    full = create_torrent(folder, version="v2", piece_length=BLOCK)
    fetcher = PieceLayerFetcher(strip(full))
    asked = exchange(fetcher, {"seed": HashServer(full)})
    assert len(asked) == 1
    restored = strip(full).with_piece_layers(fetcher.piece_layers())
    verifier = PieceVerifier(restored)
    pieces = pieces_of(full, piece_space(full, folder))
    assert all(verifier.verify(index, piece) for index, piece in enumerate(pieces))


def test_a_torrent_with_all_its_layers_needs_nothing(big: tuple[Metainfo, Path]) -> None:
    fetcher = PieceLayerFetcher(big[0])
    assert fetcher.complete and not fetcher.wanted()
    assert fetcher.next_request("seed", 0.0) is None
    assert fetcher.piece_layers() == {}


def test_layers_come_out_file_by_file(twins: tuple[Metainfo, Path]) -> None:
    full, _ = twins
    first, second = data_roots(full)
    fetcher = PieceLayerFetcher(strip(full))
    server = HashServer(full)
    for index in (0, 512):  # 600 pieces: two chunks
        assert fetcher.piece_layers() == {}
        request = fetcher.next_request("seed", 0.0)
        assert request is not None
        assert (request.pieces_root, request.index) == (first, index)
        reply = ask(server, request)
        assert isinstance(reply, Hashes)
        assert fetcher.hashes_received("seed", reply)
    assert fetcher.piece_layers() == {first: full.piece_layers[first]}
    assert not fetcher.complete
    exchange(fetcher, {"seed": server})
    assert fetcher.piece_layers() == {root: full.piece_layers[root] for root in (first, second)}


def test_bad_settings_are_refused(small: tuple[Metainfo, Path]) -> None:
    with pytest.raises(ConfigError):
        PieceLayerFetcher(small[0], timeout=0)
    with pytest.raises(ConfigError):
        PieceLayerFetcher(small[0], max_requests_per_peer=0)


# ---------------------------------------------------------------- attacks


def _first_answer(full: Metainfo) -> tuple[PieceLayerFetcher, HashRequest, Hashes]:
    fetcher = PieceLayerFetcher(strip(full))
    request = fetcher.next_request("liar", 0.0)
    assert request is not None
    reply = ask(HashServer(full), request)
    assert isinstance(reply, Hashes)
    return fetcher, request, reply


def _swap_first_two(hashes: bytes) -> bytes:
    return hashes[32:64] + hashes[:32] + hashes[64:]


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "flipped first base hash": lambda h: flip(h, 0),
    "flipped hash in the middle": lambda h: flip(h, len(h) // 2),
    "flipped last hash": lambda h: flip(h, len(h) - 1),
    "two base hashes swapped": _swap_first_two,
    "one hash short": lambda h: h[:-32],
    "one hash too many": lambda h: h + h[:32],
    "no hashes": lambda h: b"",
    "not whole hashes": lambda h: h[:-1],
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
@pytest.mark.parametrize("torrent", ["big", "small"])
def test_tampered_answers_are_refused_and_nothing_is_stored(
    request: pytest.FixtureRequest, torrent: str, tamper: Callable[[bytes], bytes]
) -> None:
    full, _ = request.getfixturevalue(torrent)
    fetcher, asked, reply = _first_answer(full)
    forged = dataclasses.replace(reply, hashes=tamper(reply.hashes))
    if len(forged.hashes) % 32 == 0:
        wired = over_the_wire(forged)
        assert isinstance(wired, Hashes)
        forged = wired
    with pytest.raises(IntegrityError):
        fetcher.hashes_received("liar", forged)
    assert fetcher.piece_layers() == {} and not fetcher.complete
    # The liar is not asked for that chunk again; an honest peer gets it and finishes.
    assert fetcher.next_request("liar", 1000.0) != asked
    fetcher.peer_lost("liar")
    exchange(fetcher, {"honest": HashServer(full)})
    assert fetcher.piece_layers() == full.piece_layers


def test_a_wrong_proof_is_refused(big: tuple[Metainfo, Path]) -> None:
    full, _ = big
    fetcher = PieceLayerFetcher(strip(full))
    server = HashServer(full)
    first = fetcher.next_request("liar", 0.0)
    second = fetcher.next_request("liar", 0.0)
    assert first is not None and second is not None
    good = ask(server, first)
    other = ask(server, second)
    assert isinstance(good, Hashes) and isinstance(other, Hashes)
    # Right base hashes, but the uncles of another chunk.
    base = good.hashes[: 32 * first.length]
    uncles = other.hashes[32 * second.length :]
    assert len(uncles) == len(good.hashes) - len(base)
    with pytest.raises(IntegrityError):
        fetcher.hashes_received("liar", dataclasses.replace(good, hashes=base + uncles))
    # Every uncle on its own matters.
    for position in range(32 * first.length, len(good.hashes), 32):
        again = PieceLayerFetcher(strip(full))
        assert again.next_request("liar", 0.0) == first
        with pytest.raises(IntegrityError):
            again.hashes_received(
                "liar", dataclasses.replace(good, hashes=flip(good.hashes, position))
            )
    assert fetcher.piece_layers() == {}


def test_another_files_valid_answer_is_refused(twins: tuple[Metainfo, Path]) -> None:
    full, _ = twins
    first, second = data_roots(full)
    fetcher = PieceLayerFetcher(strip(full))
    request = fetcher.next_request("liar", 0.0)
    assert request is not None and request.pieces_root == first
    # A genuine, self-consistent answer about the other file, relabelled.
    genuine = ask(HashServer(full), dataclasses.replace(request, pieces_root=second))
    assert isinstance(genuine, Hashes)
    with pytest.raises(IntegrityError):
        fetcher.hashes_received("liar", dataclasses.replace(genuine, pieces_root=first))
    assert fetcher.piece_layers() == {}


MISDIRECTIONS: dict[str, Callable[[Hashes, bytes], Hashes]] = {
    "other root": lambda m, other: dataclasses.replace(m, pieces_root=other),
    "other index": lambda m, other: dataclasses.replace(m, index=m.index + m.length),
    "other length": lambda m, other: dataclasses.replace(m, length=m.length // 2),
    "other proof layers": lambda m, other: dataclasses.replace(m, proof_layers=m.proof_layers + 1),
    "other base layer": lambda m, other: dataclasses.replace(m, base_layer=m.base_layer + 1),
}


@pytest.mark.parametrize("misdirect", MISDIRECTIONS.values(), ids=MISDIRECTIONS.keys())
def test_answers_to_questions_not_asked_are_refused(
    twins: tuple[Metainfo, Path], misdirect: Callable[[Hashes, bytes], Hashes]
) -> None:
    full, _ = twins
    first, second = data_roots(full)
    fetcher = PieceLayerFetcher(strip(full))
    request = fetcher.next_request("peer", 0.0)
    assert request is not None and request.pieces_root == first
    reply = ask(HashServer(full), request)
    assert isinstance(reply, Hashes)
    with pytest.raises(RemoteProtocolError):
        fetcher.hashes_received("peer", misdirect(reply, second))
    assert fetcher.piece_layers() == {}
    # The real question is still open and its real answer still counts.
    assert fetcher.hashes_received("peer", reply)


def test_unsolicited_answers_are_refused(big: tuple[Metainfo, Path]) -> None:
    full, _ = big
    fetcher = PieceLayerFetcher(strip(full))
    request = HashRequest(data_roots(full)[0], 0, 0, 512, merkle.tree_height(full.total_length) - 1)
    reply = ask(HashServer(full), request)
    assert isinstance(reply, Hashes)
    with pytest.raises(RemoteProtocolError):
        fetcher.hashes_received("stranger", reply)  # never asked anyone
    assert fetcher.next_request("asked", 0.0) == request
    with pytest.raises(RemoteProtocolError):
        fetcher.hashes_received("stranger", reply)  # asked someone else
    assert fetcher.piece_layers() == {}
    assert fetcher.hashes_received("asked", reply)
    with pytest.raises(RemoteProtocolError):
        fetcher.hashes_received("asked", reply)  # answered twice


def test_the_codec_refuses_a_hashes_field_of_partial_hashes(small: tuple[Metainfo, Path]) -> None:
    _, _, reply = _first_answer(small[0])
    frame = encode(reply)
    body = frame[4:] + b"\x00"
    with pytest.raises(RemoteProtocolError):
        MessageDecoder(expect_handshake=False).feed(struct.pack(">I", len(body)) + body)


# ---------------------------------------------------------------- scheduling


def test_one_peer_per_chunk_and_a_bounded_queue_per_peer(big: tuple[Metainfo, Path]) -> None:
    fetcher = PieceLayerFetcher(strip(big[0]), max_requests_per_peer=2)
    assert fetcher.wanted()
    a = [fetcher.next_request("a", 0.0), fetcher.next_request("a", 0.0)]
    assert fetcher.next_request("a", 0.0) is None  # its queue is full
    b = fetcher.next_request("b", 0.0)
    assert b is not None and b not in a
    assert not fetcher.wanted()
    assert fetcher.next_request("c", 0.0) is None  # every chunk is being fetched


def test_a_timed_out_chunk_goes_to_another_peer(big: tuple[Metainfo, Path]) -> None:
    full, _ = big
    server = HashServer(full)
    fetcher = PieceLayerFetcher(strip(full), timeout=10.0, retry_after=30.0)
    slow = fetcher.next_request("slow", 0.0)
    assert slow is not None
    assert fetcher.expire(9.0) == []
    assert fetcher.expire(10.0) == [("slow", slow)]
    assert fetcher.next_request("slow", 11.0) not in (None, slow)
    assert fetcher.next_request("fast", 11.0) == slow
    fast_reply = ask(server, slow)
    assert isinstance(fast_reply, Hashes)
    assert fetcher.hashes_received("fast", fast_reply)
    # The slow peer's late answer is still checked: good but no longer needed.
    assert not fetcher.hashes_received("slow", fast_reply)
    with pytest.raises(RemoteProtocolError):
        fetcher.hashes_received("slow", fast_reply)


def test_a_late_answer_that_proves_out_is_kept(small: tuple[Metainfo, Path]) -> None:
    full, _ = small
    fetcher = PieceLayerFetcher(strip(full), timeout=10.0, retry_after=30.0)
    request = fetcher.next_request("slow", 0.0)
    assert request is not None
    assert fetcher.expire(20.0) == [("slow", request)]
    assert fetcher.next_request("slow", 21.0) is None  # not before retry_after
    reply = ask(HashServer(full), request)
    assert isinstance(reply, Hashes)
    assert fetcher.hashes_received("slow", reply)
    assert fetcher.complete and fetcher.piece_layers() == full.piece_layers


def test_a_late_lie_is_still_caught(small: tuple[Metainfo, Path]) -> None:
    full, _ = small
    fetcher, _, reply = _first_answer(full)
    fetcher.expire(1000.0)
    with pytest.raises(IntegrityError):
        fetcher.hashes_received("liar", dataclasses.replace(reply, hashes=flip(reply.hashes, 3)))
    assert fetcher.piece_layers() == {}


def test_a_slow_peer_is_asked_again_after_retry_after(small: tuple[Metainfo, Path]) -> None:
    fetcher = PieceLayerFetcher(strip(small[0]), timeout=10.0, retry_after=30.0)
    request = fetcher.next_request("slow", 0.0)
    fetcher.expire(20.0)
    assert fetcher.next_request("slow", 49.0) is None
    assert fetcher.next_request("slow", 50.0) == request


def test_a_rejected_chunk_goes_to_another_peer(small: tuple[Metainfo, Path]) -> None:
    full, _ = small
    fetcher = PieceLayerFetcher(strip(full), retry_after=30.0)
    request = fetcher.next_request("a", 0.0)
    assert request is not None
    reject = ask(HashServer(strip(full)), request)  # a peer without the layers
    assert isinstance(reject, HashReject)
    fetcher.hash_rejected("a", reject)
    assert fetcher.wanted()
    assert fetcher.next_request("a", 1.0) is None
    assert fetcher.next_request("b", 1.0) == request
    fetcher.hash_rejected("b", dataclasses.replace(reject, index=64))  # matches nothing: ignored
    assert not fetcher.wanted()


def test_peers_without_the_layers_are_skipped(big: tuple[Metainfo, Path]) -> None:
    full, _ = big
    fetcher = PieceLayerFetcher(strip(full))
    asked = exchange(fetcher, {"leecher": HashServer(strip(full)), "seed": HashServer(full)})
    assert fetcher.piece_layers() == full.piece_layers
    assert len(asked) == 6  # each chunk: rejected by the leecher once, then answered


def test_a_lost_peer_frees_its_chunks(small: tuple[Metainfo, Path]) -> None:
    fetcher = PieceLayerFetcher(strip(small[0]))
    request = fetcher.next_request("a", 0.0)
    assert fetcher.next_request("b", 0.0) is None
    fetcher.peer_lost("a")
    assert fetcher.next_request("b", 0.0) == request


def test_chunks_go_to_peers_that_have_their_pieces(big: tuple[Metainfo, Path]) -> None:
    fetcher = PieceLayerFetcher(strip(big[0]))
    assert fetcher.next_request("empty", 0.0, peer_has=lambda piece: False) is None
    request = fetcher.next_request("tail", 0.0, peer_has=lambda piece: piece == 1099)
    assert request is not None and request.index == 1024
    request = fetcher.next_request("head", 0.0, peer_has=lambda piece: piece < 600)
    assert request is not None and request.index == 0


# ---------------------------------------------------------------- serving


def test_layers_above_the_piece_layer_are_served_and_prove_out(
    small: tuple[Metainfo, Path],
) -> None:
    full, _ = small
    entry = full.files[0]
    root = entry.pieces_root
    assert root is not None
    height = merkle.tree_height(entry.length)
    server = HashServer(full)
    layer = merkle.split_layer(full.piece_layers[root])
    padded = layer + [merkle.zero_subtree_root(2)] * (64 - len(layer))
    parents = [merkle.merkle_root(padded[i : i + 2], 1, base=2) for i in range(0, len(padded), 2)]
    reply = ask(server, HashRequest(root, 3, 4, 4, height - 3 - 1))
    assert isinstance(reply, Hashes)
    got = merkle.verify_hashes(root, 3, height, 4, 4, height - 4, merkle.split_layer(reply.hashes))
    assert got == parents[4:8]


def test_libtorrent_and_anacrolix_style_whole_layer_requests(small: tuple[Metainfo, Path]) -> None:
    full, _ = small
    root = full.files[0].pieces_root
    assert root is not None
    top = merkle.tree_height(full.files[0].length) - 2
    server = HashServer(full)
    libtorrent = ask(server, HashRequest(root, 2, 0, 64, top - 1))
    anacrolix = ask(server, HashRequest(root, 2, 0, 64, 0))
    assert isinstance(libtorrent, Hashes) and isinstance(anacrolix, Hashes)
    assert libtorrent.hashes == anacrolix.hashes
    assert libtorrent.hashes[: len(full.piece_layers[root])] == full.piece_layers[root]
    truncated = ask(server, HashRequest(root, 2, 0, 128, 0))
    assert isinstance(truncated, Hashes) and truncated.hashes == anacrolix.hashes


def _bad_requests(root: bytes, other: bytes, top: int) -> dict[str, HashRequest]:
    return {
        "unknown root": HashRequest(bytes(32), 2, 0, 2, 0),
        "index not a multiple of length": HashRequest(root, 2, 2, 4, 0),
        "length not a power of two": HashRequest(root, 2, 0, 3, 0),
        "length one": HashRequest(root, 2, 4, 1, 0),
        "length zero": HashRequest(root, 2, 0, 0, 0),
        "index past the layer": HashRequest(root, 2, 64, 2, 0),
        "huge index": HashRequest(root, 2, 2**32 - 2, 2, 0),
        "too many proof layers": HashRequest(root, 2, 0, 2, top),
        "base layer at the root": HashRequest(root, 2 + top, 0, 2, 0),
        "base layer above the root": HashRequest(root, 40, 0, 2, 0),
        "layer between leaves and pieces": HashRequest(root, 1, 0, 2, 0),
        "leaves without a leaf source": HashRequest(root, 0, 0, 4, 0),
        "more than we answer at once": HashRequest(root, 0, 0, 2**14, 0),
        "one-piece file": HashRequest(other, 2, 0, 2, 0),
    }


def test_malformed_and_out_of_range_requests_are_rejected(
    make_release: Callable[..., Path],
) -> None:
    folder = make_release(sizes=(36 * 64 * KIB + 20_000, 50_000))
    full = create_torrent(folder, version="v2", piece_length=64 * KIB)
    big_entry, small_entry = full.data_files()
    assert big_entry.pieces_root is not None and small_entry.pieces_root is not None
    top = merkle.tree_height(big_entry.length) - 2
    server = HashServer(full)
    for name, request in _bad_requests(big_entry.pieces_root, small_entry.pieces_root, top).items():
        reply = ask(server, request)
        assert isinstance(reply, HashReject), name
        assert dataclasses.astuple(reply) == dataclasses.astuple(request), name
    good = HashRequest(big_entry.pieces_root, 2, 0, 64, 0)
    assert isinstance(ask(HashServer(full), good), Hashes)
    assert isinstance(ask(HashServer(full, max_length=32), good), HashReject)
    assert isinstance(ask(HashServer(strip(full)), good), HashReject)


# ---------------------------------------------------------------- leaves and blame


def _leaf_source(metainfo: Metainfo, source: Path) -> Callable[[bytes, int], list[bytes] | None]:
    """What a session would do: hash the blocks of one piece it holds on disk."""
    files = {entry.pieces_root: entry for entry in metainfo.data_files()}
    data = piece_space(metainfo, source)

    def leaf_hashes(root: bytes, piece: int) -> list[bytes] | None:
        entry = files.get(root)
        if entry is None:
            return None
        start = entry.offset + piece * metainfo.piece_length
        stop = min(start + metainfo.piece_length, entry.end)
        return merkle.block_hashes(data[start:stop])

    return leaf_hashes


@pytest.mark.parametrize(
    ("piece", "corrupt"),
    [
        pytest.param(5, [2], id="one block in the middle"),
        pytest.param(0, [0, 3], id="two blocks of the first piece"),
        pytest.param(36, [1], id="the short last block of the last piece"),
        pytest.param(36, [0], id="a full block of the last piece"),
        pytest.param(20, [0, 1, 2, 3], id="every block"),
    ],
)
def test_the_corrupt_blocks_and_only_they_are_named(
    small: tuple[Metainfo, Path], piece: int, corrupt: list[int]
) -> None:
    full, source = small
    server = HashServer(full, leaf_hashes=_leaf_source(full, source))
    blame = BlockBlame(full)
    good = pieces_of(full, piece_space(full, source))[piece]
    bad = bytearray(good)
    for block in corrupt:
        bad[block * BLOCK + 7] ^= 0xFF
    assert not PieceVerifier(full).verify(piece, bad)

    request = blame.leaf_request(piece)
    assert request is not None
    assert (request.base_layer, request.index, request.length) == (0, piece * 4, 4)
    reply = ask(server, request)
    assert isinstance(reply, Hashes)
    leaves = blame.leaves_received(piece, reply)
    received = blame.block_hashes(piece, bad)
    assert blame.bad_blocks(blame.piece_hash(piece), received, leaves) == corrupt
    assert blame.bad_blocks(blame.piece_hash(piece), blame.block_hashes(piece, good), leaves) == []


def test_leaves_of_a_one_piece_file_and_of_one_block_pieces(
    twins: tuple[Metainfo, Path],
) -> None:
    full, source = twins
    blame = BlockBlame(full)
    server = HashServer(full, leaf_hashes=_leaf_source(full, source))
    pieces = pieces_of(full, piece_space(full, source))
    # 16 KiB pieces: a piece is one block, its hash is its only leaf.
    assert blame.leaf_request(3) is None
    bad = flip(pieces[3], 100)
    ph = blame.piece_hash(3)
    assert blame.bad_blocks(ph, blame.block_hashes(3, bad), [ph]) == [0]
    assert blame.bad_blocks(ph, blame.block_hashes(3, pieces[3]), [ph]) == []
    # The 3000-byte file is one block too; its hash is its root.
    tiny = next(e for e in full.data_files() if e.path[-1] == "tiny.bin")
    assert blame.piece_hash(tiny.offset // BLOCK) == tiny.pieces_root
    # A leaf request with proofs all the way to the root, as libtorrent sends one.
    a = full.data_files()[0]
    assert a.pieces_root is not None
    height = merkle.tree_height(a.length)
    reply = ask(server, HashRequest(a.pieces_root, 0, 6, 2, height - 1))
    assert isinstance(reply, Hashes)
    leaves = merkle.verify_hashes(
        a.pieces_root, 0, height, 6, 2, height - 1, merkle.split_layer(reply.hashes)
    )
    assert leaves == [merkle.block_hashes(pieces[6])[0], merkle.block_hashes(pieces[7])[0]]


def test_a_small_multi_block_file_is_blamed_against_its_root(
    make_release: Callable[..., Path],
) -> None:
    folder = make_release(sizes=(3 * BLOCK + 10, 5 * 64 * KIB))
    full = create_torrent(folder, version="v2", piece_length=64 * KIB)
    small_entry = next(e for e in full.data_files() if e.length < full.piece_length)
    piece = small_entry.offset // full.piece_length
    blame = BlockBlame(full)
    request = blame.leaf_request(piece)
    assert request is not None and (request.index, request.length) == (0, 4)
    reply = ask(HashServer(full, leaf_hashes=_leaf_source(full, folder)), request)
    assert isinstance(reply, Hashes)
    leaves = blame.leaves_received(piece, reply)
    data = bytearray(pieces_of(full, piece_space(full, folder))[piece])
    data[3 * BLOCK + 2] ^= 1
    assert blame.bad_blocks(blame.piece_hash(piece), blame.block_hashes(piece, data), leaves) == [3]


def test_lying_leaves_are_refused(small: tuple[Metainfo, Path]) -> None:
    full, source = small
    blame = BlockBlame(full)
    server = HashServer(full, leaf_hashes=_leaf_source(full, source))
    request = blame.leaf_request(5)
    assert request is not None
    reply = ask(server, request)
    assert isinstance(reply, Hashes)
    with pytest.raises(IntegrityError):
        blame.leaves_received(5, dataclasses.replace(reply, hashes=flip(reply.hashes, 40)))
    with pytest.raises(IntegrityError):
        blame.leaves_received(5, dataclasses.replace(reply, hashes=reply.hashes[:-32]))
    with pytest.raises(RemoteProtocolError):
        blame.leaves_received(6, reply)  # an answer about another piece
    leaves = blame.leaves_received(5, reply)
    forged = [leaves[1], *leaves[1:]]
    with pytest.raises(IntegrityError):
        blame.bad_blocks(blame.piece_hash(5), leaves, forged)
    with pytest.raises(IntegrityError):
        blame.bad_blocks(blame.piece_hash(5), leaves, leaves[:3])
    with pytest.raises(IntegrityError):
        blame.bad_blocks(blame.piece_hash(5), [*leaves, leaves[0]], leaves)


def test_leaves_are_not_served_from_a_damaged_copy(small: tuple[Metainfo, Path]) -> None:
    full, source = small
    honest = _leaf_source(full, source)

    def damaged(root: bytes, piece: int) -> list[bytes] | None:
        leaves = honest(root, piece)
        assert leaves is not None
        return [flip(leaves[0], 0), *leaves[1:]]

    root = full.files[0].pieces_root
    assert root is not None
    one_piece = HashRequest(root, 0, 8, 4, 0)
    assert isinstance(ask(HashServer(full, leaf_hashes=damaged), one_piece), HashReject)
    missing = HashServer(full, leaf_hashes=lambda root, piece: None)
    assert isinstance(ask(missing, one_piece), HashReject)
    server = HashServer(full, leaf_hashes=honest)
    assert isinstance(ask(server, one_piece), Hashes)
    assert isinstance(ask(server, HashRequest(root, 0, 8, 8, 0)), HashReject)  # two pieces


def test_blame_needs_v2_and_known_layers(
    make_release: Callable[..., Path], small: tuple[Metainfo, Path]
) -> None:
    v1 = create_torrent(make_release(sizes=(40_000,)), version="v1", piece_length=BLOCK)
    with pytest.raises(MetainfoError):
        BlockBlame(v1)
    blame = BlockBlame(strip(small[0]))
    with pytest.raises(IntegrityError, match="piece layers unknown"):
        blame.piece_hash(0)
    with pytest.raises(IntegrityError):
        blame.leaf_request(small[0].num_pieces)


# ---------------------------------------------------------------- properties


def synthetic_torrent(piece_counts: Sequence[int], piece_length: int, seed: int) -> Metainfo:
    """A v2 torrent whose piece layers are random hashes: no data, any size, built fast."""
    rng = random.Random(seed)
    tree: dict[bytes, object] = {}
    layers: dict[bytes, bytes] = {}
    for number, pieces in enumerate(piece_counts):
        layer = [rng.randbytes(32) for _ in range(pieces)]
        root = merkle.root_from_piece_layer(layer, piece_length) if pieces > 1 else layer[0]
        length = (pieces - 1) * piece_length + 1 + rng.randrange(piece_length)
        tree[f"file{number}".encode()] = {b"": {b"length": length, b"pieces root": root}}
        if pieces > 1:
            layers[root] = b"".join(layer)
    info = {
        b"file tree": tree,
        b"meta version": 2,
        b"name": b"synthetic",
        b"piece length": piece_length,
    }
    return Metainfo.from_bytes(bencode.encode({b"info": info, b"piece layers": layers}))


piece_counts = st.lists(st.integers(min_value=1, max_value=1300), min_size=1, max_size=3)
piece_lengths = st.sampled_from([BLOCK, 32 * KIB, 256 * KIB])


@settings(max_examples=100, deadline=None)
@given(
    counts=piece_counts,
    piece_length=piece_lengths,
    rejecting=st.lists(st.booleans(), min_size=0, max_size=3),
    seed=st.integers(0, 2**32),
)
def test_any_layers_are_fetched_whole_through_peers_that_may_refuse(
    counts: list[int], piece_length: int, rejecting: list[bool], seed: int
) -> None:
    full = synthetic_torrent(counts, piece_length, seed)
    bare = strip(full)
    servers = {f"peer{i}": HashServer(bare if r else full) for i, r in enumerate(rejecting)}
    servers["seed"] = HashServer(full)
    fetcher = PieceLayerFetcher(bare)
    exchange(fetcher, servers)
    assert fetcher.complete
    assert fetcher.piece_layers() == full.piece_layers
    bare.with_piece_layers(fetcher.piece_layers())  # Metainfo checks them once more


@settings(max_examples=100, deadline=None)
@given(
    pieces=st.integers(min_value=2, max_value=1300),
    piece_length=piece_lengths,
    chunk=st.integers(min_value=0),
    position=st.integers(min_value=0),
    seed=st.integers(0, 2**32),
)
def test_any_flipped_bit_in_any_answer_is_caught(
    pieces: int, piece_length: int, chunk: int, position: int, seed: int
) -> None:
    full = synthetic_torrent([pieces], piece_length, seed)
    fetcher = PieceLayerFetcher(strip(full))
    asked = []
    while (request := fetcher.next_request("liar", 0.0)) is not None:
        asked.append(request)
    request = asked[chunk % len(asked)]
    reply = ask(HashServer(full), request)
    assert isinstance(reply, Hashes)
    forged = dataclasses.replace(reply, hashes=flip(reply.hashes, position % len(reply.hashes)))
    with pytest.raises(IntegrityError):
        fetcher.hashes_received("liar", forged)
    assert fetcher.piece_layers() == {}


@settings(max_examples=100, deadline=None)
@given(
    blocks_per_piece=st.sampled_from([2, 4, 8, 16]),
    data=st.data(),
)
def test_blame_names_exactly_the_altered_blocks(blocks_per_piece: int, data: st.DataObject) -> None:
    blocks = data.draw(st.integers(1, blocks_per_piece), label="blocks")
    tail = data.draw(st.integers(1, BLOCK), label="last block size")
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    piece = rng.randbytes((blocks - 1) * BLOCK + tail)
    altered = sorted(data.draw(st.sets(st.integers(0, blocks - 1)), label="altered"))
    bad = bytearray(piece)
    for block in altered:
        offset = block * BLOCK + rng.randrange(min(BLOCK, len(piece) - block * BLOCK))
        bad[offset] ^= 1 << rng.randrange(8)
    expected = merkle.piece_hash(piece, blocks_per_piece * BLOCK)
    leaves = merkle.block_hashes(piece)
    leaves += [bytes(32)] * (blocks_per_piece - len(leaves))
    named = BlockBlame.bad_blocks(expected, merkle.block_hashes(bad), leaves)
    assert named == altered


def test_a_partial_leaf_request_is_proven_through_the_piece_and_up_to_the_root(
    small: tuple[Metainfo, Path],
) -> None:
    full, source = small
    [entry] = full.data_files()
    assert entry.pieces_root is not None
    height = merkle.tree_height(entry.length)
    server = HashServer(full, leaf_hashes=_leaf_source(full, source))
    # Two of piece 5's four leaves: the first uncle lies inside the piece, the rest above it.
    index, proof_layers = 5 * 4 + 2, height - 1
    reply = ask(server, HashRequest(entry.pieces_root, 0, index, 2, proof_layers))
    assert isinstance(reply, Hashes)
    leaves = merkle.verify_hashes(
        entry.pieces_root, 0, height, index, 2, proof_layers, merkle.split_layer(reply.hashes)
    )
    piece = pieces_of(full, piece_space(full, source))[5]
    assert leaves == merkle.block_hashes(piece)[2:4]


def test_leaf_hashes_of_the_wrong_size_from_our_own_disk_are_not_served(
    small: tuple[Metainfo, Path],
) -> None:
    full, _ = small
    [entry] = full.data_files()
    assert entry.pieces_root is not None
    server = HashServer(full, leaf_hashes=lambda root, piece: [b"short"] * 4)
    reply = ask(server, HashRequest(entry.pieces_root, 0, 0, 4, 0))
    assert isinstance(reply, HashReject)


def _padding_only_torrents(folder: Path) -> list[Metainfo]:
    """Hostile but well-formed hybrids whose last piece holds nothing but v1 padding."""
    piece = 32 * KIB
    write(folder / "rel" / "a.bin", 3 * piece, seed=1)
    write(folder / "rel" / "b.bin", piece + 100, seed=2)
    top = bencode.decode(create_torrent(folder / "rel", piece_length=piece).to_bytes())
    info = top[b"info"]
    pad = -(4 * piece + 100) % piece + piece  # to the next boundary, then one whole piece
    info[b"files"].append({b"attr": b"p", b"length": pad, b"path": [b".pad", b"pad"]})
    info[b"pieces"] += hashlib.sha1(bytes(piece)).digest()
    trailing = Metainfo.from_bytes(bencode.encode(top))
    empty = {b"": {b"length": 0}}
    only_padding = {
        b"name": b"rel",
        b"piece length": piece,
        b"meta version": 2,
        b"file tree": {b"a": empty, b"b": empty},
        b"files": [
            {b"length": 0, b"path": [b"a"]},
            {b"length": 0, b"path": [b"b"]},
            {b"attr": b"p", b"length": piece, b"path": [b".pad", b"pad"]},
        ],
        b"pieces": hashlib.sha1(bytes(piece)).digest(),
    }
    return [trailing, Metainfo.from_bytes(bencode.encode({b"info": only_padding}))]


def test_a_piece_of_only_padding_must_be_zeros_and_has_no_blocks_to_blame(
    tmp_path: Path,
) -> None:
    for metainfo in _padding_only_torrents(tmp_path):
        last = metainfo.num_pieces - 1
        size = metainfo.piece_size(last)
        verifier = PieceVerifier(metainfo)
        assert verifier.can_verify(last)
        assert verifier.verify(last, bytes(size))
        assert not verifier.verify(last, b"\x01" + bytes(size - 1))
        with pytest.raises(IntegrityError, match="only padding"):
            BlockBlame(metainfo).leaf_request(last)
