"""Signed releases: publisher keys, signatures carried with a torrent, and a trust store.

A publisher signs a release (its info-hashes, name, version and creation
time) with Ed25519, ECDSA P-256 or RSA-PSS; the signature rides in the
.torrent outside the info dict, or beside it as ``NAME.torrent.sig``. A user
keeps the publisher keys they trust in a :class:`TrustStore`, which also
follows key rotations and revocations and refuses rolled-back releases.
``spec/signed-releases.md`` is the normative description::

    key = SigningKey.generate()
    envelope = sign_release(metainfo, key, version="1.0")
    with TrustStore("trust.db") as trust:
        trust.add_key(key.public, publisher="Example")
        verified = verify_release(metainfo, trust, detached=envelope)
"""

from __future__ import annotations

from .certificates import certify_revocation, certify_rotation
from .keys import (
    DEFAULT_SCHEME,
    SCHEMES,
    PublicKeyFile,
    Scheme,
    SigningKey,
    VerifyingKey,
    key_id_of,
)
from .reasons import Reason, reason_of
from .release import (
    DETACHED_SUFFIX,
    VerifiedRelease,
    add_signature,
    detached_path,
    embed_signature,
    read_detached,
    sign_release,
    verify_envelope,
    verify_release,
    write_detached,
)
from .statement import Envelope, ReleaseStatement, RevocationStatement, RotationStatement
from .trust import MAX_CLOCK_SKEW, AcceptedRelease, TrustedKey, TrustStore

__all__ = [
    "DEFAULT_SCHEME",
    "DETACHED_SUFFIX",
    "MAX_CLOCK_SKEW",
    "SCHEMES",
    "AcceptedRelease",
    "Envelope",
    "PublicKeyFile",
    "Reason",
    "ReleaseStatement",
    "RevocationStatement",
    "RotationStatement",
    "Scheme",
    "SigningKey",
    "TrustStore",
    "TrustedKey",
    "VerifiedRelease",
    "VerifyingKey",
    "add_signature",
    "certify_revocation",
    "certify_rotation",
    "detached_path",
    "embed_signature",
    "key_id_of",
    "read_detached",
    "reason_of",
    "sign_release",
    "verify_envelope",
    "verify_release",
    "write_detached",
]
