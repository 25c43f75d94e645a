"""How much of real release files the delta index can describe by content.

Runs :func:`opendistro.delta.archives.segment_file` over every file of the
delta corpus (``/work/shared/delta-corpus``, fetched by its ``fetch.py`` into
``~/.cache/opendistro-delta-corpus``: wheels, sdists, npm tarballs, a .deb) and
prints per file: its format, its segments by kind, the share of its bytes in
compressed streams whose recipe reproduces them exactly ("reproducible"), the
share in streams that nothing reproduces ("fallback", with the reasons), the
time the publisher spends finding recipes, and the time a client spends
segmenting the same file without recipe search. With ``--verify`` every
compressed segment is also rebuilt from its content and compared.

The last line is one JSON object.

    python3 benchmarks/archive_recipes.py [CORPUS_DIR] [--verify]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from opendistro.delta.archives import read_content, read_range, rebuild, segment_file

DEFAULT_CORPUS = Path.home() / ".cache" / "opendistro-delta-corpus"


@dataclass
class FileResult:
    file: str
    format: str  # the corpus folder: wheel, sdist, npm, deb
    bytes: int
    segments: dict[str, int]
    reproducible_frac: float
    fallback_frac: float
    recipe_seconds: float
    scan_seconds: float
    fallback_reasons: dict[str, int]
    verified: bool | None


def measure(path: Path, verify: bool) -> FileResult:
    size = path.stat().st_size
    started = time.perf_counter()
    segments = segment_file(path)
    recipe_seconds = time.perf_counter() - started
    started = time.perf_counter()
    segment_file(path, find_recipes=False)
    scan_seconds = time.perf_counter() - started
    reproducible = sum(s.length for s in segments if s.kind != "raw")
    fallback = sum(s.length for s in segments if s.fallback_reason)
    reasons = Counter(s.fallback_reason for s in segments if s.fallback_reason)
    verified = None
    if verify:
        verified = all(
            b"".join(rebuild(s, read_content(path, s)))
            == b"".join(read_range(path, s.offset, s.length))
            for s in segments
            if s.kind != "raw"
        )
    return FileResult(
        file=path.name,
        format=path.parents[2].name,
        bytes=size,
        segments=dict(Counter(s.kind for s in segments)),
        reproducible_frac=round(reproducible / size, 4),
        fallback_frac=round(fallback / size, 4),
        recipe_seconds=round(recipe_seconds, 3),
        scan_seconds=round(scan_seconds, 3),
        fallback_reasons=dict(reasons.most_common(3)),
        verified=verified,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--verify", action="store_true", help="rebuild every stream too")
    args = parser.parse_args()
    files = sorted(p for p in args.corpus.glob("*/*/*/*") if p.is_file())
    if not files:
        sys.exit(f"no corpus files under {args.corpus}: run the corpus fetch.py first")
    results = []
    for path in files:
        r = measure(path, args.verify)
        results.append(r)
        kinds = " ".join(f"{k}={n}" for k, n in sorted(r.segments.items()))
        verified = f" verified={r.verified}" if args.verify else ""
        print(
            f"{r.format:6} {r.file[:58]:58} {r.bytes:>10} "
            f"reproducible {r.reproducible_frac:6.1%} fallback {r.fallback_frac:6.1%} "
            f"recipes {r.recipe_seconds:6.2f}s scan {r.scan_seconds:5.2f}s [{kinds}]{verified}",
            flush=True,
        )
        for reason, count in r.fallback_reasons.items():
            print(f"{'':6} fallback x{count}: {reason}")
    by_format: dict[str, dict[str, float]] = {}
    for fmt in sorted({r.format for r in results}):
        group = [r for r in results if r.format == fmt]
        total = sum(r.bytes for r in group)
        by_format[fmt] = {
            "files": len(group),
            "reproducible_frac_bytes": round(
                sum(r.reproducible_frac * r.bytes for r in group) / total, 4
            ),
            "median_recipe_seconds": statistics.median(r.recipe_seconds for r in group),
            "median_scan_seconds": statistics.median(r.scan_seconds for r in group),
        }
    print(
        json.dumps(
            {
                "benchmark": "archive_recipes",
                "by_format": by_format,
                "files": [asdict(r) for r in results],
            }
        )
    )


if __name__ == "__main__":
    main()
