"""The packaged mirror server (``opendistro.mirrors.server``) over real TCP on 127.0.0.1.

Our own range client fetches from it as it would from any mirror; raw
requests written by hand cover what a well-behaved client never sends
(``..`` escapes, garbage, pipelining); curl and libtorrent, when installed,
check that other clients accept it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from opendistro import Metainfo, create_torrent
from opendistro.errors import ConfigError, MirrorDataError, MirrorNotFound
from opendistro.mirrors.http import HttpMirror
from opendistro.mirrors.server import UNSATISFIABLE, ByteRange, MirrorServer, parse_range
from opendistro.mirrors.webseed import HttpSpan, piece_spans, spans
from tests.mirror_server import piece_space

from .interop.lt_helpers import LT_PEER, free_port, require_libtorrent

SAFETY = 30
PIECE = 16384


async def start(root: Path, nursery: trio.Nursery, **kwargs: Any) -> MirrorServer:
    server = MirrorServer(root, **kwargs)
    await nursery.start(server.serve)
    return server


# -- a raw HTTP connection, for requests no proper client sends ---------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Raw:
    """One TCP connection: send bytes as they are, read answers framed by Content-Length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, server: MirrorServer) -> Raw:
        return cls(await trio.open_tcp_stream("127.0.0.1", server.port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def get(self, target: str, *headers: str, method: str = "GET") -> Answer:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
        await self.send("\r\n".join(lines).encode("latin-1"))
        return await self.answer(head=method == "HEAD")

    async def _more(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def answer(self, *, head: bool = False) -> Answer:
        with trio.fail_after(SAFETY):
            while b"\r\n\r\n" not in self.buffer:
                assert await self._more(), f"connection closed mid-head: {bytes(self.buffer)!r}"
            raw_head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
            self.buffer[:] = rest
            status_line, *lines = raw_head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = 0 if head else int(headers["content-length"])
            while len(self.buffer) < length:
                assert await self._more(), "connection closed mid-body"
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
        return Answer(int(status_line.split(" ")[1]), headers, body)

    async def closed(self) -> bool:
        """Whether the server hangs up (rather than send more) after what was read."""
        with trio.fail_after(SAFETY):
            try:
                return not await self._more() and not self.buffer
            except trio.BrokenResourceError:  # a reset is a hang-up too
                return True

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- the range grammar ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=10-", ByteRange(10, 999)),
        ("bytes=990-5000", ByteRange(990, 999)),  # clipped to the end
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # more than the file: all of it
        ("bytes=999-999", ByteRange(999, 999)),
        ("Bytes=5-9", ByteRange(5, 9)),  # the unit is case-insensitive
        ("bytes=1000-", UNSATISFIABLE),
        ("bytes=1000-2000", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=5-4", None),  # invalid: ignored, whole file
        ("bytes=0-1,5-6", None),  # several ranges: whole file
        ("bytes=-", None),
        ("items=0-5", None),
        ("bytes=" + "9" * 30 + "-", None),  # too long to be a real offset
    ],
)
def test_range_header_grammar(value: str, expected: ByteRange | str | None) -> None:
    assert parse_range(value, 1000) == expected


def test_any_range_of_an_empty_file_is_unsatisfiable() -> None:
    assert parse_range("bytes=0-", 0) == UNSATISFIABLE
    assert parse_range("bytes=-1", 0) == UNSATISFIABLE


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        MirrorServer(tmp_path / "missing")
    with pytest.raises(ConfigError, match="positive"):
        MirrorServer(tmp_path, rate=0)


# -- our range client against it ----------------------------------------------------------


async def test_our_client_fetches_every_piece_over_one_kept_alive_connection(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    expected = piece_space(metainfo, folder)
    requested = 0
    async with HttpMirror() as mirror:
        for index in range(metainfo.num_pieces):
            buffer = bytearray(metainfo.piece_size(index))
            run = piece_spans(metainfo, server.url, index)
            requested += sum(span.length for span in run)
            with trio.fail_after(SAFETY):
                await mirror.fetch_run(run, memoryview(buffer), offset=index * PIECE)
            assert hashlib.sha1(buffer).digest() == metainfo.piece_hash_v1(index)
            assert bytes(buffer) == expected[index * PIECE : index * PIECE + len(buffer)]
    assert server.connections == 1
    assert server.bytes_served == requested == 200_000
    assert server.requests_served >= metainfo.num_pieces


async def test_our_client_fetches_a_whole_file_and_an_odd_range(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    data = (folder / "dir1" / "file1.bin").read_bytes()
    url = f"{server.url}release/dir1/file1.bin"
    async with HttpMirror() as mirror:
        for span in (
            HttpSpan(url, 0, len(data) - 1, 0, len(data)),
            HttpSpan(url, 12_345, 12_345, 0, len(data)),
            HttpSpan(url, 7, 29_999, 0, len(data)),
        ):
            buffer = bytearray(span.length)
            with trio.fail_after(SAFETY):
                await mirror.fetch_span(span, memoryview(buffer))
            assert bytes(buffer) == data[span.start : span.end_inclusive + 1]


async def test_our_client_hears_not_found_and_unsatisfiable(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    metainfo, folder = release
    server = await start(folder.parent, nursery)
    async with HttpMirror() as mirror:
        [span] = spans(metainfo, server.url, 0, 100)
        missing = HttpSpan(server.url + "release/nope.bin", 0, 99, 0, 1000)
        with trio.fail_after(SAFETY), pytest.raises(MirrorNotFound):
            await mirror.fetch_span(missing, memoryview(bytearray(100)))
        # The torrent says the file is longer than the mirror's copy: a range past its end.
        short = HttpSpan(span.url, 100_000, 100_099, 0, 200_000)
        with trio.fail_after(SAFETY), pytest.raises(MirrorDataError, match="416"):
            await mirror.fetch_span(short, memoryview(bytearray(100)))


# -- raw requests -------------------------------------------------------------------------


async def test_whole_file_suffix_and_open_ranges(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    data = (folder / "dir0" / "file0.bin").read_bytes()
    raw = await Raw.open(server)
    whole = await raw.get("/release/dir0/file0.bin")
    assert whole.status == 200 and whole.body == data
    assert whole.headers["content-length"] == str(len(data))
    assert whole.headers["accept-ranges"] == "bytes"
    assert "content-range" not in whole.headers
    tail = await raw.get("/release/dir0/file0.bin", "Range: bytes=-1000")
    assert tail.status == 206 and tail.body == data[-1000:]
    assert tail.headers["content-range"] == f"bytes {len(data) - 1000}-{len(data) - 1}/{len(data)}"
    rest = await raw.get("/release/dir0/file0.bin", "Range: bytes=99000-")
    assert rest.status == 206 and rest.body == data[99_000:]
    assert rest.headers["content-length"] == "1000"
    await raw.aclose()


async def test_a_range_past_the_end_is_416_and_the_connection_stays_usable(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    raw = await Raw.open(server)
    answer = await raw.get("/release/dir0/file0.bin", "Range: bytes=100000-")
    assert answer.status == 416
    assert answer.headers["content-range"] == "bytes */100000"
    again = await raw.get("/release/dir0/file0.bin", "Range: bytes=0-9")
    assert again.status == 206 and len(again.body) == 10
    assert server.connections == 1
    await raw.aclose()


async def test_if_range_naming_an_older_version_gets_the_whole_file(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    raw = await Raw.open(server)
    first = await raw.get("/release/dir0/file0.bin", "Range: bytes=0-9")
    current = await raw.get(
        "/release/dir0/file0.bin", "Range: bytes=0-9", f"If-Range: {first.headers['etag']}"
    )
    assert current.status == 206
    stale = await raw.get("/release/dir0/file0.bin", "Range: bytes=0-9", 'If-Range: "old"')
    assert stale.status == 200 and len(stale.body) == 100_000
    await raw.aclose()


async def test_head_sends_the_headers_of_a_get_and_no_body(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    raw = await Raw.open(server)
    head = await raw.get("/release/dir0/file0.bin", method="HEAD")
    assert head.status == 200 and head.headers["content-length"] == "100000"
    ranged = await raw.get("/release/dir0/file0.bin", "Range: bytes=10-19", method="HEAD")
    assert ranged.status == 206 and ranged.headers["content-range"] == "bytes 10-19/100000"
    missing = await raw.get("/release/nope", method="HEAD")
    assert missing.status == 404
    # Had any body been sent, it would be read here as the next answer's head.
    follow = await raw.get("/release/dir0/file0.bin", "Range: bytes=0-3")
    assert follow.status == 206 and follow.body == (folder / "dir0" / "file0.bin").read_bytes()[:4]
    assert server.bytes_served == 4
    await raw.aclose()


async def test_keep_alive_and_pipelined_requests_share_one_connection(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    data = (folder / "dir0" / "file2.bin").read_bytes()
    raw = await Raw.open(server)
    one = await raw.get("/release/dir0/file2.bin", "Range: bytes=0-99")
    two = await raw.get("/release/dir0/file2.bin", "Range: bytes=100-199")
    assert (one.body, two.body) == (data[:100], data[100:200])
    request = b"GET /release/dir0/file2.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n"
    await raw.send(request % (0, 9) + request % (10, 19))  # both at once
    three, four = await raw.answer(), await raw.answer()
    assert (three.body, four.body) == (data[:10], data[10:20])
    assert server.connections == 1 and server.requests_served == 4
    await raw.send(b"GET /release/dir0/file2.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await raw.answer()).body == data
    assert await raw.closed()


async def test_paths_leaving_the_root_are_not_found(
    make_release: Callable[..., Path], tmp_path: Path, nursery: trio.Nursery
) -> None:
    folder = make_release(sizes=(1000, 2000))
    root = folder.parent
    (tmp_path / "secret.txt").write_text("not for the world")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "inside").symlink_to(folder / "dir0" / "file0.bin")
    server = await start(root, nursery)
    raw = await Raw.open(server)
    for target in (
        "/../secret.txt",
        "/release/../../secret.txt",
        "/release/%2e%2e/%2E%2E/secret.txt",
        "/release/..%2f..%2fsecret.txt",
        "/escape",
        f"/{tmp_path}/secret.txt",  # an absolute path stays under the root
        f"http://127.0.0.1/{tmp_path}/secret.txt",
        "/release",  # a folder: no listings
        "/release/dir0/nope.bin",
        "/release/dir0/file0.bin%00",
    ):
        answer = await raw.get(target)
        assert answer.status == 404, target
        assert b"not for the world" not in answer.body
    assert (await raw.get("/inside")).body == (folder / "dir0" / "file0.bin").read_bytes()
    assert server.connections == 1  # a refusal does not cost the connection
    await raw.aclose()


async def test_names_are_percent_decoded(tmp_path: Path, nursery: trio.Nursery) -> None:
    root = tmp_path / "root"
    (root / "a folder").mkdir(parents=True)
    (root / "a folder" / "ünï cødé #1.iso").write_bytes(b"release bytes")
    server = await start(root, nursery)
    raw = await Raw.open(server)
    answer = await raw.get("/a%20folder/%C3%BCn%C3%AF%20c%C3%B8d%C3%A9%20%231.iso?x=1")
    assert answer.status == 200 and answer.body == b"release bytes"
    await raw.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", 431),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + bytes(100_000), 413),
    ],
    ids=["garbage", "header", "no-host", "length", "asterisk", "huge-head", "huge-body"],
)
async def test_malformed_requests_get_an_error_and_a_closed_connection(
    release: tuple[Metainfo, Path], nursery: trio.Nursery, request_bytes: bytes, status: int
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    raw = await Raw.open(server)
    await raw.send(request_bytes)  # all of it: the server reads on after answering
    answer = await raw.answer()
    assert answer.status == status
    assert answer.headers["connection"] == "close"
    assert await raw.closed()
    # ... and the server itself is fine.
    healthy = await Raw.open(server)
    assert (await healthy.get("/release/dir0/file0.bin", "Range: bytes=0-0")).status == 206
    await healthy.aclose()


async def test_other_methods_are_refused(
    release: tuple[Metainfo, Path], nursery: trio.Nursery
) -> None:
    _, folder = release
    server = await start(folder.parent, nursery)
    raw = await Raw.open(server)
    answer = await raw.get("/release/dir0/file0.bin", "Content-Length: 0", method="PUT")
    assert answer.status == 405 and answer.headers["allow"] == "GET, HEAD"
    await raw.aclose()


async def test_a_client_leaving_mid_body_does_not_hurt_the_server(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    size = 24 << 20  # more than loopback socket buffers hold
    (root / "big.iso").write_bytes(os.urandom(size))
    server = await start(root, nursery)
    for _ in range(3):
        raw = await Raw.open(server)
        await raw.send(b"GET /big.iso HTTP/1.1\r\nHost: x\r\n\r\n")
        await raw._more()
        await raw.aclose()
    raw = await Raw.open(server)
    tail = await raw.get("/big.iso", "Range: bytes=-5")
    assert tail.body == (root / "big.iso").read_bytes()[-5:]
    await raw.aclose()
    assert server.bytes_served < 3 * size  # the abandoned bodies were not all sent


async def test_the_rate_cap_holds_the_mirror_back(tmp_path: Path, nursery: trio.Nursery) -> None:
    root = tmp_path / "root"
    root.mkdir()
    size = 600_000
    (root / "file.bin").write_bytes(os.urandom(size))
    rate = 1 << 20
    server = await start(root, nursery, rate=rate)
    raw = await Raw.open(server)
    began = trio.current_time()
    answer = await raw.get("/file.bin")
    elapsed = trio.current_time() - began
    assert answer.body == (root / "file.bin").read_bytes()
    # A token bucket lets at most rate * t + burst through, the burst being a tenth
    # of a second's worth: a lower bound only, which no slow machine can break.
    assert elapsed >= (size - 0.1 * rate - 65536) / rate
    await raw.aclose()


# -- the command ----------------------------------------------------------------------------


async def test_the_mirror_command_serves_a_folder(release: tuple[Metainfo, Path]) -> None:
    metainfo, folder = release
    command = [sys.executable, "-m", "opendistro.cli", "mirror", str(folder.parent), "--rate", "4M"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        printed = b""
        with trio.fail_after(SAFETY):
            while b"\n" not in printed:
                data = await process.stdout.receive_some(4096)
                assert data, "the command exited without saying where it serves"
                printed += data
        line = printed.decode().splitlines()[0]
        assert line.startswith("mirror serving ") and " at http://127.0.0.1:" in line
        url = line.rsplit(" ", 1)[1]
        [span] = spans(metainfo, url, 5000, 50_000)
        buffer = bytearray(span.length)
        async with HttpMirror() as mirror:
            with trio.fail_after(SAFETY):
                await mirror.fetch_span(span, memoryview(buffer))
        assert bytes(buffer) == piece_space(metainfo, folder)[5000:55_000]
    finally:
        process.terminate()
        with trio.move_on_after(SAFETY):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_mirror_command_refuses_a_missing_folder(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "opendistro.cli", "mirror", str(tmp_path / "nope")]
    result = await trio.run_process(command, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b"bad setting" in result.stderr and b"not a folder" in result.stderr


# -- other clients --------------------------------------------------------------------------


async def test_curl_downloads_whole_files_and_ranges(
    release: tuple[Metainfo, Path], nursery: trio.Nursery, tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    _, folder = release
    server = await start(folder.parent, nursery)
    data = (folder / "dir0" / "file0.bin").read_bytes()
    out = tmp_path / "curl.out"
    url = f"{server.url}release/dir0/file0.bin"
    for extra, expected in (([], data), (["-r", "500-1499"], data[500:1500])):
        result = await trio.run_process(
            [curl, "--silent", "--show-error", "--fail", "-o", str(out), *extra, url],
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == expected


@pytest.mark.interop
async def test_libtorrent_downloads_from_it_as_a_web_seed(
    make_release: Callable[..., Path], tmp_path: Path, nursery: trio.Nursery
) -> None:
    require_libtorrent()
    folder = make_release(sizes=(3_000_000, 1_000_001, 17))
    server = await start(folder.parent, nursery)
    metainfo = create_torrent(folder, version="hybrid", piece_length=65536, webseeds=[server.url])
    torrent = tmp_path / "release.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    save = tmp_path / "lt"
    save.mkdir()
    command = [
        sys.executable, str(LT_PEER), "--torrent", str(torrent), "--save", str(save),
        "--port", str(free_port()), "--no-trackers", "--timeout", "60",
    ]  # fmt: skip
    result = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, result.stderr.decode()[-2000:]
    summary = json.loads(lines[-1])
    assert summary["done"], result.stderr.decode()[-2000:]
    for original in folder.rglob("*.bin"):
        copy = save / original.relative_to(folder.parent)
        assert copy.read_bytes() == original.read_bytes(), copy
    assert server.bytes_served >= 4_000_018  # every byte came from the web seed
