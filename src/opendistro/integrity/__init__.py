"""Checking downloaded data against the hashes a release promises (v1 SHA-1, v2 merkle)."""

from __future__ import annotations

from .merkle import BLOCK_SIZE
from .pieces import PieceVerifier

__all__ = ["BLOCK_SIZE", "PieceVerifier"]
