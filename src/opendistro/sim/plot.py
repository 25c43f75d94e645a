"""Pictures of a run: completion-time CDFs, with matplotlib if it is there.

matplotlib is not a dependency of opendistro; it is imported only when a plot
is asked for, and its absence is reported by a ``False`` return rather than an
error, so ``--plot`` degrades to the text summary. :func:`text_cdf` needs
nothing and is what a terminal gets.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .metrics import RunMetrics

__all__ = ["matplotlib_available", "plot_completion_cdf", "plot_run", "text_cdf"]


def matplotlib_available() -> bool:
    """True when :func:`plot_completion_cdf` can draw."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def plot_completion_cdf(runs: Mapping[str, RunMetrics], path: str | Path) -> bool:
    """Draw the CDF of completion times of each run (with its fluid bound) into ``path``.

    Returns False, having written nothing, when matplotlib is not installed.
    """
    if not matplotlib_available():
        return False
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # files only: never open a window
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, axes = pyplot.subplots(figsize=(8, 5))
    try:
        for label, run in runs.items():
            times = sorted(run.completion_times.values())
            if not times:
                continue
            total = run.peer_count or len(times)
            fractions = [(i + 1) / total for i in range(len(times))]
            (line,) = axes.step(times, fractions, where="post", label=label)
            if run.bound > 0:
                axes.axvline(run.bound, linestyle=":", color=line.get_color())
        axes.set_xlabel("seconds from arrival to completion")
        axes.set_ylabel("fraction of peers complete")
        axes.set_ylim(0, 1.02)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="lower right")
        figure.tight_layout()
        figure.savefig(str(path))
    finally:
        pyplot.close(figure)
    return True


def plot_run(run: RunMetrics, path: str | Path, *, title: str = "") -> bool:
    """Two panels into ``path``: the completion CDF against the fluid bound, and
    progress over time (mean fraction downloaded, fraction of peers complete).

    Returns False, having written nothing, when matplotlib is not installed.
    """
    if not matplotlib_available():
        return False
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, (cdf, progress) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    try:
        times = sorted(run.completion_times.values())
        total = run.peer_count or len(times) or 1
        cdf.step(times, [(i + 1) / total for i in range(len(times))], where="post")
        if run.bound > 0:
            cdf.axvline(run.bound, linestyle=":", color="grey", label="fluid lower bound")
            cdf.legend(loc="lower right")
        cdf.set_xlabel("seconds from arrival to completion")
        cdf.set_ylabel("fraction of peers complete")
        cdf.set_ylim(0, 1.02)
        cdf.grid(True, alpha=0.3)
        when = [point[0] for point in run.timeline]
        progress.plot(when, [point[1] for point in run.timeline], label="mean downloaded")
        progress.plot(when, [point[2] for point in run.timeline], label="peers complete")
        progress.set_xlabel("virtual seconds")
        progress.set_ylabel("fraction")
        progress.set_ylim(0, 1.02)
        progress.grid(True, alpha=0.3)
        progress.legend(loc="lower right")
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(str(path))
    finally:
        pyplot.close(figure)
    return True


def text_cdf(values: Sequence[float], *, width: int = 50, rows: int = 10) -> str:
    """A small text CDF: for each decile, the time by which that share of peers finished."""
    if width < 1 or rows < 1:
        raise ConfigError("width and rows must be positive")
    if not values:
        return "(no peer completed)"
    ordered = sorted(values)
    top = ordered[-1] or 1.0
    lines = []
    for row in range(1, rows + 1):
        share = row / rows
        value = ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]
        bar = "#" * max(1, round(width * value / top))
        lines.append(f"{share:4.0%} {value:10.1f}s {bar}")
    return "\n".join(lines)
