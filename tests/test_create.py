import os
from pathlib import Path

import pytest

from opendistro.create import auto_piece_length, create_torrent
from opendistro.errors import ConfigError, MetainfoError
from opendistro.integrity import PieceVerifier
from opendistro.metainfo import Metainfo

KIB = 1024
VERSIONS = ["v1", "v2", "hybrid"]


def make_release(root: Path) -> Path:
    """A small folder with uneven sizes, an empty file and a subfolder."""
    release = root / "release"
    (release / "sub" / "deeper").mkdir(parents=True)
    (release / "a.bin").write_bytes(os.urandom(40_000))
    (release / "empty.txt").write_bytes(b"")
    (release / "sub" / "b.bin").write_bytes(os.urandom(16 * KIB))
    (release / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(70_001))
    (release / "z.txt").write_bytes(b"tail")
    return release


def piece_space(metainfo: Metainfo, source: Path) -> bytes:
    """Concatenate the files as the torrent lays them out, padding as zeros."""
    parts = []
    for entry in metainfo.files:
        if entry.is_padding:
            parts.append(bytes(entry.length))
        elif metainfo.is_multi_file:
            parts.append(source.joinpath(*entry.path).read_bytes())
        else:
            parts.append(source.read_bytes())
    data = b"".join(parts)
    assert len(data) == metainfo.total_length
    return data


def assert_all_pieces_verify(metainfo: Metainfo, source: Path) -> None:
    data = piece_space(metainfo, source)
    verifier = PieceVerifier(metainfo)
    length = metainfo.piece_length
    for index in range(metainfo.num_pieces):
        piece = memoryview(data)[index * length : index * length + metainfo.piece_size(index)]
        assert verifier.verify(index, piece), f"piece {index} rejected"
        flipped = bytearray(piece)
        flipped[len(flipped) // 2] ^= 0x01
        assert not verifier.verify(index, flipped), f"corrupt piece {index} accepted"


@pytest.mark.parametrize("total", [0, 1, 10 * KIB, 100 * 1024 * KIB, 5 * 1024**3, 10 * 1024**4])
def test_auto_piece_length_is_bounded_power_of_two(total: int) -> None:
    length = auto_piece_length(total)
    assert length & (length - 1) == 0
    assert 16 * KIB <= length <= 16 * 1024 * KIB
    pieces = -(-total // length)
    if 16 * KIB < length < 16 * 1024 * KIB:
        assert 1000 <= pieces <= 2000


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("multi", [False, True])
def test_round_trip_and_every_piece_verifies(tmp_path: Path, version: str, multi: bool) -> None:
    release = make_release(tmp_path)
    source = release if multi else release / "sub" / "deeper" / "c.bin"
    made = create_torrent(source, version=version, piece_length=16 * KIB)  # type: ignore[arg-type]
    parsed = Metainfo.from_bytes(made.to_bytes())
    assert parsed.version == version
    assert parsed.info_hash_v1 == made.info_hash_v1
    assert parsed.info_hash_v2 == made.info_hash_v2
    assert (parsed.info_hash_v1 is None) == (version == "v2")
    assert (parsed.info_hash_v2 is None) == (version == "v1")
    assert parsed.files == made.files
    assert parsed.is_multi_file is multi
    assert parsed.piece_layers == made.piece_layers
    expected = {
        ("a.bin",): 40_000,
        ("empty.txt",): 0,
        ("sub", "b.bin"): 16 * KIB,
        ("sub", "deeper", "c.bin"): 70_001,
        ("z.txt",): 4,
    }
    if not multi:
        expected = {("c.bin",): 70_001}
    assert {f.path: f.length for f in parsed.data_files()} == expected
    assert_all_pieces_verify(parsed, source)


@pytest.mark.parametrize("version", ["v2", "hybrid"])
def test_aligned_versions_start_every_file_on_a_piece_boundary(
    tmp_path: Path, version: str
) -> None:
    release = make_release(tmp_path)
    metainfo = create_torrent(release, version=version, piece_length=16 * KIB)  # type: ignore[arg-type]
    for entry in metainfo.data_files():
        assert entry.offset % metainfo.piece_length == 0
        assert (entry.pieces_root is None) == (entry.length == 0)
    pads = [entry for entry in metainfo.files if entry.is_padding]
    assert pads
    for pad in pads:
        assert pad.path == (".pad", str(pad.length))
        assert pad.attr == "p"
    if version == "hybrid":
        listed = [f[b"path"] for f in metainfo.info[b"files"] if f.get(b"attr") == b"p"]
        assert len(listed) == len(pads)
    else:
        assert b"files" not in metainfo.info


def test_v1_pieces_span_file_boundaries(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    metainfo = create_torrent(release, version="v1", piece_length=16 * KIB)
    assert not any(entry.is_padding for entry in metainfo.files)
    assert metainfo.total_length == 40_000 + 16 * KIB + 70_001 + 4
    assert metainfo.num_pieces == -(-metainfo.total_length // (16 * KIB))


def test_optional_fields_are_written_and_read_back(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    metainfo = create_torrent(
        release,
        trackers=["http://127.0.0.1:1/announce", ["udp://127.0.0.1:2", "udp://127.0.0.1:3"]],
        webseeds=["http://127.0.0.1:8000/files/"],
        private=True,
        comment="release 1.0",
        created_by="tests",
        creation_date=1_700_000_000,
        name="renamed",
    )
    parsed = Metainfo.from_bytes(metainfo.to_bytes())
    assert parsed.announce_tiers == [
        ["http://127.0.0.1:1/announce"],
        ["udp://127.0.0.1:2", "udp://127.0.0.1:3"],
    ]
    assert parsed.url_list == ["http://127.0.0.1:8000/files/"]
    assert parsed.private is True
    assert parsed.info[b"private"] == 1
    assert parsed.comment == "release 1.0"
    assert parsed.created_by == "tests"
    assert parsed.creation_date == 1_700_000_000
    assert parsed.name == "renamed"


def test_zero_creation_date_makes_output_deterministic(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    first = create_torrent(release, creation_date=0, created_by=None)
    second = create_torrent(release, creation_date=0, created_by=None)
    assert first.to_bytes() == second.to_bytes()
    assert first.creation_date is None and first.created_by is None
    assert create_torrent(release).creation_date is not None


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    seen: list[tuple[int, int]] = []
    create_torrent(release, piece_length=16 * KIB, progress=lambda d, t: seen.append((d, t)))
    total = 40_000 + 16 * KIB + 70_001 + 4
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"do not publish")
    (release / "link.txt").symlink_to(outside)
    (release / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    metainfo = create_torrent(release)
    names = {entry.path[0] for entry in metainfo.data_files()}
    assert "link.txt" not in names and "linkdir" not in names
    assert "a.bin" in names


def test_bad_arguments_raise_typed_errors(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    with pytest.raises(ConfigError):
        create_torrent(release, version="v2", piece_length=20_000)
    with pytest.raises(ConfigError):
        create_torrent(release, version="hybrid", piece_length=8 * KIB)
    with pytest.raises(ConfigError):
        create_torrent(tmp_path / "missing")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "empty").write_bytes(b"")
    with pytest.raises(MetainfoError):
        create_torrent(tmp_path / "nothing")
    # v1 accepts any positive piece length.
    odd = create_torrent(release, version="v1", piece_length=20_000)
    assert_all_pieces_verify(odd, release)


def test_verifier_is_usable_from_several_threads_at_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    release = make_release(tmp_path)
    metainfo = create_torrent(release, version="hybrid", piece_length=16 * KIB)
    data = memoryview(piece_space(metainfo, release))
    verifier = PieceVerifier(metainfo)
    length = metainfo.piece_length

    def check(index: int) -> bool:
        start = index * length
        return verifier.verify(index, data[start : start + metainfo.piece_size(index)])

    jobs = list(range(metainfo.num_pieces)) * 20
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(check, jobs))
    assert results == [True] * len(jobs)
    # Out-of-range indexes are a typed error, not an IndexError.
    from opendistro.errors import IntegrityError

    with pytest.raises(IntegrityError):
        verifier.verify(metainfo.num_pieces, b"")
