"""Why a signature was refused, as a fixed word at the start of the error message.

Every refusal is a :class:`~opendistro.errors.SignatureError`; callers that
need to tell the cases apart (the CLI's ``--json`` output, a download that may
fall back to another source, the test vectors) read the reason from the first
words of the message instead of from a zoo of subclasses. The words are part of
the specification (``spec/signed-releases.md``), so they never change.
"""

from __future__ import annotations

import enum

from ..errors import SignatureError

__all__ = ["Reason", "reason_of", "refuse"]


class Reason(enum.StrEnum):
    """The cases in which a signature, rotation or revocation is refused."""

    MISSING = "missing"
    MALFORMED = "malformed"
    INVALID = "invalid"
    UNTRUSTED = "untrusted key"
    EXPIRED = "expired"
    REVOKED = "revoked"
    ROLLED_BACK = "rolled back"
    MISMATCH = "info-hash mismatch"


def refuse(reason: Reason, detail: str) -> SignatureError:
    """The error to raise for ``reason``: ``"<reason>: <detail>"``."""
    return SignatureError(f"{reason.value}: {detail}")


def reason_of(error: SignatureError) -> Reason | None:
    """The reason an error made by :func:`refuse` names, or None for any other message."""
    head = str(error).split(":", 1)[0]
    try:
        return Reason(head)
    except ValueError:
        return None
