import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.errors import IntegrityError, MetainfoError, UnsafePathError
from opendistro.integrity import PieceVerifier
from opendistro.metainfo import MAX_PATH_DEPTH, Metainfo

KIB = 1024


def v1_torrent(info: dict[bytes, Any], top: dict[bytes, Any] | None = None) -> bytes:
    return bencode.encode({b"info": info, **(top or {})})


def single_v1_info(data: bytes = b"hello world", piece_length: int = 16 * KIB) -> dict[bytes, Any]:
    pieces = b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )
    return {
        b"name": b"hello.txt",
        b"piece length": piece_length,
        b"length": len(data),
        b"pieces": pieces,
    }


def test_info_hash_is_over_the_bytes_as_found() -> None:
    pieces = hashlib.sha1(b"hello").digest()
    # Keys deliberately out of order: a re-encoding would sort them and change the hash.
    info = b"d12:piece lengthi16384e4:name5:a.txt6:lengthi5e6:pieces20:" + pieces + b"e"
    data = b"d8:announce22:http://127.0.0.1:1/ann4:info" + info + b"e"
    metainfo = Metainfo.from_bytes(data)
    assert metainfo.info_bytes == info
    assert metainfo.info_hash_v1 == hashlib.sha1(info).digest()
    assert metainfo.wire_info_hash == metainfo.info_hash_v1
    assert metainfo.info_hash_v1 != hashlib.sha1(bencode.encode(metainfo.info)).digest()
    assert info in metainfo.to_bytes()
    assert Metainfo.from_bytes(metainfo.to_bytes()).info_hash_v1 == metainfo.info_hash_v1
    assert PieceVerifier(metainfo).verify(0, b"hello")
    assert not PieceVerifier(metainfo).verify(0, b"hellO")
    assert not PieceVerifier(metainfo).verify(0, b"hello!")


def test_single_file_v1_fields() -> None:
    metainfo = Metainfo.from_bytes(v1_torrent(single_v1_info(b"x" * 40_000)))
    assert metainfo.version == "v1"
    assert metainfo.info_hash_v2 is None
    assert metainfo.name == "hello.txt"
    assert not metainfo.is_multi_file
    assert metainfo.files[0].path == ("hello.txt",)
    assert metainfo.num_pieces == 3
    assert [metainfo.piece_size(i) for i in range(3)] == [16 * KIB, 16 * KIB, 40_000 - 32 * KIB]
    assert metainfo.announce_tiers == [] and metainfo.url_list == []
    assert not metainfo.private
    with pytest.raises(MetainfoError):
        metainfo.piece_size(3)


def test_announce_list_tiers_and_fallback() -> None:
    info = single_v1_info()
    tiers = [[b"http://127.0.0.1:1/a", b"http://127.0.0.1:2/a"], [], [b"udp://127.0.0.1:3"]]
    metainfo = Metainfo.from_bytes(
        v1_torrent(info, {b"announce": b"http://127.0.0.1:9/x", b"announce-list": tiers})
    )
    assert metainfo.announce_tiers == [
        ["http://127.0.0.1:1/a", "http://127.0.0.1:2/a"],
        ["udp://127.0.0.1:3"],
    ]
    only = Metainfo.from_bytes(v1_torrent(info, {b"announce": b"http://127.0.0.1:9/x"}))
    assert only.announce_tiers == [["http://127.0.0.1:9/x"]]
    again = Metainfo.from_bytes(metainfo.to_bytes())
    assert again.announce_tiers == metainfo.announce_tiers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"http://127.0.0.1/seed/", ["http://127.0.0.1/seed/"]),
        (
            [b"http://127.0.0.1/a/", b"http://127.0.0.1/b/"],
            ["http://127.0.0.1/a/", "http://127.0.0.1/b/"],
        ),
        (b"", []),
        (7, []),
    ],
)
def test_url_list_string_or_list(raw: Any, expected: list[str]) -> None:
    metainfo = Metainfo.from_bytes(v1_torrent(single_v1_info(), {b"url-list": raw}))
    assert metainfo.url_list == expected


def test_private_comment_and_dates() -> None:
    info = {**single_v1_info(), b"private": 1}
    metainfo = Metainfo.from_bytes(
        v1_torrent(info, {b"comment": b"hi", b"created by": b"me", b"creation date": 123})
    )
    assert metainfo.private
    assert (metainfo.comment, metainfo.created_by, metainfo.creation_date) == ("hi", "me", 123)
    odd = Metainfo.from_bytes(
        v1_torrent({**single_v1_info(), b"private": 0}, {b"creation date": b"yesterday"})
    )
    assert not odd.private and odd.creation_date is None


def make_files(tmp_path: Path) -> Path:
    root = tmp_path / "rel"
    (root / "d").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(100_000))
    (root / "d" / "small.bin").write_bytes(os.urandom(1000))
    return root


def test_v2_from_info_bytes_without_piece_layers(tmp_path: Path) -> None:
    root = make_files(tmp_path)
    full = create_torrent(root, version="v2", piece_length=16 * KIB)
    assert full.info_hash_v2 is not None
    bare = Metainfo.from_info_bytes(
        full.info_bytes,
        announce_tiers=[["http://127.0.0.1:1/a"]],
        expected_v1=full.wire_info_hash,
        expected_v2=full.info_hash_v2,
    )
    assert bare.piece_layers == {} and bare.announce_tiers == [["http://127.0.0.1:1/a"]]
    verifier = PieceVerifier(bare)
    big = (root / "big.bin").read_bytes()
    # big.bin spans several pieces: its layer is unknown, so we refuse to guess.
    with pytest.raises(IntegrityError, match="piece layers unknown"):
        verifier.verify(0, big[: 16 * KIB])
    assert not verifier.can_verify(0)
    # small.bin fits in one piece and is checked against its pieces root.
    small_entry = next(f for f in bare.files if f.path == ("d", "small.bin"))
    small_index = small_entry.offset // bare.piece_length
    small_piece = (root / "d" / "small.bin").read_bytes() + bytes(16 * KIB - 1000)
    assert verifier.can_verify(small_index)
    assert verifier.verify(small_index, small_piece)
    assert not verifier.verify(small_index, bytes([small_piece[0] ^ 1]) + small_piece[1:])
    # Once the layers arrive, every piece can be checked.
    complete = bare.with_piece_layers(full.piece_layers)
    assert PieceVerifier(complete).verify(0, big[: 16 * KIB])
    assert not PieceVerifier(complete).verify(0, bytes(16 * KIB))
    bad = {root_hash: bytes(len(layer)) for root_hash, layer in full.piece_layers.items()}
    with pytest.raises(MetainfoError):
        bare.with_piece_layers(bad)


def test_from_info_bytes_checks_the_hash(tmp_path: Path) -> None:
    made = create_torrent(make_files(tmp_path), version="hybrid", piece_length=16 * KIB)
    assert (
        Metainfo.from_info_bytes(made.info_bytes, expected_v1=made.info_hash_v1).version == "hybrid"
    )
    with pytest.raises(MetainfoError):
        Metainfo.from_info_bytes(made.info_bytes, expected_v1=bytes(20))
    with pytest.raises(MetainfoError):
        Metainfo.from_info_bytes(made.info_bytes, expected_v2=bytes(32))
    with pytest.raises(MetainfoError):
        Metainfo.from_info_bytes(b"d4:name1:xe", expected_v1=hashlib.sha1(b"d4:name1:xe").digest())


def test_hybrid_from_info_bytes_verifies_with_sha1_alone(tmp_path: Path) -> None:
    root = make_files(tmp_path)
    made = create_torrent(root, version="hybrid", piece_length=16 * KIB)
    bare = Metainfo.from_info_bytes(made.info_bytes)
    big = (root / "big.bin").read_bytes()
    assert PieceVerifier(bare).verify(1, big[16 * KIB : 32 * KIB])
    assert not PieceVerifier(bare).verify(1, big[: 16 * KIB])


def file_entry(path: list[bytes], length: int = 5) -> dict[bytes, Any]:
    return {b"length": length, b"path": path}


def multi_v1(files: list[dict[bytes, Any]], name: bytes = b"root") -> bytes:
    total = sum(f[b"length"] for f in files)
    pieces = bytes(20 * max(1, -(-total // (16 * KIB))))
    return v1_torrent(
        {b"name": name, b"piece length": 16 * KIB, b"files": files, b"pieces": pieces}
    )


@pytest.mark.parametrize(
    "files",
    [
        [file_entry([b"..", b"etc", b"passwd"])],
        [file_entry([b"/etc/passwd"])],
        [file_entry([b"ok", b""])],
        [file_entry([b"C:", b"x"])],
        [file_entry([b"NUL"])],
        [file_entry([b"a\\..\\b"])],
    ],
)
def test_unsafe_v1_paths_raise_unsafe_path_error(files: list[dict[bytes, Any]]) -> None:
    with pytest.raises(UnsafePathError):
        Metainfo.from_bytes(multi_v1(files))


def test_unsafe_names_raise_unsafe_path_error() -> None:
    with pytest.raises(UnsafePathError):
        Metainfo.from_bytes(multi_v1([file_entry([b"a"])], name=b".."))
    with pytest.raises(UnsafePathError):
        Metainfo.from_bytes(v1_torrent({**single_v1_info(), b"name": b"../x"}))
    tree = {b"..": {b"": {b"length": 5, b"pieces root": bytes(32)}}}
    info = {b"name": b"x", b"piece length": 16 * KIB, b"meta version": 2, b"file tree": tree}
    with pytest.raises(UnsafePathError):
        Metainfo.from_bytes(bencode.encode({b"info": info}))


def test_multi_file_conflicts_are_refused() -> None:
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(multi_v1([file_entry([b"a"]), file_entry([b"a"])]))
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(multi_v1([file_entry([b"a"]), file_entry([b"a", b"b"])]))
    deep = [file_entry([b"d"] * (MAX_PATH_DEPTH + 1))]
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(multi_v1(deep))


def test_hybrid_whose_v1_and_v2_disagree_is_refused(tmp_path: Path) -> None:
    made = create_torrent(make_files(tmp_path), version="hybrid", piece_length=16 * KIB)
    info = bencode.decode(made.info_bytes)
    info[b"files"][0][b"length"] += 1
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(bencode.encode({b"info": info}))
    info = bencode.decode(made.info_bytes)
    info[b"files"] = [f for f in info[b"files"] if f.get(b"attr") != b"p"]
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(bencode.encode({b"info": info}))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not bencode",
        b"le",
        b"d8:announce3:urle",
        bencode.encode({b"info": b"string"}),
        bencode.encode({b"info": {}}),
        v1_torrent({**single_v1_info(), b"pieces": b"short"}),
        v1_torrent({**single_v1_info(), b"piece length": 0}),
        v1_torrent({**single_v1_info(), b"piece length": -5}),
        v1_torrent({**single_v1_info(), b"length": -1}),
        v1_torrent({**single_v1_info(), b"length": 0, b"pieces": b""}),
        v1_torrent({**single_v1_info(), b"files": []}),
        v1_torrent({**single_v1_info(), b"meta version": 3}),
        v1_torrent({**single_v1_info(), b"file tree": {}}),
        bencode.encode(
            {
                b"info": {
                    b"name": b"x",
                    b"piece length": 16 * KIB,
                    b"meta version": 2,
                    b"file tree": {b"x": {b"": {b"length": 5}}},
                }
            }
        ),
        bencode.encode(
            {
                b"info": {
                    b"name": b"x",
                    b"piece length": 1000,
                    b"meta version": 2,
                    b"file tree": {b"x": {b"": {b"length": 5, b"pieces root": bytes(32)}}},
                }
            }
        ),
        bencode.encode(
            {
                b"info": {
                    b"name": b"x",
                    b"piece length": 16 * KIB,
                    b"meta version": 2,
                    b"file tree": {b"x": {b"": {b"length": 5, b"pieces root": bytes(31)}}},
                }
            }
        ),
        v1_torrent(single_v1_info()) + b"trailing",
    ],
)
def test_malformed_torrents_raise_metainfo_error(data: bytes) -> None:
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(data)


def _sample_torrents() -> list[bytes]:
    import tempfile

    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_files(Path(tmp))
        versions: tuple[Literal["v1", "v2", "hybrid"], ...] = ("v1", "v2", "hybrid")
        for version in versions:
            made = create_torrent(
                root,
                version=version,
                piece_length=16 * KIB,
                trackers=["http://127.0.0.1:1/a"],
                creation_date=0,
            )
            samples.append(made.to_bytes())
    return samples


SAMPLES = _sample_torrents()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0), st.integers(0, 255), st.sampled_from(["set", "del", "ins"])
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_random_mutations_only_ever_raise_metainfo_error(
    sample: bytes, edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(sample)
    for position, value, kind in edits:
        index = position % len(data)
        if kind == "set":
            data[index] = value
        elif kind == "del":
            del data[index]
        else:
            data.insert(index, value)
    try:
        metainfo = Metainfo.from_bytes(bytes(data))
    except MetainfoError:
        return
    # Whatever survives must be internally consistent.
    assert metainfo.num_pieces == -(-metainfo.total_length // metainfo.piece_length)
    assert metainfo.files[-1].end == metainfo.total_length
    PieceVerifier(metainfo)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_metainfo_error(data: bytes) -> None:
    with contextlib.suppress(MetainfoError):
        Metainfo.from_bytes(data)


def test_from_file_reads_a_torrent(tmp_path: Path) -> None:
    path = tmp_path / "t.torrent"
    path.write_bytes(SAMPLES[2])
    metainfo = Metainfo.from_file(path)
    assert metainfo.version == "hybrid"
    assert metainfo.to_bytes() == SAMPLES[2]


def test_magnet_link_names_the_torrent(tmp_path: Path) -> None:
    made = create_torrent(
        make_files(tmp_path),
        version="hybrid",
        piece_length=16 * KIB,
        trackers=[["http://127.0.0.1:1/a", "http://127.0.0.1:2/a"]],
        webseeds=["http://127.0.0.1:3/"],
    )
    link = made.magnet_link()
    assert (link.info_hash_v1, link.info_hash_v2) == (made.info_hash_v1, made.info_hash_v2)
    assert link.wire_info_hash == made.wire_info_hash
    assert link.display_name == "rel"
    assert link.trackers == ("http://127.0.0.1:1/a", "http://127.0.0.1:2/a")
    assert link.webseeds == ("http://127.0.0.1:3/",)
    from opendistro.magnet import MagnetLink

    assert MagnetLink.parse(link.to_uri()) == link


def test_v2_only_wire_hash_is_truncated_sha256(tmp_path: Path) -> None:
    made = create_torrent(make_files(tmp_path), version="v2", piece_length=16 * KIB)
    assert made.info_hash_v1 is None
    assert made.wire_info_hash == hashlib.sha256(made.info_bytes).digest()[:20]
    with pytest.raises(MetainfoError):
        made.piece_hash_v1(0)


def test_legacy_and_bep47_pad_files_are_padding() -> None:
    data = b"a" * 100 + bytes(16 * KIB - 100) + b"b" * 10
    pieces = hashlib.sha1(data[: 16 * KIB]).digest() + hashlib.sha1(data[16 * KIB :]).digest()
    files = [
        file_entry([b"a"], 100),
        file_entry([b"_____padding_file_0_dont_open"], 16 * KIB - 100),
        file_entry([b"b"], 10),
    ]
    info = {b"name": b"root", b"piece length": 16 * KIB, b"files": files, b"pieces": pieces}
    metainfo = Metainfo.from_bytes(v1_torrent(info))
    assert [entry.is_padding for entry in metainfo.files] == [False, True, False]
    assert [entry.path for entry in metainfo.data_files()] == [("a",), ("b",)]
    verifier = PieceVerifier(metainfo)
    assert verifier.verify(0, data[: 16 * KIB]) and verifier.verify(1, data[16 * KIB :])


def test_limits_on_file_count_and_piece_count() -> None:
    from opendistro.metainfo import MAX_FILES, MAX_PIECES

    many = [file_entry([b"f%d" % i], 1) for i in range(MAX_FILES + 1)]
    with pytest.raises(MetainfoError, match="files"):
        Metainfo.from_bytes(multi_v1(many))
    huge = 16 * KIB * (MAX_PIECES + 1)
    tree = {b"big": {b"": {b"length": huge, b"pieces root": bytes(32)}}}
    info = {b"name": b"big", b"piece length": 16 * KIB, b"meta version": 2, b"file tree": tree}
    with pytest.raises(MetainfoError, match="pieces"):
        Metainfo.from_bytes(bencode.encode({b"info": info}))


def test_newer_meta_version_is_reported_before_other_defects() -> None:
    info = {b"meta version": 3, b"something new": b"x"}
    with pytest.raises(MetainfoError, match="meta version 3"):
        Metainfo.from_bytes(bencode.encode({b"info": info}))
