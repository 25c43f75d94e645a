"""The SQLite trust store: pinning, expiry, rotation, revocation, rollback, persistence."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opendistro.errors import ConfigError, SignatureError
from opendistro.signing import (
    MAX_CLOCK_SKEW,
    Reason,
    ReleaseStatement,
    SigningKey,
    TrustStore,
    VerifiedRelease,
    certify_revocation,
    certify_rotation,
    reason_of,
    verify_envelope,
)
from opendistro.signing.statement import seal

T0 = 1_767_225_600
PUBLISHER = "Example Project"


def refused(reason: Reason, call: Callable[[], Any]) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        call()
    assert reason_of(caught.value) == reason, str(caught.value)
    return caught.value


def torrent_hashes(label: str) -> tuple[bytes, bytes]:
    return hashlib.sha1(label.encode()).digest(), hashlib.sha256(label.encode()).digest()


def release(
    key: SigningKey, label: str = "a", *, version: str = "1.0", created: int = T0,
    name: str = "example-os",
) -> tuple[bytes, str]:
    """An envelope signing the made-up torrent ``label``, and that label."""
    v1, v2 = torrent_hashes(label)
    statement = ReleaseStatement(name, version, created, key.key_id, v1, v2)
    return seal(key, statement).encode(), label


def check(store: TrustStore, signed: tuple[bytes, str], *, now: int = T0 + 60) -> VerifiedRelease:
    """Verify ``signed`` against the torrent it was made for."""
    envelope, label = signed
    v1, v2 = torrent_hashes(label)
    return verify_envelope(envelope, store, info_hash_v1=v1, info_hash_v2=v2, now=now)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_store_persists_keys_history_and_revocations_across_reopen(
    tmp_path: Path, key: SigningKey
) -> None:
    path = tmp_path / "trust.db"
    successor = SigningKey.generate("ecdsa-p256-sha256")
    with TrustStore(path) as store:
        store.add_key(key.public, publisher=PUBLISHER, not_after=T0 + 10**6, now=T0)
        store.apply_rotation(certify_rotation(key, successor.public, created=T0), now=T0)
        check(store, release(key, "a", version="1.1", created=T0 + 10))
    with TrustStore(path) as store:
        stored = store.get(key.key_id)
        assert stored is not None
        assert (stored.publisher, stored.not_after, stored.added) == (PUBLISHER, T0 + 10**6, T0)
        learnt = store.get(successor.key_id)
        assert learnt is not None and learnt.predecessor == key.key_id
        latest = store.latest_release(PUBLISHER, "example-os")
        assert latest is not None and (latest.version, latest.created) == ("1.1", T0 + 10)
        # Rollback protection still holds after the restart, across the rotated key too.
        refused(Reason.ROLLED_BACK, lambda: check(store, release(successor, "b", created=T0)))
        store.apply_revocation(certify_revocation(key, reason="retired", created=T0), now=T0)
    with TrustStore(path) as store:
        refused(Reason.REVOKED, lambda: check(store, release(key, "c", created=T0 + 20)))
        stored_keys = store.keys()
        assert [k.key_id for k in stored_keys] == [key.key_id, successor.key_id]


def test_untrusted_key(key: SigningKey) -> None:
    with TrustStore() as store:
        refused(Reason.UNTRUSTED, lambda: check(store, release(key)))


def test_expiry_is_judged_at_verification_time(key: SigningKey) -> None:
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER, not_after=T0 + 100)
        envelope = release(key, created=T0)
        assert check(store, envelope, now=T0 + 100).created == T0
        error = refused(Reason.EXPIRED, lambda: check(store, envelope, now=T0 + 101))
        assert "expired at" in str(error)
        # A statement claiming to be made after the expiry is refused even before it.
        refused(Reason.EXPIRED, lambda: check(store, release(key, created=T0 + 200), now=T0))


def test_statement_from_the_future_is_invalid(key: SigningKey) -> None:
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        check(store, release(key, created=T0 + MAX_CLOCK_SKEW), now=T0)
        refused(
            Reason.INVALID,
            lambda: check(store, release(key, "b", created=T0 + MAX_CLOCK_SKEW + 1), now=T0),
        )


def test_rotation_chain_hands_trust_down(key: SigningKey) -> None:
    second = SigningKey.generate("rsa-pss-sha256", rsa_bits=2048)
    third = SigningKey.generate("ecdsa-p256-sha256")
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        refused(Reason.UNTRUSTED, lambda: check(store, release(third)))
        refused(
            Reason.UNTRUSTED,
            lambda: store.apply_rotation(certify_rotation(second, third.public, created=T0)),
        )
        learnt = store.apply_rotation(
            certify_rotation(key, second.public, not_after=T0 + 999, created=T0), now=T0
        )
        assert (learnt.publisher, learnt.predecessor, learnt.not_after) == (
            PUBLISHER, key.key_id, T0 + 999,
        )
        store.apply_rotation(certify_rotation(second, third.public, created=T0), now=T0)
        verified = check(store, release(third, created=T0 + 5))
        assert (verified.publisher, verified.key_id) == (PUBLISHER, third.key_id)
        # Applying a rotation again changes nothing.
        again = store.apply_rotation(certify_rotation(key, second.public, created=T0), now=T0)
        assert again.not_after == T0 + 999


def test_rotation_cannot_take_a_key_from_another_publisher(key: SigningKey) -> None:
    other = SigningKey.generate()
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        store.add_key(other.public, publisher="Someone Else")
        error = refused(
            Reason.INVALID, lambda: store.apply_rotation(certify_rotation(key, other.public))
        )
        assert "Someone Else" in str(error)
        refused(Reason.INVALID, lambda: store.apply_rotation(certify_rotation(key, key.public)))


def test_rotation_signed_by_an_expired_or_revoked_key_is_refused(key: SigningKey) -> None:
    new = SigningKey.generate()
    certificate = certify_rotation(key, new.public, created=T0)
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER, not_after=T0 + 10)
        refused(Reason.EXPIRED, lambda: store.apply_rotation(certificate, now=T0 + 11))
        store.revoke(key.key_id, now=T0)
        refused(Reason.REVOKED, lambda: store.apply_rotation(certificate, now=T0))
        assert store.get(new.key_id) is None


def test_revocation_by_the_key_itself_is_permanent(key: SigningKey) -> None:
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        check(store, release(key))
        revoked = store.apply_revocation(certify_revocation(key, reason="leaked"), now=T0 + 1)
        assert (revoked.revoked_at, revoked.revocation_reason) == (T0 + 1, "leaked")
        error = refused(Reason.REVOKED, lambda: check(store, release(key, created=T0 + 2)))
        assert "leaked" in str(error)
        with pytest.raises(ConfigError, match="revoked"):
            store.add_key(key.public, publisher=PUBLISHER)
        # A revoked key may still revoke itself again (nothing changes).
        assert store.apply_revocation(certify_revocation(key)).revoked_at == T0 + 1


def test_revocation_by_predecessor_but_not_by_successor_or_stranger(key: SigningKey) -> None:
    successor = SigningKey.generate()
    stranger = SigningKey.generate()
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        store.add_key(stranger.public, publisher=PUBLISHER)
        store.apply_rotation(certify_rotation(key, successor.public))
        for signer, target in ((successor, key), (stranger, key), (stranger, successor)):
            refused(
                Reason.INVALID,
                lambda s=signer, t=target: store.apply_revocation(certify_revocation(s, t.key_id)),
            )
        store.apply_revocation(certify_revocation(key, successor.key_id))
        refused(Reason.REVOKED, lambda: check(store, release(successor)))
        # Revocation does not cascade upwards: the predecessor still signs.
        assert check(store, release(key)).key_id == key.key_id


def test_revocation_of_a_key_the_store_does_not_know_is_refused(key: SigningKey) -> None:
    with TrustStore() as store:
        refused(Reason.UNTRUSTED, lambda: store.apply_revocation(certify_revocation(key)))


def test_tampered_certificate_is_invalid(key: SigningKey) -> None:
    new = SigningKey.generate()
    certificate = bytearray(certify_rotation(key, new.public, created=T0))
    certificate[certificate.index(b"7:created") + 12] ^= 0x01  # a digit of the created time
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        refused(Reason.INVALID, lambda: store.apply_rotation(bytes(certificate), now=T0 + 10**6))


def test_rollback_ordering_by_created(key: SigningKey) -> None:
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        check(store, release(key, "a", version="1.0", created=T0))
        check(store, release(key, "b", version="1.1", created=T0 + 10))
        # The newest again is fine; an older one, or a different one as new, is not.
        check(store, release(key, "b", version="1.1", created=T0 + 10))
        error = refused(
            Reason.ROLLED_BACK, lambda: check(store, release(key, "a", version="1.0"))
        )
        assert "1.0" in str(error) and "1.1" in str(error)
        refused(
            Reason.ROLLED_BACK,
            lambda: check(store, release(key, "c", version="1.1-other", created=T0 + 10)),
        )
        # Versions are not compared: "0.9" made later is the newest.
        assert check(store, release(key, "d", version="0.9", created=T0 + 20)).version == "0.9"
        # Another release name has its own history.
        check(store, release(key, "e", name="other-os", created=T0))


def test_rollback_history_is_per_publisher(key: SigningKey) -> None:
    other = SigningKey.generate()
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER)
        store.add_key(other.public, publisher="Fork Project")
        check(store, release(key, "a", created=T0 + 10))
        assert check(store, release(other, "b", created=T0)).publisher == "Fork Project"


def test_pinning_rules(key: SigningKey) -> None:
    with TrustStore() as store:
        store.add_key(key.public, publisher=PUBLISHER, not_after=T0)
        assert store.add_key(key.public, publisher=PUBLISHER, not_after=T0 + 5).not_after == T0 + 5
        with pytest.raises(ConfigError, match="already trusted"):
            store.add_key(key.public, publisher="Someone Else")
        with pytest.raises(ConfigError):
            store.add_key(SigningKey.generate().public, publisher="bad\nname")
        with pytest.raises(SignatureError):
            store.revoke(SigningKey.generate().key_id)


def test_a_file_that_is_not_a_trust_store_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello, this is not SQLite" * 100)
    with pytest.raises(ConfigError, match="not"):
        TrustStore(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE peers (x)")
    db.close()
    with pytest.raises(ConfigError, match="not an opendistro trust store"):
        TrustStore(other)
