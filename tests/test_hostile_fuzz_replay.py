"""The atheris harnesses in ``fuzz/`` run without atheris, over their seeds.

Each harness's seeds (built from ``extensions/`` vectors, our encoders and
``fuzz/seeds/``) and a fixed set of mutations of them must go through
``fuzz_one`` without a crash, so the harnesses cannot rot, and every crash
found by fuzzing and added to ``fuzz/crashes/<name>/`` is replayed for good.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from opendistro.errors import BencodeError

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
HARNESSES = sorted(path.stem.removeprefix("fuzz_") for path in FUZZ.glob("fuzz_*.py"))


def _load(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


def test_every_parser_has_a_harness() -> None:
    assert set(HARNESSES) >= {
        "bencode", "metainfo", "magnet", "wire", "extensions", "mse", "tracker",
        "metalink", "checksums", "signing", "delta",
    }


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_replays_its_seeds_without_a_crash(name: str) -> None:
    harness = _load("_harness")
    module = _load(f"fuzz_{name}")
    seeds = list(module.seeds())
    assert seeds, f"fuzz_{name} has no seeds"
    crashes = FUZZ / "crashes" / name
    paths = [crashes] if crashes.is_dir() else []
    count = harness.replay(module.fuzz_one, module.seeds, paths, mutations_per_seed=4)
    assert count >= len(seeds) * 5


def test_replay_treats_typed_errors_as_expected_and_anything_else_as_a_crash() -> None:
    harness = _load("_harness")

    def refuses(data: bytes) -> None:
        harness.expect_typed(_raise, BencodeError("typed"))

    def crashes(data: bytes) -> None:
        harness.expect_typed(_raise, KeyError("untyped"))

    assert harness.replay(refuses, lambda: [b"x"], mutations_per_seed=0) == 4
    with pytest.raises(KeyError) as caught:
        harness.replay(crashes, lambda: [b"seed"], mutations_per_seed=0)
    assert any("fuzz input" in note for note in caught.value.__notes__)


def _raise(exc: Exception) -> None:
    raise exc


def test_a_harness_runs_as_a_script_in_replay_mode(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_bencode.py"), "--write-corpus", str(corpus)],
        check=True, capture_output=True,
    )
    assert any(corpus.iterdir())
    result = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_bencode.py"), "--replay", str(corpus)],
        check=True, capture_output=True, text=True,
    )
    assert "without a crash" in result.stdout
