"""Hostile documents: tracker traffic (HTTP and UDP), Metalink, checksum lists and
their signatures, signed-release envelopes and key files, delta indexes and manifests.

Each comes from someone we do not trust, so each parser either returns a value
or raises a typed :class:`~opendistro.errors.OpenDistroError`, and what parses
round-trips through its encoder.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from opendistro.checksums.minisign import (
    Ed25519Key,
    MinisignSignature,
    SignifySignature,
    verify_signify,
    verify_signify_embedded,
)
from opendistro.checksums.openpgp import Keyring, verify_cleartext, verify_detached
from opendistro.checksums.openpgp_armor import dearmor, split_cleartext
from opendistro.checksums.sums import ChecksumList
from opendistro.delta.index import DeltaIndex
from opendistro.delta.manifest import Manifest
from opendistro.errors import ConfigError, ManifestError, MetalinkError
from opendistro.mirrors.metalink import (
    Digest,
    Metalink,
    MetalinkFile,
    MirrorUrl,
    parse_metalink,
    render_metalink,
)
from opendistro.signing.keys import PublicKeyFile, SigningKey, VerifyingKey
from opendistro.signing.statement import (
    Envelope,
    ReleaseStatement,
    RevocationStatement,
    RotationStatement,
)
from opendistro.tracker import protocol, udp
from opendistro.tracker.protocol import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
)

from .test_hostile_bencode import FAST, mutated, typed

VECTORS = Path(__file__).resolve().parent.parent / "extensions"
FUZZ_SEEDS = Path(__file__).resolve().parent.parent / "fuzz" / "seeds"

# -- trackers ------------------------------------------------------------------------------

TRANSACTION = 0x01020304
HASHES = (bytes(range(20)), bytes(range(1, 21)))
REQUEST = AnnounceRequest(
    info_hash=bytes(range(20)), peer_id=b"-OD0100-" + bytes(12), port=6881, uploaded=1,
    downloaded=2, left=3, event=AnnounceEvent.STARTED, key=0xDEADBEEF, ip="127.0.0.1",
    tracker_id=b"tid",
)
RESPONSE = AnnounceResponse(
    interval=1800, peers=(("127.0.0.1", 6881), ("::1", 51413)), min_interval=60, complete=3,
    incomplete=4, warning="careful", tracker_id=b"tid",
)
STATS = {HASHES[0]: ScrapeStats(1, 2, 3)}
HTTP_SEEDS = [
    REQUEST.to_query().encode(),
    protocol.scrape_query(HASHES).encode(),
    RESPONSE.encode(compact=True),
    RESPONSE.encode(compact=False),
    protocol.encode_failure("go away"),
    protocol.encode_scrape_response(STATS),
]
UDP_SEEDS = [
    udp.encode_connect_request(TRANSACTION),
    udp.encode_announce_request(7, TRANSACTION, REQUEST),
    udp.encode_scrape_request(7, TRANSACTION, HASHES),
    udp.encode_connect_response(TRANSACTION, 99),
    udp.encode_announce_response(TRANSACTION, RESPONSE, ipv6=False),
    udp.encode_announce_response(TRANSACTION, RESPONSE, ipv6=True),
    udp.encode_scrape_response(TRANSACTION, HASHES, STATS),
    udp.encode_error(TRANSACTION, "nope"),
]


@FAST
@given(st.one_of(mutated(HTTP_SEEDS), st.binary(max_size=200)))
def test_http_tracker_traffic_parses_or_refuses(data: bytes) -> None:
    typed(AnnounceRequest.from_query, data)
    typed(AnnounceRequest.from_query, data.decode("utf-8", "surrogateescape"))
    typed(protocol.parse_scrape_query, data)
    response = typed(AnnounceResponse.decode, data)
    if response is not None:
        again = AnnounceResponse.decode(response.encode(compact=False))
        assert set(again.peers) == set(response.peers) and again.interval == response.interval
    files = typed(protocol.decode_scrape_response, data)
    if files is not None:
        assert protocol.decode_scrape_response(protocol.encode_scrape_response(files)) == files


@FAST
@given(st.one_of(mutated(UDP_SEEDS), st.binary(max_size=120)))
def test_udp_tracker_packets_parse_or_refuse(data: bytes) -> None:
    request = typed(udp.parse_request, data)
    if isinstance(request, udp.UdpAnnounceRequest):
        encoded = udp.encode_announce_request(
            request.connection_id, request.transaction_id, request.request
        )
        assert udp.parse_request(encoded) == request
    typed(udp.decode_connect_response, data, TRANSACTION)
    for ipv6 in (False, True):
        typed(udp.decode_announce_response, data, TRANSACTION, ipv6=ipv6)
    typed(udp.decode_scrape_response, data, TRANSACTION, HASHES)


def test_announce_requests_round_trip_over_http_and_udp() -> None:
    assert AnnounceRequest.from_query(REQUEST.to_query()) == REQUEST
    parsed = udp.parse_request(udp.encode_announce_request(7, TRANSACTION, REQUEST))
    assert isinstance(parsed, udp.UdpAnnounceRequest)
    assert dataclasses.replace(parsed.request, tracker_id=REQUEST.tracker_id) == REQUEST


# -- Metalink ------------------------------------------------------------------------------

METALINK_V3 = b"""<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic"
          pubdate="Mon, 15 May 2006 00:00:01 GMT">
  <files><file name="dir/x.iso"><size>5</size>
    <verification>
      <hash type="sha256">2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824</hash>
    </verification>
    <resources><url type="http" location="de" preference="90">http://127.0.0.1/x.iso</url>
      <url type="ftp">ftp://127.0.0.1/x.iso</url></resources>
  </file></files>
</metalink>
"""
METALINK_DOCUMENT = Metalink(
    files=(
        MetalinkFile(
            path=("release", "x.iso"), size=5, hashes=(Digest("sha-256", bytes(32)),),
            urls=(MirrorUrl("http://127.0.0.1/a", 1, "de"), MirrorUrl("https://127.0.0.1:8/b")),
        ),
    ),
    generator="test",
    origin="http://127.0.0.1/x.meta4",
    dynamic=True,
)


def _without_skipped(metalink: Metalink) -> Metalink:
    files = tuple(dataclasses.replace(entry, skipped_urls=()) for entry in metalink.files)
    return dataclasses.replace(metalink, files=files)


@FAST
@given(mutated([render_metalink(METALINK_DOCUMENT), METALINK_V3]))
def test_metalink_documents_parse_or_refuse(data: bytes) -> None:
    metalink = typed(parse_metalink, data)
    if metalink is not None and all(entry.urls or entry.metaurls for entry in metalink.files):
        assert parse_metalink(render_metalink(metalink)) == _without_skipped(metalink)


def test_metalink_3_dynamic_without_origin_is_not_dynamic() -> None:
    # Regression: type="dynamic" with no origin gave dynamic=True, origin=None, which
    # Metalink 4 cannot express (dynamic is an attribute of <origin>), so it did not
    # round-trip, and "fetch it again from its origin" named no place to fetch from.
    metalink = parse_metalink(METALINK_V3)
    assert metalink.origin is None and not metalink.dynamic
    assert parse_metalink(render_metalink(metalink)) == _without_skipped(metalink)
    with_origin = METALINK_V3.replace(b'type="dynamic"', b'type="dynamic" origin="http://h/m"')
    assert parse_metalink(with_origin).dynamic


@pytest.mark.parametrize(
    "date",
    [
        "Mon, 15 May 99999999999999999999 00:00:01 GMT",
        "Mon, 15 May 2006 99999999999999999999:00:01 GMT",
        "Mon, 15 May 2006 00:00:01 +99999999999999999999",
    ],
)
def test_metalink_3_date_with_huge_numbers_is_ignored(date: str) -> None:
    # Regression: email.utils raised OverflowError, which escaped parse_metalink.
    document = METALINK_V3.replace(b"Mon, 15 May 2006 00:00:01 GMT", date.encode())
    assert parse_metalink(document).published is None
    assert parse_metalink(METALINK_V3).published is not None


def test_metalink_entity_bombs_and_deep_nesting_are_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa">]><m>&a;</m>'
    deep = b"<a>" * 5000 + b"</a>" * 5000
    for document in (bomb, deep, b"\xff\xfe<\x00", b""):
        with pytest.raises(MetalinkError):
            parse_metalink(document)


# -- checksum lists and their signatures ----------------------------------------------------

SIGNIFY_SECRET = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
MESSAGE = b"fuzz seed message\n"


def _signify() -> tuple[bytes, bytes]:
    public = SIGNIFY_SECRET.public_key().public_bytes_raw()
    key = b"untrusted comment: k\n" + base64.b64encode(b"Ed" + b"12345678" + public) + b"\n"
    blob = base64.b64encode(b"Ed" + b"12345678" + SIGNIFY_SECRET.sign(MESSAGE))
    return key, b"untrusted comment: s\n" + blob + b"\n"


SIGNIFY_KEY_FILE, SIGNIFY_SIG = _signify()
SIGNIFY_KEY = Ed25519Key.parse(SIGNIFY_KEY_FILE)
SUMS = (
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  empty.txt\n"
    b"\\e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *a\\\\b\\nc\n"
    b"SHA256 (a b.txt) = e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
)


@FAST
@given(st.one_of(mutated([SUMS]), st.binary(max_size=200)))
def test_checksum_lists_parse_or_refuse(data: bytes) -> None:
    typed(ChecksumList.parse, data)
    sums = typed(ChecksumList.parse, data, "sha256")
    if sums is not None:
        assert all(entry.algorithm == "sha256" for entry in sums.entries())


@FAST
@given(mutated([SIGNIFY_KEY_FILE, SIGNIFY_SIG, SIGNIFY_SIG + MESSAGE]))
def test_signify_and_minisign_files_parse_or_refuse(data: bytes) -> None:
    typed(Ed25519Key.parse, data)
    typed(MinisignSignature.parse, data)
    typed(SignifySignature.parse, data)
    typed(verify_signify, MESSAGE, data, SIGNIFY_KEY)
    embedded = typed(verify_signify_embedded, data, SIGNIFY_KEY)
    assert embedded is None or data.endswith(embedded)


def test_signify_seed_really_verifies() -> None:
    verify_signify(MESSAGE, SIGNIFY_SIG, SIGNIFY_KEY)
    assert verify_signify_embedded(SIGNIFY_SIG + MESSAGE, SIGNIFY_KEY) == MESSAGE


def _pgp_seeds() -> list[bytes]:
    names = ["key.gpg", "key.asc", "msg.sig", "msg.asc", "SHA256SUMS.clear"]
    return [(FUZZ_SEEDS / "openpgp" / name).read_bytes() for name in names]


PGP_SEEDS = _pgp_seeds()
PGP_KEYRING = Keyring.parse(PGP_SEEDS[0])


@FAST
@given(st.one_of(mutated(PGP_SEEDS), st.binary(max_size=200)))
def test_openpgp_keys_and_signatures_parse_or_refuse(data: bytes) -> None:
    typed(Keyring.parse, data)
    typed(verify_detached, MESSAGE, data, PGP_KEYRING)
    typed(verify_cleartext, data, PGP_KEYRING)
    typed(dearmor, data, "SIGNATURE")
    typed(split_cleartext, data)


def test_openpgp_seeds_really_verify() -> None:
    for signature in PGP_SEEDS[2:4]:
        assert verify_detached(MESSAGE, signature, PGP_KEYRING).hash_algorithm == "sha256"
    text, _ = verify_cleartext(PGP_SEEDS[4], PGP_KEYRING)
    assert b"empty.txt" in text


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
def test_openpgp_seed_key_is_what_gpg_reads() -> None:
    listed = subprocess.run(
        ["gpg", "--batch", "--show-keys", "--with-colons", str(FUZZ_SEEDS / "openpgp" / "key.asc")],
        capture_output=True, check=True, text=True,
    ).stdout
    fingerprints = [line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr")]
    assert PGP_KEYRING.keys[0].fingerprint in fingerprints


# -- signed releases ------------------------------------------------------------------------


def _signing_vectors() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / "signed_release_vectors.json").read_text())
    return document


SIGNING = _signing_vectors()
ENVELOPES = [bytes.fromhex(vector["envelope_hex"]) for vector in SIGNING["vectors"][:10]]
STATEMENTS = [
    envelope.statement
    for envelope in (typed(Envelope.decode, raw) for raw in ENVELOPES)
    if envelope is not None
]
SPKIS = [bytes.fromhex(key["spki_hex"]) for key in SIGNING["keys"].values()]


@FAST
@given(st.one_of(mutated(ENVELOPES + STATEMENTS), st.binary(max_size=150)))
def test_envelopes_and_statements_decode_or_refuse(data: bytes) -> None:
    envelope = typed(Envelope.decode, data)
    if envelope is not None:
        assert envelope.encode() == data
    for kind in (ReleaseStatement, RotationStatement, RevocationStatement):
        statement = typed(kind.decode, data)
        if statement is not None:
            assert statement.encode() == data


@FAST
@given(mutated(SPKIS))
def test_public_keys_decode_or_refuse(data: bytes) -> None:
    key = typed(VerifyingKey.from_spki, data)
    if key is not None:
        assert VerifyingKey.from_pem(key.to_pem()) == key
        typed(key.verify, data[:64], data)


@FAST
@given(mutated([PublicKeyFile(VerifyingKey.from_spki(SPKIS[0]), "P", 1).to_bytes()]))
def test_public_key_files_parse_or_refuse(data: bytes) -> None:
    key_file = typed(PublicKeyFile.from_bytes, data)
    if key_file is not None:
        assert PublicKeyFile.from_bytes(key_file.to_bytes()) == key_file


def test_public_key_file_with_a_huge_not_after_is_a_config_error() -> None:
    # Regression: int() of over 4300 digits raised a plain ValueError.
    pem = SigningKey.generate("ed25519").public.to_pem()
    with pytest.raises(ConfigError, match="Not-After"):
        PublicKeyFile.from_bytes(b"Not-After: " + b"9" * 5000 + b"\n" + pem)
    assert PublicKeyFile.from_bytes(b"Not-After: 1767312000\n" + pem).not_after == 1767312000


# -- delta indexes and manifests ---------------------------------------------------------------


def _index_vectors() -> list[bytes]:
    document = json.loads((VECTORS / "delta_index_vectors.json").read_text())
    return [bytes.fromhex(vector["hex"]) for vector in document["index"]["good"]] + [
        bytes.fromhex(vector["hex"]) for vector in document["index"]["bad"][:20]
    ]


@FAST
@given(st.one_of(mutated(_index_vectors()), st.binary(max_size=100)))
def test_delta_indexes_decode_or_refuse(data: bytes) -> None:
    index = typed(DeltaIndex.decode, data)
    if index is not None:
        assert index.encode() == data


def _release(name: str, version: str, sequence: int, **extra: object) -> dict[str, object]:
    return {
        "name": name, "version": version, "sequence": sequence,
        "torrent": f"torrents/{name}-{version}.torrent", "info_hash": "ab" * 20, **extra,
    }


MANIFEST = json.dumps({
    "format": "opendistro-release-manifest",
    "version": 1,
    "channel": "stable",
    "releases": [
        _release("base", "1.0", 1),
        _release("base", "1.1", 2, previous="1.0", mirrors=["https://127.0.0.1/base/"]),
        _release("app", "2.0", 5, depends=[{"name": "base", "min_version": "1.1"}]),
    ],
}).encode()


@FAST
@given(st.one_of(mutated([MANIFEST]), st.binary(max_size=100)))
def test_manifests_decode_or_refuse(data: bytes) -> None:
    manifest = typed(Manifest.decode, data)
    if manifest is not None:
        assert Manifest.decode(manifest.to_bytes()).releases == manifest.releases


@pytest.mark.parametrize(
    "document", [b"[" * 100_000, b'{"a":' * 50_000, b'{"version": 1' + b"0" * 5000 + b"}"]
)
def test_manifest_nesting_and_huge_numbers_are_manifest_errors(document: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.decode(document)
