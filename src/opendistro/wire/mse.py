"""Message Stream Encryption (MSE, also called PE), as a sans-I/O state machine.

MSE is the obfuscation layer that libtorrent, Transmission, qBittorrent, Vuze
and aria2 all speak. It does not authenticate anyone; it exists so that a
middlebox that throttles BitTorrent cannot recognise the peer-wire handshake.
A 768-bit Diffie-Hellman exchange gives both sides a secret ``S``; the
info-hash (``SKEY``) is mixed in so that only a peer that already knows the
torrent can complete the handshake, and RC4 keyed from both encrypts the rest.

The exchange, with A the initiator and B the responder::

    1 A->B  Ya, PadA
    2 B->A  Yb, PadB
    3 A->B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
            ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
    4 B->A  ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload...)
    5 A->B  ENCRYPT2(payload...)

Random pads make the stream lengths unpredictable, so each side has to *sync*:
B scans for ``HASH('req1', S)`` after Ya, A scans for the encrypted VC after Yb.
``ENCRYPT`` is always RC4; ``ENCRYPT2`` is whatever B selected (RC4, or
plaintext when both allow it, which costs nothing once obfuscation is done).

This module never touches a socket or a clock: feed bytes in with
:meth:`receive_data`, take bytes out with :meth:`data_to_send`, and once
``done`` is true, continue the stream with :meth:`cipher` and
:meth:`leftover`. Everything a peer can send wrongly raises
:class:`~opendistro.errors.EncryptionError`.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import secrets
from collections.abc import Callable, Iterable
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext

from opendistro.errors import EncryptionError, LocalProtocolError

try:  # cryptography >= 43 keeps RC4 with the other "decrepit" algorithms.
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
except ImportError:  # pragma: no cover - older cryptography releases
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[no-redef, unused-ignore]
        ARC4,
    )

__all__ = [
    "CRYPTO_PLAINTEXT",
    "CRYPTO_RC4",
    "MAX_PAD",
    "PROTOCOL_HEADER",
    "EncryptionPolicy",
    "MseInitiator",
    "MseResponder",
    "StreamCipher",
    "looks_like_plaintext_handshake",
    "obfuscated_info_hash",
]

PROTOCOL_HEADER = b"\x13BitTorrent protocol"
"""The first 20 bytes of every plaintext BitTorrent handshake."""

# The 768-bit safe prime of the MSE specification (the same one in every client).
DH_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A63A36210000000000090563",
    16,
)
DH_GENERATOR = 2
KEY_LENGTH = 96
"""Bytes of a public key or of the shared secret S on the wire (768 bits)."""
PRIVATE_KEY_BITS = 160
"""The spec's recommended private exponent size; more only costs time."""
MAX_PAD = 512
"""PadA, PadB, PadC and PadD are each at most this long."""
MAX_INITIAL_PAYLOAD = 0xFFFF
"""len(IA) is a 16-bit field."""

VC = bytes(8)
"""Verification constant: eight zero bytes that prove both sides agree on a key."""
CRYPTO_PLAINTEXT = 0x01
CRYPTO_RC4 = 0x02
RC4_DISCARD = 1024
"""RC4's first keystream bytes are biased; MSE throws the first 1 KiB away."""

HASH_LENGTH = 20
_SYNC_WINDOW_A = KEY_LENGTH + MAX_PAD + len(VC)
_SYNC_WINDOW_B = KEY_LENGTH + MAX_PAD + HASH_LENGTH


class EncryptionPolicy(enum.Enum):
    """What a connection insists on.

    PLAINTEXT never starts MSE (but, as a responder, still answers an MSE
    handshake by selecting plaintext, so a peer that prefers encryption need
    not reconnect); PREFER offers RC4 and plaintext and picks RC4; REQUIRE
    accepts RC4 only.
    """

    PLAINTEXT = "plaintext"
    PREFER = "prefer"
    REQUIRE = "require"


Selection = Literal["rc4", "plaintext"]


def _sha1(*parts: bytes) -> bytes:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _xor(left: bytes, right: bytes) -> bytes:
    return (int.from_bytes(left, "big") ^ int.from_bytes(right, "big")).to_bytes(len(left), "big")


def obfuscated_info_hash(info_hash: bytes) -> bytes:
    """HASH('req2', SKEY): how an info-hash appears (after unmasking) in step 3.

    A responder that serves many torrents keeps a table from this value to the
    info-hash, because the initiator never sends the info-hash itself.
    """
    return _sha1(b"req2", info_hash)


def looks_like_plaintext_handshake(first_bytes: bytes) -> bool:
    """Whether an incoming connection opened with a plaintext BT handshake.

    Needs the first 20 bytes: a plaintext handshake starts with the fixed
    protocol header, while an MSE initiator starts with 96 bytes of a
    Diffie-Hellman key that matches it with probability 2**-160. With fewer
    than 20 bytes this answers False; read more before deciding.
    """
    return first_bytes[: len(PROTOCOL_HEADER)] == PROTOCOL_HEADER


def _check_pad_length(pad_length: int | None) -> int:
    if pad_length is None:
        return secrets.randbelow(MAX_PAD + 1)
    if not 0 <= pad_length <= MAX_PAD:
        raise LocalProtocolError(f"MSE pad length must be 0..{MAX_PAD}, got {pad_length}")
    return pad_length


def _check_private_key(private_key: int | None) -> int:
    if private_key is None:
        return secrets.randbits(PRIVATE_KEY_BITS) | (1 << (PRIVATE_KEY_BITS - 1))
    if not 1 < private_key < DH_PRIME - 1:
        raise LocalProtocolError("MSE private key must lie strictly between 1 and P - 1")
    return private_key


def _public_key(private_key: int) -> bytes:
    return pow(DH_GENERATOR, private_key, DH_PRIME).to_bytes(KEY_LENGTH, "big")


def _shared_secret(private_key: int, remote_public: bytes) -> bytes:
    """S = Y_remote ** X mod P, as 96 big-endian bytes.

    Rejecting 0, 1 and P - 1 (and anything not below P) keeps a hostile peer
    from forcing a predictable S.
    """
    remote = int.from_bytes(remote_public, "big")
    if not 1 < remote < DH_PRIME - 1:
        raise EncryptionError("peer sent an invalid Diffie-Hellman public key")
    return pow(remote, private_key, DH_PRIME).to_bytes(KEY_LENGTH, "big")


def _rc4(key: bytes) -> CipherContext:
    """An RC4 keystream already past the 1024 bytes MSE discards."""
    context = Cipher(ARC4(key), mode=None).encryptor()
    context.update(bytes(RC4_DISCARD))
    return context


class StreamCipher:
    """Encrypts what we send and decrypts what we receive, in stream order.

    RC4 is stateful, so every byte must pass through exactly once and in
    order; for a plaintext selection both directions are the identity.
    """

    def __init__(self, outgoing: CipherContext | None, incoming: CipherContext | None) -> None:
        self._outgoing = outgoing
        self._incoming = incoming

    @classmethod
    def identity(cls) -> StreamCipher:
        """The cipher of a connection that selected plaintext (or never did MSE)."""
        return cls(None, None)

    @property
    def is_identity(self) -> bool:
        return self._outgoing is None

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._outgoing is None:
            return bytes(data)
        return self._outgoing.update(data)

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._incoming is None:
            return bytes(data)
        return self._incoming.update(data)


def _select_from(
    provided: int, *, allow_rc4: bool, allow_plaintext: bool, prefer_rc4: bool
) -> int:
    """The responder's choice among what the initiator provides and we allow."""
    order = (CRYPTO_RC4, CRYPTO_PLAINTEXT) if prefer_rc4 else (CRYPTO_PLAINTEXT, CRYPTO_RC4)
    allowed = {CRYPTO_RC4: allow_rc4, CRYPTO_PLAINTEXT: allow_plaintext}
    for method in order:
        if allowed[method] and provided & method:
            return method
    raise EncryptionError(f"no acceptable crypto method in crypto_provide={provided:#x}")


def _selection_name(method: int) -> Selection:
    return "rc4" if method == CRYPTO_RC4 else "plaintext"


class _Handshake(abc.ABC):
    """What both sides of the MSE handshake share: the sans-I/O driving surface.

    Subclasses hold the state machine: ``done`` and ``_step``, which consumes
    ``_buffer``, appends to ``_outgoing`` and sets ``_cipher`` when finished.
    """

    _buffer: bytearray
    _outgoing: bytearray
    _cipher: StreamCipher | None

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """The handshake finished; ``cipher()`` and the payload are available."""

    @abc.abstractmethod
    def _step(self) -> bool:
        """Advance as far as the buffered bytes allow; False when more are needed."""

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport now (empty when nothing is due)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the transport; raises EncryptionError on nonsense."""
        if self.done:
            raise LocalProtocolError("MSE handshake is finished; decrypt with cipher()")
        self._buffer += data
        while self._step():
            pass

    def cipher(self) -> StreamCipher:
        """The cipher for the rest of the connection (identity for plaintext)."""
        if self._cipher is None:
            raise LocalProtocolError("MSE handshake has not finished")
        return self._cipher


class _InitiatorState(enum.Enum):
    AWAIT_PUBLIC_KEY = enum.auto()
    AWAIT_VC = enum.auto()
    AWAIT_SELECT = enum.auto()
    AWAIT_PAD_D = enum.auto()
    DONE = enum.auto()


class MseInitiator(_Handshake):
    """Side A: the peer that opened the TCP connection.

    ``initial_payload`` (IA) rides inside step 3, usually the plaintext BT
    handshake, saving a round trip. ``allow_plaintext`` adds plaintext to
    crypto_provide; RC4 is always offered. ``private_key`` and ``pad_length``
    exist for tests and fixed vectors; leave them ``None`` in production.
    ``inner_pad_length`` is PadC, which every client sends empty today.
    """

    def __init__(
        self,
        info_hash: bytes,
        *,
        allow_plaintext: bool,
        initial_payload: bytes = b"",
        private_key: int | None = None,
        pad_length: int | None = None,
        inner_pad_length: int = 0,
    ) -> None:
        if len(info_hash) != HASH_LENGTH:
            raise LocalProtocolError("MSE needs a 20-byte info-hash (truncate a v2 hash)")
        if len(initial_payload) > MAX_INITIAL_PAYLOAD:
            raise LocalProtocolError("MSE initial payload is longer than 65535 bytes")
        self._info_hash = bytes(info_hash)
        self._provide = CRYPTO_RC4 | (CRYPTO_PLAINTEXT if allow_plaintext else 0)
        self._initial_payload = bytes(initial_payload)
        self._private_key = _check_private_key(private_key)
        self._pad_c = secrets.token_bytes(_check_pad_length(inner_pad_length))
        self._state = _InitiatorState.AWAIT_PUBLIC_KEY
        self._buffer = bytearray()
        self._outgoing = bytearray(_public_key(self._private_key))
        self._outgoing += secrets.token_bytes(_check_pad_length(pad_length))
        self._encrypt: CipherContext | None = None
        self._decrypt: CipherContext | None = None
        self._encrypted_vc = b""
        self._pad_d_length = 0
        self._leftover = b""
        self._cipher: StreamCipher | None = None
        self.selected: Selection | None = None

    @property
    def done(self) -> bool:
        return self._state is _InitiatorState.DONE

    def leftover(self) -> bytes:
        """Payload bytes that arrived with the handshake, already decrypted."""
        if not self.done:
            raise LocalProtocolError("MSE handshake has not finished")
        return self._leftover

    def _step(self) -> bool:
        """Advance by one handshake field if enough bytes are buffered."""
        if self._state is _InitiatorState.AWAIT_PUBLIC_KEY:
            return self._on_public_key()
        if self._state is _InitiatorState.AWAIT_VC:
            return self._on_vc()
        if self._state is _InitiatorState.AWAIT_SELECT:
            return self._on_select()
        if self._state is _InitiatorState.AWAIT_PAD_D:
            return self._on_pad_d()
        return False

    def _on_public_key(self) -> bool:
        if len(self._buffer) < KEY_LENGTH:
            return False
        secret = _shared_secret(self._private_key, bytes(self._buffer[:KEY_LENGTH]))
        skey = self._info_hash
        self._encrypt = _rc4(_sha1(b"keyA", secret, skey))
        self._decrypt = _rc4(_sha1(b"keyB", secret, skey))
        # B encrypts VC with the first keystream bytes; knowing them lets us
        # find where PadB ends without decrypting PadB.
        self._encrypted_vc = _rc4(_sha1(b"keyB", secret, skey)).update(VC)
        encrypted = self._encrypt.update(
            VC
            + self._provide.to_bytes(4, "big")
            + len(self._pad_c).to_bytes(2, "big")
            + self._pad_c
            + len(self._initial_payload).to_bytes(2, "big")
            + self._initial_payload
        )
        self._outgoing += _sha1(b"req1", secret)
        self._outgoing += _xor(obfuscated_info_hash(skey), _sha1(b"req3", secret))
        self._outgoing += encrypted
        self._state = _InitiatorState.AWAIT_VC
        return True

    def _on_vc(self) -> bool:
        window = bytes(self._buffer[KEY_LENGTH:_SYNC_WINDOW_A])
        found = window.find(self._encrypted_vc)
        if found < 0:
            if len(self._buffer) >= _SYNC_WINDOW_A:
                raise EncryptionError("no MSE verification constant within 512 bytes of pad")
            return False
        del self._buffer[: KEY_LENGTH + found + len(VC)]
        assert self._decrypt is not None
        self._decrypt.update(VC)  # the keystream bytes B spent on VC
        self._state = _InitiatorState.AWAIT_SELECT
        return True

    def _on_select(self) -> bool:
        if len(self._buffer) < 6:
            return False
        assert self._decrypt is not None
        fields = self._decrypt.update(bytes(self._buffer[:6]))
        del self._buffer[:6]
        select = int.from_bytes(fields[:4], "big")
        if select not in (CRYPTO_RC4, CRYPTO_PLAINTEXT) or not select & self._provide:
            raise EncryptionError(f"peer selected a crypto method we did not offer: {select:#x}")
        self._pad_d_length = int.from_bytes(fields[4:6], "big")
        if self._pad_d_length > MAX_PAD:
            raise EncryptionError(f"MSE PadD of {self._pad_d_length} bytes exceeds {MAX_PAD}")
        self.selected = _selection_name(select)
        self._state = _InitiatorState.AWAIT_PAD_D
        return True

    def _on_pad_d(self) -> bool:
        if len(self._buffer) < self._pad_d_length:
            return False
        assert self._decrypt is not None and self._encrypt is not None
        self._decrypt.update(bytes(self._buffer[: self._pad_d_length]))
        del self._buffer[: self._pad_d_length]
        if self.selected == "rc4":
            self._cipher = StreamCipher(self._encrypt, self._decrypt)
        else:
            self._cipher = StreamCipher.identity()
        self._leftover = self._cipher.decrypt(self._buffer)
        self._buffer.clear()
        self._state = _InitiatorState.DONE
        return True


class _ResponderState(enum.Enum):
    AWAIT_PUBLIC_KEY = enum.auto()
    AWAIT_REQ1 = enum.auto()
    AWAIT_SKEY = enum.auto()
    AWAIT_PROVIDE = enum.auto()
    AWAIT_PAD_C = enum.auto()
    AWAIT_IA_LENGTH = enum.auto()
    AWAIT_IA = enum.auto()
    DONE = enum.auto()


SkeyLookup = Callable[[bytes], bytes | None]
"""Maps HASH('req2', SKEY) to the info-hash it came from, or None if unknown."""


def _as_lookup(skeys: SkeyLookup | Iterable[bytes]) -> SkeyLookup:
    if callable(skeys):
        return skeys
    table = {obfuscated_info_hash(bytes(info_hash)): bytes(info_hash) for info_hash in skeys}
    return table.get


class MseResponder(_Handshake):
    """Side B: the peer that accepted the TCP connection.

    ``skeys`` names the torrents we serve: either a collection of 20-byte
    info-hashes, or a callable from HASH('req2', info_hash) (see
    :func:`obfuscated_info_hash`) to the info-hash, for a session with many
    torrents that keeps its own table. Among the methods the initiator offers
    and we allow, the responder selects RC4 first when ``prefer_rc4`` holds,
    else plaintext first (an obfuscated handshake with a plaintext payload,
    libtorrent's default, which spares both sides the cipher's CPU).
    """

    def __init__(
        self,
        skeys: SkeyLookup | Iterable[bytes],
        *,
        allow_plaintext: bool,
        allow_rc4: bool = True,
        prefer_rc4: bool = True,
        private_key: int | None = None,
        pad_length: int | None = None,
        inner_pad_length: int = 0,
    ) -> None:
        if not (allow_plaintext or allow_rc4):
            raise LocalProtocolError("an MSE responder must allow RC4 or plaintext")
        self._prefer_rc4 = prefer_rc4
        self._lookup = _as_lookup(skeys)
        self._allow_plaintext = allow_plaintext
        self._allow_rc4 = allow_rc4
        self._private_key = _check_private_key(private_key)
        self._pad_b = secrets.token_bytes(_check_pad_length(pad_length))
        self._pad_d = secrets.token_bytes(_check_pad_length(inner_pad_length))
        self._state = _ResponderState.AWAIT_PUBLIC_KEY
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._secret = b""
        self._req1 = b""
        self._encrypt: CipherContext | None = None
        self._decrypt: CipherContext | None = None
        self._select = 0
        self._pad_c_length = 0
        self._ia_length = 0
        self._initial_payload = b""
        self._leftover = b""
        self._cipher: StreamCipher | None = None
        self.info_hash: bytes | None = None
        self.selected: Selection | None = None

    @property
    def done(self) -> bool:
        return self._state is _ResponderState.DONE

    def initial_payload(self) -> bytes:
        """IA, decrypted: usually the initiator's BT handshake (may be empty)."""
        if not self.done:
            raise LocalProtocolError("MSE handshake has not finished")
        return self._initial_payload

    def leftover(self) -> bytes:
        """Payload bytes after IA that arrived with the handshake, decrypted."""
        if not self.done:
            raise LocalProtocolError("MSE handshake has not finished")
        return self._leftover

    def _step(self) -> bool:
        """Advance by one handshake field if enough bytes are buffered."""
        handler = {
            _ResponderState.AWAIT_PUBLIC_KEY: self._on_public_key,
            _ResponderState.AWAIT_REQ1: self._on_req1,
            _ResponderState.AWAIT_SKEY: self._on_skey,
            _ResponderState.AWAIT_PROVIDE: self._on_provide,
            _ResponderState.AWAIT_PAD_C: self._on_pad_c,
            _ResponderState.AWAIT_IA_LENGTH: self._on_ia_length,
            _ResponderState.AWAIT_IA: self._on_ia,
        }.get(self._state)
        return handler() if handler is not None else False

    def _on_public_key(self) -> bool:
        if len(self._buffer) < KEY_LENGTH:
            return False
        self._secret = _shared_secret(self._private_key, bytes(self._buffer[:KEY_LENGTH]))
        self._req1 = _sha1(b"req1", self._secret)
        self._outgoing += _public_key(self._private_key) + self._pad_b
        self._state = _ResponderState.AWAIT_REQ1
        return True

    def _on_req1(self) -> bool:
        window = bytes(self._buffer[KEY_LENGTH:_SYNC_WINDOW_B])
        found = window.find(self._req1)
        if found < 0:
            if len(self._buffer) >= _SYNC_WINDOW_B:
                raise EncryptionError("no MSE req1 hash within 512 bytes of pad")
            return False
        del self._buffer[: KEY_LENGTH + found + HASH_LENGTH]
        self._state = _ResponderState.AWAIT_SKEY
        return True

    def _on_skey(self) -> bool:
        if len(self._buffer) < HASH_LENGTH:
            return False
        masked = bytes(self._buffer[:HASH_LENGTH])
        del self._buffer[:HASH_LENGTH]
        info_hash = self._lookup(_xor(masked, _sha1(b"req3", self._secret)))
        if info_hash is None:
            raise EncryptionError("peer asked for a torrent we do not serve")
        self.info_hash = info_hash
        self._encrypt = _rc4(_sha1(b"keyB", self._secret, info_hash))
        self._decrypt = _rc4(_sha1(b"keyA", self._secret, info_hash))
        self._state = _ResponderState.AWAIT_PROVIDE
        return True

    def _on_provide(self) -> bool:
        if len(self._buffer) < len(VC) + 6:
            return False
        assert self._decrypt is not None
        fields = self._decrypt.update(bytes(self._buffer[:14]))
        del self._buffer[:14]
        if fields[:8] != VC:
            raise EncryptionError("MSE verification constant did not decrypt to zeros")
        provided = int.from_bytes(fields[8:12], "big")
        self._select = _select_from(
            provided,
            allow_rc4=self._allow_rc4,
            allow_plaintext=self._allow_plaintext,
            prefer_rc4=self._prefer_rc4,
        )
        self._pad_c_length = int.from_bytes(fields[12:14], "big")
        if self._pad_c_length > MAX_PAD:
            raise EncryptionError(f"MSE PadC of {self._pad_c_length} bytes exceeds {MAX_PAD}")
        self._state = _ResponderState.AWAIT_PAD_C
        return True

    def _on_pad_c(self) -> bool:
        if len(self._buffer) < self._pad_c_length:
            return False
        assert self._decrypt is not None
        self._decrypt.update(bytes(self._buffer[: self._pad_c_length]))
        del self._buffer[: self._pad_c_length]
        self._state = _ResponderState.AWAIT_IA_LENGTH
        return True

    def _on_ia_length(self) -> bool:
        if len(self._buffer) < 2:
            return False
        assert self._decrypt is not None
        self._ia_length = int.from_bytes(self._decrypt.update(bytes(self._buffer[:2])), "big")
        del self._buffer[:2]
        self._state = _ResponderState.AWAIT_IA
        return True

    def _on_ia(self) -> bool:
        if len(self._buffer) < self._ia_length:
            return False
        assert self._decrypt is not None and self._encrypt is not None
        self._initial_payload = self._decrypt.update(bytes(self._buffer[: self._ia_length]))
        del self._buffer[: self._ia_length]
        self._outgoing += self._encrypt.update(
            VC + self._select.to_bytes(4, "big") + len(self._pad_d).to_bytes(2, "big") + self._pad_d
        )
        self.selected = _selection_name(self._select)
        if self._select == CRYPTO_RC4:
            self._cipher = StreamCipher(self._encrypt, self._decrypt)
        else:
            self._cipher = StreamCipher.identity()
        self._leftover = self._cipher.decrypt(self._buffer)
        self._buffer.clear()
        self._state = _ResponderState.DONE
        return True
