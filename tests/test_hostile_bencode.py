"""Hostile input to bencode, .torrent and magnet parsing (issue 8).

Every parser of untrusted input may refuse an input only with a typed
:class:`~opendistro.errors.OpenDistroError`: random bytes and structured
mutations of valid encodings (bit flips, truncations, insertions, huge length
prefixes, deep nesting) either parse or raise one, and what parses
round-trips through its encoder. The mutation strategy here is shared by the
other ``test_hostile_*`` files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.create import create_torrent
from opendistro.errors import BencodeError, MagnetError, MetainfoError, OpenDistroError
from opendistro.magnet import MagnetLink
from opendistro.metainfo import MAX_PATH_DEPTH, Metainfo

T = TypeVar("T")

#: Length prefixes hostile peers like: zero, around common limits, 2**31, 4 GiB - 1, 4 GiB.
HUGE_LENGTHS = (0, 0x7F, 0x4000, 0x100001, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32)

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def typed(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``parse(*args)``, or None if it refused with a typed error; anything else escapes."""
    try:
        return parse(*args, **kwargs)
    except OpenDistroError:
        return None


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A valid encoding from ``seeds`` after one to four structured mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length", "nest", "delete"]))
        position = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            index = min(position, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "length":
            length = draw(st.sampled_from(HUGE_LENGTHS))
            prefix = draw(
                st.sampled_from([(length & 0xFFFFFFFF).to_bytes(4, "big"), b"%d:" % length])
            )
            data[position:position] = prefix
        elif kind == "nest":
            depth = draw(st.sampled_from([65, 100, 3000]))
            data[position:position] = b"l" * depth + b"e" * depth
        else:
            end = draw(st.integers(position, len(data)))
            del data[position:end]
    return bytes(data)


bencode_values = st.recursive(
    st.integers(min_value=-(10**30), max_value=10**30) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.binary(max_size=8), children, max_size=4),
    max_leaves=20,
)


# -- bencode ------------------------------------------------------------------------------

BENCODE_SEEDS = [
    bencode.encode({b"a": [1, -2, b"x", {b"b": []}], b"info": {b"length": 5}}),
    b"l" * 64 + b"e" * 64,
    b"i-42e",
    b"5:hello",
]


def _decode_all_ways(data: bytes) -> None:
    value = typed(bencode.decode, data)
    if value is not None:
        assert bencode.decode(bencode.encode(value)) == value
    typed(bencode.decode_prefix, data)
    span = typed(bencode.dict_value_span, data, b"info")
    if span is not None:
        assert 0 < span[0] <= span[1] <= len(data)


@FAST
@given(st.binary(max_size=300))
def test_bencode_random_bytes_are_parsed_or_refused(data: bytes) -> None:
    _decode_all_ways(data)


@FAST
@given(mutated(BENCODE_SEEDS))
def test_bencode_mutations_are_parsed_or_refused(data: bytes) -> None:
    _decode_all_ways(data)


@FAST
@given(bencode_values)
def test_bencode_round_trips(value: Any) -> None:
    encoded = bencode.encode(value)
    assert bencode.decode(encoded) == value
    assert bencode.encode(bencode.decode(encoded)) == encoded
    assert bencode.decode_prefix(encoded + b"trailing") == (value, len(encoded))


@pytest.mark.parametrize("max_depth", [64, 10**6])
def test_bencode_deep_nesting_is_a_bencode_error(max_depth: int) -> None:
    # A caller asking for absurd depth still gets BencodeError, not RecursionError.
    for opener in (b"l", b"d1:a"):
        with pytest.raises(BencodeError):
            bencode.decode(opener * 100_000, max_depth=max_depth)


@pytest.mark.parametrize(
    "data",
    [b"4294967296:x", b"99999999999999999999:x", b"1" * 30 + b":x", b"i" + b"9" * 100 + b"e"],
)
def test_bencode_huge_lengths_are_refused_without_allocating(data: bytes) -> None:
    with pytest.raises(BencodeError):
        bencode.decode(data)


@pytest.mark.parametrize("data", [b"d:", b"d:e", b"d1:ai1e:"])
def test_dict_value_span_refuses_an_empty_key_length(data: bytes) -> None:
    # Regression: an empty length before ':' raised IndexError.
    with pytest.raises(BencodeError):
        bencode.dict_value_span(data, b"info")


# -- metainfo -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torrents(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Real v1, v2 and hybrid torrents, single- and multi-file, with piece layers."""
    root = tmp_path_factory.mktemp("torrents")
    single = root / "one.bin"
    single.write_bytes(bytes(range(256)) * 200)
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a" * 40000)
    (tree / "sub" / "b.txt").write_bytes(b"b" * 5)
    result = []
    for version in ("v1", "v2", "hybrid"):
        for path in (single, tree):
            metainfo = create_torrent(
                path, version=version, piece_length=16384, trackers=["http://127.0.0.1:1/a"],
                creation_date=0,
            )
            result.append(metainfo.to_bytes())
    return result


def _parse_torrent(data: bytes) -> None:
    metainfo = typed(Metainfo.from_bytes, data)
    if metainfo is not None:
        again = Metainfo.from_bytes(metainfo.to_bytes())
        assert (again.info_hash_v1, again.info_hash_v2) == (
            metainfo.info_hash_v1,
            metainfo.info_hash_v2,
        )
        assert again.files == metainfo.files
        assert again.piece_layers == metainfo.piece_layers
    typed(Metainfo.from_info_bytes, data)


@FAST
@given(data=st.data())
def test_torrent_mutations_are_parsed_or_refused(
    torrents: list[bytes], data: st.DataObject
) -> None:
    _parse_torrent(data.draw(mutated(torrents)))


@FAST
@given(st.binary(max_size=300))
def test_torrent_random_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(data)


def test_valid_torrents_round_trip(torrents: list[bytes]) -> None:
    for data in torrents:
        metainfo = Metainfo.from_bytes(data)
        assert Metainfo.from_bytes(metainfo.to_bytes()).info_bytes == metainfo.info_bytes
        if metainfo.has_v2 and metainfo.total_length > metainfo.piece_length:
            assert metainfo.piece_layers  # the layers were really exercised


names = st.text(st.characters(codec="utf-8", exclude_characters="/\\\x00"), min_size=1, max_size=6)
leaves = st.fixed_dictionaries(
    {b"length": st.integers(-1, 1 << 70)},
    optional={
        b"pieces root": st.binary(min_size=31, max_size=33),
        b"attr": st.sampled_from([b"", b"p", b"x", 5]),
    },
)
file_trees = st.recursive(
    st.builds(lambda leaf: {b"": leaf}, leaves),
    lambda children: st.dictionaries(names.map(str.encode), children, min_size=1, max_size=3),
    max_leaves=6,
)


@FAST
@given(
    tree=st.dictionaries(names.map(str.encode), file_trees, min_size=1, max_size=3),
    piece_length=st.sampled_from([0, 1, 16384, 32768, 1 << 40]),
    layers=st.dictionaries(st.binary(min_size=32, max_size=32), st.binary(max_size=96)),
    hybrid=st.booleans(),
)
def test_generated_v2_file_trees_are_parsed_or_refused(
    tree: dict[bytes, Any], piece_length: int, layers: dict[bytes, bytes], hybrid: bool
) -> None:
    info: dict[bytes, Any] = {
        b"file tree": tree,
        b"meta version": 2,
        b"name": b"x",
        b"piece length": piece_length,
    }
    if hybrid:
        info[b"pieces"] = bytes(20)
        info[b"files"] = [{b"length": 1, b"path": [b"x"]}]
    _parse_torrent(bencode.encode({b"info": info, b"piece layers": layers}))


def test_deep_v2_file_tree_is_a_metainfo_error() -> None:
    node: dict[bytes, Any] = {b"": {b"length": 1, b"pieces root": bytes(32)}}
    for _ in range(MAX_PATH_DEPTH + 2):
        node = {b"d": node}
    info = {b"file tree": node, b"meta version": 2, b"name": b"x", b"piece length": 16384}
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(bencode.encode({b"info": info}))


# -- magnet -------------------------------------------------------------------------------

V1 = hashlib.sha1(b"info").digest()
V2 = hashlib.sha256(b"info").digest()
MAGNET_SEEDS = [
    (
        f"magnet:?xt=urn:btih:{V1.hex()}&xt=urn:btmh:1220{V2.hex()}&dn=a+b%20c"
        "&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce&ws=http://127.0.0.1/&x.pe=127.0.0.1:6881"
        "&x.pe=[::1]:80"
    ).encode()
]


@FAST
@given(st.one_of(mutated(MAGNET_SEEDS), st.binary(max_size=200)))
def test_magnet_mutations_are_parsed_or_refused(data: bytes) -> None:
    for text in (data.decode("utf-8", "replace"), data.decode("latin-1")):
        link = typed(MagnetLink.parse, text)
        if link is not None:
            assert MagnetLink.parse(link.to_uri()) == link


urls = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@FAST
@given(
    v1=st.none() | st.binary(min_size=20, max_size=20),
    v2=st.binary(min_size=32, max_size=32),
    name=st.none() | st.text(st.characters(codec="utf-8"), max_size=20),
    trackers=st.lists(urls, unique=True, max_size=3),
    webseeds=st.lists(urls, unique=True, max_size=3),
    peers=st.lists(
        st.tuples(st.ip_addresses().map(str), st.integers(1, 65535)), max_size=3
    ),
)
def test_magnet_links_round_trip(
    v1: bytes | None,
    v2: bytes,
    name: str | None,
    trackers: list[str],
    webseeds: list[str],
    peers: list[tuple[str, int]],
) -> None:
    link = MagnetLink(v1, v2, name, tuple(trackers), tuple(webseeds), tuple(peers))
    assert MagnetLink.parse(link.to_uri()) == link


@pytest.mark.parametrize("peer", ["127.0.0.1:" + "9" * 5000, "[::1]:" + "0" * 5000 + "1"])
def test_magnet_peer_with_a_huge_port_is_a_magnet_error(peer: str) -> None:
    # Regression: int() of over 4300 digits raised a plain ValueError.
    with pytest.raises(MagnetError):
        MagnetLink.parse(f"magnet:?xt=urn:btih:{V1.hex()}&x.pe={peer}")


def test_magnet_peer_port_bounds_still_hold() -> None:
    link = MagnetLink.parse(f"magnet:?xt=urn:btih:{V1.hex()}&x.pe=127.0.0.1:65535")
    assert link.peers == (("127.0.0.1", 65535),)
    for port in ("0", "65536", "123456"):
        with pytest.raises(MagnetError):
            MagnetLink.parse(f"magnet:?xt=urn:btih:{V1.hex()}&x.pe=127.0.0.1:{port}")
