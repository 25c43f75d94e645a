"""FileStorage and check_pieces on real files in a temporary folder."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.errors import StorageError, UnsafePathError
from opendistro.storage import FileStorage, check_pieces

PIECE = 16


@dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]
    length: int
    offset: int
    is_padding: bool = False


def make_entries(spec: list[tuple[tuple[str, ...], int, bool]]) -> list[Entry]:
    result = []
    offset = 0
    for path, length, padding in spec:
        result.append(Entry(path, length, offset, padding))
        offset += length
    return result


MULTI = make_entries(
    [
        (("a.bin",), 37, False),
        (("empty",), 0, False),
        ((".pad", "11"), 11, True),
        (("sub", "b.bin"), 5, False),
        (("sub", "deeper", "c.bin"), 60, False),
        (("d.bin",), 3, False),
    ]
)
MULTI_TOTAL = sum(e.length for e in MULTI)


def content_for(entries: list[Entry]) -> dict[int, bytes]:
    rng = random.Random(1234)
    return {i: rng.randbytes(e.length) for i, e in enumerate(entries) if not e.is_padding}


def piece_space(entries: list[Entry], content: dict[int, bytes]) -> bytes:
    return b"".join(bytes(e.length) if e.is_padding else content[i] for i, e in enumerate(entries))


def storage(
    root: Path, mode: str = "download", files: list[Entry] | None = None, **kw: object
) -> FileStorage:
    files = MULTI if files is None else files
    return FileStorage(
        download_dir=root,
        name=str(kw.pop("name", "rel")),
        files=files,
        piece_length=PIECE,
        total_length=sum(e.length for e in files),
        is_multi_file=bool(kw.pop("is_multi_file", True)),
        mode=mode,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def write_everything(store: FileStorage, data: bytes, seed: int = 7) -> None:
    """Write every 5-byte block of every piece, in random order."""
    blocks = []
    for index in range(store.num_pieces):
        size = store.layout.piece_size(index)
        blocks += [(index, begin, min(5, size - begin)) for begin in range(0, size, 5)]
    random.Random(seed).shuffle(blocks)
    for index, begin, length in blocks:
        start = index * PIECE + begin
        store.write_block(index, begin, memoryview(data)[start : start + length])


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_random_order_writes_read_back_bit_exact(tmp_path: Path) -> None:
    content = content_for(MULTI)
    data = piece_space(MULTI, content)
    with storage(tmp_path, max_open_files=2) as store:
        store.preallocate()
        write_everything(store, data)
        for index in range(store.num_pieces):
            assert store.read_piece(index) == data[index * PIECE : (index + 1) * PIECE]
        assert store.read_block(2, 3, 9) == data[2 * PIECE + 3 : 2 * PIECE + 12]


def test_staging_hides_data_until_finalize(tmp_path: Path) -> None:
    content = content_for(MULTI)
    data = piece_space(MULTI, content)
    store = storage(tmp_path)
    store.preallocate()
    write_everything(store, data)
    assert not store.final_path.exists()
    assert store.staging_path == tmp_path / ".rel.opendistro"
    assert (store.staging_path / "sub" / "deeper" / "c.bin").read_bytes() == content[4]

    assert store.finalize() == tmp_path / "rel"
    assert not store.staging_path.exists()
    assert store.mode == "seed"
    assert tree(tmp_path) == {
        "rel/a.bin": content[0],
        "rel/empty": b"",
        "rel/sub/b.bin": content[3],
        "rel/sub/deeper/c.bin": content[4],
        "rel/d.bin": content[5],
    }
    assert not (tmp_path / "rel" / ".pad").exists()
    # After finalizing, reads come from the final place.
    assert store.read_piece(1) == data[PIECE : 2 * PIECE]
    store.close()


def test_single_file_download_and_finalize(tmp_path: Path) -> None:
    files = make_entries([(("movie.iso",), 50, False)])
    data = random.Random(3).randbytes(50)
    store = storage(tmp_path, files=files, name="movie.iso", is_multi_file=False)
    write_everything(store, data)
    assert (tmp_path / ".movie.iso.opendistro" / "movie.iso").read_bytes() == data
    assert not (tmp_path / "movie.iso").exists()
    store.finalize()
    assert tree(tmp_path) == {"movie.iso": data}
    store.close()


def test_finalize_refuses_incomplete_files_and_moves_nothing(tmp_path: Path) -> None:
    store = storage(tmp_path)
    store.write_block(0, 0, b"x" * PIECE)
    with pytest.raises(StorageError):
        store.finalize()
    assert not store.final_path.exists()
    assert store.mode == "download"


def test_seed_mode_reads_in_place(tmp_path: Path) -> None:
    content = content_for(MULTI)
    data = piece_space(MULTI, content)
    for index, entry in enumerate(MULTI):
        if not entry.is_padding:
            target = tmp_path.joinpath("rel", *entry.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content[index])
    with storage(tmp_path, mode="seed") as store:
        assert b"".join(store.read_piece(i) for i in range(store.num_pieces)) == data
        assert not store.staging_path.exists()
        assert store.file_stats()[0][0] == 37


def test_missing_and_short_files_raise_storage_error(tmp_path: Path) -> None:
    with storage(tmp_path, mode="seed") as store:
        with pytest.raises(StorageError):
            store.read_piece(0)
        assert store.file_stats() == [(-1, -1)] * 5
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "a.bin").write_bytes(b"short")
    with storage(tmp_path, mode="seed") as store, pytest.raises(StorageError):
        store.read_block(0, 0, 10)


def test_padding_reads_zeros_and_ignores_writes(tmp_path: Path) -> None:
    with storage(tmp_path) as store:
        store.preallocate()
        # Piece-space bytes 37..48 are the pad file.
        store.write_block(2, 5, b"\xff" * 11)
        assert store.read_block(2, 5, 11) == bytes(11)
        assert not (store.staging_path / ".pad").exists()


def test_out_of_range_block_raises(tmp_path: Path) -> None:
    with storage(tmp_path) as store:
        with pytest.raises(StorageError):
            store.write_block(store.num_pieces, 0, b"x")
        with pytest.raises(StorageError):
            store.write_block(0, 10, b"x" * 7)
        assert not store.staging_path.exists()


def test_preallocate_is_sparse(tmp_path: Path) -> None:
    size = 4 * 1024**3
    files = make_entries([(("big.img",), size, False)])
    store = FileStorage(
        download_dir=tmp_path,
        name="big.img",
        files=files,
        piece_length=1 << 20,
        total_length=size,
        is_multi_file=False,
        mode="download",
    )
    store.preallocate()
    info = os.stat(tmp_path / ".big.img.opendistro" / "big.img")
    assert info.st_size == size
    assert info.st_blocks * 512 < 1 << 20
    assert store.file_stats() == [(size, info.st_mtime_ns)]
    store.close()


def test_concurrent_writers_with_tiny_descriptor_cache(tmp_path: Path) -> None:
    files = make_entries([((f"f{i}",), 7 + i, False) for i in range(12)])
    total = sum(e.length for e in files)
    data = random.Random(9).randbytes(total)
    store = storage(tmp_path, files=files, max_open_files=1)
    pieces = list(range(store.num_pieces))

    def worker(mine: list[int]) -> None:
        for _ in range(20):
            for index in mine:
                size = store.layout.piece_size(index)
                store.write_block(index, 0, data[index * PIECE : index * PIECE + size])
                assert store.read_piece(index) == data[index * PIECE : index * PIECE + size]

    threads = [threading.Thread(target=worker, args=(pieces[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.finalize()
    assert b"".join((tmp_path / "rel" / f"f{i}").read_bytes() for i in range(12)) == data
    store.close()


# -- unsafe names and symlinks ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ("..", "evil"),
        (".",),
        ("",),
        ("/etc", "passwd"),
        ("a/b",),
        ("a\\b",),
        ("nul\x00byte",),
        ("C:", "x"),
        ("c:evil",),
        ("CON",),
        ("con.txt",),
        ("sub", "Lpt1.log"),
        ("COM9",),
        (),
    ],
)
def test_unsafe_components_are_rejected(tmp_path: Path, path: tuple[str, ...]) -> None:
    files = make_entries([(("ok",), 4, False), (path, 4, False)])
    with pytest.raises(UnsafePathError):
        storage(tmp_path, files=files)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["..", "", "a/b", "AUX", "../x"])
def test_unsafe_torrent_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        storage(tmp_path, name=name)


@pytest.mark.parametrize(
    "paths",
    [
        [("x",), ("x",)],
        [("Readme.txt",), ("README.TXT",)],
        [("caf\u00e9",), ("cafe\u0301",)],
        [("a", "b"), ("a", "b", "c")],
        [("a", "b", "c"), ("A", "B")],
    ],
)
def test_colliding_paths_are_rejected(tmp_path: Path, paths: list[tuple[str, ...]]) -> None:
    files = make_entries([(p, 3, False) for p in paths])
    with pytest.raises(UnsafePathError):
        storage(tmp_path, files=files)


def test_symlinked_staging_folder_is_not_followed(tmp_path: Path) -> None:
    download = tmp_path / "dl"
    outside = tmp_path / "outside"
    download.mkdir()
    outside.mkdir()
    (download / ".rel.opendistro").symlink_to(outside)
    store = storage(download)
    with pytest.raises(UnsafePathError):
        store.write_block(0, 0, b"x" * PIECE)
    with pytest.raises(UnsafePathError):
        store.preallocate()
    assert list(outside.iterdir()) == []


def test_symlinked_subfolder_and_file_are_not_followed(tmp_path: Path) -> None:
    download = tmp_path / "dl"
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"precious")
    staging = download / ".rel.opendistro"
    staging.mkdir(parents=True)
    (staging / "sub").symlink_to(outside)
    (staging / "a.bin").symlink_to(victim)
    store = storage(download)
    with pytest.raises(UnsafePathError):
        store.write_block(0, 0, b"x" * PIECE)  # a.bin
    with pytest.raises(UnsafePathError):
        store.write_block(3, 0, b"x" * PIECE)  # sub/deeper/c.bin
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_seed_mode_refuses_symlinked_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 100)
    download = tmp_path / "dl"
    download.mkdir()
    (download / "movie.iso").symlink_to(secret)
    files = make_entries([(("movie.iso",), 50, False)])
    with storage(download, mode="seed", files=files, name="movie.iso", is_multi_file=False) as s:
        with pytest.raises(UnsafePathError):
            s.read_piece(0)
        assert s.file_stats() == [(-1, -1)]


def test_download_refuses_hard_linked_staged_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious" * 10)
    staging = tmp_path / "dl" / ".movie.iso.opendistro"
    staging.mkdir(parents=True)
    os.link(outside, staging / "movie.iso")
    files = make_entries([(("movie.iso",), 50, False)])
    store = storage(tmp_path / "dl", files=files, name="movie.iso", is_multi_file=False)
    with pytest.raises(UnsafePathError):
        store.write_block(0, 0, b"x" * PIECE)
    assert outside.read_bytes() == b"precious" * 10


# -- check_pieces -------------------------------------------------------------------------


def test_check_pieces_finds_exactly_the_corrupted_pieces(tmp_path: Path) -> None:
    content = content_for(MULTI)
    data = piece_space(MULTI, content)
    hashes = [hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)]

    def verify(index: int, piece: bytes) -> bool:
        return hashlib.sha1(piece).digest() == hashes[index]

    store = storage(tmp_path)
    store.preallocate()
    write_everything(store, data)
    store.finalize()
    assert check_pieces(store, verify) == set(range(store.num_pieces))

    # Flip one byte in piece 1 (inside a.bin) and one in piece 5 (c.bin).
    a_bin = tmp_path / "rel" / "a.bin"
    raw = bytearray(a_bin.read_bytes())
    raw[PIECE + 2] ^= 0xFF
    a_bin.write_bytes(bytes(raw))
    c_bin = tmp_path / "rel" / "sub" / "deeper" / "c.bin"
    raw = bytearray(c_bin.read_bytes())
    offset_of_c = 37 + 11 + 5
    raw[5 * PIECE + 1 - offset_of_c] ^= 0x01
    c_bin.write_bytes(bytes(raw))
    store.close()

    seen: list[tuple[int, int]] = []
    good = check_pieces(store, verify, progress=lambda done, total: seen.append((done, total)))
    assert good == set(range(store.num_pieces)) - {1, 5}
    assert seen[-1] == (store.num_pieces, store.num_pieces)
    assert check_pieces(store, verify, pieces=[0, 1]) == {0}

    # A missing file just leaves its pieces unverified.
    c_bin.unlink()
    store.close()
    assert check_pieces(store, verify) == {0, 1, 2} - {1}


def test_finalize_refuses_symlinked_final_folder(tmp_path: Path) -> None:
    download = tmp_path / "dl"
    outside = tmp_path / "outside"
    download.mkdir()
    outside.mkdir()
    (download / "rel").symlink_to(outside)
    content = content_for(MULTI)
    store = storage(download)
    store.preallocate()
    write_everything(store, piece_space(MULTI, content))
    with pytest.raises(UnsafePathError):
        store.finalize()
    assert list(outside.iterdir()) == []
    assert (store.staging_path / "a.bin").read_bytes() == content[0]
    store.close()


def test_finalize_moves_many_files_across_many_folders(tmp_path: Path) -> None:
    files = make_entries([((f"d{i % 40}", f"f{i}"), 1 + i % 3, False) for i in range(120)])
    data = random.Random(5).randbytes(sum(e.length for e in files))
    store = storage(tmp_path, files=files)
    write_everything(store, data)
    store.finalize()
    rebuilt = b"".join(tmp_path.joinpath("rel", *e.path).read_bytes() for e in files)
    assert rebuilt == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]
    store.close()


def test_torrent_of_only_empty_files(tmp_path: Path) -> None:
    files = make_entries([(("a",), 0, False), (("b", "c"), 0, False)])
    store = storage(tmp_path, files=files)
    assert store.num_pieces == 0
    store.finalize()
    assert tree(tmp_path) == {"rel/a": b"", "rel/b/c": b""}
    assert check_pieces(store, lambda index, piece: True) == set()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=8),
    st.integers(1, 24),
    st.randoms(use_true_random=False),
)
def test_any_layout_round_trips_through_disk(
    shape: list[tuple[int, bool]], piece_length: int, rng: random.Random
) -> None:
    files = make_entries(
        [((f"d{i % 2}", f"f{i}"), size, pad) for i, (size, pad) in enumerate(shape)]
    )
    if all(e.is_padding for e in files):
        return
    content = {i: rng.randbytes(e.length) for i, e in enumerate(files) if not e.is_padding}
    data = piece_space(files, content)
    with tempfile.TemporaryDirectory() as folder:
        store = FileStorage(
            download_dir=folder,
            name="t",
            files=files,
            piece_length=piece_length,
            total_length=len(data),
            is_multi_file=True,
            mode="download",
            max_open_files=2,
        )
        blocks = [(i, b) for i in range(store.num_pieces) for b in (0, 1)]
        rng.shuffle(blocks)
        for index, half in blocks:
            size = store.layout.piece_size(index)
            begin = size // 2 if half else 0
            end = size if half else size // 2
            start = index * piece_length
            store.write_block(index, begin, data[start + begin : start + end])
        store.finalize()
        got = b"".join(store.read_piece(i) for i in range(store.num_pieces))
        assert got == data
        for i, entry in enumerate(files):
            if not entry.is_padding:
                assert Path(folder, "t", *entry.path).read_bytes() == content[i]
        store.close()


def test_flush_reaches_files_evicted_from_the_cache(tmp_path: Path) -> None:
    store = storage(tmp_path, max_open_files=1)
    store.preallocate()
    store.flush()  # nothing written yet: nothing to sync
    store.write_block(0, 0, b"a" * PIECE)  # a.bin
    store.write_block(7, 0, b"d" * 4)  # d.bin evicts a.bin from the cache
    (store.staging_path / "a.bin").unlink()
    # flush() must reopen a.bin to sync it, and so notices it vanished.
    with pytest.raises(StorageError):
        store.flush()
    store.flush()  # d.bin is synced and nothing else is pending
    store.close()


def test_a_descriptor_in_use_is_closed_only_by_its_last_user(tmp_path: Path) -> None:
    """A write needs a writable descriptor where a read-only one is cached; if another
    thread is still reading through the old one, it is closed when that read ends."""
    store = storage(tmp_path)
    data = bytes(range(PIECE))
    store.write_block(0, 0, data)
    store.close()
    assert store.read_block(0, 0, PIECE) == data  # reopens file 0 read-only
    store.write_block(0, 0, data)  # nobody reads: the read-only descriptor goes at once
    store.close()
    assert store.read_block(0, 0, PIECE) == data
    reading = store._acquire(0, write=False)  # as a reader in another thread would
    store.write_block(0, 0, data[::-1])
    os.fstat(reading.fd)  # still open for its reader
    store._release(reading)
    with pytest.raises(OSError):
        os.fstat(reading.fd)
    assert store.read_block(0, 0, PIECE) == data[::-1]
    store.close()
