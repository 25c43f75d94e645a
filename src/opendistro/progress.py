"""Progress lines for long operations: a bar, the rate and an ETA.

On a terminal the line redraws in place; elsewhere (logs, CI) a new line is
printed at most every few seconds so output stays readable.
"""

from __future__ import annotations

import time
from typing import Protocol, TextIO

__all__ = ["ProgressPrinter", "format_bytes", "render_progress"]


class _Status(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def total_bytes(self) -> int: ...
    @property
    def verified_bytes(self) -> int: ...
    @property
    def download_rate(self) -> float: ...
    @property
    def upload_rate(self) -> float: ...
    @property
    def peers(self) -> int: ...


def format_bytes(amount: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def render_progress(status: _Status, width: int = 30) -> str:
    """One line: name, bar, percentage, rates, peers and ETA."""
    fraction = status.verified_bytes / status.total_bytes if status.total_bytes else 0.0
    filled = int(fraction * width)
    bar = "#" * filled + "-" * (width - filled)
    remaining = status.total_bytes - status.verified_bytes
    if status.total_bytes == 0:
        eta = "metadata"
    elif remaining <= 0:
        eta = "done"
    elif status.download_rate > 0:
        eta = f"ETA {remaining / status.download_rate:.0f}s"
    else:
        eta = "ETA --"
    return (
        f"{status.name[:24]:<24} [{bar}] {fraction * 100:5.1f}% "
        f"down {format_bytes(status.download_rate)}/s up {format_bytes(status.upload_rate)}/s "
        f"{status.peers} peers {eta}"
    )


class ProgressPrinter:
    """Writes progress lines to ``stream``, redrawing in place on a terminal."""

    def __init__(self, stream: TextIO, *, log_interval: float = 5.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._log_interval = log_interval
        self._last = 0.0

    def show(self, status: _Status) -> None:
        line = render_progress(status)
        if self._tty:
            self._stream.write("\r" + line)
            self._stream.flush()
            return
        now = time.monotonic()
        if now - self._last >= self._log_interval:
            self._last = now
            self._stream.write(line + "\n")
            self._stream.flush()

    def finish(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
