"""Making key rotation and revocation certificates (the publisher's side).

A certificate is a signature envelope like a release signature, over a
:class:`~.statement.RotationStatement` or :class:`~.statement.RevocationStatement`;
a :class:`~.trust.TrustStore` applies it with ``apply_rotation`` or
``apply_revocation``.
"""

from __future__ import annotations

import time

from .keys import SigningKey, VerifyingKey
from .statement import RevocationStatement, RotationStatement, seal

__all__ = ["certify_revocation", "certify_rotation"]


def certify_rotation(
    old: SigningKey,
    new: VerifyingKey,
    *,
    not_after: int | None = None,
    created: int | None = None,
) -> bytes:
    """``old`` vouches for ``new``: stores that trust ``old`` will trust ``new`` too."""
    statement = RotationStatement(
        created=int(time.time()) if created is None else created,
        key_id=old.key_id,
        new_key=new.spki,
        not_after=not_after,
    )
    return seal(old, statement).encode()


def certify_revocation(
    signer: SigningKey,
    revoked_key_id: bytes | None = None,
    *,
    reason: str | None = None,
    created: int | None = None,
) -> bytes:
    """Revoke ``revoked_key_id`` (default: the signer's own key).

    The signer must be the revoked key itself or its predecessor.
    """
    statement = RevocationStatement(
        created=int(time.time()) if created is None else created,
        key_id=signer.key_id,
        revoked_key=signer.key_id if revoked_key_id is None else revoked_key_id,
        reason=reason,
    )
    return seal(signer, statement).encode()
