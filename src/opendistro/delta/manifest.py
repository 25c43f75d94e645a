"""A release manifest: which packages a channel offers, in which versions, needing what.

A publisher of many packages that depend on one another lists every release
in one JSON document (``spec/release-manifest.md``): its package name and
version, a ``sequence`` number that orders the releases of a package, the
release it updates, its dependencies, and where its .torrent is (with the
torrent's info-hash, so that the manifest pins exactly one release) and which
mirrors serve it. :func:`plan_updates` turns the manifest and what is
installed into the ordered steps that bring a folder up to date, dependencies
first.

Sans I/O: bytes in, objects out. Versions are labels, never parsed: their
order is the publisher's ``sequence``, which cannot be misread the way
"1.10" against "1.9", "2.0rc1" or "2024.1-2" can. Everything is checked when
the manifest is built, so a manifest that exists is consistent: no unknown or
cyclic dependency, no duplicate release, no ambiguous order.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ..errors import ManifestError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_MANIFEST_SIZE",
    "Dependency",
    "Manifest",
    "Release",
    "UpdateStep",
    "plan_updates",
]

FORMAT = "opendistro-release-manifest"
FORMAT_VERSION = 1
MAX_MANIFEST_SIZE = 8 << 20
MAX_RELEASES = 50_000
MAX_PACKAGES = 10_000
MAX_DEPENDENCIES = 256
MAX_MIRRORS = 32
MAX_URL_LENGTH = 2048
MAX_SEQUENCE = (1 << 63) - 1

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}", re.ASCII)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}", re.ASCII)
_PATH_COMPONENT = re.compile(r"[A-Za-z0-9._+~@=,-]{1,255}", re.ASCII)
_HEX = re.compile(r"[0-9A-Fa-f]+", re.ASCII)
_EXTENSION_PREFIX = "x-"

_TOP_KEYS = frozenset({"format", "version", "channel", "releases"})
_RELEASE_KEYS = frozenset(
    {"name", "version", "sequence", "previous", "depends", "torrent", "info_hash", "mirrors"}
)
_DEPENDENCY_KEYS = frozenset({"name", "min_version"})


@dataclass(frozen=True)
class Dependency:
    """A package a release needs, at ``min_version`` or later (by sequence) if given."""

    name: str
    min_version: str | None = None

    def __str__(self) -> str:
        return self.name if self.min_version is None else f"{self.name} >= {self.min_version}"


@dataclass(frozen=True)
class Release:
    """One release of one package, as the manifest lists it."""

    name: str
    version: str
    sequence: int
    torrent: str
    """A relative path (below the manifest's folder or URL) or an http(s) URL."""
    info_hash: bytes
    """20 bytes: the torrent's v1 info-hash; 32 bytes: its v2 info-hash."""
    previous: str | None = None
    """The version this release updates: the one its delta index is best for."""
    depends: tuple[Dependency, ...] = ()
    mirrors: tuple[str, ...] = ()
    """Mirror base URLs (BEP 19 web seeds) serving the data and its delta files."""

    def __post_init__(self) -> None:
        where = f"release {self.name!r} {self.version!r}"
        _check_name(self.name, "package name")
        _check_version(self.version, f"{where}: version")
        if self.previous is not None:
            _check_version(self.previous, f"{where}: previous")
            if self.previous == self.version:
                raise ManifestError(f"{where} names itself as its previous version")
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int) or not (
            0 <= self.sequence <= MAX_SEQUENCE
        ):
            raise ManifestError(f"{where}: sequence must be an integer in 0..2^63-1")
        _check_torrent_location(self.torrent, where)
        if not isinstance(self.info_hash, bytes) or len(self.info_hash) not in (20, 32):
            raise ManifestError(f"{where}: info_hash must be 20 (v1) or 32 (v2) bytes")
        if len(self.depends) > MAX_DEPENDENCIES:
            raise ManifestError(f"{where}: more than {MAX_DEPENDENCIES} dependencies")
        seen: set[str] = set()
        for dependency in self.depends:
            _check_name(dependency.name, f"{where}: dependency name")
            if dependency.min_version is not None:
                _check_version(dependency.min_version, f"{where}: min_version")
            if dependency.name in seen:
                raise ManifestError(f"{where} lists dependency {dependency.name!r} twice")
            seen.add(dependency.name)
        if len(self.mirrors) > MAX_MIRRORS:
            raise ManifestError(f"{where}: more than {MAX_MIRRORS} mirrors")
        for mirror in self.mirrors:
            _check_http_url(mirror, f"{where}: mirror")

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def matches(self, info_hash_v1: bytes | None, info_hash_v2: bytes | None) -> bool:
        """Whether a torrent with these info-hashes is the release the manifest pins."""
        return self.info_hash in (info_hash_v1, info_hash_v2)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "sequence": self.sequence,
            "torrent": self.torrent,
            "info_hash": self.info_hash.hex(),
        }
        if self.previous is not None:
            out["previous"] = self.previous
        if self.depends:
            out["depends"] = [
                {"name": d.name} | ({} if d.min_version is None else {"min_version": d.min_version})
                for d in self.depends
            ]
        if self.mirrors:
            out["mirrors"] = list(self.mirrors)
        return out


class Manifest:
    """Every release of a channel; consistent by construction (see the module docstring)."""

    def __init__(self, releases: Iterable[Release], *, channel: str | None = None) -> None:
        self.releases: tuple[Release, ...] = tuple(releases)
        self.channel = channel
        if channel is not None:
            _check_name(channel, "channel")
        if len(self.releases) > MAX_RELEASES:
            raise ManifestError(f"more than {MAX_RELEASES} releases")
        by_package: dict[str, list[Release]] = {}
        for release in self.releases:
            by_package.setdefault(release.name, []).append(release)
        if len(by_package) > MAX_PACKAGES:
            raise ManifestError(f"more than {MAX_PACKAGES} packages")
        self._releases: dict[str, tuple[Release, ...]] = {}
        self._by_version: dict[tuple[str, str], Release] = {}
        for name, listed in by_package.items():
            ordered = tuple(sorted(listed, key=lambda release: release.sequence, reverse=True))
            for newer, older in itertools.pairwise(ordered):
                if newer.sequence == older.sequence:
                    raise ManifestError(
                        f"{name}: versions {older.version!r} and {newer.version!r} "
                        f"share sequence {newer.sequence}"
                    )
            for release in ordered:
                if (name, release.version) in self._by_version:
                    raise ManifestError(f"{name} {release.version} is listed twice")
                self._by_version[name, release.version] = release
            self._releases[name] = ordered
        for release in self.releases:
            self._check_links(release)
        self.order: tuple[str, ...] = self._dependency_order()
        """Package names, dependencies before what needs them, else in manifest order."""

    # -- queries -------------------------------------------------------------------

    @property
    def packages(self) -> tuple[str, ...]:
        """Package names in the order they first appear."""
        return tuple(self._releases)

    def releases_of(self, name: str) -> tuple[Release, ...]:
        """The releases of ``name``, newest (highest sequence) first."""
        try:
            return self._releases[name]
        except KeyError:
            raise ManifestError(f"no package {name!r} in the manifest") from None

    def newest(self, name: str) -> Release:
        return self.releases_of(name)[0]

    def release(self, name: str, version: str) -> Release | None:
        return self._by_version.get((name, version))

    # -- encoding ------------------------------------------------------------------

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse a manifest document (UTF-8 JSON), refusing anything off the format."""
        if len(data) > MAX_MANIFEST_SIZE:
            raise ManifestError(f"a manifest is at most {MAX_MANIFEST_SIZE} bytes")
        if data.startswith(b"\xef\xbb\xbf"):
            raise ManifestError("a manifest is UTF-8 without a byte order mark")
        try:
            text = data.decode("utf-8")
            top = json.loads(text, object_pairs_hook=_no_duplicates,
                             parse_constant=_no_constants)
        except UnicodeDecodeError as exc:
            raise ManifestError(f"a manifest is UTF-8: {exc}") from exc
        except RecursionError:
            raise ManifestError("a manifest nests too deeply") from None
        except ValueError as exc:  # JSONDecodeError, and integers too long to read
            raise ManifestError(f"not valid JSON: {exc}") from exc
        fields = _object(top, "the manifest", _TOP_KEYS, required=("format", "version"))
        if fields["format"] != FORMAT:
            raise ManifestError(f"format is not {FORMAT!r}")
        if _integer(fields["version"], "version") != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest version {fields['version']!r}")
        channel = fields.get("channel")
        if channel is not None and not isinstance(channel, str):
            raise ManifestError("channel must be a string")
        releases = fields.get("releases")
        if not isinstance(releases, list):
            raise ManifestError("releases must be a list")
        if len(releases) > MAX_RELEASES:
            raise ManifestError(f"more than {MAX_RELEASES} releases")
        return cls(
            (_release(entry, number) for number, entry in enumerate(releases)), channel=channel
        )

    def to_bytes(self) -> bytes:
        """The manifest as UTF-8 JSON (stable: keys sorted, releases in their order)."""
        top: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION}
        if self.channel is not None:
            top["channel"] = self.channel
        top["releases"] = [release.to_json() for release in self.releases]
        return (json.dumps(top, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()

    # -- consistency ----------------------------------------------------------------

    def _check_links(self, release: Release) -> None:
        if release.previous is not None:
            previous = self.release(release.name, release.previous)
            # A previous version no longer listed is fine: channels prune old releases.
            if previous is not None and previous.sequence >= release.sequence:
                raise ManifestError(
                    f"{release.label} updates {release.previous}, which does not come before it"
                )
        for dependency in release.depends:
            if dependency.name == release.name:
                raise ManifestError(f"{release.label} depends on itself")
            if dependency.name not in self._releases:
                raise ManifestError(
                    f"{release.label} depends on {dependency.name!r}, which is not in the manifest"
                )
            if dependency.min_version is not None and (
                self.release(dependency.name, dependency.min_version) is None
            ):
                raise ManifestError(
                    f"{release.label} needs {dependency}, a version the manifest does not list"
                )

    def _dependency_order(self) -> tuple[str, ...]:
        """Topological order of the newest releases' dependencies (Kahn), stable."""
        position = {name: number for number, name in enumerate(self._releases)}
        waiting_on = {name: len(self.newest(name).depends) for name in self._releases}
        needed_by: dict[str, list[str]] = {name: [] for name in self._releases}
        for name in self._releases:
            for dependency in self.newest(name).depends:
                needed_by[dependency.name].append(name)
        ready = [(position[name], name) for name, count in waiting_on.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for dependent in needed_by[name]:
                waiting_on[dependent] -= 1
                if waiting_on[dependent] == 0:
                    heapq.heappush(ready, (position[dependent], dependent))
        if len(order) < len(self._releases):
            raise ManifestError("dependency cycle: " + " -> ".join(self._cycle(set(order))))
        return tuple(order)

    def _cycle(self, done: set[str]) -> list[str]:
        """One cycle among the packages Kahn's algorithm could not order.

        Each of them still waits on a dependency that is also left over, so
        following such dependencies must come back to a package already seen.
        """
        name = next(name for name in self._releases if name not in done)
        path: list[str] = []
        seen: dict[str, int] = {}
        while name not in seen:
            seen[name] = len(path)
            path.append(name)
            name = next(d.name for d in self.newest(name).depends if d.name not in done)
        return [*path[seen[name]:], name]


@dataclass(frozen=True)
class UpdateStep:
    """Bring package ``name`` to ``release`` (its newest), from what is installed."""

    name: str
    release: Release
    installed_version: str | None
    """The version there now: None when nothing is, or its version is unknown."""
    installed_release: Release | None
    """The listed release that is installed, when the manifest still lists it."""
    action: Literal["install", "upgrade", "replace"]
    """``install``: not there; ``upgrade``: a listed, older release is there;
    ``replace``: something is there whose version the manifest does not know."""

    @property
    def from_previous(self) -> bool:
        """Whether the installed version is the one the new release says it updates."""
        return self.installed_version is not None and (
            self.installed_version == self.release.previous
        )


def plan_updates(manifest: Manifest, installed: Mapping[str, str | None]) -> list[UpdateStep]:
    """The steps that bring every package of ``manifest`` to its newest release.

    ``installed`` maps package names to the version there, or to None when a
    package is there but its version is unknown. Packages already at their
    newest release get no step; names the manifest does not list are left
    alone. Steps come in dependency order: a package after everything its new
    release depends on (ties in the order the manifest lists packages), so
    that applying them one by one never leaves a dependency missing.
    """
    steps = []
    for name in manifest.order:
        newest = manifest.newest(name)
        if name not in installed:
            steps.append(UpdateStep(name, newest, None, None, "install"))
            continue
        version = installed[name]
        if version == newest.version:
            continue
        current = manifest.release(name, version) if version is not None else None
        if current is None:
            steps.append(UpdateStep(name, newest, version, None, "replace"))
        else:
            steps.append(UpdateStep(name, newest, version, current, "upgrade"))
    return steps


# -- parsing helpers -----------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ManifestError(f"{name} is not a JSON number")


def _object(
    value: Any, where: str, known: frozenset[str], *, required: Sequence[str]
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be a JSON object")
    for key in value:
        if key not in known and not key.startswith(_EXTENSION_PREFIX):
            raise ManifestError(f"{where}: unknown key {key!r} (extensions start with 'x-')")
    for key in required:
        if key not in value:
            raise ManifestError(f"{where}: {key!r} is missing")
    return value


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{where} must be an integer")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where} must be a string")
    return value


def _release(entry: Any, number: int) -> Release:
    where = f"releases[{number}]"
    fields = _object(
        entry, where, _RELEASE_KEYS,
        required=("name", "version", "sequence", "torrent", "info_hash"),
    )
    info_hash = _string(fields["info_hash"], f"{where}.info_hash")
    if len(info_hash) not in (40, 64) or not _HEX.fullmatch(info_hash):
        raise ManifestError(f"{where}.info_hash must be 40 (v1) or 64 (v2) hex digits")
    depends = fields.get("depends", [])
    if not isinstance(depends, list):
        raise ManifestError(f"{where}.depends must be a list")
    if len(depends) > MAX_DEPENDENCIES:
        raise ManifestError(f"{where}: more than {MAX_DEPENDENCIES} dependencies")
    mirrors = fields.get("mirrors", [])
    if not isinstance(mirrors, list):
        raise ManifestError(f"{where}.mirrors must be a list")
    if len(mirrors) > MAX_MIRRORS:
        raise ManifestError(f"{where}: more than {MAX_MIRRORS} mirrors")
    previous = fields.get("previous")
    return Release(
        name=_string(fields["name"], f"{where}.name"),
        version=_string(fields["version"], f"{where}.version"),
        sequence=_integer(fields["sequence"], f"{where}.sequence"),
        torrent=_string(fields["torrent"], f"{where}.torrent"),
        info_hash=bytes.fromhex(info_hash),
        previous=None if previous is None else _string(previous, f"{where}.previous"),
        depends=tuple(
            _dependency(item, f"{where}.depends[{n}]") for n, item in enumerate(depends)
        ),
        mirrors=tuple(_string(item, f"{where}.mirrors[{n}]") for n, item in enumerate(mirrors)),
    )


def _dependency(entry: Any, where: str) -> Dependency:
    fields = _object(entry, where, _DEPENDENCY_KEYS, required=("name",))
    minimum = fields.get("min_version")
    return Dependency(
        _string(fields["name"], f"{where}.name"),
        None if minimum is None else _string(minimum, f"{where}.min_version"),
    )


def _check_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ManifestError(
            f"{what} {value!r} must be 1-128 of A-Z a-z 0-9 . _ + -, starting with a letter "
            "or digit"
        )


def _check_version(value: Any, what: str) -> None:
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise ManifestError(
            f"{what} {value!r} must be 1-64 of A-Z a-z 0-9 . _ + ~ -, starting with a letter "
            "or digit"
        )


def _check_http_url(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        raise ManifestError(f"{what} must be a URL of at most {MAX_URL_LENGTH} characters")
    if any(ord(character) <= 0x20 or ord(character) == 0x7F for character in value):
        raise ManifestError(f"{what} {value!r} contains spaces or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError as exc:
        raise ManifestError(f"{what} {value!r} is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ManifestError(f"{what} {value!r} is not an http(s) URL with a host")


def _check_torrent_location(value: Any, where: str) -> None:
    """An http(s) URL, or a relative path that stays below the manifest's location."""
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: torrent must be a non-empty string")
    if value.lower().startswith(("http://", "https://")):
        _check_http_url(value, f"{where}: torrent")
        return
    if len(value) > MAX_URL_LENGTH:
        raise ManifestError(f"{where}: torrent path longer than {MAX_URL_LENGTH} characters")
    for component in value.split("/"):
        if component in (".", "..") or not _PATH_COMPONENT.fullmatch(component):
            raise ManifestError(
                f"{where}: torrent {value!r} is neither an http(s) URL nor a relative path "
                "of plain names (A-Z a-z 0-9 . _ + ~ @ = , - separated by /, no '..')"
            )
