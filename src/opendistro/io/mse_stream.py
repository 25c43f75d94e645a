"""Run the MSE handshake over a trio stream and hand back a stream that hides it.

The protocol itself lives in :mod:`opendistro.wire.mse`; this module only
shuttles bytes between it and a socket, bounds the whole exchange with a
timeout, and wraps the result in :class:`EncryptedStream` so the peer-wire
code above reads and writes plaintext whether or not the link is encrypted.
Every way the handshake can fail (bad bytes, a peer that hangs up, a peer
that stalls) surfaces as :class:`~opendistro.errors.EncryptionError`, so a
caller under ``PREFER`` has a single thing to catch before retrying in
plaintext.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# trio 0.22 ships no type information; later releases do, hence unused-ignore.
import trio  # type: ignore[import-untyped, unused-ignore]

from ..errors import EncryptionError
from ..wire.mse import (
    PROTOCOL_HEADER,
    EncryptionPolicy,
    MseInitiator,
    MseResponder,
    StreamCipher,
    looks_like_plaintext_handshake,
)
from .wrapped_stream import WrappedStream

__all__ = ["EncryptedStream", "negotiate_incoming", "negotiate_outgoing"]

DEFAULT_TIMEOUT = 10.0
_RECEIVE_SIZE = 65536


class EncryptedStream(WrappedStream):
    """A stream that encrypts on the way out and decrypts on the way in.

    It first returns ``leftover``: plaintext that arrived together with the
    handshake (or, for a plaintext connection, the bytes we peeked at to tell
    plaintext from MSE). With an identity cipher it is just that replay.

    RC4 is a running keystream, so two concurrent senders would corrupt it
    even if the transport serialised their writes; like trio's own streams we
    raise :class:`trio.BusyResourceError` instead of interleaving.
    """

    def __init__(
        self, transport: trio.abc.Stream, cipher: StreamCipher, leftover: bytes = b""
    ) -> None:
        super().__init__(transport)
        self.cipher = cipher
        self._leftover = memoryview(bytes(leftover))

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(self.cipher.encrypt(data))

    async def _receive(self, max_bytes: int | None) -> bytes:
        if self._leftover:
            size = len(self._leftover) if max_bytes is None else max_bytes
            chunk = bytes(self._leftover[:size])
            self._leftover = self._leftover[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return self.cipher.decrypt(await self.transport_stream.receive_some(max_bytes))

async def _receive(stream: trio.abc.Stream) -> bytes:
    data = bytes(await stream.receive_some(_RECEIVE_SIZE))
    if not data:
        raise EncryptionError("peer closed the connection during the MSE handshake")
    return data


async def _drive(stream: trio.abc.Stream, machine: MseInitiator | MseResponder) -> None:
    """Alternate writes and reads until the handshake is done, flushing the last reply."""
    while True:
        outgoing = machine.data_to_send()
        if outgoing:
            await stream.send_all(outgoing)
        if machine.done:
            return
        machine.receive_data(await _receive(stream))


async def negotiate_outgoing(
    stream: trio.abc.Stream,
    info_hash: bytes,
    policy: EncryptionPolicy,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    initial_payload: bytes = b"",
) -> trio.abc.Stream:
    """Run MSE as the dialling side and return the stream to speak BT over.

    PLAINTEXT returns ``stream`` untouched (``initial_payload`` is then not
    sent; the caller sends its handshake as usual). PREFER offers RC4 and
    plaintext, REQUIRE only RC4. ``initial_payload`` (typically our BT
    handshake) rides inside the MSE handshake to save a round trip. On
    EncryptionError the transport is in an unknown state: close it, and
    under PREFER redial in plaintext.
    """
    if policy is EncryptionPolicy.PLAINTEXT:
        return stream
    initiator = MseInitiator(
        info_hash,
        allow_plaintext=policy is EncryptionPolicy.PREFER,
        initial_payload=initial_payload,
    )
    with trio.move_on_after(timeout) as scope:
        try:
            await _drive(stream, initiator)
        except trio.BrokenResourceError as exc:
            raise EncryptionError("connection broke during the MSE handshake") from exc
    if scope.cancelled_caught:
        raise EncryptionError(f"MSE handshake did not finish within {timeout} s")
    return EncryptedStream(stream, initiator.cipher(), initiator.leftover())


async def _peek_header(stream: trio.abc.Stream) -> bytes:
    """Read just enough to tell a plaintext handshake from an MSE public key."""
    peeked = b""
    while len(peeked) < len(PROTOCOL_HEADER) and PROTOCOL_HEADER.startswith(peeked):
        peeked += await _receive(stream)
    return peeked


async def negotiate_incoming(
    stream: trio.abc.Stream,
    known_info_hashes: Iterable[bytes] | Callable[[bytes], bytes | None],
    policy: EncryptionPolicy,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[trio.abc.Stream, bytes | None]:
    """Accept either a plaintext or an MSE connection, as policy allows.

    Returns the stream to read the BT handshake from, and the info-hash the
    initiator asked for through MSE (None for a plaintext connection, whose
    handshake names it in the clear). For MSE the stream's first bytes are
    the decrypted initial payload. ``known_info_hashes`` is a collection of
    info-hashes or a lookup from HASH('req2', info_hash) to the info-hash
    (see :func:`opendistro.wire.mse.obfuscated_info_hash`).
    """
    with trio.move_on_after(timeout) as scope:
        try:
            peeked = await _peek_header(stream)
            if looks_like_plaintext_handshake(peeked):
                if policy is EncryptionPolicy.REQUIRE:
                    raise EncryptionError("peer sent a plaintext handshake; encryption required")
                return EncryptedStream(stream, StreamCipher.identity(), peeked), None
            responder = MseResponder(
                known_info_hashes,
                allow_plaintext=policy is not EncryptionPolicy.REQUIRE,
                allow_rc4=policy is not EncryptionPolicy.PLAINTEXT,
                # PREFER obfuscates the handshake and keeps the payload plaintext when
                # the initiator allows it, as libtorrent does by default.
                prefer_rc4=policy is EncryptionPolicy.REQUIRE,
            )
            responder.receive_data(peeked)
            await _drive(stream, responder)
        except trio.BrokenResourceError as exc:
            raise EncryptionError("connection broke during the MSE handshake") from exc
    if scope.cancelled_caught:
        raise EncryptionError(f"MSE handshake did not finish within {timeout} s")
    first_bytes = responder.initial_payload() + responder.leftover()
    return EncryptedStream(stream, responder.cipher(), first_bytes), responder.info_hash
