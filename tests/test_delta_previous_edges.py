"""The previous version's files as a delta client reads them: what cannot be read is skipped."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from opendistro.delta.archives import SegmentLayout
from opendistro.delta.chunker import ChunkerParams, chunk_bytes
from opendistro.delta.previous import MAX_FILES, files_below, old_chunks, old_layouts
from opendistro.errors import OpenDistroError

SYSFS = Path("/sys/devices/system/cpu/online")  # reports 4096 bytes, holds fewer
PARAMS = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")


def test_more_files_than_allowed_are_refused(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.write_bytes(b"x")
    assert files_below([one, tmp_path]) == [one, one]
    with pytest.raises(OpenDistroError, match=f"more than {MAX_FILES} files"):
        files_below([one] * (MAX_FILES + 1))


def test_an_unreadable_file_has_no_layouts(tmp_path: Path) -> None:
    assert old_layouts(tmp_path / "missing") is None
    if SYSFS.is_file():
        assert old_layouts(SYSFS) is None


def test_segments_the_file_no_longer_holds_are_skipped(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3000)
    path = tmp_path / "old.bin"
    path.write_bytes(data)
    layouts = [SegmentLayout("raw", 0, 10_000), SegmentLayout("raw", 0, 3000)]
    found = list(old_chunks(path, layouts, PARAMS))
    assert {number for number, _, _ in found} == {1}
    assert [chunk for _, _, chunk in found] == chunk_bytes(data, PARAMS)
