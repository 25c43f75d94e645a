"""Validation of file names that come from untrusted metadata.

A .torrent or magnet download names the files we will create. Those names come
from strangers, so every component is checked *before* anything reaches the
storage layer: no component may climb out of the download folder (``..``), be
an absolute path, smuggle a separator, or name a Windows device (``NUL``,
``COM1``, ...) that would make a write go somewhere other than a file. The
checks are pure string logic so the same answer holds on every platform.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import UnsafePathError

__all__ = ["RESERVED_NAMES", "validate_component", "validate_path"]

RESERVED_NAMES: frozenset[str] = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)

_FORBIDDEN_CHARS = ("/", "\\", "\x00")
_DRIVE_PREFIX = re.compile(r"^[A-Za-z]:")


def validate_component(name: str) -> str:
    """Return ``name`` if it is safe as one path component, else raise UnsafePathError."""
    if not isinstance(name, str):
        raise UnsafePathError(f"path component is not text: {name!r}")
    if name in ("", ".", ".."):
        raise UnsafePathError(f"path component {name!r} is not allowed")
    for char in _FORBIDDEN_CHARS:
        if char in name:
            raise UnsafePathError(f"path component {name!r} contains {char!r}")
    if _DRIVE_PREFIX.match(name):
        raise UnsafePathError(f"path component {name!r} looks like a drive letter")
    # Windows ignores the extension and trailing spaces when matching devices:
    # "nul.txt" and "CON .log" open the device, not a file.
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in RESERVED_NAMES:
        raise UnsafePathError(f"path component {name!r} is a reserved device name")
    return name


def validate_path(components: Sequence[str]) -> tuple[str, ...]:
    """Validate every component of a relative path and return it as a tuple."""
    if isinstance(components, str):
        raise UnsafePathError("a path must be a sequence of components, not a string")
    path = tuple(components)
    if not path:
        raise UnsafePathError("empty path")
    for component in path:
        validate_component(component)
    return path
