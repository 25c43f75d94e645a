"""Signing real torrents, carrying the signature in and beside them, and verifying it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.errors import ConfigError, MetainfoError, SignatureError
from opendistro.metainfo import MAX_SIGNATURES, Metainfo
from opendistro.signing import (
    SCHEMES,
    Envelope,
    Reason,
    ReleaseStatement,
    Scheme,
    SigningKey,
    TrustStore,
    add_signature,
    detached_path,
    embed_signature,
    read_detached,
    reason_of,
    sign_release,
    verify_release,
    write_detached,
)

CREATED = 1_767_225_600
NOW = CREATED + 3600
PUBLISHER = "Example Project"


@pytest.fixture(scope="module")
def keys() -> dict[Scheme, SigningKey]:
    return {scheme: SigningKey.generate(scheme, rsa_bits=2048) for scheme in SCHEMES}


@pytest.fixture
def torrent(make_release: Callable[..., Path]) -> Metainfo:
    return create_torrent(make_release("example-os", (70_000, 50_000)), creation_date=CREATED)


@pytest.fixture
def trust(keys: dict[Scheme, SigningKey]) -> Iterator[TrustStore]:
    with TrustStore() as store:
        for key in keys.values():
            store.add_key(key.public, publisher=PUBLISHER)
        yield store


def refused(reason: Reason, call: Callable[[], Any]) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        call()
    assert reason_of(caught.value) == reason, str(caught.value)
    return caught.value


@pytest.mark.parametrize("scheme", SCHEMES)
def test_embedded_signature_verifies_and_keeps_the_info_hash(
    scheme: Scheme, keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    key = keys[scheme]
    envelope = sign_release(torrent, key, version="1.0", created=CREATED)
    signed_bytes = embed_signature(torrent.to_bytes(), envelope)
    signed = Metainfo.from_bytes(signed_bytes)
    assert signed.info_bytes == torrent.info_bytes
    assert signed.info_hash_v1 == torrent.info_hash_v1
    assert signed.info_hash_v2 == torrent.info_hash_v2
    assert signed.signatures == (envelope,)
    assert signed.to_bytes() == signed_bytes

    verified = verify_release(signed, trust, now=NOW)
    assert (verified.publisher, verified.key_id, verified.scheme) == (PUBLISHER, key.key_id, scheme)
    assert (verified.name, verified.version, verified.created) == ("example-os", "1.0", CREATED)
    assert verified.info_hash_v1 == torrent.info_hash_v1
    assert verified.info_hash_v2 == torrent.info_hash_v2


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_every_info_hash_the_torrent_has_is_signed(
    version: Literal["v1", "v2", "hybrid"],
    make_release: Callable[..., Path],
    keys: dict[Scheme, SigningKey],
    trust: TrustStore,
) -> None:
    metainfo = create_torrent(make_release(), version=version)
    envelope = sign_release(metainfo, keys["ed25519"], version="2", created=CREATED)
    statement = ReleaseStatement.decode(Envelope.decode(envelope).statement)
    assert statement.info_hash_v1 == metainfo.info_hash_v1
    assert statement.info_hash_v2 == metainfo.info_hash_v2
    assert verify_release(metainfo, trust, envelope, now=NOW).version == "2"


def test_detached_signature_file(
    tmp_path: Path, keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    torrent_path = tmp_path / "example-os.torrent"
    torrent_path.write_bytes(torrent.to_bytes())
    sig_path = detached_path(torrent_path)
    assert sig_path.name == "example-os.torrent.sig"
    write_detached(sig_path, sign_release(torrent, keys["ed25519"], version="1.0"))
    unsigned = Metainfo.from_file(torrent_path)
    assert unsigned.signatures == ()
    refused(Reason.MISSING, lambda: verify_release(unsigned, trust, now=NOW))
    verified = verify_release(unsigned, trust, read_detached(sig_path))
    assert verified.key_id == keys["ed25519"].key_id


def test_embedding_keeps_top_level_keys_metainfo_does_not_model(
    keys: dict[Scheme, SigningKey], torrent: Metainfo
) -> None:
    top = bencode.decode(torrent.to_bytes())
    top[b"nodes"] = [[b"127.0.0.1", 6881]]
    original = bencode.encode(top)
    envelope = sign_release(torrent, keys["ed25519"], version="1")
    signed = bencode.decode(embed_signature(original, envelope))
    assert signed[b"nodes"] == [[b"127.0.0.1", 6881]]
    assert signed[b"info"] == top[b"info"]
    assert len(signed[b"signatures"]) == 1


def test_signing_again_with_the_same_key_replaces_its_signature(
    keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    data = torrent.to_bytes()
    data = embed_signature(data, sign_release(torrent, keys["ed25519"], version="1.0"))
    data = embed_signature(data, sign_release(torrent, keys["ecdsa-p256-sha256"], version="1.0"))
    fixed = sign_release(torrent, keys["ed25519"], version="1.0-fixed", created=CREATED)
    signed = Metainfo.from_bytes(embed_signature(data, fixed))
    assert len(signed.signatures) == 2
    assert signed.signatures[-1] == fixed
    assert add_signature(signed, fixed).signatures == signed.signatures
    assert verify_release(signed, trust).scheme == "ecdsa-p256-sha256"


def _flip_inside(data: bytes, needle: bytes, offset: int) -> bytes:
    at = data.index(needle) + offset
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_statement_byte_flipped_in_the_torrent_is_invalid(
    keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    envelope = sign_release(torrent, keys["ed25519"], version="1.0", created=CREATED)
    data = embed_signature(torrent.to_bytes(), envelope)
    tampered = _flip_inside(data, b"7:version3:1.0", len(b"7:version3:1.0") - 1)
    metainfo = Metainfo.from_bytes(tampered)
    assert metainfo.info_hash_v1 == torrent.info_hash_v1
    error = refused(Reason.INVALID, lambda: verify_release(metainfo, trust, now=NOW))
    assert "bad ed25519 signature" in str(error)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signature_byte_flipped_is_invalid(
    scheme: Scheme, keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    envelope = Envelope.decode(sign_release(torrent, keys[scheme], version="1.0"))
    broken = bytearray(envelope.signature)
    broken[len(broken) // 2] ^= 0x10
    tampered = Envelope(envelope.statement, envelope.scheme, bytes(broken)).encode()
    refused(Reason.INVALID, lambda: verify_release(torrent, trust, tampered))


def test_signature_of_a_different_torrent_is_an_info_hash_mismatch(
    make_release: Callable[..., Path],
    keys: dict[Scheme, SigningKey],
    torrent: Metainfo,
    trust: TrustStore,
) -> None:
    other = create_torrent(make_release("other", (40_000,), seed=9))
    envelope = sign_release(other, keys["ed25519"], version="1.0", name="example-os")
    error = refused(Reason.MISMATCH, lambda: verify_release(torrent, trust, envelope))
    assert torrent.info_hash_v2 is not None
    assert torrent.info_hash_v2.hex() in str(error)


def test_unknown_key_is_untrusted(torrent: Metainfo, trust: TrustStore) -> None:
    stranger = SigningKey.generate()
    envelope = sign_release(torrent, stranger, version="1.0")
    refused(Reason.UNTRUSTED, lambda: verify_release(torrent, trust, envelope))


def test_a_good_signature_wins_over_a_stranger_s(
    keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    stranger = sign_release(torrent, SigningKey.generate(), version="6.6.6")
    good = sign_release(torrent, keys["rsa-pss-sha256"], version="1.0")
    signed = add_signature(add_signature(torrent, stranger), good)
    assert verify_release(signed, trust).version == "1.0"


def test_the_refusal_about_a_trusted_key_is_the_one_reported(
    keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    stranger = sign_release(torrent, SigningKey.generate(), version="1.0")
    revoked = sign_release(torrent, keys["ed25519"], version="1.0")
    trust.revoke(keys["ed25519"].key_id, reason="leaked")
    signed = add_signature(torrent, revoked)
    error = refused(Reason.REVOKED, lambda: verify_release(signed, trust, stranger))
    assert "leaked" in str(error) and "1 other signature" in str(error)


def test_a_malformed_embedded_envelope_is_refused_not_ignored(
    torrent: Metainfo, trust: TrustStore
) -> None:
    top = bencode.decode(torrent.to_bytes())
    top[b"signatures"] = [{b"scheme": b"ed25519", b"statement": b"junk", b"signature": b"x"}]
    metainfo = Metainfo.from_bytes(bencode.encode(top))
    refused(Reason.MALFORMED, lambda: verify_release(metainfo, trust))


@pytest.mark.parametrize(
    "value",
    [
        b"not a list",
        [b"not a dict"],
        [{b"a": 1}, 5],
        [{b"a": i} for i in range(MAX_SIGNATURES + 1)],
    ],
)
def test_metainfo_refuses_a_malformed_signatures_list(value: Any, torrent: Metainfo) -> None:
    top = bencode.decode(torrent.to_bytes())
    top[b"signatures"] = value
    with pytest.raises(MetainfoError, match="signatures"):
        Metainfo.from_bytes(bencode.encode(top))


def test_metainfo_keeps_each_envelope_byte_for_byte(torrent: Metainfo) -> None:
    """Even a non-canonical entry is kept as found, so the verifier judges the real bytes."""
    entry = b"d9:signature1:x6:scheme7:ed255199:statement1:ye"
    data = torrent.to_bytes()
    data = data[:-1] + b"10:signaturesl" + entry + b"ee"
    metainfo = Metainfo.from_bytes(data)
    assert metainfo.signatures == (entry,)
    assert Metainfo.from_bytes(metainfo.to_bytes()).signatures == (entry,)


def test_record_false_leaves_the_history_alone(
    keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    envelope = sign_release(torrent, keys["ed25519"], version="1.0", created=CREATED)
    verify_release(torrent, trust, envelope, now=NOW, record=False)
    assert trust.latest_release(PUBLISHER, "example-os") is None
    verify_release(torrent, trust, envelope, now=NOW)
    latest = trust.latest_release(PUBLISHER, "example-os")
    assert latest is not None and latest.created == CREATED


def test_rolled_back_release_is_refused(
    make_release: Callable[..., Path],
    keys: dict[Scheme, SigningKey],
    torrent: Metainfo,
    trust: TrustStore,
) -> None:
    newer = create_torrent(make_release("example-os", (70_000, 50_000), seed=5))
    verify_release(
        newer, trust, sign_release(newer, keys["ed25519"], version="1.1", created=CREATED + 10),
        now=NOW,
    )
    old = sign_release(torrent, keys["ecdsa-p256-sha256"], version="1.0", created=CREATED)
    error = refused(Reason.ROLLED_BACK, lambda: verify_release(torrent, trust, old, now=NOW))
    assert "1.1" in str(error)


@pytest.mark.parametrize(
    ("version", "name"), [("", None), ("1.0\n", None), ("1.0", "bad\x07name"), ("x" * 256, None)]
)
def test_signing_refuses_fields_a_verifier_would_refuse(
    version: str, name: str | None, keys: dict[Scheme, SigningKey], torrent: Metainfo
) -> None:
    with pytest.raises(ConfigError, match="cannot sign"):
        sign_release(torrent, keys["ed25519"], version=version, name=name)


def test_add_signature_refuses_what_is_not_a_release_envelope(torrent: Metainfo) -> None:
    with pytest.raises(ConfigError):
        add_signature(torrent, b"d1:ae")


def test_a_signature_can_vouch_for_the_delta_index_too(
    keys: dict[Scheme, SigningKey], torrent: Metainfo, trust: TrustStore
) -> None:
    index = b"d7:versioni1ee"  # the statement only carries its SHA-256
    envelope = sign_release(torrent, keys["ed25519"], version="1.1", created=CREATED,
                            delta_index=index)
    verified = verify_release(torrent, trust, envelope, now=NOW)
    assert verified.delta_index_sha256 == hashlib.sha256(index).digest()
    assert verified.to_json()["delta_index_sha256"] == hashlib.sha256(index).hexdigest()
    plain = verify_release(
        torrent, trust, sign_release(torrent, keys["ed25519"], version="1.1", created=CREATED),
        now=NOW,
    )
    assert plain.delta_index_sha256 is None


def test_a_statement_with_a_malformed_delta_index_hash_is_refused() -> None:
    statement = bencode.encode({
        b"created": CREATED, b"delta-index-sha256": b"short", b"info-hash-v1": bytes(20),
        b"key-id": bytes(8), b"name": b"x", b"version": b"1",
    })
    refused(Reason.MALFORMED, lambda: ReleaseStatement.decode(statement))
