"""BEP 9 ut_metadata: message codec, serving, and verified assembly of the info dictionary."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from opendistro.wire.extensions.ut_metadata import (
    METADATA_PIECE_SIZE,
    REQUEST_TIMEOUT,
    MetadataAssembler,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
    metadata_response,
)

INFO = bencode.encode(
    {
        "name": "release.iso",
        "piece length": 262144,
        "length": 40000 * 262144,
        "pieces": bytes(range(256)) * 625,  # 160000 bytes: ten metadata pieces
    }
)
V1 = hashlib.sha1(INFO).digest()
V2 = hashlib.sha256(INFO).digest()


@pytest.mark.parametrize(
    "message",
    [
        MetadataRequest(0),
        MetadataRequest(5),
        MetadataReject(2),
        MetadataData(0, 100, b"x" * 100),
        MetadataData(3, 70000, b"y" * METADATA_PIECE_SIZE),
    ],
    ids=repr,
)
def test_round_trip(message: MetadataRequest | MetadataData | MetadataReject) -> None:
    assert decode_metadata_message(encode_metadata_message(message)) == message


def test_wire_format_matches_bep9() -> None:
    assert encode_metadata_message(MetadataRequest(0)) == b"d8:msg_typei0e5:piecei0ee"
    assert encode_metadata_message(MetadataReject(1)) == b"d8:msg_typei2e5:piecei1ee"
    assert (
        encode_metadata_message(MetadataData(0, 3, b"abc"))
        == b"d8:msg_typei1e5:piecei0e10:total_sizei3eeabc"
    )


def test_unknown_keys_are_tolerated() -> None:
    payload = b"d8:msg_typei0e5:piecei1e4:zzzzi9ee"
    assert decode_metadata_message(payload) == MetadataRequest(1)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"junk",
        b"li0ee",
        b"d8:msg_typei0ee",  # no piece
        b"d8:msg_typei7e5:piecei0ee",  # unknown type
        b"d8:msg_type1:05:piecei0ee",  # type is a string
        b"d8:msg_typei0e5:piecei-1ee",
        b"d8:msg_typei0e5:piecei99999ee",
        b"d8:msg_typei0e5:piecei0eeextra",  # trailing bytes on a request
        b"d8:msg_typei1e5:piecei0ee",  # data without total_size
        b"d8:msg_typei1e5:piecei0e10:total_sizei99999999ee",  # over 16 MiB
        b"d8:msg_typei1e5:piecei0e10:total_sizei20000ee" + b"z" * (METADATA_PIECE_SIZE + 1),
    ],
)
def test_bad_messages(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_metadata_message(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_raises_remote_protocol_error(payload: bytes) -> None:
    try:
        message = decode_metadata_message(payload)
    except RemoteProtocolError:
        return
    assert isinstance(message, MetadataRequest | MetadataData | MetadataReject)
    assert message.piece >= 0


def test_metadata_response_serves_and_rejects() -> None:
    first = metadata_response(INFO, MetadataRequest(0))
    assert first == MetadataData(0, len(INFO), INFO[:METADATA_PIECE_SIZE])
    pieces = -(-len(INFO) // METADATA_PIECE_SIZE)
    last = metadata_response(INFO, MetadataRequest(pieces - 1))
    assert isinstance(last, MetadataData)
    assert last.data == INFO[(pieces - 1) * METADATA_PIECE_SIZE :]
    assert metadata_response(INFO, MetadataRequest(pieces)) == MetadataReject(pieces)
    assert metadata_response(b"", MetadataRequest(0)) == MetadataReject(0)


def fetch_all(assembler: MetadataAssembler, info: bytes, now: float = 0.0) -> bytes | None:
    """Ask for every piece the assembler wants and answer from ``info``."""
    result = None
    while (piece := assembler.next_request(now)) is not None:
        answer = metadata_response(info, MetadataRequest(piece))
        assert isinstance(answer, MetadataData)
        wire = decode_metadata_message(encode_metadata_message(answer))
        assert isinstance(wire, MetadataData)
        result = assembler.receive(wire)
    return result


@pytest.mark.parametrize(("v1", "v2"), [(V1, None), (None, V2), (V1, V2)])
def test_assembler_good_data(v1: bytes | None, v2: bytes | None) -> None:
    assembler = MetadataAssembler(metadata_size=len(INFO), info_hash_v1=v1, info_hash_v2=v2)
    assert assembler.num_pieces == -(-len(INFO) // METADATA_PIECE_SIZE)
    assert fetch_all(assembler, INFO) == INFO


def test_assembler_tampered_data_raises_and_resets() -> None:
    tampered = INFO[:-5] + b"xxxxx"
    assembler = MetadataAssembler(metadata_size=len(INFO), info_hash_v1=V1, info_hash_v2=None)
    with pytest.raises(IntegrityError):
        fetch_all(assembler, tampered)
    assert assembler.received_pieces == 0
    # After the reset an honest peer completes it.
    assert fetch_all(assembler, INFO, now=100.0) == INFO


def test_assembler_v2_mismatch_is_caught_even_with_matching_v1() -> None:
    assembler = MetadataAssembler(
        metadata_size=len(INFO), info_hash_v1=V1, info_hash_v2=hashlib.sha256(b"other").digest()
    )
    with pytest.raises(IntegrityError):
        fetch_all(assembler, INFO)


def test_we_never_send_a_metadata_piece_over_16_kib() -> None:
    with pytest.raises(LocalProtocolError, match="16 KiB"):
        encode_metadata_message(MetadataData(0, 70000, b"z" * (METADATA_PIECE_SIZE + 1)))


def test_an_assembler_without_any_info_hash_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="info-hash"):
        MetadataAssembler(metadata_size=len(INFO), info_hash_v1=None, info_hash_v2=None)


def test_assembler_oversize_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        MetadataAssembler(metadata_size=(16 << 20) + 1, info_hash_v1=V1, info_hash_v2=None)
    with pytest.raises(RemoteProtocolError):
        MetadataAssembler(metadata_size=0, info_hash_v1=V1, info_hash_v2=None)
    with pytest.raises(RemoteProtocolError):
        MetadataAssembler(metadata_size=50000, info_hash_v1=V1, info_hash_v2=None, max_size=40000)


@pytest.mark.parametrize(
    "message",
    [
        MetadataData(0, len(INFO) + 1, INFO[:METADATA_PIECE_SIZE]),  # total_size differs
        MetadataData(0, len(INFO), INFO[:100]),  # short piece
        MetadataData(99, len(INFO), b""),  # no such piece
    ],
    ids=["total_size", "short", "index"],
)
def test_assembler_refuses_malformed_pieces(message: MetadataData) -> None:
    assembler = MetadataAssembler(metadata_size=len(INFO), info_hash_v1=V1, info_hash_v2=None)
    with pytest.raises(RemoteProtocolError):
        assembler.receive(message)


def test_assembler_reasks_after_timeout_and_after_reject() -> None:
    assembler = MetadataAssembler(metadata_size=len(INFO), info_hash_v1=V1, info_hash_v2=None)
    asked = [assembler.next_request(0.0) for _ in range(assembler.num_pieces)]
    assert asked == list(range(assembler.num_pieces))
    assert assembler.next_request(1.0) is None  # everything is in flight
    assembler.rejected(4)
    assert assembler.next_request(1.0) == 4
    assert assembler.next_request(REQUEST_TIMEOUT - 0.1) is None
    assert assembler.next_request(REQUEST_TIMEOUT) == 0  # timed out: ask again


def test_assembler_ignores_duplicate_pieces() -> None:
    small = bencode.encode({"name": "a", "length": 1, "piece length": 16384, "pieces": b"p" * 20})
    assembler = MetadataAssembler(
        metadata_size=len(small), info_hash_v1=hashlib.sha1(small).digest(), info_hash_v2=None
    )
    assert assembler.num_pieces == 1
    assert assembler.receive(MetadataData(0, len(small), small)) == small
    assert assembler.receive(MetadataData(0, len(small), small)) == small
