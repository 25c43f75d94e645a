"""Announce tokens (BEP 5): proof that an announcer asked us for peers from its own address.

A token is a keyed hash of the requester's IP, so we keep no per-requester
state. The key (secret) changes every five minutes and the previous one is
still accepted, so a token lives between five and ten minutes, as BEP 5 asks.
An announce with a token issued to another address, or forged, is refused:
that stops anyone from registering somebody else's address as a peer.
"""

from __future__ import annotations

import hashlib
import hmac
import random

__all__ = ["TOKEN_LENGTH", "TOKEN_ROTATION", "TokenIssuer"]

TOKEN_ROTATION = 300.0
TOKEN_LENGTH = 8
_SECRET_LENGTH = 16


class TokenIssuer:
    """Issues and checks tokens; rotation happens lazily, driven by ``now``."""

    def __init__(
        self, rng: random.Random, now: float, *, rotation: float = TOKEN_ROTATION
    ) -> None:
        self._rng = rng
        self._rotation = rotation
        self._current = rng.randbytes(_SECRET_LENGTH)
        self._previous = rng.randbytes(_SECRET_LENGTH)
        self._rotated_at = now

    def _rotate(self, now: float) -> None:
        elapsed = now - self._rotated_at
        if elapsed < self._rotation:
            return
        if elapsed >= 2 * self._rotation:  # both secrets are too old: forget them
            self._previous = self._rng.randbytes(_SECRET_LENGTH)
        else:
            self._previous = self._current
        self._current = self._rng.randbytes(_SECRET_LENGTH)
        self._rotated_at = now

    @staticmethod
    def _token(secret: bytes, ip: str) -> bytes:
        return hmac.new(secret, ip.encode(), hashlib.sha1).digest()[:TOKEN_LENGTH]

    def issue(self, ip: str, now: float) -> bytes:
        self._rotate(now)
        return self._token(self._current, ip)

    def is_valid(self, token: bytes, ip: str, now: float) -> bool:
        self._rotate(now)
        return any(
            hmac.compare_digest(token, self._token(secret, ip))
            for secret in (self._current, self._previous)
        )
