"""The release manifest: strict parsing, consistency checks, and the update plan's order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendistro.delta.manifest import (
    FORMAT,
    MAX_MANIFEST_SIZE,
    Dependency,
    Manifest,
    Release,
    plan_updates,
)
from opendistro.errors import ManifestError, OpenDistroError

HASH = "ab" * 20


def release(name: str, version: str, sequence: int, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "sequence": sequence,
        "torrent": f"torrents/{name}-{version}.torrent",
        "info_hash": HASH,
    }
    entry.update(extra)
    return entry


def document(*releases: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"format": FORMAT, "version": 1, "releases": list(releases)} | top


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def parse(*releases: dict[str, Any]) -> Manifest:
    return Manifest.decode(encode(document(*releases)))


CHANNEL = document(
    release("base", "1.0", 1),
    release("base", "1.1", 2, previous="1.0", mirrors=["https://mirror.example/base/"]),
    release("app", "2.0", 5, depends=[{"name": "base", "min_version": "1.0"}]),
    release("app", "2.1", 6, previous="2.0",
            depends=[{"name": "base", "min_version": "1.1"}, {"name": "data"}]),
    release("data", "7", 1, torrent="https://cdn.example/data-7.torrent", info_hash="cd" * 32),
    channel="stable",
)


def test_a_channel_is_read_with_every_field() -> None:
    manifest = Manifest.decode(encode(CHANNEL))
    assert manifest.channel == "stable"
    assert manifest.packages == ("base", "app", "data")
    assert [r.version for r in manifest.releases_of("base")] == ["1.1", "1.0"]
    app = manifest.newest("app")
    assert app.version == "2.1" and app.previous == "2.0" and app.sequence == 6
    assert app.depends == (Dependency("base", "1.1"), Dependency("data"))
    assert app.info_hash == bytes.fromhex(HASH) and app.torrent == "torrents/app-2.1.torrent"
    assert manifest.newest("base").mirrors == ("https://mirror.example/base/",)
    data = manifest.newest("data")
    assert data.info_hash == bytes(bytes.fromhex("cd" * 32)) and data.torrent.startswith("https:")
    assert manifest.release("base", "1.0") is not None and manifest.release("base", "9") is None
    assert manifest.order == ("base", "data", "app")


def test_encoding_and_decoding_round_trip() -> None:
    manifest = Manifest.decode(encode(CHANNEL))
    again = Manifest.decode(manifest.to_bytes())
    assert again.releases == manifest.releases and again.channel == "stable"


def test_extension_keys_are_ignored_and_other_unknown_keys_refused() -> None:
    parse(release("a", "1", 1, **{"x-signed-by": "someone"}))
    Manifest.decode(encode(document(release("a", "1", 1), **{"x-note": [1, 2]})))
    with pytest.raises(ManifestError, match="unknown key 'depend'"):
        parse(release("a", "1", 1, depend=[{"name": "b"}]))
    with pytest.raises(ManifestError, match="unknown key"):
        Manifest.decode(encode(document(release("a", "1", 1), packages=[])))


def test_version_order_is_the_sequence_not_the_label() -> None:
    manifest = parse(release("a", "1.9", 9), release("a", "1.10", 10), release("a", "2.0rc1", 11))
    assert manifest.newest("a").version == "2.0rc1"
    assert [r.version for r in manifest.releases_of("a")] == ["2.0rc1", "1.10", "1.9"]


BAD_DOCUMENTS: dict[str, tuple[bytes, str]] = {
    "not json": (b"{releases: []}", "not valid JSON"),
    "trailing garbage": (encode(document()) + b" []", "not valid JSON"),
    "not utf-8": (b'{"format": "\xff"}', "UTF-8"),
    "bom": (b"\xef\xbb\xbf" + encode(document()), "byte order mark"),
    "a list": (b"[]", "must be a JSON object"),
    "duplicate key": (
        b'{"format": "%s", "version": 1, "version": 1, "releases": []}' % FORMAT.encode(),
        "appears twice",
    ),
    "nan": (
        b'{"format": "%s", "version": 1, "releases": [], "x-a": NaN}' % FORMAT.encode(),
        "not a JSON number",
    ),
    "other format": (encode(document() | {"format": "something"}), "format is not"),
    "no format": (encode({"version": 1, "releases": []}), "'format' is missing"),
    "version 2": (encode(document() | {"version": 2}), "unsupported manifest version"),
    "version true": (encode(document() | {"version": True}), "must be an integer"),
    "releases not a list": (encode(document() | {"releases": {}}), "releases must be a list"),
    "huge integer": (
        b'{"format": "x", "version": 1%s, "releases": []}' % (b"0" * 5000), "not valid JSON"
    ),
    "deep nesting": (b'{"x-a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nest"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_malformed_documents_are_refused(case: str) -> None:
    data, message = BAD_DOCUMENTS[case]
    with pytest.raises(ManifestError, match=message):
        Manifest.decode(data)


BAD_RELEASES: dict[str, tuple[dict[str, Any], str]] = {
    "no name": ({k: v for k, v in release("a", "1", 1).items() if k != "name"}, "'name'"),
    "no info hash": (
        {k: v for k, v in release("a", "1", 1).items() if k != "info_hash"}, "'info_hash'"
    ),
    "name with slash": (release("a/b", "1", 1), "package name"),
    "name with space": (release("a b", "1", 1), "package name"),
    "name starting with a dot": (release(".a", "1", 1), "package name"),
    "name not a string": (release("a", "1", 1) | {"name": 7}, "must be a string"),
    "empty version": (release("a", "", 1), "version"),
    "version with space": (release("a", "1 0", 1), "version"),
    "sequence negative": (release("a", "1", -1), "sequence"),
    "sequence too big": (release("a", "1", 1 << 63), "sequence"),
    "sequence float": (release("a", "1", 1.0), "must be an integer"),
    "sequence bool": (release("a", "1", True), "must be an integer"),
    "short info hash": (release("a", "1", 1, info_hash="ab" * 19), "info_hash"),
    "info hash not hex": (release("a", "1", 1, info_hash="zz" * 20), "info_hash"),
    "torrent escaping": (release("a", "1", 1, torrent="../a.torrent"), "relative path"),
    "torrent absolute": (release("a", "1", 1, torrent="/etc/a.torrent"), "relative path"),
    "torrent backslash": (release("a", "1", 1, torrent="a\\b.torrent"), "relative path"),
    "torrent ftp": (release("a", "1", 1, torrent="ftp://host/a.torrent"), "relative path"),
    "torrent empty component": (release("a", "1", 1, torrent="a//b.torrent"), "relative path"),
    "torrent url without host": (release("a", "1", 1, torrent="http:///a.torrent"), "host"),
    "mirror not http": (release("a", "1", 1, mirrors=["file:///srv/"]), "http"),
    "mirror with space": (release("a", "1", 1, mirrors=["http://a b/"]), "space"),
    "mirrors not a list": (release("a", "1", 1, mirrors="http://a/"), "must be a list"),
    "too many mirrors": (release("a", "1", 1, mirrors=["http://a/"] * 33), "mirrors"),
    "depends not a list": (release("a", "1", 1, depends="b"), "must be a list"),
    "dependency a string": (release("a", "1", 1, depends=["b"]), "JSON object"),
    "dependency twice": (
        release("a", "1", 1, depends=[{"name": "b"}, {"name": "b"}]), "twice"
    ),
    "too many dependencies": (
        release("a", "1", 1, depends=[{"name": f"p{n}"} for n in range(257)]), "dependencies"
    ),
    "previous is itself": (release("a", "1", 1, previous="1"), "itself"),
}


@pytest.mark.parametrize("case", sorted(BAD_RELEASES))
def test_malformed_releases_are_refused(case: str) -> None:
    entry, message = BAD_RELEASES[case]
    with pytest.raises(ManifestError, match=message):
        parse(entry)


@pytest.mark.parametrize(
    ("releases", "message"),
    [
        ([release("a", "1", 1), release("a", "1", 2)], "listed twice"),
        ([release("a", "1", 1), release("a", "2", 1)], "share sequence 1"),
        ([release("a", "1", 2), release("a", "2", 1, previous="1")], "does not come before"),
        ([release("a", "1", 1, depends=[{"name": "a"}])], "depends on itself"),
        ([release("a", "1", 1, depends=[{"name": "b"}])], "'b', which is not in the manifest"),
        (
            [release("a", "1", 1, depends=[{"name": "b", "min_version": "3"}]),
             release("b", "2", 1)],
            "b >= 3, a version the manifest does not list",
        ),
        (
            [release("a", "1", 1, depends=[{"name": "b"}]),
             release("b", "1", 1, depends=[{"name": "a"}])],
            "dependency cycle: a -> b -> a",
        ),
        (
            [release("x", "1", 1),
             release("a", "1", 1, depends=[{"name": "x"}, {"name": "c"}]),
             release("b", "1", 1, depends=[{"name": "a"}]),
             release("c", "1", 1, depends=[{"name": "b"}])],
            "dependency cycle: a -> c -> b -> a",
        ),
    ],
)
def test_inconsistent_manifests_are_refused(releases: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(*releases)


def test_a_pruned_previous_version_is_fine_and_old_releases_do_not_make_cycles() -> None:
    manifest = parse(
        release("a", "3", 3, previous="2"),  # 2 is no longer listed
        release("b", "1", 1, depends=[{"name": "a"}]),
        release("a", "1", 1, depends=[{"name": "b"}]),  # old: only the newest releases count
    )
    assert manifest.order == ("a", "b")


def test_size_and_count_limits() -> None:
    with pytest.raises(ManifestError, match="at most"):
        Manifest.decode(b" " * (MAX_MANIFEST_SIZE + 1))
    with pytest.raises(ManifestError, match="more than"):
        Manifest.decode(encode(document() | {"releases": [0] * 50_001}))


def test_manifest_errors_are_opendistro_errors() -> None:
    assert issubclass(ManifestError, OpenDistroError)
    with pytest.raises(ManifestError):
        Release("a", "1", 1, "a.torrent", b"\x00" * 19)
    with pytest.raises(ManifestError):
        Manifest([Release("a", "1", 1, "a.torrent", b"\x00" * 20)], channel="not a name")


# -- the update plan -----------------------------------------------------------------


def test_steps_come_dependencies_first_and_skip_what_is_current() -> None:
    manifest = Manifest.decode(encode(CHANNEL))
    steps = plan_updates(manifest, {"app": "2.0", "base": "1.1", "other": "5"})
    assert [(s.name, s.release.version, s.action) for s in steps] == [
        ("data", "7", "install"),
        ("app", "2.1", "upgrade"),
    ]
    upgrade = steps[1]
    assert upgrade.installed_version == "2.0" and upgrade.installed_release is not None
    assert upgrade.from_previous
    assert plan_updates(manifest, {"app": "2.1", "base": "1.1", "data": "7"}) == []


def test_unknown_and_unlisted_installed_versions_are_replaced() -> None:
    manifest = Manifest.decode(encode(CHANNEL))
    steps = plan_updates(manifest, {"base": None, "data": "6", "app": "2.1"})
    assert [(s.name, s.action, s.installed_version) for s in steps] == [
        ("base", "replace", None),
        ("data", "replace", "6"),
    ]
    assert not steps[0].from_previous and steps[1].installed_release is None


def test_the_order_is_stable_the_manifest_order_among_equals() -> None:
    manifest = parse(
        release("z", "1", 1, depends=[{"name": "m"}]),
        release("y", "1", 1),
        release("m", "1", 1),
        release("a", "1", 1, depends=[{"name": "y"}, {"name": "m"}]),
    )
    assert manifest.order == ("y", "m", "z", "a")
    assert [step.name for step in plan_updates(manifest, {})] == ["y", "m", "z", "a"]


@given(st.data())
def test_any_acyclic_dependency_graph_is_ordered_dependencies_first(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 12))
    names = [f"p{n}" for n in range(count)]
    rank = data.draw(st.permutations(range(count)))  # a hidden order that makes it acyclic
    entries = []
    for number, name in enumerate(names):
        lower = [other for other in names if rank[names.index(other)] < rank[number]]
        needs = data.draw(st.lists(st.sampled_from(lower), unique=True) if lower else st.just([]))
        entries.append(release(name, "1", 1, depends=[{"name": n} for n in needs]))
    manifest = parse(*entries)
    order = manifest.order
    assert sorted(order) == sorted(names)
    for name in names:
        for dependency in manifest.newest(name).depends:
            assert order.index(dependency.name) < order.index(name)


# -- the model's own limits, and URL details ------------------------------------------


def test_the_model_enforces_its_limits_without_the_decoder() -> None:
    """Manifests built in code (by a publisher) obey the same limits as decoded ones."""
    digest = b"\x01" * 20
    with pytest.raises(ManifestError, match="more than 256 dependencies"):
        Release("a", "1", 1, "a.torrent", digest,
                depends=tuple(Dependency(f"p{n}") for n in range(257)))  # fmt: skip
    with pytest.raises(ManifestError, match="more than 32 mirrors"):
        Release("a", "1", 1, "a.torrent", digest, mirrors=("https://m.example/",) * 33)
    one = Release("a", "1", 1, "a.torrent", digest)
    with pytest.raises(ManifestError, match="more than 50000 releases"):
        Manifest([one] * 50_001)
    with pytest.raises(ManifestError, match="more than 10000 packages"):
        Manifest(Release(f"p{n}", "1", 1, "a.torrent", digest) for n in range(10_001))


def test_unknown_packages_are_an_error_and_channels_are_optional() -> None:
    manifest = parse(release("a", "1", 1))
    with pytest.raises(ManifestError, match="no package 'b'"):
        manifest.releases_of("b")
    assert manifest.channel is None
    assert "channel" not in json.loads(manifest.to_bytes())
    assert Manifest.decode(manifest.to_bytes()).releases == manifest.releases
    with pytest.raises(ManifestError, match="channel must be a string"):
        Manifest.decode(encode(document(channel=5)))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (release("a", "1", 1, mirrors=[""]), "must be a URL of at most 2048"),
        (release("a", "1", 1, mirrors=["https://m.example/" + "x" * 2048]), "at most 2048"),
        (release("a", "1", 1, mirrors=["http://[::1/"]), "is not a valid URL"),
        (release("a", "1", 1, mirrors=["http://m.example:99999/"]), "is not a valid URL"),
        (release("a", "1", 1, torrent=""), "torrent must be a non-empty string"),
        (release("a", "1", 1, torrent="t/" * 1025), "torrent path longer than 2048"),
    ],
)
def test_malformed_urls_and_paths_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(entry)
