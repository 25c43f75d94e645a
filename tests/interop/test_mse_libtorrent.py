"""MSE against libtorrent, in both directions, with libtorrent forcing RC4.

libtorrent runs in-process (its own threads) with encryption forced for
incoming and outgoing connections, so a successful BitTorrent handshake here
means our MSE matched a real, independent implementation byte for byte.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio  # type: ignore[import-untyped, unused-ignore]

from opendistro.errors import EncryptionError
from opendistro.io.mse_stream import EncryptedStream, negotiate_incoming, negotiate_outgoing
from opendistro.wire.mse import PROTOCOL_HEADER, EncryptionPolicy
from tests.lt_session import loopback_session

lt: Any = pytest.importorskip("libtorrent")

pytestmark = pytest.mark.interop

LOOPBACK = "127.0.0.1"
PIECE_LENGTH = 16384
PIECES = 5
OUR_PEER_ID = b"-OD0001-mseinterop01"


@dataclass
class Seed:
    session: Any
    handle: Any
    port: int
    info_hash: bytes


def make_session() -> Any:
    """A loopback-only libtorrent session that refuses anything but RC4 MSE."""
    return loopback_session(
        out_enc_policy=int(lt.enc_policy.forced),
        in_enc_policy=int(lt.enc_policy.forced),
        allowed_enc_level=int(lt.enc_level.rc4),
        prefer_rc4=True,
    )


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    folder: Path = tmp_path_factory.mktemp("mse_seed")
    payload = folder / "payload.bin"
    payload.write_bytes(os.urandom(PIECE_LENGTH * PIECES))
    creator = lt.create_torrent(
        lt.list_files(str(payload)), PIECE_LENGTH, lt.create_torrent.v1_only
    )
    lt.set_piece_hashes(creator, str(folder))
    info = lt.torrent_info(lt.bdecode(lt.bencode(creator.generate())))

    session = make_session()
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(folder)
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    handle = session.add_torrent(params)

    deadline = time.monotonic() + 15
    while not (handle.status().is_seeding and session.listen_port()):
        if time.monotonic() > deadline:
            pytest.fail("libtorrent did not start seeding")
        time.sleep(0.05)
    yield Seed(session, handle, session.listen_port(), info.info_hashes().v1.to_bytes())
    session.remove_torrent(handle)


def bt_handshake(info_hash: bytes) -> bytes:
    return PROTOCOL_HEADER + bytes(8) + info_hash + OUR_PEER_ID


async def receive_exactly(stream: trio.abc.Stream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk: bytes = await stream.receive_some(count - len(data))
        if not chunk:
            raise EOFError(f"stream ended after {len(data)} of {count} bytes")
        data += chunk
    return data


async def receive_message(stream: trio.abc.Stream) -> tuple[int, bytes]:
    """One length-prefixed peer-wire message, skipping keep-alives."""
    while True:
        (length,) = struct.unpack(">I", await receive_exactly(stream, 4))
        if length:
            body = await receive_exactly(stream, length)
            return body[0], body[1:]


async def test_we_dial_libtorrent_with_required_encryption(seed: Seed) -> None:
    with trio.fail_after(15):
        tcp = await trio.open_tcp_stream(LOOPBACK, seed.port)
        stream = await negotiate_outgoing(tcp, seed.info_hash, EncryptionPolicy.REQUIRE)
        assert isinstance(stream, EncryptedStream) and not stream.cipher.is_identity
        await stream.send_all(bt_handshake(seed.info_hash))
        reply = await receive_exactly(stream, 68)
        assert reply[:20] == PROTOCOL_HEADER
        assert reply[28:48] == seed.info_hash
        message_id, body = await receive_message(stream)
        await stream.aclose()
    # We set no reserved bits, so libtorrent announces its pieces with a bitfield.
    assert message_id == 5
    assert body == bytes([0b11111000])


async def test_libtorrent_dials_us_with_required_encryption(seed: Seed) -> None:
    listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(15):
        seed.handle.connect_peer((LOOPBACK, port))
        tcp = await listeners[0].accept()
        stream, info_hash = await negotiate_incoming(
            tcp, {seed.info_hash}, EncryptionPolicy.REQUIRE
        )
        handshake = await receive_exactly(stream, 68)
        await stream.aclose()
    await listeners[0].aclose()
    assert info_hash == seed.info_hash
    assert isinstance(stream, EncryptedStream) and not stream.cipher.is_identity
    assert handshake[:20] == PROTOCOL_HEADER
    assert handshake[28:48] == seed.info_hash


async def test_libtorrent_really_refuses_plaintext(seed: Seed) -> None:
    """The control: without MSE this libtorrent hangs up, so the tests above used it."""
    with trio.fail_after(15):
        tcp = await trio.open_tcp_stream(LOOPBACK, seed.port)
        await tcp.send_all(bt_handshake(seed.info_hash))
        with pytest.raises((EOFError, trio.BrokenResourceError)):
            await receive_exactly(tcp, 68)
        await tcp.aclose()


async def test_libtorrent_refuses_a_wrong_info_hash_over_mse(seed: Seed) -> None:
    with trio.fail_after(15):
        tcp = await trio.open_tcp_stream(LOOPBACK, seed.port)
        with pytest.raises(EncryptionError):
            await negotiate_outgoing(tcp, bytes(20), EncryptionPolicy.REQUIRE)
        await tcp.aclose()
