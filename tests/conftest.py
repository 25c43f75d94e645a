"""Shared fixtures: generated releases and torrents on real files in tmp_path."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opendistro.create import create_torrent
from opendistro.metainfo import Metainfo

SHARED = Path(__file__).resolve().parents[2] / "shared"

# ``get`` and ``seed`` keep seeding credit in the per-user state folder by default.
# No test may write to the real one: every test, and every subprocess a test starts
# (they inherit os.environ), gets this session's own. Set at import, before any
# test module computes a default path.
STATE_HOME = Path(tempfile.mkdtemp(prefix="opendistro-test-state-"))
os.environ["XDG_STATE_HOME"] = str(STATE_HOME)


@pytest.fixture(autouse=True, scope="session")
def _private_state_home() -> Iterator[Path]:
    """Remove the session's state folder at the end (and fail loudly if it was swapped)."""
    assert os.environ.get("XDG_STATE_HOME") == str(STATE_HOME)
    yield STATE_HOME
    shutil.rmtree(STATE_HOME, ignore_errors=True)


def write_random(path: Path, size: int, seed: int) -> Path:
    """A file of pseudo-random (uncompressible) bytes, reproducible from ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@pytest.fixture
def make_release(tmp_path: Path) -> Callable[..., Path]:
    """Build a single file or a folder of files under ``tmp_path/publisher``."""

    def build(name: str = "release", sizes: tuple[int, ...] = (300_000,), seed: int = 1) -> Path:
        root = tmp_path / "publisher"
        if len(sizes) == 1:
            return write_random(root / name, sizes[0], seed)
        folder = root / name
        for number, size in enumerate(sizes):
            write_random(folder / f"dir{number % 2}" / f"file{number}.bin", size, seed + number)
        return folder

    return build


@pytest.fixture
def release(make_release: Callable[..., Path]) -> tuple[Metainfo, Path]:
    """A hybrid multi-file release (so with pad files) and its torrent, for mirror tests."""
    folder = make_release(sizes=(100_000, 30_000, 70_000))
    return create_torrent(folder, version="hybrid", piece_length=16384), folder
