"""The od_delta extension messages (spec/od-delta.md): vectors, assembly and request matching.

Run this file as a script to regenerate ``extensions/od_delta_vectors.json``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendistro.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from opendistro.wire.extensions.od_delta import (
    CONTENT_BLOCK_SIZE,
    HANDSHAKE_ENC_KEY,
    INDEX_PIECE_SIZE,
    CompressedIndex,
    ContentData,
    ContentReject,
    ContentRequest,
    ContentRequests,
    DeltaMessage,
    IndexAssembler,
    IndexData,
    IndexReject,
    IndexRequest,
    PackAnnouncement,
    PackData,
    PackReject,
    PackRequest,
    compress_content,
    compressed_index_announcement,
    decode_delta_message,
    encode_delta_message,
    index_response,
    lists_zlib,
    pack_announcement,
)

VECTORS = Path(__file__).resolve().parents[1] / "extensions" / "od_delta_vectors.json"

GOOD: list[tuple[str, DeltaMessage]] = [
    ("index request", IndexRequest(0)),
    ("index data, last short piece", IndexData(2, 40000, b"\x01\x02\x03")),
    ("index reject", IndexReject(7)),
    ("content request", ContentRequest(5, 0, 3, 1 << 40, 65536)),
    ("content data", ContentData(5, b"hello")),
    ("content data, empty id 0", ContentData(0, b"")),
    ("content reject", ContentReject(2**31 - 1)),
    ("content data, zlib", ContentData(6, zlib.compress(b"hello " * 40, 6), "zlib")),
    ("pack request", PackRequest(9, 1 << 40, 65536)),
    ("pack request, first byte", PackRequest(0, 0, 1)),
    ("pack data", PackData(9, bytes.fromhex("fd377a585a00"))),
    ("pack data, empty", PackData(2**31 - 1, b"")),
    ("pack reject", PackReject(9)),
    ("index request, compressed form", IndexRequest(3, "xz")),
    ("index data, compressed form", IndexData(0, 5000, bytes.fromhex("fd377a585a00"), "xz")),
    ("index reject, compressed form", IndexReject(4096, "xz")),
]

BAD: list[tuple[str, bytes]] = [
    ("not bencoded", b"x"),
    ("a list, not a dictionary", b"le"),
    ("unknown msg_type", b"d8:msg_typei9ee"),
    ("msg_type missing", b"d5:piecei0ee"),
    ("negative piece", b"d8:msg_typei0e5:piecei-1ee"),
    ("piece beyond a 64 MiB index", b"d8:msg_typei0e5:piecei4097ee"),
    ("trailing bytes after a request", b"d8:msg_typei0e5:piecei0eeXY"),
    ("index data over 16 KiB", b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee" + bytes(16385)),
    ("index total_size zero", b"d8:msg_typei1e5:piecei0e10:total_sizei0ee"),
    ("content request of 0 bytes",
     b"d2:idi1e4:filei0e6:lengthi0e8:msg_typei3e6:offseti0e7:segmenti0ee"),
    ("content request over 64 KiB",
     b"d2:idi1e4:filei0e6:lengthi65537e8:msg_typei3e6:offseti0e7:segmenti0ee"),
    ("content request without file",
     b"d2:idi1e6:lengthi1e8:msg_typei3e6:offseti0e7:segmenti0ee"),
    ("content request id as a string",
     b"d2:id1:14:filei0e6:lengthi1e8:msg_typei3e6:offseti0e7:segmenti0ee"),
    ("content data over 64 KiB", b"d2:idi1e8:msg_typei4ee" + bytes(65537)),
    ("content data of an unknown encoding", b"d3:enc4:gzip2:idi1e8:msg_typei4eeXY"),
    ("content data encoding not a string", b"d3:enci1e2:idi1e8:msg_typei4eeXY"),
    ("pack request of 0 bytes", b"d2:idi1e6:lengthi0e8:msg_typei6e6:offseti0ee"),
    ("pack request over 64 KiB", b"d2:idi1e6:lengthi65537e8:msg_typei6e6:offseti0ee"),
    ("pack request without offset", b"d2:idi1e6:lengthi1e8:msg_typei6ee"),
    ("pack request without id", b"d6:lengthi1e8:msg_typei6e6:offseti0ee"),
    ("pack request offset beyond 2^50",
     b"d2:idi1e6:lengthi1e8:msg_typei6e6:offseti1125899906842625ee"),
    ("pack request negative offset", b"d2:idi1e6:lengthi1e8:msg_typei6e6:offseti-1ee"),
    ("pack request id beyond 2^31-1",
     b"d2:idi2147483648e6:lengthi1e8:msg_typei6e6:offseti0ee"),
    ("pack request length as a string", b"d2:idi1e6:length1:18:msg_typei6e6:offseti0ee"),
    ("trailing bytes after a pack request", b"d2:idi1e6:lengthi1e8:msg_typei6e6:offseti0eeXY"),
    ("pack data over 64 KiB", b"d2:idi1e8:msg_typei7ee" + bytes(65537)),
    ("pack data with an encoding", b"d3:enc4:zlib2:idi1e8:msg_typei7eeXY"),
    ("pack data without id", b"d8:msg_typei7eeXY"),
    ("pack reject without id", b"d8:msg_typei8ee"),
    ("trailing bytes after a pack reject", b"d2:idi1e8:msg_typei8eeX"),
    ("index request of an unknown form", b"d3:enc4:zlib8:msg_typei0e5:piecei0ee"),
    ("index request form not a string", b"d3:enci1e8:msg_typei0e5:piecei0ee"),
    ("index data of an unknown form",
     b"d3:enc4:gzip8:msg_typei1e5:piecei0e10:total_sizei1eeX"),
    ("index reject of an unknown form", b"d3:enc2:XZ8:msg_typei2e5:piecei0ee"),
    ("compressed index data over 16 KiB",
     b"d3:enc2:xz8:msg_typei1e5:piecei0e10:total_sizei99999ee" + bytes(16385)),
    ("compressed index over 64 MiB",
     b"d3:enc2:xz8:msg_typei1e5:piecei0e10:total_sizei67108865eeX"),
    ("trailing bytes after a compressed index request",
     b"d3:enc2:xz8:msg_typei0e5:piecei0eeX"),
]


def describe(message: DeltaMessage) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": type(message).__name__}
    for name in message.__slots__:
        value = getattr(message, name)
        if value is None:
            continue  # optional fields (enc) absent, as in vectors made before they existed
        fields[name] = value.hex() if isinstance(value, bytes) else value
    return fields


def build_vectors() -> dict[str, Any]:
    return {
        "description": "od_delta extension payloads (spec/od-delta.md). Good vectors: hex "
        "payload and the decoded message. Bad vectors: hex payload the receiver must refuse "
        "with RemoteProtocolError.",
        "good": [
            {"name": name, "hex": encode_delta_message(message).hex(),
             "expected": describe(message)}
            for name, message in GOOD
        ],
        "bad": [
            {"name": name, "hex": payload.hex(), "error": "RemoteProtocolError"}
            for name, payload in BAD
        ],
    }


def test_the_vector_file_is_current() -> None:
    assert json.loads(VECTORS.read_text()) == build_vectors()


@pytest.mark.parametrize("vector", json.loads(VECTORS.read_text())["good"], ids=lambda v: v["name"])
def test_good_vectors_decode_to_their_messages(vector: dict[str, Any]) -> None:
    message = decode_delta_message(bytes.fromhex(vector["hex"]))
    assert describe(message) == vector["expected"]
    assert encode_delta_message(message).hex() == vector["hex"]


@pytest.mark.parametrize("vector", json.loads(VECTORS.read_text())["bad"], ids=lambda v: v["name"])
def test_bad_vectors_are_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_delta_message(bytes.fromhex(vector["hex"]))


@given(st.binary(max_size=300))
def test_any_payload_decodes_or_raises_a_protocol_error(payload: bytes) -> None:
    try:
        message = decode_delta_message(payload)
    except RemoteProtocolError:
        return
    assert decode_delta_message(encode_delta_message(message)) == message


def test_we_never_send_oversized_messages() -> None:
    with pytest.raises(LocalProtocolError):
        encode_delta_message(ContentRequest(1, 0, 0, 0, CONTENT_BLOCK_SIZE + 1))
    with pytest.raises(LocalProtocolError):
        encode_delta_message(IndexData(0, 20000, bytes(INDEX_PIECE_SIZE + 1)))


def test_an_index_travels_in_pieces_and_is_checked_against_its_hash() -> None:
    index = bytes(range(256)) * 200  # 51,200 bytes: four pieces
    digest = hashlib.sha256(index).digest()
    assembler = IndexAssembler(total_size=len(index), expected_sha256=digest)
    requests = []
    while (request := assembler.next_request()) is not None:
        requests.append(request)
    assert [r.piece for r in requests] == [0, 1, 2, 3]
    answers = [index_response(index, request) for request in requests]
    assert all(isinstance(answer, IndexData) for answer in answers)
    result = None
    for answer in reversed(answers):  # any order
        assert isinstance(answer, IndexData)
        result = assembler.receive(answer)
    assert result == index
    assert isinstance(index_response(index, IndexRequest(4)), IndexReject)
    assert isinstance(index_response(b"", IndexRequest(0)), IndexReject)


def test_a_forged_index_is_thrown_away_and_fetched_again() -> None:
    index = b"d1:ai1ee" * 3000
    digest = hashlib.sha256(index).digest()
    assembler = IndexAssembler(total_size=len(index), expected_sha256=digest)
    forged = bytearray(index)
    forged[100] ^= 1
    with pytest.raises(IntegrityError):
        for piece in range(assembler.num_pieces):
            answer = index_response(bytes(forged), IndexRequest(piece))
            assert isinstance(answer, IndexData)
            assembler.receive(answer)
    assert assembler.next_request() == IndexRequest(0)  # starts over


@pytest.mark.parametrize(
    "answer",
    [IndexData(0, 999, bytes(999)), IndexData(5, 20000, b""), IndexData(0, 20000, bytes(100))],
    ids=["other total size", "piece out of range", "short piece"],
)
def test_index_pieces_of_the_wrong_shape_are_the_senders_fault(answer: IndexData) -> None:
    assembler = IndexAssembler(total_size=20000)
    with pytest.raises(RemoteProtocolError):
        assembler.receive(answer)


def test_content_answers_must_match_an_outstanding_request() -> None:
    requests = ContentRequests(limit=2)
    first = requests.request(0, 1, 100, 10)
    second = requests.request(0, 1, 110, 5)
    assert first.request_id != second.request_id and requests.full
    with pytest.raises(LocalProtocolError):
        requests.request(0, 1, 200, 1)
    assert requests.answered(ContentData(second.request_id, b"12345")) == second
    with pytest.raises(RemoteProtocolError):
        requests.answered(ContentData(second.request_id, b"12345"))  # already answered
    with pytest.raises(RemoteProtocolError):
        requests.answered(ContentData(first.request_id, b"short"))
    third = requests.request(0, 2, 0, 1)
    assert requests.answered(ContentReject(third.request_id)) == third
    assert requests.abandon() == [] and len(requests) == 0


def test_a_compressed_answer_inflates_to_exactly_the_request() -> None:
    requests = ContentRequests(accept_zlib=True)
    content = b"ustar header " * 3000  # 39,000 bytes
    request = requests.request(0, 1, 0, len(content))
    answer = compress_content(request.request_id, content)
    assert answer.enc == "zlib" and len(answer.data) < len(content) // 10
    decoded = decode_delta_message(encode_delta_message(answer))
    assert isinstance(decoded, ContentData)
    assert requests.answered(decoded) == request
    assert ContentRequests.content(request, decoded) == content


def test_incompressible_content_goes_plain() -> None:
    data = b"".join(hashlib.sha256(bytes([n])).digest() for n in range(8))
    answer = compress_content(3, data)
    assert answer.enc is None and answer.data == data


@pytest.mark.parametrize(
    "stream",
    [
        zlib.compress(bytes(1 << 20)),  # a bomb: 1 MiB of zeros for a 1,000-byte request
        zlib.compress(bytes(999)),  # one byte short
        zlib.compress(bytes(1000)) + b"X",  # bytes after the stream's end
        zlib.compress(bytes(1000))[:-3],  # no end
        b"not zlib at all",
    ],
    ids=["bomb", "short", "trailing", "truncated", "garbage"],
)
def test_bad_compressed_answers_are_the_senders_fault(stream: bytes) -> None:
    requests = ContentRequests(accept_zlib=True)
    request = requests.request(0, 0, 0, 1000)
    answer = ContentData(request.request_id, stream, "zlib")
    assert requests.answered(answer) == request
    with pytest.raises(RemoteProtocolError):
        ContentRequests.content(request, answer)


def test_a_compressed_answer_we_did_not_ask_for_is_refused() -> None:
    requests = ContentRequests()
    request = requests.request(0, 0, 0, 1000)
    with pytest.raises(RemoteProtocolError):
        requests.answered(ContentData(request.request_id, zlib.compress(bytes(1000)), "zlib"))


def test_the_handshake_lists_encodings() -> None:
    assert lists_zlib({HANDSHAKE_ENC_KEY: [b"zstd", b"zlib"]})
    assert not lists_zlib({})
    assert not lists_zlib({HANDSHAKE_ENC_KEY: b"zlib"})  # not a list
    assert not lists_zlib({HANDSHAKE_ENC_KEY: [b"zlib"] * 17})  # too long


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(build_vectors(), indent=1) + "\n")


def test_we_never_send_oversized_content_or_unknown_encodings() -> None:
    with pytest.raises(LocalProtocolError, match="at most"):
        encode_delta_message(ContentData(1, bytes(CONTENT_BLOCK_SIZE + 1), None))
    with pytest.raises(LocalProtocolError, match="unknown od_delta content encoding"):
        encode_delta_message(ContentData(1, b"data", "gzip"))
    with pytest.raises(LocalProtocolError, match="not an od_delta message"):
        encode_delta_message(b"raw bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, 64 * 1024 * 1024 + 1])
def test_an_announced_index_size_out_of_range_is_the_senders_fault(size: int) -> None:
    with pytest.raises(RemoteProtocolError, match="index size"):
        IndexAssembler(total_size=size)


def test_a_rejected_piece_is_asked_for_again() -> None:
    assembler = IndexAssembler(total_size=3 * INDEX_PIECE_SIZE)
    assert assembler.next_request() == IndexRequest(0)
    assert assembler.next_request() == IndexRequest(1)
    assembler.rejected(0)
    assert assembler.next_request() == IndexRequest(0)
    assert assembler.next_request() == IndexRequest(2)
    assert assembler.next_request() is None


def test_pack_answers_must_match_an_outstanding_pack_request() -> None:
    requests = ContentRequests(limit=3)
    content = requests.request(0, 0, 0, 10)
    pack = requests.request_pack(100, 5)
    assert content.request_id != pack.request_id
    with pytest.raises(RemoteProtocolError, match="another kind"):
        requests.answered(PackData(content.request_id, bytes(10)))
    with pytest.raises(RemoteProtocolError, match="another kind"):
        requests.answered(ContentData(pack.request_id, bytes(5)))
    pack = requests.request_pack(100, 5)
    with pytest.raises(RemoteProtocolError, match="asked 5 bytes, got 4"):
        requests.answered(PackData(pack.request_id, bytes(4)))
    pack = requests.request_pack(100, 5)
    assert requests.answered(PackData(pack.request_id, b"12345")) == pack
    rejected = requests.request_pack(0, 1)
    assert requests.answered(PackReject(rejected.request_id)) == rejected
    with pytest.raises(RemoteProtocolError, match="unknown request"):
        requests.answered(PackReject(rejected.request_id))


def test_pack_and_content_requests_share_one_limit() -> None:
    requests = ContentRequests(limit=2)
    requests.request(0, 0, 0, 1)
    requests.request_pack(0, 1)
    assert requests.full
    with pytest.raises(LocalProtocolError, match="outstanding"):
        requests.request_pack(1, 1)
    assert len(requests.abandon()) == 2 and not requests.full


def test_we_never_send_oversized_pack_messages() -> None:
    with pytest.raises(LocalProtocolError, match="pack request"):
        encode_delta_message(PackRequest(1, 0, CONTENT_BLOCK_SIZE + 1))
    with pytest.raises(LocalProtocolError, match="pack request"):
        encode_delta_message(PackRequest(1, 0, 0))
    with pytest.raises(LocalProtocolError, match="pack data"):
        encode_delta_message(PackData(1, bytes(CONTENT_BLOCK_SIZE + 1)))


GOOD_PACK = {b"od_delta_pack_size": 300, b"od_delta_pack_sha256": bytes(32),
             b"od_delta_blocks_size": 1 << 40}


def test_a_pack_is_announced_by_three_handshake_keys() -> None:
    announced = pack_announcement(GOOD_PACK)
    assert announced == PackAnnouncement(300, bytes(32), 1 << 40)
    assert announced.total_size == 300 + (1 << 40)
    assert pack_announcement(announced.extra()) == announced
    assert pack_announcement({}) is None


@pytest.mark.parametrize(
    "change",
    [
        {b"od_delta_pack_size": 0},
        {b"od_delta_pack_size": (64 << 20) + 1},
        {b"od_delta_pack_size": b"300"},
        {b"od_delta_pack_size": True},
        {b"od_delta_pack_sha256": bytes(31)},
        {b"od_delta_pack_sha256": 5},
        {b"od_delta_blocks_size": 0},
        {b"od_delta_blocks_size": (1 << 50) + 1},
        {b"od_delta_blocks_size": [1]},
        {b"od_delta_blocks_size": None},
    ],
    ids=lambda change: repr(change)[:60],
)
def test_a_bad_pack_announcement_is_ignored(change: dict[bytes, Any]) -> None:
    extra = {**GOOD_PACK, **change}
    extra = {key: value for key, value in extra.items() if value is not None}
    assert pack_announcement(extra) is None


def test_a_plain_answer_is_its_own_content() -> None:
    requests = ContentRequests()
    request = requests.request(0, 0, 0, 3)
    answer = ContentData(request.request_id, b"abc")
    assert requests.answered(answer) == request
    assert ContentRequests.content(request, answer) == b"abc"


GOOD_XZ = {b"od_delta_size": 40000, b"od_delta_sha256": bytes(32),
           b"od_delta_xz_size": 9000, b"od_delta_xz_sha256": b"\x01" * 32}


def test_a_compressed_index_is_announced_beside_the_plain_one() -> None:
    announced = compressed_index_announcement(GOOD_XZ)
    assert announced == CompressedIndex(9000, b"\x01" * 32)
    assert compressed_index_announcement(
        {**announced.extra(), b"od_delta_size": 1, b"od_delta_sha256": bytes(32)}
    ) == announced
    assert compressed_index_announcement({}) is None


@pytest.mark.parametrize(
    "change",
    [
        {b"od_delta_xz_size": 0},
        {b"od_delta_xz_size": (64 << 20) + 1},
        {b"od_delta_xz_size": True},
        {b"od_delta_xz_size": b"9000"},
        {b"od_delta_xz_sha256": bytes(31)},
        {b"od_delta_xz_sha256": "x" * 32},
        {b"od_delta_xz_sha256": None},
        {b"od_delta_size": None},  # a compressed index only beside the plain one
        {b"od_delta_size": 0},
        {b"od_delta_sha256": bytes(33)},
    ],
    ids=lambda change: repr(change)[:60],
)
def test_a_bad_compressed_index_announcement_is_ignored(change: dict[bytes, Any]) -> None:
    extra = {**GOOD_XZ, **change}
    extra = {key: value for key, value in extra.items() if value is not None}
    assert compressed_index_announcement(extra) is None


def test_index_requests_are_answered_from_the_form_they_name() -> None:
    plain, packed = bytes(range(256)) * 100, b"packed" * 3000  # 25600 and 18000 bytes
    assert index_response(plain, IndexRequest(1), packed) == IndexData(
        1, len(plain), plain[INDEX_PIECE_SIZE:]
    )
    assert index_response(plain, IndexRequest(1, "xz"), packed) == IndexData(
        1, len(packed), packed[INDEX_PIECE_SIZE:], "xz"
    )
    assert index_response(plain, IndexRequest(2, "xz"), packed) == IndexReject(2, "xz")
    assert index_response(plain, IndexRequest(0, "xz")) == IndexReject(0, "xz")
    assert index_response(b"", IndexRequest(0), packed) == IndexReject(0)


def test_a_compressed_index_is_assembled_only_from_pieces_of_its_form() -> None:
    packed = bytes(range(200)) * 100
    assembler = IndexAssembler(total_size=len(packed),
                               expected_sha256=hashlib.sha256(packed).digest(), enc="xz")
    requests = []
    while (request := assembler.next_request()) is not None:
        requests.append(request)
    assert requests == [IndexRequest(0, "xz"), IndexRequest(1, "xz")]
    with pytest.raises(RemoteProtocolError, match="form"):
        assembler.receive(index_response(packed, IndexRequest(0)))  # type: ignore[arg-type]
    first = index_response(b"", requests[0], packed)
    assert isinstance(first, IndexData) and assembler.receive(first) is None
    last = index_response(b"", requests[1], packed)
    assert isinstance(last, IndexData) and assembler.receive(last) == packed

    plain = IndexAssembler(total_size=10)
    with pytest.raises(RemoteProtocolError, match="form"):
        plain.receive(IndexData(0, 10, bytes(10), "xz"))


def test_we_never_send_an_unknown_index_form() -> None:
    for message in (IndexRequest(0, "gzip"), IndexReject(0, "zlib"), IndexData(0, 1, b"x", "")):
        with pytest.raises(LocalProtocolError, match="unknown od_delta index encoding"):
            encode_delta_message(message)
