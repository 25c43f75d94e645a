"""Signing a torrent as a release, carrying the signature, and verifying it.

The signature names the torrent by its info-hash(es), so it can travel
anywhere the info dict does not: in the .torrent's top-level ``signatures``
list (outside ``info``, so embedding never changes the info-hash), or in a
detached ``NAME.torrent.sig`` file holding one bencoded envelope.
:func:`verify_release` is what a download calls before trusting what it got.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import bencode
from ..errors import ConfigError, SignatureError
from ..metainfo import MAX_SIGNATURES, Metainfo
from .keys import Scheme, SigningKey
from .reasons import Reason, reason_of, refuse
from .statement import MAX_ENVELOPE_SIZE, Envelope, ReleaseStatement, seal
from .trust import TrustStore, check_not_future

__all__ = [
    "DETACHED_SUFFIX",
    "VerifiedRelease",
    "add_signature",
    "detached_path",
    "embed_signature",
    "read_detached",
    "sign_release",
    "verify_envelope",
    "verify_release",
    "write_detached",
]

DETACHED_SUFFIX = ".sig"

#: When every signature is refused, report the refusal that says most about a
#: key the user trusts: a rolled-back release by a trusted publisher matters
#: more than a stray signature by a stranger.
_PRECEDENCE = (
    Reason.ROLLED_BACK,
    Reason.MISMATCH,
    Reason.REVOKED,
    Reason.EXPIRED,
    Reason.INVALID,
    Reason.UNTRUSTED,
    Reason.MALFORMED,
)


@dataclass(frozen=True)
class VerifiedRelease:
    """What a good signature established: who vouches for which release of which torrent."""

    publisher: str
    key_id: bytes
    scheme: Scheme
    name: str
    version: str
    created: int
    info_hash_v1: bytes | None
    info_hash_v2: bytes | None
    delta_index_sha256: bytes | None = None
    """The delta index the publisher vouches for, if the statement names one."""

    def to_json(self) -> dict[str, Any]:
        """Fields as JSON; ``delta_index_sha256`` only when the statement names an index."""
        fields = {
            "publisher": self.publisher,
            "key_id": self.key_id.hex(),
            "scheme": self.scheme,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "info_hash_v1": self.info_hash_v1.hex() if self.info_hash_v1 else None,
            "info_hash_v2": self.info_hash_v2.hex() if self.info_hash_v2 else None,
        }
        if self.delta_index_sha256 is not None:
            fields["delta_index_sha256"] = self.delta_index_sha256.hex()
        return fields


# -- signing ------------------------------------------------------------------------------


def sign_release(
    metainfo: Metainfo,
    key: SigningKey,
    *,
    version: str,
    name: str | None = None,
    created: int | None = None,
    delta_index: bytes | None = None,
) -> bytes:
    """A bencoded envelope in which ``key`` signs ``metainfo`` as release ``name`` ``version``.

    ``name`` defaults to the torrent's name and ``created`` to now; every
    info-hash the torrent has is signed, and with ``delta_index`` (the encoded
    index) its SHA-256 too, so clients updating from an older version can
    refuse a substituted index.
    """
    statement = ReleaseStatement(
        name=metainfo.name if name is None else name,
        version=version,
        created=int(time.time()) if created is None else created,
        key_id=key.key_id,
        info_hash_v1=metainfo.info_hash_v1,
        info_hash_v2=metainfo.info_hash_v2,
        delta_index_sha256=hashlib.sha256(delta_index).digest() if delta_index else None,
    )
    try:
        return seal(key, statement).encode()
    except SignatureError as exc:
        raise ConfigError(f"cannot sign: {exc}") from None


def _signer_of(envelope: bytes) -> bytes | None:
    try:
        return ReleaseStatement.decode(Envelope.decode(envelope).statement).key_id
    except SignatureError:
        return None


def add_signature(metainfo: Metainfo, envelope: bytes) -> Metainfo:
    """A copy of ``metainfo`` carrying ``envelope``, replacing an older one by the same key."""
    signer = _signer_of(envelope)
    if signer is None:
        raise ConfigError("not a release signature envelope")
    kept = tuple(old for old in metainfo.signatures if _signer_of(old) != signer)
    if len(kept) >= MAX_SIGNATURES:
        raise ConfigError(f"a torrent carries at most {MAX_SIGNATURES} signatures")
    return dataclasses.replace(metainfo, signatures=(*kept, bytes(envelope)))


def embed_signature(torrent: bytes, envelope: bytes) -> bytes:
    """The .torrent file ``torrent`` with ``envelope`` added to its ``signatures`` list.

    Works on the bytes, so top-level keys that :class:`Metainfo` does not model
    (``nodes``, ``httpseeds``, ...) survive, and the info dict is copied byte
    for byte: the info-hash cannot change.
    """
    signed = add_signature(Metainfo.from_bytes(torrent), envelope)
    data = bytes(torrent)
    entries: dict[bytes, bytes] = {}
    pos = 1  # Metainfo.from_bytes has checked this is one well-formed dictionary
    while data[pos : pos + 1] != b"e":
        key, value_start = bencode.decode_prefix(data, pos)
        _, pos = bencode.decode_prefix(data, value_start)
        entries[key] = data[value_start:pos]
    entries[b"signatures"] = b"l" + b"".join(signed.signatures) + b"e"
    parts = [b"d"]
    for key in sorted(entries):
        parts += [bencode.encode(key), entries[key]]
    parts.append(b"e")
    return b"".join(parts)


def detached_path(torrent_path: str | os.PathLike[str]) -> Path:
    """Where a detached signature of ``NAME.torrent`` goes: ``NAME.torrent.sig``."""
    path = Path(torrent_path)
    return path.with_name(path.name + DETACHED_SUFFIX)


def write_detached(path: str | os.PathLike[str], envelope: bytes) -> None:
    Path(path).write_bytes(envelope)


def read_detached(path: str | os.PathLike[str]) -> bytes:
    """Read a detached signature file (one bencoded envelope), refusing oversized files."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_ENVELOPE_SIZE + 1)
    if len(data) > MAX_ENVELOPE_SIZE:
        raise refuse(Reason.MALFORMED, f"{os.fspath(path)} is larger than any signature")
    return data


# -- verifying ----------------------------------------------------------------------------


def verify_envelope(
    envelope: bytes,
    trust: TrustStore,
    *,
    info_hash_v1: bytes | None,
    info_hash_v2: bytes | None,
    now: int | None = None,
    record: bool = True,
) -> VerifiedRelease:
    """Check one envelope against a torrent's info-hashes and the trust store.

    In order: the envelope and statement are well formed; the key is in the
    store; the signature is good; the key is neither revoked nor expired; the
    statement is not dated in the future; it names exactly this torrent's
    info-hashes; and it is not older than a release of the same name already
    accepted from the same publisher. With ``record`` the store then remembers
    it as the newest. Any failure raises SignatureError naming its reason.
    """
    now = int(time.time()) if now is None else now
    statement, key = Envelope.decode(envelope).open(
        ReleaseStatement, lambda st: trust.lookup(st.key_id).key
    )
    trusted = trust.lookup(key.key_id)
    trusted.check_usable(now, statement.created)
    check_not_future(statement.created, now, "release statement")
    if (statement.info_hash_v1, statement.info_hash_v2) != (info_hash_v1, info_hash_v2):
        raise refuse(
            Reason.MISMATCH,
            f"the signature of {statement.name} {statement.version} is for"
            f" {_hashes(statement.info_hash_v1, statement.info_hash_v2)},"
            f" not for {_hashes(info_hash_v1, info_hash_v2)}",
        )
    trust.accept_release(trusted.publisher, statement, now=now, record=record)
    return VerifiedRelease(
        publisher=trusted.publisher,
        key_id=key.key_id,
        scheme=key.scheme,
        name=statement.name,
        version=statement.version,
        created=statement.created,
        info_hash_v1=statement.info_hash_v1,
        info_hash_v2=statement.info_hash_v2,
        delta_index_sha256=statement.delta_index_sha256,
    )


def _hashes(v1: bytes | None, v2: bytes | None) -> str:
    named = [f"{label} {value.hex()}" for label, value in (("v1", v1), ("v2", v2)) if value]
    return " and ".join(named) or "no info-hash"


def verify_release(
    metainfo: Metainfo,
    trust: TrustStore,
    detached: bytes | None = None,
    *,
    now: int | None = None,
    record: bool = True,
) -> VerifiedRelease:
    """Verify a torrent's release signature: the detached one first, then embedded ones.

    The first envelope that passes :func:`verify_envelope` wins. If none does,
    the most telling refusal is raised ("missing" when there is no signature at
    all), so the user hears about the publisher they trust, not about a stray
    signature by someone else.
    """
    candidates = ([bytes(detached)] if detached is not None else []) + list(metainfo.signatures)
    if not candidates:
        raise refuse(
            Reason.MISSING, f"{metainfo.name} carries no signature and none was given beside it"
        )
    refusals: list[SignatureError] = []
    for envelope in candidates:
        try:
            return verify_envelope(
                envelope,
                trust,
                info_hash_v1=metainfo.info_hash_v1,
                info_hash_v2=metainfo.info_hash_v2,
                now=now,
                record=record,
            )
        except SignatureError as exc:
            refusals.append(exc)

    def rank(error: SignatureError) -> int:
        reason = reason_of(error)
        return _PRECEDENCE.index(reason) if reason in _PRECEDENCE else len(_PRECEDENCE)

    best = min(refusals, key=rank)
    if len(refusals) == 1:
        raise best
    others = len(refusals) - 1
    raise SignatureError(f"{best} (and {others} other signature(s) refused)") from best
