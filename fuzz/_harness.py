"""What every fuzz harness in this folder shares.

A harness is a module with two functions: ``fuzz_one(data)``, which feeds one
input to a parser, and ``seeds()``, which yields valid inputs to start from
(built from our test vectors and encoders, so they follow the code). A parser
of untrusted input may refuse an input only with a typed
:class:`~opendistro.errors.OpenDistroError`; :func:`expect_typed` swallows
those, so anything else that escapes from ``fuzz_one`` (``KeyError``,
``struct.error``, ``RecursionError``, a failed round-trip assertion...) is a
crash to report.

:func:`main` runs a harness three ways:

* ``python3 fuzz/fuzz_X.py [libFuzzer args]`` fuzzes it with atheris;
* ``python3 fuzz/fuzz_X.py --replay [FILE_OR_DIR ...]`` runs the seeds, a fixed
  set of mutations of them, and any given corpus files, without atheris (this is
  also what happens when atheris is not installed);
* ``python3 fuzz/fuzz_X.py --write-corpus DIR`` writes the seeds to ``DIR`` as a
  starting corpus for atheris.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "extensions"
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from opendistro.errors import OpenDistroError  # noqa: E402

__all__ = [
    "VECTORS",
    "expect_typed",
    "main",
    "mutations",
    "pick",
    "replay",
    "vector_hex",
]

T = TypeVar("T")
FuzzOne = Callable[[bytes], None]
Seeds = Callable[[], Iterable[bytes]]

#: Length prefixes a hostile peer likes: zero, just past a limit, 2**31, 4 GiB - 1.
HUGE_LENGTHS = (0, 0x7F, 0x4000, 0x100001, 0x7FFFFFFF, 0xFFFFFFFF)


def expect_typed(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``parse(*args)``, or None when it refuses the input with a typed OpenDistroError."""
    try:
        return parse(*args, **kwargs)
    except OpenDistroError:
        return None


def pick(data: bytes, count: int) -> tuple[int, bytes]:
    """Split off the first byte to choose among ``count`` targets; the rest is the input."""
    if not data:
        return 0, b""
    return data[0] % count, data[1:]


def vector_hex(filename: str, *path: str, key: str = "hex") -> list[bytes]:
    """Every ``key`` (hex) found under ``path`` in a JSON vector file, decoded."""
    document: Any = json.loads((VECTORS / filename).read_text())
    for step in path:
        document = document[step]
    found: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name == key and isinstance(value, str):
                    found.append(bytes.fromhex(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return found


def mutations(seed: bytes, rng: random.Random, count: int = 12) -> Iterator[bytes]:
    """Cheap structured mutations: truncations, bit flips, insertions, huge lengths, nesting."""
    size = len(seed)
    yield seed[: size // 2]
    yield seed[:-1]
    yield seed + seed[-1:] if seed else b"e"
    for _ in range(count):
        choice = rng.randrange(6)
        position = rng.randrange(size + 1)
        if choice == 0 and size:
            flipped = bytearray(seed)
            flipped[rng.randrange(size)] ^= 1 << rng.randrange(8)
            yield bytes(flipped)
        elif choice == 1:
            yield seed[:position]
        elif choice == 2:
            yield seed[:position] + rng.randbytes(rng.randrange(1, 8)) + seed[position:]
        elif choice == 3:
            length = rng.choice(HUGE_LENGTHS)
            prefix = rng.choice([length.to_bytes(4, "big"), str(length).encode() + b":"])
            yield seed[:position] + prefix + seed[position:]
        elif choice == 4:
            depth = rng.choice((70, 200, 5000))
            yield seed[:position] + b"l" * depth + b"e" * depth + seed[position:]
        else:
            cut = rng.randrange(size + 1)
            yield seed[:position] + seed[cut:]


def replay(
    fuzz_one: FuzzOne,
    seeds: Seeds,
    paths: Iterable[str | Path] = (),
    *,
    mutations_per_seed: int = 12,
) -> int:
    """Run ``fuzz_one`` over the seeds, their mutations and corpus files; return the count.

    A crash propagates with the offending input attached as a note.
    """
    inputs: list[bytes] = []
    for seed in seeds():
        rng = random.Random(hashlib.sha256(seed).digest())
        inputs.append(seed)
        inputs.extend(mutations(seed, rng, mutations_per_seed))
    for path in map(Path, paths):
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        inputs.extend(file.read_bytes() for file in files if file.is_file())
    for data in inputs:
        try:
            fuzz_one(data)
        except Exception as exc:
            exc.add_note(f"fuzz input ({len(data)} bytes): {data[:200]!r}")
            raise
    return len(inputs)


def write_corpus(seeds: Seeds, directory: Path) -> int:
    """Write every seed to ``directory`` under the SHA-1 of its content, as libFuzzer does."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for seed in seeds():
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        count += 1
    return count


def main(fuzz_one: FuzzOne, seeds: Seeds, argv: list[str] | None = None) -> None:
    """Fuzz with atheris, or replay/write the corpus (see the module docstring)."""
    args = list(sys.argv if argv is None else argv)
    if "--write-corpus" in args:
        directory = Path(args[args.index("--write-corpus") + 1])
        print(f"wrote {write_corpus(seeds, directory)} seeds to {directory}")
        return
    atheris = None
    if "--replay" not in args:
        try:
            import atheris  # type: ignore[import-not-found, no-redef, unused-ignore]
        except ImportError:
            print("atheris is not installed: replaying the seeds instead", file=sys.stderr)
    if atheris is None:
        paths = [arg for arg in args[1:] if not arg.startswith("-")]
        print(f"replayed {replay(fuzz_one, seeds, paths)} inputs without a crash")
        return
    atheris.instrument_all()
    atheris.Setup(args, fuzz_one)
    atheris.Fuzz()
