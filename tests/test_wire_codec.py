"""The wire codec: round trips, vectors, chunking independence, bounded buffering."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.errors import LocalProtocolError, RemoteProtocolError
from opendistro.wire import messages as m
from opendistro.wire.codec import (
    BLOCK_SIZE,
    MessageDecoder,
    encode,
    encode_piece_header,
    peek_handshake_info_hash,
)

VECTORS = Path(__file__).resolve().parent.parent / "extensions" / "bep3_bep6_vectors.json"
INFO_HASH = bytes(range(20))
PEER_ID = b"-OD0001-abcdefghijkl"
ROOT = bytes(range(100, 132))

ALL_MESSAGES: list[m.Message] = [
    m.KeepAlive(),
    m.Choke(),
    m.Unchoke(),
    m.Interested(),
    m.NotInterested(),
    m.Have(0),
    m.Have(2**32 - 1),
    m.BitfieldMessage(b"\xff\x80"),
    m.BitfieldMessage(b""),
    m.Request(1, 16384, 16384),
    m.Piece(7, 32768, b"block" * 100),
    m.Piece(0, 0, b""),
    m.Cancel(1, 16384, 16384),
    m.Port(6881),
    m.SuggestPiece(4),
    m.HaveAll(),
    m.HaveNone(),
    m.RejectRequest(1, 0, 16384),
    m.AllowedFast(3),
    m.HashRequest(ROOT, 0, 0, 512, 3),
    m.Hashes(ROOT, 0, 0, 2, 0, b"\x01" * 64),
    m.Hashes(ROOT, 1, 4, 0, 0, b""),
    m.HashReject(ROOT, 0, 0, 512, 3),
    m.Extended(0, b"d1:md11:ut_metadatai3eee"),
    m.Extended(3, b""),
]


def decode_all(data: bytes, *, handshake: bool = False) -> list[m.Message]:
    return MessageDecoder(expect_handshake=handshake).feed(data)


@pytest.mark.parametrize("message", ALL_MESSAGES, ids=lambda msg: type(msg).__name__)
def test_round_trip(message: m.Message) -> None:
    assert decode_all(encode(message)) == [message]


def test_handshake_round_trip_and_flags() -> None:
    handshake = m.Handshake(INFO_HASH, PEER_ID, m.make_reserved(fast=True, dht=True, v2=True))
    data = encode(handshake)
    assert len(data) == 68
    assert data[:20] == b"\x13BitTorrent protocol"
    (decoded,) = decode_all(data, handshake=True)
    assert decoded == handshake
    assert isinstance(decoded, m.Handshake)
    assert decoded.supports_fast and decoded.supports_extensions
    assert decoded.supports_dht and decoded.supports_v2
    plain = m.Handshake(INFO_HASH, PEER_ID, bytes(8))
    assert not (plain.supports_fast or plain.supports_extensions or plain.supports_dht)


def test_reserved_bits_are_the_documented_ones() -> None:
    assert m.make_reserved(fast=True, extensions=False) == bytes([0, 0, 0, 0, 0, 0, 0, 0x04])
    assert m.make_reserved(fast=False, extensions=True) == bytes([0, 0, 0, 0, 0, 0x10, 0, 0])
    assert m.make_reserved(fast=False, extensions=False, dht=True) == bytes(7) + b"\x01"


def test_handshake_rejects_wrong_sizes() -> None:
    with pytest.raises(LocalProtocolError):
        m.Handshake(b"short", PEER_ID)
    with pytest.raises(LocalProtocolError, match="peer id"):
        m.Handshake(INFO_HASH, PEER_ID + b"!")
    with pytest.raises(LocalProtocolError):
        m.Handshake(INFO_HASH, PEER_ID, b"\0")


@pytest.mark.parametrize(
    "message",
    [
        m.Have(-1),
        m.Have(2**32),
        m.Request(0, 0, 2**32),
        m.Port(65536),
        m.Extended(256, b""),
        m.HashRequest(b"short", 0, 0, 1, 0),
        m.Hashes(ROOT, 0, 0, 1, 0, b"\0" * 31),
    ],
    ids=repr,
)
def test_encoding_out_of_range_fields_is_a_local_error(message: m.Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode(message)


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(LocalProtocolError):
        encode("choke")  # type: ignore[arg-type]


def test_piece_header_matches_full_encoding() -> None:
    block = bytes(range(256)) * 64
    assert encode_piece_header(5, 16384, len(block)) + block == encode(m.Piece(5, 16384, block))
    assert len(encode_piece_header(0, 0, BLOCK_SIZE)) == 13


@pytest.mark.parametrize(("index", "begin", "length"), [(-1, 0, 1), (0, 2**32, 1), (0, 0, 2**32)])
def test_piece_header_out_of_range_is_a_local_error(index: int, begin: int, length: int) -> None:
    with pytest.raises(LocalProtocolError, match="out of range"):
        encode_piece_header(index, begin, length)


def test_the_decoder_reports_when_the_handshake_is_done() -> None:
    decoder = MessageDecoder()
    data = encode(m.Handshake(INFO_HASH, PEER_ID))
    assert decoder.awaiting_handshake
    assert decoder.feed(data[:30]) == []
    assert decoder.awaiting_handshake and decoder.buffered == 30
    assert decoder.feed(data[30:] + encode(m.Interested())) == [
        m.Handshake(INFO_HASH, PEER_ID),
        m.Interested(),
    ]
    assert not decoder.awaiting_handshake and decoder.buffered == 0


def test_a_buffer_of_wider_items_is_read_as_its_bytes() -> None:
    """A memoryview over, say, 16-bit items is decoded byte for byte, not item by item."""
    stream = encode(m.Have(7)) + encode(m.Unchoke())  # 9 + 5 bytes: an even 14
    wide = memoryview(bytearray(stream)).cast("H")
    assert MessageDecoder(expect_handshake=False).feed(wide) == [m.Have(7), m.Unchoke()]


def test_many_messages_in_one_feed() -> None:
    stream = b"".join(encode(message) for message in ALL_MESSAGES)
    assert decode_all(stream) == ALL_MESSAGES


def test_every_split_point_gives_the_same_events() -> None:
    handshake = m.Handshake(INFO_HASH, PEER_ID)
    expected = [handshake, *ALL_MESSAGES]
    stream = b"".join(encode(message) for message in expected)
    for cut in range(len(stream) + 1):
        decoder = MessageDecoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == expected, cut
        assert decoder.buffered == 0


def test_byte_at_a_time() -> None:
    stream = b"".join(encode(message) for message in ALL_MESSAGES)
    decoder = MessageDecoder(expect_handshake=False)
    got: list[m.Message] = []
    for i in range(len(stream)):
        got += decoder.feed(memoryview(stream)[i : i + 1])
    assert got == ALL_MESSAGES


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_arbitrary_chunking_gives_the_same_events(data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(ALL_MESSAGES), max_size=30))
    stream = b"".join(encode(message) for message in chosen)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = MessageDecoder(expect_handshake=False)
    got: list[m.Message] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(bytearray(stream[previous:cut]))
        previous = cut
    assert got == chosen


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400),
    st.lists(st.integers(0, 400), max_size=8),
    st.booleans(),
)
def test_garbage_only_raises_remote_protocol_error(
    garbage: bytes, cuts: list[int], handshake: bool
) -> None:
    decoder = MessageDecoder(max_message_size=300, expect_handshake=handshake)
    previous = 0
    try:
        for cut in [*sorted(c for c in cuts if c <= len(garbage)), len(garbage)]:
            for message in decoder.feed(garbage[previous:cut]):
                assert dataclasses.is_dataclass(message)
            previous = cut
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            decoder.feed(b"\0\0\0\0")  # a failed stream stays failed
    assert decoder.buffered <= 300 + 4


def test_huge_length_prefix_fails_before_buffering() -> None:
    decoder = MessageDecoder(expect_handshake=False)
    assert decoder.feed(b"\x00\x10") == []
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"\x00\x01")  # 0x00100001 = 1 MiB + 1
    assert decoder.buffered <= 4


def test_length_at_the_limit_is_accepted() -> None:
    decoder = MessageDecoder(max_message_size=9 + BLOCK_SIZE, expect_handshake=False)
    piece = m.Piece(1, 0, b"\xaa" * BLOCK_SIZE)
    assert decoder.feed(encode(piece)) == [piece]
    with pytest.raises(RemoteProtocolError):
        decoder.feed(encode(m.Piece(1, 0, b"\xaa" * (BLOCK_SIZE + 1))))


def test_unknown_ids_are_skipped_and_counted() -> None:
    decoder = MessageDecoder(expect_handshake=False)
    stream = struct.pack(">IB", 4, 99) + b"xyz" + encode(m.Unchoke())
    assert decoder.feed(stream) == [m.Unchoke()]
    assert decoder.unknown_messages == 1


def test_an_unknown_message_split_across_reads_is_skipped_too() -> None:
    decoder = MessageDecoder(expect_handshake=False)
    unknown = struct.pack(">IB", 4, 99) + b"xyz"
    assert decoder.feed(unknown[:3]) == []
    assert decoder.feed(unknown[3:]) == []
    assert decoder.unknown_messages == 1 and decoder.buffered == 0
    assert decoder.feed(encode(m.Unchoke())) == [m.Unchoke()]


def test_peek_handshake_info_hash() -> None:
    data = encode(m.Handshake(INFO_HASH, PEER_ID))
    assert peek_handshake_info_hash(data[:47]) is None
    assert peek_handshake_info_hash(data[:48]) == INFO_HASH
    assert peek_handshake_info_hash(data) == INFO_HASH
    with pytest.raises(RemoteProtocolError):
        peek_handshake_info_hash(b"\x13BitTorrent protocoX")
    with pytest.raises(RemoteProtocolError):
        peek_handshake_info_hash(b"GET / HTTP/1.1\r\n")


def test_pieces_from_a_reused_read_buffer_are_not_aliased() -> None:
    """A driver may recv_into one bytearray again and again; blocks must survive that."""
    buffer = bytearray(encode(m.Piece(0, 0, b"A" * 100)))
    decoder = MessageDecoder(expect_handshake=False)
    (piece,) = decoder.feed(buffer)
    buffer[:] = b"B" * len(buffer)
    assert isinstance(piece, m.Piece)
    assert bytes(piece.data) == b"A" * 100


def test_block_path_throughput_64_mib() -> None:
    """64 MiB of 16 KiB Piece messages fed in 256 KiB reads (run, not timed)."""
    block = b"\x5a" * BLOCK_SIZE
    frame = encode(m.Piece(0, 0, block))
    stream = frame * ((64 << 20) // BLOCK_SIZE)
    decoder = MessageDecoder(expect_handshake=False)
    view = memoryview(stream)
    received = 0
    read = 256 * 1024
    for offset in range(0, len(stream), read):
        for message in decoder.feed(view[offset : offset + read]):
            assert isinstance(message, m.Piece)
            received += len(message.data)
    assert received == 64 << 20
    assert decoder.buffered == 0


# ------------------------------------------------------------------ vectors


def _expected_message(expected: dict[str, Any]) -> m.Message:
    cls = getattr(m, expected["type"])
    values = {}
    for field in dataclasses.fields(cls):
        value = expected[field.name]
        values[field.name] = bytes.fromhex(value) if isinstance(value, str) else value
    message: m.Message = cls(**values)
    return message


def _load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


def test_vector_file_covers_good_and_bad_messages() -> None:
    vectors = _load_vectors()
    assert sum("error" in v for v in vectors) >= 10
    assert sum("error" not in v for v in vectors) >= 20


@pytest.mark.parametrize("vector", _load_vectors(), ids=lambda v: v["name"])
def test_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    decoder = MessageDecoder(expect_handshake=vector.get("handshake", False))
    if "error" in vector:
        assert vector["error"] == "RemoteProtocolError"
        with pytest.raises(RemoteProtocolError):
            decoder.feed(raw)
        return
    decoded = decoder.feed(raw)
    if vector["expected"] is None:
        assert decoded == []
        assert decoder.unknown_messages == 1
        return
    message = _expected_message(vector["expected"])
    assert decoded == [message]
    assert encode(message) == raw
