"""How fast opendistro cuts data into content-defined chunks (od-cdc-1), hashing included.

Three inputs, each streamed through ``chunk_stream`` in 4 MiB pieces as
``build_index`` does: random bytes (256 MiB, 32 MiB with --quick), text-like
bytes (lines of words with a skewed vocabulary, like source code or logs; a
16 MiB sample repeated to the same size) and, if a path is given, a real file
read from disk. For the generated inputs the boundary search alone (no SHA-256)
is timed too. Each figure is the best of --rounds runs, so a busy machine
disturbs it less; CPU seconds are reported beside wall seconds.

Prints MB/s (10^6 bytes per second), the average chunk size and the peak RSS,
which is mostly the generated inputs held in memory: the chunker itself needs
a few times the 4 MiB piece size. The last line is one JSON object.

    python3 benchmarks/chunking.py [--quick] [--size-mib N] [--rounds N] [--params MIN,AVG,MAX]
                                   [FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opendistro.delta.chunker import Chunker, ChunkerParams, chunk_stream

PIECE = 4 * 1024 * 1024


def random_data(size: int) -> bytes:
    rng = random.Random(1)
    block = 16 * 1024 * 1024  # randbytes refuses 256 MiB at once
    return b"".join(rng.randbytes(min(block, size - start)) for start in range(0, size, block))


def text_data(size: int) -> bytes:
    rng = random.Random(2)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    words = ["".join(rng.choices(letters, k=rng.randint(1, 9))) for _ in range(5000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    lines: list[str] = []
    total = 0
    sample = min(size, 16 * 1024 * 1024)
    while total < sample:
        line = " ".join(rng.choices(words, weights, k=rng.randint(3, 14))) + ".\n"
        lines.append(line)
        total += len(line)
    block = "".join(lines).encode()[:sample]
    return (block * (size // len(block) + 1))[:size]


def pieces_of(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), PIECE):
        yield view[start : start + PIECE]


def file_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while piece := handle.read(PIECE):
            yield piece


def best_of(rounds: int, run: Callable[[], int]) -> dict[str, float]:
    """Run ``run`` (which returns a chunk count) and keep the fastest wall time."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        chunks = run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if not best or wall < best["wall_s"]:
            best = {"wall_s": wall, "cpu_s": cpu, "chunks": chunks}
    return best


def measure(
    name: str,
    size: int,
    pieces: Callable[[], Iterator[Any]],
    params: ChunkerParams,
    rounds: int,
    *,
    search_only: bool,
) -> dict[str, Any]:
    def with_hashes() -> int:
        return sum(1 for _ in chunk_stream(pieces(), params))

    def boundaries() -> int:
        chunker = Chunker(params)
        count = sum(len(chunker.feed(piece)) for piece in pieces())
        return count + len(chunker.finish())

    timed = best_of(rounds, with_hashes)
    result: dict[str, Any] = {
        "input": name,
        "bytes": size,
        "mb_s": round(size / timed["wall_s"] / 1e6, 1),
        "cpu_mb_s": round(size / max(timed["cpu_s"], 1e-9) / 1e6, 1),
        "chunks": int(timed["chunks"]),
        "average_chunk": round(size / max(timed["chunks"], 1)),
    }
    if search_only:
        result["boundaries_only_mb_s"] = round(
            size / best_of(rounds, boundaries)["wall_s"] / 1e6, 1
        )
    extra = f", boundaries only {result['boundaries_only_mb_s']:.0f} MB/s" if search_only else ""
    print(
        f"{name:>8}: {result['mb_s']:6.0f} MB/s with SHA-256 (CPU {result['cpu_mb_s']:.0f} MB/s)"
        f"{extra}; {result['chunks']} chunks, average {result['average_chunk']} bytes",
        flush=True,
    )
    return result


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", nargs="?", type=Path, help="also chunk this real file")
    parser.add_argument("--quick", action="store_true", help="32 MiB inputs, one round")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--params", default=None, help="MIN,AVG,MAX chunk sizes in bytes")
    args = parser.parse_args()
    size = (args.size_mib or (32 if args.quick else 256)) * 1024 * 1024
    rounds = args.rounds or (1 if args.quick else 3)
    params = ChunkerParams()
    if args.params:
        low, average, high = (int(part) for part in args.params.split(","))
        params = ChunkerParams(min_size=low, avg_size=average, max_size=high)
    print(
        f"od-cdc-1 min {params.min_size} avg {params.avg_size} max {params.max_size};"
        f" {size >> 20} MiB inputs, best of {rounds}; Python {sys.version.split()[0]}",
        flush=True,
    )
    results = []
    for name, make in (("random", random_data), ("text", text_data)):
        data = make(size)
        results.append(
            measure(name, size, lambda data=data: pieces_of(data), params, rounds, search_only=True)
        )
        del data
    if args.file is not None:
        file_size = args.file.stat().st_size
        results.append(
            measure(
                str(args.file),
                file_size,
                lambda: file_pieces(args.file),
                params,
                rounds,
                search_only=False,
            )
        )
    print(f"peak RSS {peak_rss_mb()} MB")
    print(
        json.dumps(
            {
                "benchmark": "chunking",
                "algorithm": params.algorithm,
                "params": {"min": params.min_size, "avg": params.avg_size, "max": params.max_size},
                "rounds": rounds,
                "results": results,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
