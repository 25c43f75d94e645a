import base64
import hashlib

import pytest

from opendistro.errors import MagnetError, MetainfoError
from opendistro.magnet import MagnetLink

V1 = hashlib.sha1(b"info").digest()
V2 = hashlib.sha256(b"info").digest()


def test_parse_hex_btih_with_everything() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{V1.hex().upper()}&dn=My+Release%201.0"
        "&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce&tr=udp://127.0.0.1:6970"
        "&ws=http%3A%2F%2F127.0.0.1%2Ffiles%2F&x.pe=127.0.0.1:6881&x.pe=%5B::1%5D:6882"
        "&x.pe=localhost:7000&unknown=ignored"
    )
    link = MagnetLink.parse(uri)
    assert link.info_hash_v1 == V1 and link.info_hash_v2 is None
    assert link.wire_info_hash == V1
    assert link.display_name == "My Release 1.0"
    assert link.trackers == ("http://127.0.0.1:6969/announce", "udp://127.0.0.1:6970")
    assert link.webseeds == ("http://127.0.0.1/files/",)
    assert link.peers == (("127.0.0.1", 6881), ("::1", 6882), ("localhost", 7000))
    assert MagnetLink.parse(link.to_uri()) == link


def test_parse_base32_btih() -> None:
    encoded = base64.b32encode(V1).decode()
    assert len(encoded) == 32
    assert MagnetLink.parse(f"magnet:?xt=urn:btih:{encoded}").info_hash_v1 == V1
    assert MagnetLink.parse(f"magnet:?xt=urn:btih:{encoded.lower()}").info_hash_v1 == V1


def test_btmh_alone_and_hybrid() -> None:
    v2_only = MagnetLink.parse(f"magnet:?xt=urn:btmh:1220{V2.hex()}")
    assert v2_only.info_hash_v1 is None and v2_only.info_hash_v2 == V2
    assert v2_only.wire_info_hash == V2[:20]
    both = MagnetLink.parse(f"magnet:?xt=urn:btih:{V1.hex()}&xt=urn:btmh:1220{V2.hex()}")
    assert (both.info_hash_v1, both.info_hash_v2) == (V1, V2)
    assert both.wire_info_hash == V1
    uri = both.to_uri()
    assert f"urn:btih:{V1.hex()}" in uri and f"urn:btmh:1220{V2.hex()}" in uri
    assert MagnetLink.parse(uri) == both


@pytest.mark.parametrize(
    "name", ["plain", "with space", "a+b&c=d", "ünïcode/слово", "100%", "#hash?q"]
)
def test_round_trip_of_awkward_values(name: str) -> None:
    link = MagnetLink(
        V1,
        None,
        display_name=name,
        trackers=("http://127.0.0.1:1/a?x=1&y=2", "udp://[::1]:5/b"),
        webseeds=("http://127.0.0.1/a b/%/",),
        peers=(("127.0.0.2", 1), ("::1", 65535)),
    )
    assert MagnetLink.parse(link.to_uri()) == link


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "http://example.invalid/",
        "magnet:?dn=nohash",
        "magnet:?xt=urn:btih:1234",
        "magnet:?xt=urn:btih:" + "z" * 40,
        "magnet:?xt=urn:btih:" + "1" * 32,  # '1' is not in the base32 alphabet
        "magnet:?xt=urn:btmh:1114" + "00" * 20,  # SHA-1 multihash is not BEP 52
        "magnet:?xt=urn:btmh:1220" + "00" * 31,
        "magnet:?xt=urn:btmh:1220" + "zz" * 32,
        f"magnet:?xt=urn:btih:{V1.hex()}&xt=urn:btih:{'00' * 20}",
        f"magnet:?xt=urn:btih:{V1.hex()}&x.pe=127.0.0.1",
        f"magnet:?xt=urn:btih:{V1.hex()}&x.pe=127.0.0.1:0",
        f"magnet:?xt=urn:btih:{V1.hex()}&x.pe=127.0.0.1:70000",
        f"magnet:?xt=urn:btih:{V1.hex()}&x.pe=[nothex]:1",
        f"magnet:?xt=urn:btih:{V1.hex()}&x.pe=::1:5",
        f"magnet:?xt=urn:btih:{V1.hex()}&dn=%ff%fe",
        "magnet:?xt=urn:btih:" + V1.hex() + "&tr=" + "a" * 70_000,
    ],
)
def test_bad_magnets_raise_magnet_error(uri: str) -> None:
    with pytest.raises(MagnetError):
        MagnetLink.parse(uri)


def test_magnet_error_is_a_metainfo_error_and_construction_is_checked() -> None:
    assert issubclass(MagnetError, MetainfoError)
    with pytest.raises(MagnetError):
        MagnetLink(None, None)
    with pytest.raises(MagnetError):
        MagnetLink(b"short", None)
