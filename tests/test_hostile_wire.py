"""Hostile input to the peer wire: framing, messages, BEP 10 extension payloads and MSE.

What a peer sends either decodes or raises a typed
:class:`~opendistro.errors.OpenDistroError` (RemoteProtocolError and its
EncryptionError), what decodes re-encodes to the same message, and hostile
length prefixes or endless streams of messages cost bounded memory.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import resource
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendistro.bencode import encode as bencode
from opendistro.errors import EncryptionError, RemoteProtocolError
from opendistro.wire.codec import DEFAULT_MAX_MESSAGE_SIZE, MessageDecoder, encode
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.od_delta import (
    ContentData,
    ContentReject,
    ContentRequest,
    IndexData,
    IndexReject,
    IndexRequest,
    decode_delta_message,
    encode_delta_message,
)
from opendistro.wire.extensions.ut_metadata import (
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
)
from opendistro.wire.extensions.ut_pex import PexMessage, PexPeer, decode_pex, encode_pex
from opendistro.wire.messages import (
    AllowedFast,
    BitfieldMessage,
    Cancel,
    Choke,
    Extended,
    Handshake,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
)
from opendistro.wire.mse import MseInitiator, MseResponder

from .test_hostile_bencode import FAST, mutated, typed

VECTORS = Path(__file__).resolve().parent.parent / "extensions"


def _vector_hex(name: str, *path: str) -> list[bytes]:
    document: Any = json.loads((VECTORS / name).read_text())
    for step in path:
        document = document[step]
    return [bytes.fromhex(vector["hex"]) for vector in document]


WIRE_SEEDS = _vector_hex("bep3_bep6_vectors.json", "vectors")


def _same(left: Message, right: Message) -> bool:
    if isinstance(left, Piece) and isinstance(right, Piece):
        return (left.index, left.begin, bytes(left.data)) == (
            right.index,
            right.begin,
            bytes(right.data),
        )
    return left == right


def _feed(stream: bytes, step: int, *, limit: int = 1 << 16) -> list[Message] | None:
    """Decode ``stream`` in reads of ``step`` bytes; None if the decoder refused it."""
    decoder = MessageDecoder(max_message_size=limit, expect_handshake=stream[:1] == b"\x13")
    messages: list[Message] = []
    try:
        for start in range(0, len(stream), step):
            messages.extend(decoder.feed(stream[start : start + step]))
            assert decoder.buffered <= 4 + limit
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            decoder.feed(b"\x00\x00\x00\x00")  # a failed stream stays failed
        return None
    return messages


def _check_stream(stream: bytes, step: int) -> None:
    messages = _feed(stream, step)
    for message in messages or ():
        wire = encode(message)
        again = MessageDecoder(expect_handshake=isinstance(message, Handshake)).feed(wire)
        assert len(again) == 1 and _same(again[0], message)


@FAST
@given(st.binary(max_size=300), st.integers(1, 64))
def test_wire_random_bytes_decode_or_refuse(stream: bytes, step: int) -> None:
    _check_stream(stream, step)
    _check_stream(b"\x00\x00\x00" + stream, step)  # past the handshake check, into framing


@FAST
@given(mutated(WIRE_SEEDS), st.integers(1, 80))
def test_wire_mutated_vectors_decode_or_refuse(stream: bytes, step: int) -> None:
    _check_stream(stream, step)


u32 = st.integers(0, 2**32 - 1)
wire_messages = st.one_of(
    st.builds(
        Handshake,
        info_hash=st.binary(min_size=20, max_size=20),
        peer_id=st.binary(min_size=20, max_size=20),
        reserved=st.binary(min_size=8, max_size=8),
    ),
    st.sampled_from(
        [KeepAlive(), Choke(), Unchoke(), Interested(), NotInterested(), HaveAll(), HaveNone()]
    ),
    st.builds(Have, u32),
    st.builds(SuggestPiece, u32),
    st.builds(AllowedFast, u32),
    st.builds(BitfieldMessage, st.binary(max_size=40)),
    st.builds(Request, u32, u32, u32),
    st.builds(Cancel, u32, u32, u32),
    st.builds(RejectRequest, u32, u32, u32),
    st.builds(Piece, u32, u32, st.binary(max_size=100)),
    st.builds(Port, st.integers(0, 65535)),
    st.builds(Extended, st.integers(0, 255), st.binary(max_size=40)),
    st.builds(HashRequest, st.binary(min_size=32, max_size=32), u32, u32, u32, u32),
    st.builds(HashReject, st.binary(min_size=32, max_size=32), u32, u32, u32, u32),
    st.builds(
        Hashes,
        st.binary(min_size=32, max_size=32),
        u32,
        u32,
        u32,
        u32,
        st.integers(0, 3).map(lambda count: bytes(range(32)) * count),
    ),
)


@FAST
@given(st.lists(wire_messages, max_size=8), st.integers(1, 100))
def test_wire_messages_round_trip_through_any_read_sizes(
    messages: list[Message], step: int
) -> None:
    messages = [message for message in messages if not isinstance(message, Handshake)]
    stream = b"".join(encode(message) for message in messages)
    decoded = _feed(stream, step, limit=DEFAULT_MAX_MESSAGE_SIZE)
    assert decoded is not None and len(decoded) == len(messages)
    assert all(_same(left, right) for left, right in zip(decoded, messages, strict=True))


# -- memory stays bounded --------------------------------------------------------------


def _rss_bytes() -> int:
    """Resident memory now (not the peak), so growth can be measured."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


GROWTH_LIMIT = 20 * 1024 * 1024


def test_a_4_gib_length_prefix_is_refused_before_buffering() -> None:
    for prefix in (b"\xff\xff\xff\xff", b"\x00\x10\x00\x01", b"\x80\x00\x00\x00"):
        decoder = MessageDecoder(expect_handshake=False)
        with pytest.raises(RemoteProtocolError):
            decoder.feed(prefix[:2])  # half a prefix is held...
            decoder.feed(prefix[2:] + bytes(1000))  # ...and refused once whole
        assert decoder.buffered <= 4


def test_floods_of_huge_prefixes_and_requests_do_not_grow_memory() -> None:
    gc.collect()
    before = _rss_bytes()
    # 20 000 connections that each announce a 4 GiB (or just-too-big) message.
    for number in range(20_000):
        decoder = MessageDecoder(expect_handshake=False)
        prefix = b"\xff\xff\xff\xff" if number % 2 else b"\x00\x10\x00\x01"
        with pytest.raises(RemoteProtocolError):
            decoder.feed(prefix + b"\x07" * 64)
    # One connection that never stops sending requests, keep-alives and unknown ids,
    # in reads that split frames anywhere; the caller drops what it has handled.
    decoder = MessageDecoder(expect_handshake=False)
    chunk = (encode(Request(1, 2, 16384)) + encode(KeepAlive()) + b"\x00\x00\x00\x03\x63ab") * 1000
    handled = 0
    for round_number in range(300):
        cut = 1 + round_number % 17
        handled += len(decoder.feed(chunk[:cut]))
        handled += len(decoder.feed(chunk[cut:]))
        assert decoder.buffered < 64
    assert handled == 300 * 2000 and decoder.unknown_messages == 300 * 1000
    # A peer that announces the largest allowed message and trickles it forever
    # (never completing it) is held to one message's worth of buffer.
    decoder = MessageDecoder(expect_handshake=False)
    decoder.feed((DEFAULT_MAX_MESSAGE_SIZE).to_bytes(4, "big"))
    for _ in range(200):
        decoder.feed(bytes(4096))
    assert decoder.buffered <= 4 + DEFAULT_MAX_MESSAGE_SIZE
    del decoder, chunk
    gc.collect()
    assert _rss_bytes() - before < GROWTH_LIMIT


def test_mse_junk_is_refused_within_the_sync_window() -> None:
    gc.collect()
    before = _rss_bytes()
    for _ in range(50):
        responder = MseResponder([bytes(20)], allow_plaintext=True)
        responder.receive_data((5).to_bytes(96, "big"))  # a valid public key
        with pytest.raises(EncryptionError):
            for _ in range(100_000):
                responder.receive_data(b"\xaa" * 64)  # never the req1 hash
        initiator = MseInitiator(bytes(20), allow_plaintext=True)
        initiator.receive_data((7).to_bytes(96, "big"))
        with pytest.raises(EncryptionError):
            for _ in range(100_000):
                initiator.receive_data(b"\x55" * 64)  # never the encrypted VC
    gc.collect()
    assert _rss_bytes() - before < GROWTH_LIMIT


# -- MSE --------------------------------------------------------------------------------

INFO_HASH = bytes(range(20))
KEY_A = 0xA5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5
KEY_B = 0x5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A


def _initiator() -> MseInitiator:
    return MseInitiator(
        INFO_HASH, allow_plaintext=True, initial_payload=b"IA", private_key=KEY_A, pad_length=0
    )


def _responder() -> MseResponder:
    return MseResponder([INFO_HASH], allow_plaintext=True, private_key=KEY_B, pad_length=0)


def _transcript() -> tuple[bytes, bytes]:
    initiator, responder = _initiator(), _responder()
    a_to_b = bytearray(initiator.data_to_send())
    responder.receive_data(a_to_b)
    b_to_a = bytearray(responder.data_to_send())
    initiator.receive_data(b_to_a)
    step3 = initiator.data_to_send()
    responder.receive_data(step3)
    step4 = responder.data_to_send()
    initiator.receive_data(step4)
    assert initiator.done and responder.done
    return bytes(a_to_b + step3), bytes(b_to_a + step4)


A_TO_B, B_TO_A = _transcript()


@FAST
@given(
    st.booleans(),
    st.one_of(mutated([A_TO_B, B_TO_A]), st.binary(max_size=200)),
    st.integers(1, 200),
)
def test_mse_handshake_streams_complete_or_refuse(
    as_initiator: bool, stream: bytes, step: int
) -> None:
    side = _initiator() if as_initiator else _responder()
    try:
        for start in range(0, len(stream), step):
            if side.done:
                break
            side.receive_data(stream[start : start + step])
            side.data_to_send()
    except EncryptionError:
        return
    if side.done:
        side.cipher().decrypt(side.leftover())


# -- extension payloads ------------------------------------------------------------------

HANDSHAKE_SEEDS = [
    ExtensionHandshake(
        m={"ut_metadata": 1, "ut_pex": 2}, v="x", p=6881, reqq=250, metadata_size=100,
        yourip=bytes(4), ipv6=bytes(16), extra={b"od_delta_enc": [b"zlib"]},
    ).encode()
]
METADATA_SEEDS = [
    encode_metadata_message(message)
    for message in (MetadataRequest(3), MetadataReject(0), MetadataData(1, 20000, b"x" * 100))
]
PEX_SEEDS = _vector_hex("ut_pex_vectors.json", "vectors")
DELTA_SEEDS = _vector_hex("od_delta_vectors.json", "good") + _vector_hex(
    "od_delta_vectors.json", "bad"
)


def _extension_payloads(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(seeds), st.binary(max_size=120))


@FAST
@given(_extension_payloads(HANDSHAKE_SEEDS))
def test_extension_handshakes_decode_or_refuse(payload: bytes) -> None:
    decoded = typed(ExtensionHandshake.decode, payload)
    if decoded is not None:
        assert ExtensionHandshake.decode(decoded.encode()) == decoded


@FAST
@given(_extension_payloads(METADATA_SEEDS))
def test_ut_metadata_payloads_decode_or_refuse(payload: bytes) -> None:
    decoded = typed(decode_metadata_message, payload)
    if decoded is not None:
        assert decode_metadata_message(encode_metadata_message(decoded)) == decoded


@FAST
@given(_extension_payloads(PEX_SEEDS))
def test_ut_pex_payloads_decode_or_refuse(payload: bytes) -> None:
    decoded = typed(decode_pex, payload)
    if decoded is not None:
        assert decode_pex(encode_pex(decoded)) == decoded


@FAST
@given(_extension_payloads(DELTA_SEEDS))
def test_od_delta_payloads_decode_or_refuse(payload: bytes) -> None:
    decoded = typed(decode_delta_message, payload)
    if decoded is not None:
        assert decode_delta_message(encode_delta_message(decoded)) == decoded


small = st.integers(0, 1000)
delta_messages = st.one_of(
    st.builds(IndexRequest, small),
    st.builds(IndexReject, small),
    st.builds(IndexData, small, st.integers(1, 10**6), st.binary(max_size=50)),
    st.builds(ContentRequest, small, small, small, st.integers(0, 1 << 50), st.integers(1, 65536)),
    st.builds(ContentData, small, st.binary(max_size=50), st.sampled_from([None, "zlib"])),
    st.builds(ContentReject, small),
)
pex_peers = st.builds(
    PexPeer, st.ip_addresses().map(str), st.integers(1, 65535), st.just(PexPeer("::1", 1).flags)
)


@FAST
@given(delta_messages, st.lists(pex_peers, max_size=5))
def test_extension_messages_round_trip(message: Any, added: list[PexPeer]) -> None:
    assert decode_delta_message(encode_delta_message(message)) == message
    pex = PexMessage(tuple(added), tuple((peer.host, peer.port) for peer in added))
    decoded = decode_pex(encode_pex(pex))

    def key(host: str, port: int) -> tuple[bytes, int]:
        return ipaddress.ip_address(host).packed, port

    # IPv4 peers travel in "added", IPv6 in "added6": only the order across families changes.
    assert sorted(key(peer.host, peer.port) for peer in decoded.added) == sorted(
        key(peer.host, peer.port) for peer in added
    )
    assert sorted(key(*entry) for entry in decoded.dropped) == sorted(
        key(*entry) for entry in pex.dropped
    )


def test_deeply_nested_extension_payloads_are_protocol_errors() -> None:
    deep = b"d1:m" + b"l" * 10_000 + b"e" * 10_000 + b"e"
    for decode in (ExtensionHandshake.decode, decode_metadata_message, decode_pex):
        with pytest.raises(RemoteProtocolError):
            decode(deep)
    with pytest.raises(RemoteProtocolError):
        decode_delta_message(deep)
    assert bencode({b"m": {}}) == b"d1:mdee"
