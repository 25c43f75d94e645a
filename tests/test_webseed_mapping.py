"""BEP 19 web seed URLs and byte spans, checked against real torrents of real files."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro import Metainfo, create_torrent
from opendistro.errors import LocalProtocolError, MirrorError
from opendistro.mirrors.webseed import (
    HttpSpan,
    check_base_url,
    content_url,
    delta_index_url,
    file_url,
    piece_spans,
    spans,
)
from tests.conftest import write_random

BASE = "http://mirror.example/pub/"
ODD_NAMES = ("read me.txt", "ünïcödé.bin", "a#b?c%d.bin", "100%25.bin", "x+y&z=1;.bin")


def piece_space(metainfo: Metainfo, root: Path) -> bytes:
    """The torrent's bytes laid end to end, padding as zeros, read from the files under ``root``."""
    parts = []
    for entry in metainfo.files:
        if entry.is_padding:
            parts.append(bytes(entry.length))
        elif metainfo.is_multi_file:
            parts.append(root.joinpath(*entry.path).read_bytes())
        else:
            parts.append(root.read_bytes())
    return b"".join(parts)


def read_span(span: HttpSpan, base: str, root: Path) -> bytes:
    """What a server for ``root`` would send for ``span``: decode the URL back to a file."""
    assert span.url.startswith(base)
    components = [unquote(part, errors="strict") for part in span.url[len(base) :].split("/")]
    assert components[0] == root.name
    with root.joinpath(*components[1:]).open("rb") as handle:
        handle.seek(span.start)
        return handle.read(span.length)


def assemble(metainfo: Metainfo, base: str, root: Path, offset: int, length: int) -> bytes:
    """Torrent bytes offset..offset+length from the spans alone, zeros where no span is."""
    buffer = bytearray(length)
    for span in spans(metainfo, base, offset, length):
        at = span.torrent_offset - offset
        buffer[at : at + span.length] = read_span(span, base, root)
    return bytes(buffer)


# -- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ODD_NAMES)
def test_single_file_folder_url_gets_the_encoded_name(
    make_release: Callable[..., Path], name: str
) -> None:
    metainfo = create_torrent(make_release(name=name, sizes=(1000,)), version="v1")
    url = file_url(metainfo, BASE, metainfo.files[0])
    encoded = url.removeprefix(BASE)
    assert "/" not in encoded and "#" not in encoded and "?" not in encoded and " " not in encoded
    assert unquote(encoded, errors="strict") == name


def test_single_file_url_without_slash_is_the_file_itself(
    make_release: Callable[..., Path],
) -> None:
    metainfo = create_torrent(make_release(name="distro.iso", sizes=(1000,)), version="v1")
    url = "https://cdn.example/releases/distro-1.0.iso?sig=a%2Fb"
    assert file_url(metainfo, url, metainfo.files[0]) == url
    [span] = spans(metainfo, url, 0, 1000)
    assert span == HttpSpan(url, 0, 999, 0, 1000)
    assert span.is_whole_file and span.range_header == "bytes=0-999"


def test_single_file_exact_urls(make_release: Callable[..., Path]) -> None:
    metainfo = create_torrent(make_release(name="with space #1?.iso", sizes=(10,)), version="v1")
    assert (
        file_url(metainfo, BASE, metainfo.files[0])
        == "http://mirror.example/pub/with%20space%20%231%3F.iso"
    )
    assert file_url(metainfo, "http://m.example:8080", metainfo.files[0]) == (
        "http://m.example:8080/with%20space%20%231%3F.iso"
    )


def test_multi_file_urls_encode_each_component(tmp_path: Path) -> None:
    folder = tmp_path / "release 1.0"
    for number, name in enumerate(ODD_NAMES):
        write_random(folder / "dïr #1" / name, 100 + number, number)
    metainfo = create_torrent(folder, version="v1")
    for entry in metainfo.data_files():
        url = file_url(metainfo, BASE, entry)
        encoded = url.removeprefix(BASE).split("/")
        assert [unquote(part, errors="strict") for part in encoded] == [
            "release 1.0",
            *entry.path,
        ]
        assert all(not set(part) & set(" #?/ü") for part in encoded)
    entry = next(e for e in metainfo.files if e.path[-1] == "ünïcödé.bin")
    assert file_url(metainfo, BASE, entry) == (
        "http://mirror.example/pub/release%201.0/d%C3%AFr%20%231/%C3%BCn%C3%AFc%C3%B6d%C3%A9.bin"
    )


def test_multi_file_base_without_slash_gets_one_and_keeps_its_query(
    make_release: Callable[..., Path],
) -> None:
    metainfo = create_torrent(make_release(sizes=(10, 20)), version="v1")
    entry = metainfo.files[0]
    assert entry.path == ("dir0", "file0.bin")
    assert file_url(metainfo, "http://m.example/pub", entry) == (
        "http://m.example/pub/release/dir0/file0.bin"
    )
    assert file_url(metainfo, "http://m.example", entry) == (
        "http://m.example/release/dir0/file0.bin"
    )
    assert file_url(metainfo, "https://m.example/pub/?token=a%20b#frag", entry) == (
        "https://m.example/pub/release/dir0/file0.bin?token=a%20b"
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://mirror.example/pub/",
        "/pub/",
        "mirror.example/pub/",
        "http:///pub/",
        "http://mirror.example:99999/",
        "file:///srv/pub/",
    ],
)
def test_unusable_base_urls_are_refused(make_release: Callable[..., Path], url: str) -> None:
    metainfo = create_torrent(make_release(sizes=(10, 20)), version="v1")
    with pytest.raises(MirrorError):
        check_base_url(url)
    with pytest.raises(MirrorError):
        spans(metainfo, url, 0, 10)


# -- spans ----------------------------------------------------------------------------


def test_a_piece_across_a_file_boundary_becomes_two_spans(
    make_release: Callable[..., Path],
) -> None:
    # Files are ordered by path: dir0/file0.bin (100000), dir0/file2.bin (200000), dir1/file1.bin.
    root = make_release(sizes=(100_000, 50_000, 200_000))
    metainfo = create_torrent(root, version="v1", piece_length=65536)
    first, second = piece_spans(metainfo, BASE, 1)
    assert first == HttpSpan(BASE + "release/dir0/file0.bin", 65536, 99_999, 65536, 100_000)
    assert second == HttpSpan(BASE + "release/dir0/file2.bin", 0, 31_071, 100_000, 200_000)
    assert first.length + second.length == 65536


def test_a_run_of_pieces_asks_each_file_once(make_release: Callable[..., Path]) -> None:
    root = make_release(sizes=(100_000, 50_000, 200_000))
    metainfo = create_torrent(root, version="v1", piece_length=16384)
    run = piece_spans(metainfo, BASE, 0, metainfo.num_pieces)
    assert [span.url.rsplit("/", 1)[1] for span in run] == ["file0.bin", "file2.bin", "file1.bin"]
    assert all(span.is_whole_file for span in run)
    # The last piece is short; asking for it must not run past the end.
    [last] = piece_spans(metainfo, BASE, metainfo.num_pieces - 1)
    assert last.end_inclusive == 49_999


def test_padding_and_empty_files_are_never_requested(tmp_path: Path) -> None:
    folder = tmp_path / "padded"
    write_random(folder / "a.bin", 20_000, 1)
    write_random(folder / "b.bin", 5_000, 2)
    (folder / "c.empty").write_bytes(b"")
    write_random(folder / "d.bin", 40_000, 3)
    metainfo = create_torrent(folder, version="hybrid", piece_length=16384)
    pads = [entry for entry in metainfo.files if entry.is_padding]
    assert pads, "a hybrid torrent of unaligned files has pad files"
    for pad in pads:
        assert spans(metainfo, BASE, pad.offset, pad.length) == []
    everything = spans(metainfo, BASE, 0, metainfo.total_length)
    assert [span.url.rsplit("/", 1)[1] for span in everything] == ["a.bin", "b.bin", "d.bin"]
    assert sum(span.length for span in everything) == 65_000
    assert assemble(metainfo, BASE, folder, 0, metainfo.total_length) == piece_space(
        metainfo, folder
    )


@pytest.mark.parametrize("version", ["v1", "hybrid"])
def test_every_piece_rebuilt_from_spans_matches_its_hash(
    make_release: Callable[..., Path], version: str
) -> None:
    root = make_release(sizes=(70_000, 1, 16384, 33_000, 5))
    metainfo = create_torrent(root, version=version, piece_length=16384)  # type: ignore[arg-type]
    for index in range(metainfo.num_pieces):
        offset = index * metainfo.piece_length
        data = assemble(metainfo, BASE, root, offset, metainfo.piece_size(index))
        assert hashlib.sha1(data).digest() == metainfo.piece_hash_v1(index)


def test_ranges_outside_the_torrent_are_refused(make_release: Callable[..., Path]) -> None:
    metainfo = create_torrent(make_release(sizes=(10, 20)), version="v1")
    assert spans(metainfo, BASE, 5, 0) == []
    for offset, length in [(-1, 5), (0, -1), (0, 31), (30, 1)]:
        with pytest.raises(LocalProtocolError):
            spans(metainfo, BASE, offset, length)
    with pytest.raises(LocalProtocolError):
        piece_spans(metainfo, BASE, 0, 2)
    with pytest.raises(LocalProtocolError):
        file_url(metainfo, BASE, metainfo.files[0].__class__(("x",), 1, 0, True, None, "p"))


@pytest.fixture
def padded_release(tmp_path: Path) -> tuple[Metainfo, Path]:
    folder = tmp_path / "property"
    for number, size in enumerate((20_000, 1, 0, 16384, 40_000, 3)):
        write_random(folder / f"f{number}.bin", size, number)
    return create_torrent(folder, version="hybrid", piece_length=16384), folder


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_spans_cover_exactly_the_non_padding_bytes_in_order(
    padded_release: tuple[Metainfo, Path], data: st.DataObject
) -> None:
    metainfo, folder = padded_release
    total = metainfo.total_length
    offset = data.draw(st.integers(0, total), label="offset")
    length = data.draw(st.integers(0, total - offset), label="length")
    result = spans(metainfo, BASE, offset, length)

    covered = [(span.torrent_offset, span.torrent_offset + span.length) for span in result]
    assert covered == sorted(covered)
    assert all(begin < end for begin, end in covered)
    assert all(a_end <= b_begin for (_, a_end), (b_begin, _) in itertools.pairwise(covered))
    expected = {
        position
        for entry in metainfo.files
        if not entry.is_padding
        for position in range(max(entry.offset, offset), min(entry.end, offset + length))
    }
    assert {p for begin, end in covered for p in range(begin, end)} == expected
    for span in result:
        assert 0 <= span.start <= span.end_inclusive < span.file_length
    assert (
        assemble(metainfo, BASE, folder, offset, length)
        == piece_space(metainfo, folder)[offset : offset + length]
    )


def test_delta_index_and_content_urls_sit_beside_the_release(tmp_path: Path) -> None:
    single = create_torrent(write_random(tmp_path / "one file.iso", 5000, seed=1), version="v1")
    assert delta_index_url(single, BASE) == BASE + "one%20file.iso.odindex"
    [entry] = single.data_files()
    assert content_url(single, BASE, entry) == BASE + "one%20file.iso.odcontent"
    write_random(tmp_path / "rel" / "sub" / "a b.bin", 3000, seed=2)
    multi = create_torrent(tmp_path / "rel", version="v1")
    assert delta_index_url(multi, BASE) == BASE + "rel.odindex"
    [entry] = multi.data_files()
    assert content_url(multi, BASE, entry) == BASE + "rel/sub/a%20b.bin.odcontent"
    with pytest.raises(MirrorError):
        delta_index_url(multi, "ftp://mirror.example/")
