"""The mirror HTTP client against our fault-injecting server on 127.0.0.1 (HTTP and HTTPS)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import itertools
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro import Metainfo, __version__
from opendistro.errors import (
    LocalProtocolError,
    MirrorDataError,
    MirrorError,
    MirrorNotFound,
    MirrorUnavailable,
)
from opendistro.mirrors.backoff import MirrorHealth
from opendistro.mirrors.http import HttpMirror, Timeouts
from opendistro.mirrors.webseed import HttpSpan, piece_spans, spans
from tests.mirror_server import MirrorServer, piece_space

#: Short limits so fault tests finish quickly; the fail_after below is only a safety net.
QUICK = Timeouts(connect=5, first_byte=0.5, idle=0.5)
SAFETY = 30
PIECE = 16384


async def start(root: Path, nursery: trio.Nursery, **kwargs: Any) -> MirrorServer:
    server = MirrorServer(root, **kwargs)
    await nursery.start(server.serve)
    return server


def a_span(
    metainfo: Metainfo, server: MirrorServer, first: int = 5000, length: int = 50_000
) -> HttpSpan:
    [span] = spans(metainfo, server.url, first, length)
    return span


async def fetch(mirror: HttpMirror, span: HttpSpan) -> bytes:
    buffer = bytearray(span.length)
    with trio.fail_after(SAFETY):
        transfer = await mirror.fetch_span(span, memoryview(buffer))
    assert transfer.size == span.length
    return bytes(buffer)


# -- data ---------------------------------------------------------------------------------


async def test_spans_arrive_intact_over_one_kept_alive_connection(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    expected = piece_space(metainfo, folder)
    async with HttpMirror() as mirror:
        count = 0
        for index in range(metainfo.num_pieces):
            buffer = bytearray(metainfo.piece_size(index))
            offset = index * PIECE
            run = piece_spans(metainfo, server.url, index)
            count += len(run)
            with trio.fail_after(SAFETY):
                await mirror.fetch_run(run, memoryview(buffer), offset=offset)
            assert bytes(buffer) == expected[offset : offset + len(buffer)]
            assert hashlib.sha1(buffer).digest() == metainfo.piece_hash_v1(index)
    assert server.connections == 1
    assert len(server.requests) == count
    first = server.requests[0]
    assert first.headers["user-agent"] == f"opendistro/{__version__}"
    assert first.headers["range"] == "bytes=0-16383"
    assert first.path == "/release/dir0/file0.bin"


async def test_a_run_of_pieces_zeroes_padding_and_matches_the_hashes(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    run = piece_spans(metainfo, server.url, 0, metainfo.num_pieces)
    buffer = bytearray(b"\xee" * metainfo.total_length)  # garbage that must be overwritten
    async with HttpMirror() as mirror:
        with trio.fail_after(SAFETY):
            transfer = await mirror.fetch_run(run, memoryview(buffer), offset=0)
    assert transfer.size == 200_000 and len(server.requests) == 3
    assert bytes(buffer) == piece_space(metainfo, folder)
    for index in range(metainfo.num_pieces):
        piece = buffer[index * PIECE : index * PIECE + metainfo.piece_size(index)]
        assert hashlib.sha1(piece).digest() == metainfo.piece_hash_v1(index)


async def test_stream_span_hands_over_torrent_positions(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.rate = 400_000  # several small writes
    span = a_span(metainfo, server)
    received: dict[int, bytes] = {}
    async with HttpMirror() as mirror:
        with trio.fail_after(SAFETY):
            await mirror.stream_span(span, lambda at, data: received.update({at: bytes(data)}))
    assert min(received) == span.torrent_offset
    joined = b"".join(received[at] for at in sorted(received))
    assert joined == piece_space(metainfo, folder)[5000:55_000]


@pytest.mark.parametrize("fault", ["chunked", "slow"])
async def test_legal_variations_are_accepted(
    release: tuple[Metainfo, Path], nursery: trio.Nursery, fault: str
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    if fault == "chunked":
        server.faults.chunked = True
    else:
        server.faults.rate = 200_000  # a body spread over many reads, each well within idle
    span = a_span(metainfo, server)
    async with HttpMirror(timeouts=Timeouts(idle=5)) as mirror:
        assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
        assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
    assert server.connections == 1


async def test_a_whole_file_may_come_as_200(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.ignore_range = True
    [span] = spans(metainfo, server.url, 0, 100_000)
    assert span.is_whole_file
    async with HttpMirror() as mirror:
        assert await fetch(mirror, span) == (folder / "dir0" / "file0.bin").read_bytes()


# -- faults -------------------------------------------------------------------------------

FAULTS: list[tuple[dict[str, Any], type[MirrorError], str]] = [
    ({"refuse": True}, MirrorUnavailable, ""),
    ({"status": 404}, MirrorNotFound, "HTTP 404"),
    ({"status": 410}, MirrorNotFound, "HTTP 410"),
    ({"status": 500}, MirrorUnavailable, "HTTP 500"),
    ({"status": 503}, MirrorUnavailable, "HTTP 503"),
    ({"status": 429}, MirrorUnavailable, "HTTP 429"),
    ({"header_delay": 60}, MirrorUnavailable, "no response within"),
    ({"stall_after": 1000}, MirrorUnavailable, "no body data within"),
    ({"cut_after": 1000}, MirrorDataError, "ended after 1000 of 50000 bytes"),
    ({"cut_after": 20_000, "chunked": True}, MirrorDataError, "ended after 20000 of 50000"),
    ({"cut_after": 1000, "close": True}, MirrorDataError, "ended after 1000 of 50000"),
    ({"cut_after": 1000, "extra": 1}, MirrorDataError, "ended after 1000 of 50000"),
    ({"extra": 10}, MirrorDataError, "longer than 50000 bytes"),
    ({"extra": 1_000_000}, MirrorDataError, "longer than 50000 bytes"),
    ({"content_length_delta": 1}, MirrorDataError, "Content-Length 50001"),
    ({"content_length_delta": -1}, MirrorDataError, "Content-Length 49999"),
    ({"wrong_content_range": True}, MirrorDataError, "does not match the requested"),
    ({"ignore_range": True}, MirrorDataError, "ignored the range"),
]


@pytest.mark.parametrize(("faults", "error", "message"), FAULTS)
async def test_each_fault_gives_its_typed_error(
    release: tuple[Metainfo, Path],
    nursery: trio.Nursery,
    faults: dict[str, Any],
    error: type[MirrorError],
    message: str,
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    for name, value in faults.items():
        setattr(server.faults, name, value)
    span = a_span(metainfo, server)
    buffer = bytearray(span.length)
    async with HttpMirror(timeouts=QUICK) as mirror:
        with trio.fail_after(SAFETY), pytest.raises(error) as caught:
            await mirror.fetch_span(span, memoryview(buffer))
    assert message in str(caught.value)
    assert span.url in str(caught.value)


async def test_other_statuses_are_plain_mirror_errors(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.status = 403
    async with HttpMirror(timeouts=QUICK) as mirror:
        with trio.fail_after(SAFETY), pytest.raises(MirrorError) as caught:
            await fetch(mirror, a_span(metainfo, server))
    assert type(caught.value) is MirrorError
    assert "HTTP 403" in str(caught.value)


async def test_refused_connection_is_unavailable(release: tuple[Metainfo, Path]) -> None:
    metainfo, _ = release
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [span] = spans(metainfo, f"http://127.0.0.1:{port}/", 0, 10)
    async with HttpMirror(timeouts=QUICK) as mirror:
        with trio.fail_after(SAFETY), pytest.raises(MirrorUnavailable, match="cannot connect"):
            await fetch(mirror, span)


async def test_a_mirror_with_another_version_of_the_file_is_refused(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    file = folder / "dir0" / "file0.bin"
    async with HttpMirror(timeouts=QUICK) as mirror:
        with file.open("ab") as handle:
            handle.write(b"longer now")
        with trio.fail_after(SAFETY), pytest.raises(MirrorDataError, match="has 100010 bytes"):
            await fetch(mirror, a_span(metainfo, server))
        file.write_bytes(file.read_bytes()[:1000])
        with trio.fail_after(SAFETY), pytest.raises(MirrorDataError, match="416"):
            await fetch(mirror, a_span(metainfo, server))


async def test_corrupt_data_passes_http_but_fails_the_piece_hash(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.corrupt_at = 20_000  # in piece 1 of dir0/file0.bin
    health = MirrorHealth()
    async with HttpMirror() as mirror:
        for index in (0, 1):
            buffer = bytearray(PIECE)
            with trio.fail_after(SAFETY):
                await mirror.fetch_run(
                    piece_spans(metainfo, server.url, index),
                    memoryview(buffer),
                    offset=index * PIECE,
                )
            good = hashlib.sha1(buffer).digest() == metainfo.piece_hash_v1(index)
            assert good == (index == 0)
            if not good:
                health.drop(MirrorDataError(f"piece {index} from {server.url} failed its hash"))
    assert health.dropped and not health.available(float("inf"))


async def test_wrong_buffer_size_is_a_local_error(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    span = a_span(metainfo, server)
    async with HttpMirror() as mirror:
        with pytest.raises(LocalProtocolError):
            await mirror.fetch_span(span, memoryview(bytearray(span.length - 1)))
        with pytest.raises(LocalProtocolError):
            await mirror.fetch_span(span, memoryview(bytes(span.length)))
    assert server.requests == []


# -- connections ---------------------------------------------------------------------------


async def test_the_connection_survives_error_answers(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    span = a_span(metainfo, server)
    async with HttpMirror(timeouts=QUICK) as mirror:
        for status, error in ((404, MirrorNotFound), (503, MirrorUnavailable)):
            server.faults.status = status
            with trio.fail_after(SAFETY), pytest.raises(error):
                await fetch(mirror, span)
        server.faults.status = None
        assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
    assert server.connections == 1


async def test_a_stale_kept_alive_connection_is_replaced(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.drop_idle = True
    span = a_span(metainfo, server)
    async with HttpMirror(timeouts=QUICK) as mirror:
        for _ in range(3):
            assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
    assert server.connections == 3
    assert len(server.requests) == 3


async def test_connection_close_is_honoured(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.close = True
    async with HttpMirror() as mirror:
        for _ in range(3):
            await fetch(mirror, a_span(metainfo, server))
    assert server.connections == 3


async def test_a_cancelled_fetch_does_not_poison_the_pool(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.stall_after = 1000
    span = a_span(metainfo, server)
    async with HttpMirror() as mirror:
        with trio.move_on_after(0.2) as scope:
            await mirror.fetch_span(span, memoryview(bytearray(span.length)))
        assert scope.cancelled_caught
        server.faults.stall_after = None
        assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
    assert server.connections == 2


@pytest.mark.parametrize("cap", [1, 2, 3])
async def test_connections_per_host_are_capped(
    release: tuple[Metainfo, Path], nursery: trio.Nursery, cap: int
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.header_delay = 0.05
    expected = piece_space(metainfo, folder)
    results: dict[int, bytes] = {}
    async with HttpMirror(max_connections=cap) as mirror:

        async def one(index: int) -> None:
            [span] = piece_spans(metainfo, server.url, index)  # pieces 0-5 lie in one file
            results[index] = await fetch(mirror, span)

        async with trio.open_nursery() as fetches:
            for index in range(6):
                fetches.start_soon(one, index)
    assert server.max_open_connections <= cap
    assert server.connections <= cap
    assert len(server.requests) == 6
    for index in range(6):
        assert results[index] == expected[index * PIECE : (index + 1) * PIECE]


# -- redirects ----------------------------------------------------------------------------


@pytest.fixture
def mirrored(release: tuple[Metainfo, Path]) -> tuple[Metainfo, Path]:
    """The release twice on the server: at /release and at /moved/release."""
    metainfo, folder = release
    shutil.copytree(folder, folder.parent / "moved" / folder.name)
    return metainfo, folder


async def test_relative_redirects_are_followed_and_remembered(
    mirrored: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = mirrored
    server = await start(folder.parent, nursery)
    span = a_span(metainfo, server)
    path = "/release/dir0/file0.bin"
    server.faults.redirects = {path: "/hop" + path, "/hop" + path: "../../../moved" + path}
    async with HttpMirror() as mirror:
        assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
        assert [r.path for r in server.requests] == [path, "/hop" + path, "/moved" + path]
        await fetch(mirror, span)
        assert server.requests[-1].path == "/moved" + path
        assert len(server.requests) == 4
        assert all(r.headers["range"] == span.range_header for r in server.requests)
    assert server.connections == 1


async def test_an_absolute_redirect_to_another_server(
    mirrored: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = mirrored
    first = await start(folder.parent, nursery)
    second = await start(folder.parent / "moved", nursery)
    span = a_span(metainfo, first)
    first.faults.redirects = {"/release/dir0/file0.bin": second.url + "release/dir0/file0.bin"}
    async with HttpMirror() as mirror:
        assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
        second.faults.status = 503  # a remembered redirect that fails is forgotten
        with trio.fail_after(SAFETY), pytest.raises(MirrorUnavailable):
            await fetch(mirror, span)
        second.faults.status = None
        await fetch(mirror, span)
    assert [r.path for r in first.requests] == ["/release/dir0/file0.bin"] * 2
    assert len(second.requests) == 3


@pytest.mark.parametrize(("hops", "ok"), [(5, True), (6, False)])
async def test_redirect_chains_are_limited(
    release: tuple[Metainfo, Path], nursery: trio.Nursery, hops: int, ok: bool
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    path = "/release/dir0/file0.bin"
    chain = [path] + [f"/r{n}" for n in range(1, hops)] + ["/moved" + path]
    server.faults.redirects = dict(itertools.pairwise(chain))
    shutil.copytree(folder, folder.parent / "moved" / folder.name)
    async with HttpMirror() as mirror:
        if ok:
            await fetch(mirror, a_span(metainfo, server))
        else:
            with trio.fail_after(SAFETY), pytest.raises(MirrorError, match="more than 5 redirects"):
                await fetch(mirror, a_span(metainfo, server))


async def test_a_redirect_loop_ends(release: tuple[Metainfo, Path], nursery: trio.Nursery) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.redirects = {"/release/dir0/file0.bin": "/release/dir0/file0.bin"}
    async with HttpMirror() as mirror:
        with trio.fail_after(SAFETY), pytest.raises(MirrorError, match="redirects"):
            await fetch(mirror, a_span(metainfo, server))
    assert len(server.requests) == 6


async def test_redirects_to_other_schemes_are_refused(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    server.faults.redirects = {"/release/dir0/file0.bin": "ftp://127.0.0.1/release/dir0/file0.bin"}
    async with HttpMirror() as mirror:
        with trio.fail_after(SAFETY), pytest.raises(MirrorError, match="not http or https"):
            await fetch(mirror, a_span(metainfo, server))


# -- HTTPS --------------------------------------------------------------------------------


def _certificates(folder: Path) -> tuple[bytes, Path, Path]:
    """A test CA and a server certificate it signed for 127.0.0.1: (CA PEM, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opendistro test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file = folder / "server.pem"
    key_file = folder / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the test CA)."""
    folder = tmp_path / "tls"
    folder.mkdir()
    ca_pem, cert_file, key_file = _certificates(folder)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca_pem.decode())
    return server, client


async def test_https_with_a_trusted_test_ca(
    release: tuple[Metainfo, Path],
    nursery: trio.Nursery,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery, ssl_context=tls[0])
    assert server.url.startswith("https://")
    span = a_span(metainfo, server)
    async with HttpMirror(ssl_context=tls[1]) as mirror:
        for _ in range(3):
            assert await fetch(mirror, span) == piece_space(metainfo, folder)[5000:55_000]
    assert server.connections == 1


async def test_https_refuses_an_untrusted_certificate(
    release: tuple[Metainfo, Path],
    nursery: trio.Nursery,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery, ssl_context=tls[0])
    async with HttpMirror(timeouts=QUICK) as mirror:  # system CAs only
        with trio.fail_after(SAFETY), pytest.raises(MirrorUnavailable, match="certificate"):
            await fetch(mirror, a_span(metainfo, server))
    assert server.requests == []


async def test_redirects_may_go_up_to_https_but_not_down(
    mirrored: tuple[Metainfo, Path],
    nursery: trio.Nursery,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    metainfo, folder = mirrored
    path = "/release/dir0/file0.bin"
    plain = await start(folder.parent, nursery)
    secure = await start(folder.parent / "moved", nursery, ssl_context=tls[0])
    plain.faults.redirects = {path: secure.url + path[1:]}
    async with HttpMirror(ssl_context=tls[1], timeouts=QUICK) as mirror:
        assert (
            await fetch(mirror, a_span(metainfo, plain))
            == piece_space(metainfo, folder)[5000:55_000]
        )
        secure.faults.redirects = {path: plain.url + path[1:]}
        with trio.fail_after(SAFETY), pytest.raises(MirrorError, match="https down to"):
            await fetch(mirror, a_span(metainfo, secure))
    assert len(secure.requests) == 2
