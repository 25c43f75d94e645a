"""The signed-release test vectors: every vector gives the outcome it promises.

``extensions/signed_release_vectors.json`` is for other implementations too,
so good signatures are also checked with bare ``cryptography`` calls over
``prefix + statement`` exactly as ``spec/signed-releases.md`` defines it,
independently of our own verifier. Run this file as a script to regenerate
the vectors (ECDSA and RSA-PSS signatures are randomised, so they change).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from opendistro import bencode
from opendistro.errors import SignatureError
from opendistro.signing import (
    Envelope,
    ReleaseStatement,
    RevocationStatement,
    RotationStatement,
    SigningKey,
    TrustStore,
    VerifyingKey,
    certify_revocation,
    certify_rotation,
    key_id_of,
    reason_of,
    verify_envelope,
)

VECTORS = Path(__file__).resolve().parents[1] / "extensions" / "signed_release_vectors.json"
PREFIXES = {
    "release": ReleaseStatement.PREFIX,
    "rotation": RotationStatement.PREFIX,
    "revocation": RevocationStatement.PREFIX,
}


def load_vectors() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(VECTORS.read_text())
    return result


def hashes_of(document: dict[str, Any], torrent: str) -> tuple[bytes | None, bytes | None]:
    entry = document["torrents"][torrent]
    v1, v2 = entry["info_hash_v1"], entry["info_hash_v2"]
    return (bytes.fromhex(v1) if v1 else None, bytes.fromhex(v2) if v2 else None)


def build_store(document: dict[str, Any], setup: dict[str, Any]) -> TrustStore:
    """The trust store a vector starts from: pinned keys, then certificates, then history."""
    now = document["now"]
    store = TrustStore()
    for pin in setup.get("pinned", []):
        key = VerifyingKey.from_spki(bytes.fromhex(document["keys"][pin["key"]]["spki_hex"]))
        store.add_key(key, publisher=pin["publisher"], not_after=pin.get("not_after"), now=now)
    for certificate in setup.get("certificates", []):
        data = bytes.fromhex(certificate["hex"])
        if certificate["kind"] == "rotation":
            store.apply_rotation(data, now=now)
        else:
            store.apply_revocation(data, now=now)
    for accepted in setup.get("accepted", []):
        v1, v2 = hashes_of(document, accepted["torrent"])
        verify_envelope(
            bytes.fromhex(accepted["hex"]), store, info_hash_v1=v1, info_hash_v2=v2, now=now
        )
    return store


def run_vector(document: dict[str, Any], vector: dict[str, Any]) -> dict[str, Any]:
    """Do what the vector describes and return the outcome in the vectors' JSON shape."""
    now = document["now"]
    data = bytes.fromhex(vector["envelope_hex"])
    with build_store(document, vector.get("trust", {})) as store:
        if vector["kind"] == "release":
            v1, v2 = hashes_of(document, vector["torrent"])
            verified = verify_envelope(data, store, info_hash_v1=v1, info_hash_v2=v2, now=now)
            return verified.to_json()
        if vector["kind"] == "rotation":
            key = store.apply_rotation(data, now=now)
            return {
                "key_id": key.key_id.hex(),
                "publisher": key.publisher,
                "predecessor": key.predecessor.hex() if key.predecessor else None,
                "not_after": key.not_after,
            }
        key = store.apply_revocation(data, now=now)
        return {"revoked_key": key.key_id.hex(), "revoked": key.revoked_at is not None}


DOCUMENT = load_vectors() if VECTORS.exists() else {"vectors": []}


def test_vector_file_covers_every_case() -> None:
    vectors = DOCUMENT["vectors"]
    errors = {vector["error"] for vector in vectors if vector.get("error")}
    assert errors == {
        "malformed", "invalid", "untrusted key", "expired", "revoked", "rolled back",
        "info-hash mismatch",
    }
    good_schemes = {
        DOCUMENT["keys"][vector["signer"]]["scheme"]
        for vector in vectors
        if vector.get("expected") and vector["kind"] == "release"
    }
    assert good_schemes == {"ed25519", "ecdsa-p256-sha256", "rsa-pss-sha256"}
    assert len({vector["name"] for vector in vectors}) == len(vectors)


@pytest.mark.parametrize("vector", DOCUMENT["vectors"], ids=lambda v: v["name"])
def test_vector(vector: dict[str, Any]) -> None:
    if vector.get("error"):
        with pytest.raises(SignatureError) as caught:
            run_vector(DOCUMENT, vector)
        assert str(caught.value).startswith(vector["error"] + ":"), str(caught.value)
        assert reason_of(caught.value) == vector["error"]
    else:
        assert run_vector(DOCUMENT, vector) == vector["expected"]


def verify_with_bare_cryptography(
    spki: bytes, scheme: str, signature: bytes, message: bytes
) -> None:
    """The spec's definition of each scheme, with no opendistro code involved."""
    key = serialization.load_der_public_key(spki)
    if scheme == "ed25519":
        assert isinstance(key, ed25519.Ed25519PublicKey)
        key.verify(signature, message)
    elif scheme == "ecdsa-p256-sha256":
        assert isinstance(key, ec.EllipticCurvePublicKey) and len(signature) == 64
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert len(signature) == key.key_size // 8
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        key.verify(signature, message, pss, hashes.SHA256())


GOOD = [vector for vector in DOCUMENT["vectors"] if vector.get("expected")]


@pytest.mark.parametrize("vector", GOOD, ids=lambda v: v["name"])
def test_good_signature_checks_out_without_opendistro(vector: dict[str, Any]) -> None:
    envelope = bencode.decode(bytes.fromhex(vector["envelope_hex"]))
    statement = bencode.decode(envelope[b"statement"])
    signer = DOCUMENT["keys"][vector["signer"]]
    spki = bytes.fromhex(signer["spki_hex"])
    assert hashlib.sha256(spki).digest()[:16].hex() == signer["key_id_hex"]
    assert statement[b"key-id"].hex() == signer["key_id_hex"]
    assert envelope[b"scheme"].decode() == signer["scheme"]
    prefix = DOCUMENT["prefixes"][vector["kind"]].encode()
    verify_with_bare_cryptography(
        spki, signer["scheme"], envelope[b"signature"], prefix + envelope[b"statement"]
    )


def test_ed25519_signatures_are_reproducible_from_the_private_key() -> None:
    reproduced = 0
    for vector in GOOD:
        signer = DOCUMENT["keys"][vector["signer"]]
        if signer["scheme"] != "ed25519":
            continue
        key = SigningKey.from_pem(signer["private_pkcs8_pem"].encode())
        envelope = Envelope.decode(bytes.fromhex(vector["envelope_hex"]))
        prefix = DOCUMENT["prefixes"][vector["kind"]].encode()
        assert key.sign(prefix + envelope.statement) == envelope.signature
        reproduced += 1
    assert reproduced >= 3


def test_prefixes_and_key_ids_match_the_implementation() -> None:
    assert {kind: prefix.encode() for kind, prefix in DOCUMENT["prefixes"].items()} == PREFIXES
    for entry in DOCUMENT["keys"].values():
        key = SigningKey.from_pem(entry["private_pkcs8_pem"].encode())
        assert key.public.spki.hex() == entry["spki_hex"]
        assert key_id_of(key.public.spki).hex() == entry["key_id_hex"]
        assert key.scheme == entry["scheme"]


# -- regenerating -------------------------------------------------------------------------

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW = T0 + 86_400


def _generate() -> dict[str, Any]:  # pragma: no cover - run by hand
    keys = {
        "ed25519": SigningKey.generate("ed25519"),
        "ecdsa": SigningKey.generate("ecdsa-p256-sha256"),
        "rsa": SigningKey.generate("rsa-pss-sha256", rsa_bits=2048),
        "ed25519-stranger": SigningKey.generate("ed25519"),
        "ed25519-successor": SigningKey.generate("ed25519"),
    }
    torrents = {
        "hybrid": (hashlib.sha1(b"hybrid").digest(), hashlib.sha256(b"hybrid").digest()),
        "v1": (hashlib.sha1(b"v1 only").digest(), None),
        "v2": (None, hashlib.sha256(b"v2 only").digest()),
        "other": (hashlib.sha1(b"other").digest(), hashlib.sha256(b"other").digest()),
    }
    publisher = "Example Project"
    pin_a = {"pinned": [{"key": "ed25519", "publisher": publisher}]}
    pin_all = {
        "pinned": [
            {"key": name, "publisher": publisher} for name in ("ed25519", "ecdsa", "rsa")
        ]
    }

    def statement_bytes(
        signer: str, torrent: str = "hybrid", *, version: str = "1.0", created: int = T0,
        name: str = "example-os",
    ) -> bytes:
        v1, v2 = torrents[torrent]
        return ReleaseStatement(name, version, created, keys[signer].key_id, v1, v2).encode()

    def envelope(signer: str, statement: bytes, kind: str = "release", scheme: str = "") -> bytes:
        key = keys[signer]
        signature = key.sign(PREFIXES[kind] + statement)
        return bencode.encode(
            {b"scheme": scheme or key.scheme, b"signature": signature, b"statement": statement}
        )

    def release(signer: str, torrent: str = "hybrid", **fields: Any) -> bytes:
        return envelope(signer, statement_bytes(signer, torrent, **fields))

    def expected(signer: str, torrent: str = "hybrid", **fields: Any) -> dict[str, Any]:
        v1, v2 = torrents[torrent]
        return {
            "publisher": publisher,
            "key_id": keys[signer].key_id.hex(),
            "scheme": keys[signer].scheme,
            "name": fields.get("name", "example-os"),
            "version": fields.get("version", "1.0"),
            "created": fields.get("created", T0),
            "info_hash_v1": v1.hex() if v1 else None,
            "info_hash_v2": v2.hex() if v2 else None,
        }

    def flip(data: bytes, index: int) -> bytes:
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]

    def raw_statement(fields: dict[bytes, Any]) -> bytes:
        return bencode.encode(fields)

    base_fields = {
        b"created": T0,
        b"info-hash-v1": torrents["hybrid"][0],
        b"info-hash-v2": torrents["hybrid"][1],
        b"key-id": keys["ed25519"].key_id,
        b"name": b"example-os",
        b"version": b"1.0",
    }
    rotation = certify_rotation(
        keys["ed25519"], keys["ed25519-successor"].public, not_after=T0 + 10**8, created=T0
    )
    self_revocation = certify_revocation(keys["ed25519"], reason="retired", created=T0)
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_spki = weak_rsa.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    vectors: list[dict[str, Any]] = []

    def good(name: str, signer: str, data: bytes, result: dict[str, Any], **extra: Any) -> None:
        vectors.append(
            {"name": name, "kind": "release", "torrent": "hybrid", "signer": signer,
             "trust": pin_all, **extra, "envelope_hex": data.hex(), "expected": result}
        )

    def bad(name: str, data: bytes, error: str, **extra: Any) -> None:
        vectors.append(
            {"name": name, "kind": "release", "torrent": "hybrid", "trust": pin_all, **extra,
             "envelope_hex": data.hex(), "error": error}
        )

    for signer in ("ed25519", "ecdsa", "rsa"):
        good(f"{keys[signer].scheme}: hybrid torrent", signer, release(signer), expected(signer))
    good("ed25519: v1-only torrent", "ed25519", release("ed25519", "v1"),
         expected("ed25519", "v1"), torrent="v1")
    good("ed25519: v2-only torrent", "ed25519", release("ed25519", "v2"),
         expected("ed25519", "v2"), torrent="v2")
    good("ed25519: UTF-8 name and version", "ed25519",
         release("ed25519", name="Ünïcødé OS", version="2.0 βeta"),
         expected("ed25519", name="Ünïcødé OS", version="2.0 βeta"))
    good("newer release after an accepted older one", "ed25519",
         release("ed25519", version="1.1", created=T0 + 100),
         expected("ed25519", version="1.1", created=T0 + 100),
         trust={**pin_all,
                "accepted": [{"torrent": "other", "hex": release("ed25519", "other").hex()}]})
    good("the accepted release verified again", "ed25519", release("ed25519"), expected("ed25519"),
         trust={**pin_all, "accepted": [{"torrent": "hybrid", "hex": release("ed25519").hex()}]})
    good("key learnt through a rotation signs for the same publisher", "ed25519-successor",
         release("ed25519-successor"), expected("ed25519-successor"),
         trust={**pin_a, "certificates": [{"kind": "rotation", "hex": rotation.hex()}]})

    statement = statement_bytes("ed25519")
    signed = envelope("ed25519", statement)
    version_at = statement.index(b"7:version3:") + len(b"7:version3:")
    bad("statement byte flipped (version 1.0 -> 1.1)",
        signed.replace(statement, flip(statement, version_at + 2)), "invalid")
    for signer in ("ed25519", "ecdsa", "rsa"):
        data = release(signer)
        sig_at = data.index(b"9:signature") + len(b"9:signature")
        sig_at = data.index(b":", sig_at) + 1
        bad(f"{keys[signer].scheme}: signature byte flipped", flip(data, sig_at + 5), "invalid")
    other_key = statement_bytes("ed25519-successor")
    bad("statement names a pinned key but another pinned key signed it",
        bencode.encode({b"scheme": b"ed25519", b"statement": other_key,
                        b"signature": keys["ed25519"].sign(PREFIXES["release"] + other_key)}),
        "invalid",
        trust={"pinned": [{"key": name, "publisher": publisher}
                          for name in ("ed25519", "ed25519-successor")]})
    bad("envelope scheme is not the key's scheme",
        envelope("ed25519", statement, scheme="ecdsa-p256-sha256"), "invalid")
    bad("ed25519 signature one byte short",
        bencode.encode({b"scheme": b"ed25519", b"signature": keys["ed25519"].sign(
            PREFIXES["release"] + statement)[:63], b"statement": statement}), "invalid")
    bad("release statement signed under the rotation prefix",
        envelope("ed25519", statement, kind="rotation"), "invalid")
    bad("statement dated more than a day after now",
        release("ed25519", created=NOW + 86_400 + 1), "invalid")
    bad("signed by a key that is not pinned", release("ed25519-stranger"), "untrusted key")
    bad("signing key expired before now", signed, "expired",
        trust={"pinned": [{"key": "ed25519", "publisher": publisher, "not_after": NOW - 1}]})
    bad("statement created after the key's expiry", release("ed25519", created=NOW + 3600),
        "expired",
        trust={"pinned": [{"key": "ed25519", "publisher": publisher, "not_after": NOW + 60}]})
    bad("signing key revoked by itself", signed, "revoked",
        trust={**pin_a, "certificates": [{"kind": "revocation", "hex": self_revocation.hex()}]})
    bad("older release after a newer one was accepted", signed, "rolled back",
        trust={**pin_all, "accepted": [{"torrent": "other", "hex": release(
            "ed25519", "other", version="1.1", created=T0 + 100).hex()}]})
    bad("older release by a rotated key's predecessor", signed, "rolled back",
        trust={**pin_a, "certificates": [{"kind": "rotation", "hex": rotation.hex()}],
               "accepted": [{"torrent": "other", "hex": release(
                   "ed25519-successor", "other", version="1.1", created=T0 + 100).hex()}]})
    bad("different torrent with the same created time as an accepted one", signed,
        "rolled back",
        trust={**pin_all, "accepted": [{"torrent": "other", "hex": release(
            "ed25519", "other", version="1.0-rebuild").hex()}]})
    bad("signature over a different torrent", release("ed25519", "other"), "info-hash mismatch")
    bad("hybrid torrent but only its v1 hash signed", release("ed25519", "v1"),
        "info-hash mismatch")

    def signed_raw(fields: dict[bytes, Any]) -> bytes:
        return envelope("ed25519", raw_statement(fields))

    bad("not bencoding", b"not a signature", "malformed")
    bad("envelope is a list", bencode.encode([statement]), "malformed")
    bad("trailing bytes after the envelope", signed + b"0:", "malformed")
    fields = bencode.decode(signed)
    bad("envelope keys out of order", b"d" + b"".join(
        bencode.encode(key) + bencode.encode(fields[key])
        for key in (b"signature", b"scheme", b"statement")) + b"e", "malformed")
    bad("unknown scheme", envelope("ed25519", statement, scheme="ed448"), "malformed")
    bad("unknown envelope key", bencode.encode(
        {**bencode.decode(signed), b"comment": b"hi"}), "malformed")
    bad("unknown statement key (signed)", signed_raw({**base_fields, b"url": b"http://x"}),
        "malformed")
    bad("statement keys out of order (signed)",
        envelope("ed25519", b"d4:name10:example-os" + raw_statement(
            {k: v for k, v in base_fields.items() if k != b"name"})[1:]), "malformed")
    bad("info-hash-v1 of 19 bytes (signed)",
        signed_raw({**base_fields, b"info-hash-v1": torrents["hybrid"][0][:19]}), "malformed")
    bad("no info-hash at all (signed)", signed_raw(
        {k: v for k, v in base_fields.items() if not k.startswith(b"info-hash")}), "malformed")
    bad("key-id of 15 bytes (signed)",
        signed_raw({**base_fields, b"key-id": keys["ed25519"].key_id[:15]}), "malformed")
    bad("negative created (signed)", signed_raw({**base_fields, b"created": -1}), "malformed")
    bad("created is a string (signed)", signed_raw({**base_fields, b"created": b"2026"}),
        "malformed")
    bad("name with a control character (signed)",
        signed_raw({**base_fields, b"name": b"example\x1b[2Jos"}), "malformed")
    bad("name is not UTF-8 (signed)", signed_raw({**base_fields, b"name": b"\xff\xfe"}),
        "malformed")
    bad("empty version (signed)", signed_raw({**base_fields, b"version": b""}), "malformed")
    bad("version missing (signed)",
        signed_raw({k: v for k, v in base_fields.items() if k != b"version"}), "malformed")

    def certificate(
        name: str, kind: str, data: bytes, trust: dict[str, Any], **outcome: Any
    ) -> None:
        vectors.append({"name": name, "kind": kind, "trust": trust, "envelope_hex": data.hex(),
                        **outcome})

    successor = keys["ed25519-successor"]
    certificate("rotation to a new key", "rotation", rotation, pin_a, signer="ed25519",
                expected={"key_id": successor.key_id.hex(), "publisher": publisher,
                          "predecessor": keys["ed25519"].key_id.hex(), "not_after": T0 + 10**8})
    certificate("revocation by the key itself", "revocation", self_revocation, pin_a,
                signer="ed25519",
                expected={"revoked_key": keys["ed25519"].key_id.hex(), "revoked": True})
    certificate("revocation of a successor by its predecessor", "revocation",
                certify_revocation(keys["ed25519"], successor.key_id, created=T0),
                {**pin_a, "certificates": [{"kind": "rotation", "hex": rotation.hex()}]},
                signer="ed25519",
                expected={"revoked_key": successor.key_id.hex(), "revoked": True})
    certificate("rotation signed by a key that is not pinned", "rotation",
                certify_rotation(keys["ed25519-stranger"], successor.public, created=T0), pin_a,
                error="untrusted key")
    certificate("rotation signed by a revoked key", "rotation", rotation,
                {**pin_a, "certificates": [{"kind": "revocation", "hex": self_revocation.hex()}]},
                error="revoked")
    certificate("rotation signed by an expired key", "rotation", rotation,
                {"pinned": [{"key": "ed25519", "publisher": publisher, "not_after": NOW - 1}]},
                error="expired")
    certificate("rotation to a 1024-bit RSA key (signed)", "rotation",
                envelope("ed25519", raw_statement(
                    {b"created": T0, b"key-id": keys["ed25519"].key_id, b"new-key": weak_spki}),
                    kind="rotation"),
                pin_a, error="malformed")
    certificate("rotation statement signed under the release prefix", "rotation",
                envelope("ed25519", Envelope.decode(rotation).statement, kind="release"), pin_a,
                error="invalid")
    certificate("revocation of a predecessor by its successor", "revocation",
                certify_revocation(successor, keys["ed25519"].key_id, created=T0),
                {**pin_a, "certificates": [{"kind": "rotation", "hex": rotation.hex()}]},
                error="invalid")
    certificate("revocation of another pinned key", "revocation",
                certify_revocation(keys["ecdsa"], keys["ed25519"].key_id, created=T0), pin_all,
                error="invalid")

    return {
        "description": (
            "Signed release test vectors for spec/signed-releases.md. Each vector starts from an"
            " empty trust store at time `now`: pin `trust.pinned` keys (publisher, optional"
            " not_after), apply `trust.certificates` in order (rotation or revocation envelopes,"
            " hex), then verify and record each `trust.accepted` release envelope against the"
            " info-hashes of its `torrent`. Then process `envelope_hex` by `kind`: a release is"
            " verified against the info-hashes of `torrent` and must give `expected` (the"
            " verified fields, hashes in hex) or fail with `error`, the reason word that starts"
            " the error message; a rotation must add `expected` (the new key's entry); a"
            " revocation must revoke `expected.revoked_key`. `signer` names the key of a good"
            " vector. Private keys are TEST KEYS ONLY, included so that Ed25519 signatures"
            " (deterministic) can be reproduced; ECDSA and RSA-PSS signatures are randomised."
        ),
        "prefixes": {kind: prefix.decode() for kind, prefix in PREFIXES.items()},
        "now": NOW,
        "keys": {
            name: {
                "scheme": key.scheme,
                "spki_hex": key.public.spki.hex(),
                "key_id_hex": key.key_id.hex(),
                "private_pkcs8_pem": key.to_pem().decode(),
            }
            for name, key in keys.items()
        },
        "torrents": {
            name: {
                "info_hash_v1": v1.hex() if v1 else None,
                "info_hash_v2": v2.hex() if v2 else None,
            }
            for name, (v1, v2) in torrents.items()
        },
        "vectors": vectors,
    }


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(f"usage: python {sys.argv[0]} --regenerate")
    VECTORS.write_text(json.dumps(_generate(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {VECTORS}")
