"""The mirror client and the BEP 19 mapping against a real nginx on 127.0.0.1."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from opendistro import Metainfo, create_torrent
from opendistro.errors import MirrorDataError, MirrorNotFound
from opendistro.mirrors.http import HttpMirror
from opendistro.mirrors.webseed import piece_spans, spans
from tests.conftest import write_random

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

SAFETY = 60
ODD_NAMES = ("read me.txt", "ünïcödé.bin", "a#b?c%d.bin", "x+y&z=1;.bin")

CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def nginx(tmp_path: Path, www: Path) -> Iterator[str]:
    """A running nginx serving ``www``; yields its base URL."""
    assert NGINX is not None
    state = tmp_path / "nginx"
    state.mkdir()
    port = free_port()
    config = state / "nginx.conf"
    config.write_text(CONFIG.format(tmp=state, port=port, root=www))
    process = subprocess.Popen(
        [NGINX, "-p", str(state), "-e", str(state / "error.log"), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                log = (state / "error.log").read_text() if (state / "error.log").exists() else ""
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"nginx exited with {process.returncode}: {stderr}{log}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nginx did not start listening")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def release(tmp_path: Path, make_release: Callable[..., Path], www: Path) -> tuple[Metainfo, Path]:
    """A hybrid multi-file release with awkward names, published under ``www``."""
    folder = make_release(name="release 2.0", sizes=(100_000, 30_000, 70_000, 1))
    for number, name in enumerate(ODD_NAMES):
        write_random(folder / "odd names" / name, 20_000 + number, 100 + number)
    metainfo = create_torrent(folder, version="hybrid", piece_length=16384)
    shutil.copytree(folder, www / folder.name)
    return metainfo, folder


def piece_space(metainfo: Metainfo, folder: Path) -> bytes:
    return b"".join(
        bytes(entry.length) if entry.is_padding else folder.joinpath(*entry.path).read_bytes()
        for entry in metainfo.files
    )


async def test_every_piece_from_nginx_matches_files_and_hashes(
    nginx: str, release: tuple[Metainfo, Path]
) -> None:
    metainfo, folder = release
    expected = piece_space(metainfo, folder)
    async with HttpMirror() as mirror:
        for first in range(0, metainfo.num_pieces, 3):  # runs of three pieces
            count = min(3, metainfo.num_pieces - first)
            offset = first * metainfo.piece_length
            end = min(offset + count * metainfo.piece_length, metainfo.total_length)
            buffer = bytearray(end - offset)
            with trio.fail_after(SAFETY):
                await mirror.fetch_run(
                    piece_spans(metainfo, nginx, first, count), memoryview(buffer), offset=offset
                )
            assert bytes(buffer) == expected[offset:end]
            for index in range(first, first + count):
                at = index * metainfo.piece_length - offset
                piece = buffer[at : at + metainfo.piece_size(index)]
                assert hashlib.sha1(piece).digest() == metainfo.piece_hash_v1(index)


async def test_odd_file_names_reach_the_right_files(
    nginx: str, release: tuple[Metainfo, Path]
) -> None:
    metainfo, folder = release
    async with HttpMirror() as mirror:
        for entry in metainfo.data_files():
            if entry.path[0] != "odd names":
                continue
            [span] = spans(metainfo, nginx, entry.offset, entry.length)
            assert "%20" in span.url
            buffer = bytearray(span.length)
            with trio.fail_after(SAFETY):
                await mirror.fetch_span(span, memoryview(buffer))
            assert bytes(buffer) == folder.joinpath(*entry.path).read_bytes()


async def test_single_file_torrent_by_file_url_and_by_folder_url(
    nginx: str, make_release: Callable[..., Path], www: Path
) -> None:
    source = make_release(name="distro 1.0.iso", sizes=(50_000,))
    shutil.copy(source, www / source.name)
    metainfo = create_torrent(source, version="v1", piece_length=16384)
    async with HttpMirror() as mirror:
        for base in (nginx, nginx + "distro%201.0.iso"):
            buffer = bytearray(metainfo.total_length)
            with trio.fail_after(SAFETY):
                await mirror.fetch_run(
                    piece_spans(metainfo, base, 0, metainfo.num_pieces),
                    memoryview(buffer),
                    offset=0,
                )
            assert bytes(buffer) == source.read_bytes()


async def test_missing_and_changed_files_on_nginx(
    nginx: str, release: tuple[Metainfo, Path], www: Path
) -> None:
    metainfo, folder = release
    published = www / folder.name / "dir0" / "file0.bin"
    async with HttpMirror() as mirror:
        [span] = spans(metainfo, nginx, 1000, 1000)
        published.write_bytes(published.read_bytes() + b"a newer build")
        with trio.fail_after(SAFETY), pytest.raises(MirrorDataError, match="100013 bytes"):
            await mirror.fetch_span(span, memoryview(bytearray(1000)))
        published.write_bytes(b"short")
        with trio.fail_after(SAFETY), pytest.raises(MirrorDataError, match="416"):
            await mirror.fetch_span(span, memoryview(bytearray(1000)))
        published.unlink()
        with trio.fail_after(SAFETY), pytest.raises(MirrorNotFound, match="404"):
            await mirror.fetch_span(span, memoryview(bytearray(1000)))
