"""Message Stream Encryption: the sans-I/O handshake and the trio adapter."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
import trio  # type: ignore[import-untyped, unused-ignore]
import trio.testing  # type: ignore[import-untyped, unused-ignore]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro.errors import EncryptionError, LocalProtocolError
from opendistro.io.mse_stream import EncryptedStream, negotiate_incoming, negotiate_outgoing
from opendistro.wire.mse import (
    DH_PRIME,
    KEY_LENGTH,
    PROTOCOL_HEADER,
    EncryptionPolicy,
    MseInitiator,
    MseResponder,
    looks_like_plaintext_handshake,
    obfuscated_info_hash,
)

INFO_HASH = hashlib.sha1(b"the torrent").digest()
OTHER_HASH = hashlib.sha1(b"another torrent").digest()
PEER_ID = b"-OD0001-abcdefghijkl"


def bt_handshake(info_hash: bytes = INFO_HASH) -> bytes:
    return PROTOCOL_HEADER + bytes(8) + info_hash + PEER_ID


def shuttle(
    initiator: MseInitiator,
    responder: MseResponder,
    chunker: Callable[[bytes], list[bytes]] = lambda data: [data] if data else [],
) -> None:
    """Move bytes both ways until neither side has anything left to say."""
    for _ in range(10):
        to_responder = initiator.data_to_send()
        for piece in chunker(to_responder):
            if not responder.done:
                responder.receive_data(piece)
        to_initiator = responder.data_to_send()
        for piece in chunker(to_initiator):
            if not initiator.done:
                initiator.receive_data(piece)
        if not to_responder and not to_initiator:
            return


def random_chunker(seed: int) -> Callable[[bytes], list[bytes]]:
    rng = random.Random(seed)

    def chunker(data: bytes) -> list[bytes]:
        pieces = []
        while data:
            size = rng.randint(1, 40)
            pieces.append(data[:size])
            data = data[size:]
        return pieces

    return chunker


# --- sans-I/O ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initiator_plaintext", "responder_plaintext", "responder_rc4", "expected"),
    [
        (True, True, True, "rc4"),
        (False, True, True, "rc4"),
        (True, False, True, "rc4"),
        (False, False, True, "rc4"),
        (True, True, False, "plaintext"),
        (False, True, False, None),
    ],
)
def test_policy_combinations_select_the_expected_method(
    initiator_plaintext: bool, responder_plaintext: bool, responder_rc4: bool, expected: str | None
) -> None:
    initiator = MseInitiator(
        INFO_HASH, allow_plaintext=initiator_plaintext, initial_payload=bt_handshake()
    )
    responder = MseResponder(
        [INFO_HASH], allow_plaintext=responder_plaintext, allow_rc4=responder_rc4
    )
    if expected is None:
        with pytest.raises(EncryptionError):
            shuttle(initiator, responder)
        return
    shuttle(initiator, responder)
    assert initiator.done and responder.done
    assert initiator.selected == responder.selected == expected
    assert responder.info_hash == INFO_HASH
    assert responder.initial_payload() == bt_handshake()
    # The streams continue in both directions, and plaintext really is plaintext.
    to_responder = initiator.cipher().encrypt(b"interested")
    to_initiator = responder.cipher().encrypt(b"unchoke")
    assert (to_responder == b"interested") == (expected == "plaintext")
    assert responder.cipher().decrypt(to_responder) == b"interested"
    assert initiator.cipher().decrypt(to_initiator) == b"unchoke"


def test_initiator_refuses_a_selection_it_did_not_offer() -> None:
    # Replay a responder that picked plaintext to an initiator that requires RC4:
    # build B's reply by hand from a plaintext-only responder talking to a
    # plaintext-allowing twin of the initiator (same private key).
    twin = MseInitiator(INFO_HASH, allow_plaintext=True, private_key=12345, pad_length=0)
    strict = MseInitiator(INFO_HASH, allow_plaintext=False, private_key=12345, pad_length=0)
    responder = MseResponder([INFO_HASH], allow_plaintext=True, allow_rc4=False)
    responder.receive_data(twin.data_to_send())
    reply = responder.data_to_send()
    twin.receive_data(reply)
    strict.receive_data(reply)
    responder.receive_data(twin.data_to_send())
    with pytest.raises(EncryptionError):
        strict.receive_data(responder.data_to_send())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pad_a=st.integers(0, 512),
    pad_b=st.integers(0, 512),
    pad_c=st.integers(0, 512),
    pad_d=st.integers(0, 512),
    initial_payload=st.binary(max_size=300),
    seed=st.integers(0, 2**32),
    allow_plaintext=st.booleans(),
)
def test_any_pads_and_fragmentation_complete_the_handshake(
    pad_a: int,
    pad_b: int,
    pad_c: int,
    pad_d: int,
    initial_payload: bytes,
    seed: int,
    allow_plaintext: bool,
) -> None:
    initiator = MseInitiator(
        INFO_HASH,
        allow_plaintext=allow_plaintext,
        initial_payload=initial_payload,
        pad_length=pad_a,
        inner_pad_length=pad_c,
    )
    responder = MseResponder(
        [OTHER_HASH, INFO_HASH],
        allow_plaintext=True,
        pad_length=pad_b,
        inner_pad_length=pad_d,
    )
    shuttle(initiator, responder, random_chunker(seed))
    assert initiator.done and responder.done
    assert initiator.selected == responder.selected == "rc4"
    assert responder.info_hash == INFO_HASH
    assert responder.initial_payload() == initial_payload
    assert initiator.leftover() == b"" and responder.leftover() == b""


def test_payload_sent_with_the_handshake_arrives_as_leftover() -> None:
    initiator = MseInitiator(INFO_HASH, allow_plaintext=False)
    responder = MseResponder([INFO_HASH], allow_plaintext=False)
    responder.receive_data(initiator.data_to_send())
    initiator.receive_data(responder.data_to_send())
    # A's step 3 plus the first bytes A sends once it knows the cipher would
    # normally wait for step 4; here B's step 4 and B's handshake travel together.
    responder.receive_data(initiator.data_to_send())
    assert responder.done and responder.leftover() == b""
    initiator.receive_data(responder.data_to_send() + responder.cipher().encrypt(bt_handshake()))
    assert initiator.done
    assert initiator.leftover() == bt_handshake()


def test_callable_lookup_and_obfuscated_hash() -> None:
    asked: list[bytes] = []

    def lookup(obfuscated: bytes) -> bytes | None:
        asked.append(obfuscated)
        return INFO_HASH if obfuscated == obfuscated_info_hash(INFO_HASH) else None

    initiator = MseInitiator(INFO_HASH, allow_plaintext=False)
    responder = MseResponder(lookup, allow_plaintext=False)
    shuttle(initiator, responder)
    assert responder.info_hash == INFO_HASH
    assert asked == [hashlib.sha1(b"req2" + INFO_HASH).digest()]


def test_wrong_info_hash_is_refused() -> None:
    initiator = MseInitiator(OTHER_HASH, allow_plaintext=True)
    responder = MseResponder([INFO_HASH], allow_plaintext=True)
    with pytest.raises(EncryptionError, match="do not serve"):
        shuttle(initiator, responder)
    assert not responder.done and responder.info_hash is None


def test_both_sides_derive_the_same_secret_from_fixed_keys() -> None:
    # With fixed private keys the public keys are what the spec's formula says.
    initiator = MseInitiator(INFO_HASH, allow_plaintext=False, private_key=3, pad_length=0)
    assert initiator.data_to_send() == pow(2, 3, DH_PRIME).to_bytes(KEY_LENGTH, "big")
    responder = MseResponder([INFO_HASH], allow_plaintext=False, private_key=5, pad_length=0)
    responder.receive_data(pow(2, 3, DH_PRIME).to_bytes(KEY_LENGTH, "big"))
    assert responder.data_to_send() == pow(2, 5, DH_PRIME).to_bytes(KEY_LENGTH, "big")


def rc4_keystream(key: bytes, length: int) -> bytes:
    """An independent, textbook RC4 (slow, test-only) to check the wire format."""
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for _ in range(length):
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(state[(state[i] + state[j]) % 256])
    return bytes(out)


def test_step_three_matches_the_specification_byte_for_byte() -> None:
    x_a, x_b = 0x1234567890ABCDEF, 0xFEDCBA0987654321
    initiator = MseInitiator(
        INFO_HASH, allow_plaintext=True, initial_payload=b"IA!", private_key=x_a, pad_length=0
    )
    initiator.data_to_send()
    y_b = pow(2, x_b, DH_PRIME).to_bytes(96, "big")
    initiator.receive_data(y_b)
    step3 = initiator.data_to_send()

    secret = pow(2, x_a * x_b, DH_PRIME).to_bytes(96, "big")
    sha1 = hashlib.sha1
    req2 = sha1(b"req2" + INFO_HASH).digest()
    req3 = sha1(b"req3" + secret).digest()
    plain = bytes(8) + (3).to_bytes(4, "big") + (0).to_bytes(2, "big") + (3).to_bytes(2, "big")
    plain += b"IA!"
    key_a = sha1(b"keyA" + secret + INFO_HASH).digest()
    stream = rc4_keystream(key_a, 1024 + len(plain))[1024:]
    expected = sha1(b"req1" + secret).digest()
    expected += bytes(a ^ b for a, b in zip(req2, req3, strict=True))
    expected += bytes(a ^ b for a, b in zip(plain, stream, strict=True))
    assert step3 == expected


def test_corrupted_verification_constant_is_refused() -> None:
    initiator = MseInitiator(INFO_HASH, allow_plaintext=False, pad_length=0)
    responder = MseResponder([INFO_HASH], allow_plaintext=False)
    responder.receive_data(initiator.data_to_send())
    initiator.receive_data(responder.data_to_send())
    step3 = bytearray(initiator.data_to_send())
    step3[40] ^= 0x01  # first byte of ENCRYPT(VC)
    with pytest.raises(EncryptionError, match="verification constant"):
        responder.receive_data(bytes(step3))


def test_initiator_gives_up_when_no_vc_follows_the_longest_pad() -> None:
    initiator = MseInitiator(INFO_HASH, allow_plaintext=False)
    initiator.data_to_send()
    y_b = pow(2, 99991, DH_PRIME).to_bytes(96, "big")
    initiator.receive_data(y_b + bytes(100))
    assert not initiator.done  # still within the pad window
    with pytest.raises(EncryptionError, match="verification constant"):
        initiator.receive_data(bytes(520))


def test_responder_gives_up_when_no_req1_follows_the_longest_pad() -> None:
    responder = MseResponder([INFO_HASH], allow_plaintext=True)
    responder.receive_data(pow(2, 424242, DH_PRIME).to_bytes(96, "big") + bytes(531))
    assert not responder.done
    with pytest.raises(EncryptionError, match="req1"):
        responder.receive_data(b"\x00")


@pytest.mark.parametrize("public_key", [0, 1, DH_PRIME - 1, DH_PRIME, 2**768 - 1])
def test_degenerate_public_keys_are_refused(public_key: int) -> None:
    responder = MseResponder([INFO_HASH], allow_plaintext=True)
    with pytest.raises(EncryptionError, match="public key"):
        responder.receive_data(public_key.to_bytes(96, "big"))
    initiator = MseInitiator(INFO_HASH, allow_plaintext=True)
    with pytest.raises(EncryptionError, match="public key"):
        initiator.receive_data(public_key.to_bytes(96, "big"))


@settings(max_examples=150, deadline=None)
@given(garbage=st.lists(st.binary(min_size=1, max_size=400), max_size=6))
def test_garbage_only_ever_raises_encryption_error(garbage: list[bytes]) -> None:
    for machine in (
        MseResponder([INFO_HASH], allow_plaintext=True),
        MseInitiator(INFO_HASH, allow_plaintext=True),
    ):
        try:
            for chunk in garbage:
                machine.receive_data(chunk)
        except EncryptionError:
            continue
        assert not machine.done


@settings(max_examples=60, deadline=None)
@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_a_flipped_byte_in_the_handshake_never_escapes_as_another_error(
    position: int, flip: int
) -> None:
    initiator = MseInitiator(INFO_HASH, allow_plaintext=True, initial_payload=bt_handshake())
    responder = MseResponder([INFO_HASH], allow_plaintext=True)
    wire = bytearray(initiator.data_to_send())
    responder_reply = b""
    try:
        responder.receive_data(bytes(wire))
        responder_reply = responder.data_to_send()
        initiator.receive_data(responder_reply)
        step3 = bytearray(initiator.data_to_send())
        step3[position % len(step3)] ^= flip
        responder.receive_data(bytes(step3))
    except EncryptionError:
        return
    # MSE authenticates nothing: a flip in req1 leaves B waiting for sync, one
    # in unused crypto_provide bits or in IA goes through. What can never get
    # through is a different torrent.
    if responder.done:
        assert responder.info_hash == INFO_HASH


def test_local_misuse_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        MseInitiator(b"short", allow_plaintext=True)
    with pytest.raises(LocalProtocolError):
        MseInitiator(INFO_HASH, allow_plaintext=True, pad_length=513)
    with pytest.raises(LocalProtocolError):
        MseInitiator(INFO_HASH, allow_plaintext=True, initial_payload=bytes(70_000))
    with pytest.raises(LocalProtocolError):
        MseResponder([INFO_HASH], allow_plaintext=False, allow_rc4=False)
    initiator = MseInitiator(INFO_HASH, allow_plaintext=True)
    with pytest.raises(LocalProtocolError):
        initiator.cipher()
    responder = MseResponder([INFO_HASH], allow_plaintext=True)
    shuttle(initiator, responder)
    with pytest.raises(LocalProtocolError):
        responder.receive_data(b"more")


def test_private_keys_outside_the_group_are_local_errors() -> None:
    for private_key in (0, 1, DH_PRIME - 1):
        with pytest.raises(LocalProtocolError, match="private key"):
            MseInitiator(INFO_HASH, allow_plaintext=True, private_key=private_key)
        with pytest.raises(LocalProtocolError, match="private key"):
            MseResponder([INFO_HASH], allow_plaintext=True, private_key=private_key)


def test_payloads_are_unavailable_until_the_handshake_finishes() -> None:
    initiator = MseInitiator(INFO_HASH, allow_plaintext=True, initial_payload=b"IA")
    responder = MseResponder([INFO_HASH], allow_plaintext=True)
    for early in (initiator.leftover, responder.leftover, responder.initial_payload):
        with pytest.raises(LocalProtocolError, match="not finished"):
            early()
    shuttle(initiator, responder)
    assert initiator.leftover() == b"" and responder.leftover() == b""
    assert responder.initial_payload() == b"IA"


X_A, X_B = 0x1234567890ABCDEF, 0xFEDCBA0987654321
SECRET = pow(2, X_A * X_B, DH_PRIME).to_bytes(96, "big")


def rc4_encrypt(key_name: bytes, plain: bytes) -> bytes:
    """What MSE sends for ``plain`` at the start of the keyA or keyB stream."""
    key = hashlib.sha1(key_name + SECRET + INFO_HASH).digest()
    stream = rc4_keystream(key, 1024 + len(plain))[1024:]
    return bytes(a ^ b for a, b in zip(plain, stream, strict=True))


def test_a_responder_announcing_an_overlong_pad_d_is_refused() -> None:
    initiator = MseInitiator(INFO_HASH, allow_plaintext=True, private_key=X_A, pad_length=0)
    initiator.data_to_send()
    initiator.receive_data(pow(2, X_B, DH_PRIME).to_bytes(96, "big"))
    initiator.data_to_send()
    # VC, crypto_select = RC4, len(PadD) = 513: one byte over the limit.
    step4 = rc4_encrypt(b"keyB", bytes(8) + (2).to_bytes(4, "big") + (513).to_bytes(2, "big"))
    with pytest.raises(EncryptionError, match="PadD"):
        initiator.receive_data(step4)


def test_an_initiator_announcing_an_overlong_pad_c_is_refused() -> None:
    responder = MseResponder([INFO_HASH], allow_plaintext=True, private_key=X_B, pad_length=0)
    responder.receive_data(pow(2, X_A, DH_PRIME).to_bytes(96, "big"))
    assert responder.data_to_send() == pow(2, X_B, DH_PRIME).to_bytes(96, "big")
    sha1 = hashlib.sha1
    req2 = sha1(b"req2" + INFO_HASH).digest()
    req3 = sha1(b"req3" + SECRET).digest()
    step3 = sha1(b"req1" + SECRET).digest() + bytes(a ^ b for a, b in zip(req2, req3, strict=True))
    # VC, crypto_provide = RC4 | plaintext, len(PadC) = 513.
    step3 += rc4_encrypt(b"keyA", bytes(8) + (3).to_bytes(4, "big") + (513).to_bytes(2, "big"))
    with pytest.raises(EncryptionError, match="PadC"):
        responder.receive_data(step3)


def test_looks_like_plaintext_handshake() -> None:
    assert looks_like_plaintext_handshake(bt_handshake())
    assert looks_like_plaintext_handshake(PROTOCOL_HEADER)
    assert not looks_like_plaintext_handshake(PROTOCOL_HEADER[:19])
    assert not looks_like_plaintext_handshake(
        MseInitiator(INFO_HASH, allow_plaintext=True).data_to_send()
    )


# --- trio adapter over real TCP ----------------------------------------------------------------


class Tap(trio.abc.Stream):  # type: ignore[misc, unused-ignore]
    """Records the bytes that cross a real stream, to look at the wire."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.wire = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.wire += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data: bytes = await self.inner.receive_some(max_bytes)
        self.wire += data
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def receive_exactly(stream: trio.abc.Stream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk: bytes = await stream.receive_some(count - len(data))
        if not chunk:
            raise EOFError(f"stream ended after {len(data)} of {count} bytes")
        data += chunk
    return data


P, F, R = EncryptionPolicy.PLAINTEXT, EncryptionPolicy.PREFER, EncryptionPolicy.REQUIRE


@pytest.mark.parametrize(
    ("outgoing", "incoming", "expected"),
    [
        (P, P, "plaintext"),
        (P, F, "plaintext"),
        (P, R, None),
        (F, P, "plaintext"),
        (F, F, "plaintext"),  # obfuscated handshake, plaintext payload (libtorrent's default)
        (F, R, "rc4"),
        (R, P, None),
        (R, F, "rc4"),
        (R, R, "rc4"),
    ],
)
async def test_tcp_negotiation_for_every_policy_pair(
    outgoing: EncryptionPolicy, incoming: EncryptionPolicy, expected: str | None
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server_result: dict[str, object] = {}

    async def serve_one() -> None:
        stream = await listeners[0].accept()
        try:
            secure, info_hash = await negotiate_incoming(stream, {INFO_HASH}, incoming)
        except EncryptionError as exc:
            server_result["error"] = exc
            await stream.aclose()
            return
        server_result["info_hash"] = info_hash
        server_result["handshake"] = await receive_exactly(secure, 68)
        await secure.send_all(bt_handshake() + b"\x00\x00\x00\x01\x02")
        await secure.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            tap = Tap(await trio.open_tcp_stream("127.0.0.1", port))
            if expected is None:
                # MSE fails as EncryptionError; a plaintext dialer just sees the hang-up.
                with pytest.raises((EncryptionError, EOFError, trio.BrokenResourceError)):
                    secure = await negotiate_outgoing(tap, INFO_HASH, outgoing)
                    await secure.send_all(bt_handshake())
                    await receive_exactly(secure, 68)
                await tap.aclose()
            else:
                secure = await negotiate_outgoing(tap, INFO_HASH, outgoing)
                await secure.send_all(bt_handshake())
                reply = await receive_exactly(secure, 73)
                await secure.aclose()
        await listeners[0].aclose()

    if expected is None:
        assert isinstance(server_result.get("error"), EncryptionError)
        return
    assert reply == bt_handshake() + b"\x00\x00\x00\x01\x02"
    assert server_result["handshake"] == bt_handshake()
    mse_used = outgoing is not P
    assert server_result["info_hash"] == (INFO_HASH if mse_used else None)
    # What crossed the wire: the handshake header in the clear unless RC4 was used.
    assert (PROTOCOL_HEADER in tap.wire) == (expected == "plaintext")
    if mse_used:
        assert len(tap.wire) >= 96 + 96 + 40
    if expected == "rc4":
        assert isinstance(secure, EncryptedStream) and not secure.cipher.is_identity


async def test_initial_payload_is_the_first_thing_the_listener_reads() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    received: list[bytes] = []

    async def serve_one() -> None:
        stream = await listeners[0].accept()
        secure, info_hash = await negotiate_incoming(stream, [INFO_HASH], R)
        assert info_hash == INFO_HASH
        received.append(await receive_exactly(secure, 68 + 5))
        await secure.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            secure = await negotiate_outgoing(stream, INFO_HASH, R, initial_payload=bt_handshake())
            await secure.send_all(b"\x00\x00\x00\x01\x02")
            assert await secure.receive_some() == b""  # the listener closed after reading
            await secure.aclose()
        await listeners[0].aclose()
    assert received == [bt_handshake() + b"\x00\x00\x00\x01\x02"]


async def test_prefer_falls_back_to_plaintext_for_a_legacy_peer() -> None:
    """A peer that only knows plaintext hangs up on MSE; PREFER then redials in the clear."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted_plaintext: list[bytes] = []

    async def legacy_peer() -> None:
        for _ in range(2):
            stream = await listeners[0].accept()
            first = await receive_exactly(stream, 68)
            if first.startswith(PROTOCOL_HEADER):
                accepted_plaintext.append(first)
                await stream.send_all(bt_handshake())
            await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(legacy_peer)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            with pytest.raises(EncryptionError):
                await negotiate_outgoing(stream, INFO_HASH, F)
            await stream.aclose()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            plain = await negotiate_outgoing(stream, INFO_HASH, P)
            assert plain is stream
            await plain.send_all(bt_handshake())
            assert await receive_exactly(plain, 68) == bt_handshake()
            await plain.aclose()
        await listeners[0].aclose()
    assert accepted_plaintext == [bt_handshake()]


async def test_a_silent_peer_times_out_as_encryption_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    with pytest.raises(EncryptionError, match="within"):
        await negotiate_outgoing(client, INFO_HASH, R, timeout=5)
    with pytest.raises(EncryptionError, match="within"):
        await negotiate_incoming(server, [INFO_HASH], R, timeout=5)


async def test_plaintext_replay_respects_max_bytes() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(bt_handshake())
    replay, info_hash = await negotiate_incoming(server, [INFO_HASH], F)
    assert info_hash is None
    pieces: list[bytes] = []
    while sum(len(piece) for piece in pieces) < 68:
        piece = await replay.receive_some(7)
        assert 0 < len(piece) <= 7
        pieces.append(piece)
    assert b"".join(pieces) == bt_handshake()


async def test_half_close_passes_through_the_encrypted_stream() -> None:
    client_side, server_side = trio.testing.memory_stream_pair()
    results: list[tuple[trio.abc.Stream, bytes | None]] = []

    async def accept() -> None:
        results.append(await negotiate_incoming(server_side, [INFO_HASH], R))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            client = await negotiate_outgoing(client_side, INFO_HASH, R)
        server, info_hash = results[0]
        assert info_hash == INFO_HASH
        assert isinstance(client, EncryptedStream)
        await client.send_all(memoryview(b"last words"))
        await client.send_eof()
        received = b""
        while chunk := await server.receive_some():
            received += chunk
    assert received == b"last words"
