"""Bringing a folder of packages up to date from a release manifest.

``opendistro update MANIFEST --dir PACKAGES`` runs :func:`update_packages`. It
finds out what is installed, plans the steps (:func:`~opendistro.delta.manifest.plan_updates`,
dependencies first), and for each package to update loads its torrent (which
must carry the info-hash the manifest pins), rebuilds what it can from the
installed version when a delta pays (:func:`~opendistro.io.delta_update.update_from_previous`)
and lets the ordinary download verify every piece and fetch the rest.

The folder::

    PACKAGES/NAME                          each installed release, named as its torrent names it
    PACKAGES/.opendistro/installed.json    what update installed (package, version, info-hash,
                                           path, length)
    PACKAGES/.opendistro/incoming/         new releases while they download (gone after a run)
    PACKAGES/.opendistro/previous/         an old release moved aside while the new one of the
                                           same name takes its place (only during the switch)

What is installed: a package in ``installed.json`` whose path is there with the
recorded length is at the recorded version (if the manifest gives that version
another info-hash, at an unknown one). Any other package of the manifest is
looked for by its releases' torrents, newest first: one whose file or folder is
in PACKAGES with the right sizes and passes every piece hash check is the
installed version. A file or folder that has a release's name but fails the
check is that package at an unknown version: it is replaced, and still serves
as the old version for a delta.

Nothing installed changes until every new release is downloaded and verified:
the old ones are only read. Then each new release is moved into place (an old
one of the same name moved aside first), the state file is rewritten, and only
then are the old releases deleted. If a move fails, the moves done so far are
undone; if the process dies in between, the next run puts back what was moved
aside and finds out by content what is installed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import trio

from .. import http_get
from ..delta.manifest import MAX_MANIFEST_SIZE, Manifest, Release, UpdateStep, plan_updates
from ..errors import (
    DownloadError,
    IntegrityError,
    ManifestError,
    MirrorError,
    OpenDistroError,
    StorageError,
)
from ..integrity.pieces import PieceVerifier
from ..metainfo import MAX_TORRENT_SIZE, Metainfo
from ..storage.check import check_pieces
from ..storage.files import FileStorage
from ..swarm.sources import SourcePolicy
from .client import Client
from .delta_update import DeltaOutcome, FileCost, update_from_previous

__all__ = [
    "STATE_DIR",
    "InstalledPackage",
    "PackageResult",
    "UpdateReport",
    "choose_delta_files",
    "find_installed",
    "load_manifest",
    "update_packages",
]

STATE_DIR = ".opendistro"
_STATE_FILE = "installed.json"
_STATE_FORMAT = "opendistro-installed"
_MAX_STATE_SIZE = 16 << 20
_FETCH_TIMEOUT = 60.0


def _is_url(location: str) -> bool:
    return location.lower().startswith(("http://", "https://"))


async def _read(location: str, limit: int, what: str) -> bytes:
    """A local file or an http(s) document of at most ``limit`` bytes."""
    if _is_url(location):
        status, body = await http_get.get(
            location, error=MirrorError, what=what, max_body=limit, timeout=_FETCH_TIMEOUT
        )
        if status != 200:
            raise MirrorError(f"{what} {location} answered HTTP {status}")
        return body
    with open(location, "rb") as handle:
        return handle.read(limit + 1)  # one byte more, so that the parser sees it is too big


async def load_manifest(location: str) -> Manifest:
    """Read and parse the manifest at a path or an http(s) URL."""
    data = await _read(location, MAX_MANIFEST_SIZE, "manifest")
    try:
        return Manifest.decode(data)
    except ManifestError as exc:
        raise ManifestError(f"manifest {location}: {exc}") from exc


def torrent_location(manifest_location: str, release: Release) -> str:
    """Where ``release``'s .torrent is: its URL, or its path relative to the manifest's."""
    if _is_url(release.torrent):
        return release.torrent
    if _is_url(manifest_location):
        return urljoin(manifest_location, release.torrent)
    return os.fspath(Path(manifest_location).parent.joinpath(*release.torrent.split("/")))


class _Torrents:
    """The releases' torrents, loaded once each and checked against the manifest."""

    def __init__(self, manifest_location: str) -> None:
        self._location = manifest_location
        self._loaded: dict[tuple[str, str], Metainfo] = {}

    async def get(self, release: Release) -> Metainfo:
        key = (release.name, release.version)
        if key not in self._loaded:
            where = torrent_location(self._location, release)
            metainfo = Metainfo.from_bytes(await _read(where, MAX_TORRENT_SIZE, "torrent"))
            if not release.matches(metainfo.info_hash_v1, metainfo.info_hash_v2):
                raise IntegrityError(
                    f"{where} is not {release.label}: its info-hash is not the manifest's "
                    f"{release.info_hash.hex()}"
                )
            self._loaded[key] = metainfo
        return self._loaded[key]


# -- what is installed -----------------------------------------------------------------


@dataclass(frozen=True)
class InstalledPackage:
    """A package found in the folder."""

    name: str
    version: str | None
    """None: something of this package is there, but not a release the manifest knows."""
    path: str
    """Its file or folder, directly in the packages folder."""
    info_hash: bytes | None
    length: int
    detected: bool
    """Found by checking files against the releases' torrents rather than in the state file."""


def _stored_length(path: Path) -> int | None:
    """The bytes of a file, or of every file below a folder; None when there is nothing."""
    if path.is_symlink():
        return None
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return None


def _data_length(metainfo: Metainfo) -> int:
    return sum(entry.length for entry in metainfo.data_files())


def _read_state(folder: Path) -> dict[str, dict[str, Any]]:
    """The packages the state file records; an unreadable file counts as empty.

    It is our own file, and every entry is checked against the folder anyway:
    losing it only means finding the packages by their contents again.
    """
    path = folder / STATE_DIR / _STATE_FILE
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_STATE_SIZE + 1)
        state = json.loads(data.decode("utf-8")) if len(data) <= _MAX_STATE_SIZE else None
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        return {}
    packages = state.get("packages")
    if not isinstance(packages, dict):
        return {}
    return {
        name: entry
        for name, entry in packages.items()
        if isinstance(entry, dict)
        and isinstance(entry.get("version"), str | None)
        and isinstance(entry.get("path"), str)
        and isinstance(entry.get("length"), int)
        and isinstance(entry.get("info_hash"), str | None)
    }


def _write_state(folder: Path, packages: Mapping[str, dict[str, Any]]) -> None:
    path = folder / STATE_DIR / _STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    document = {"format": _STATE_FORMAT, "version": 1, "packages": dict(sorted(packages.items()))}
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=1)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _from_state(
    manifest: Manifest, folder: Path, name: str, entry: dict[str, Any]
) -> InstalledPackage | None:
    path = entry["path"]
    if not _is_plain_name(path) or _stored_length(folder / path) != entry["length"]:
        return None
    try:
        info_hash = bytes.fromhex(entry["info_hash"]) if entry["info_hash"] else None
    except ValueError:
        info_hash = None
    version = entry["version"]
    listed = manifest.release(name, version) if version is not None else None
    if listed is not None and listed.info_hash != info_hash:
        version = None  # the publisher lists that version with other bytes now
    return InstalledPackage(name, version, path, info_hash, entry["length"], detected=False)


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and (
        not name.startswith(".")
    )


def _verified(folder: Path, metainfo: Metainfo) -> bool:
    """Whether the torrent's data is in ``folder`` and passes every piece check (blocking)."""
    storage = FileStorage(
        download_dir=folder,
        name=metainfo.name,
        files=metainfo.files,
        piece_length=metainfo.piece_length,
        total_length=metainfo.total_length,
        is_multi_file=metainfo.is_multi_file,
        mode="seed",
    )
    try:
        for entry in metainfo.data_files():
            parts = (metainfo.name, *entry.path) if metainfo.is_multi_file else (metainfo.name,)
            candidate = folder.joinpath(*parts)
            if candidate.is_symlink() or not candidate.is_file():
                return False
            if candidate.stat().st_size != entry.length:
                return False
        verifier = PieceVerifier(metainfo)
        return len(check_pieces(storage, verifier.verify)) == metainfo.num_pieces
    finally:
        storage.close()


async def find_installed(
    manifest: Manifest, folder: Path, torrents: _Torrents
) -> tuple[dict[str, InstalledPackage], list[str]]:
    """What of ``manifest`` is installed in ``folder`` (see the module docstring).

    Returns the packages and notes on what could not be checked (a release
    whose torrent could not be loaded is skipped, not fatal).
    """
    notes: list[str] = []
    state = _read_state(folder)
    found: dict[str, InstalledPackage] = {}
    for name in manifest.packages:
        if name in state:
            known = _from_state(manifest, folder, name, state[name])
            if known is not None:
                found[name] = known
                continue
        unknown: InstalledPackage | None = None
        for release in manifest.releases_of(name):
            try:
                metainfo = await torrents.get(release)
            except (OpenDistroError, OSError) as exc:
                notes.append(f"{release.label}: not checked for ({exc})")
                continue
            length = _stored_length(folder / metainfo.name)
            if length is None or not _is_plain_name(metainfo.name):
                continue
            if await trio.to_thread.run_sync(_verified, folder, metainfo):
                found[name] = InstalledPackage(
                    name, release.version, metainfo.name, release.info_hash, length, detected=True
                )
                break
            if unknown is None:
                unknown = InstalledPackage(name, None, metainfo.name, None, length, detected=True)
        else:
            if unknown is not None:
                found[name] = unknown
    return found, notes


# -- the update --------------------------------------------------------------------------


@dataclass
class PackageResult:
    """How one package was brought up to date."""

    name: str
    old_version: str | None
    new_version: str
    action: str
    """``install``, ``upgrade`` or ``replace``, as in :class:`~.manifest.UpdateStep`."""
    method: str
    """``delta``: rebuilt (in part) from the installed version; ``full``: downloaded."""
    reason: str
    """Why not (only) a delta, in words."""
    path: Path
    full_bytes: int
    """The new release's size: what a full download transfers."""
    index_bytes: int = 0
    delta_bytes: int = 0
    """Content and segments fetched for the delta rebuild."""
    download_bytes: int = 0
    """What the ordinary download fetched from peers and mirrors afterwards."""
    bytes_reused: int = 0

    @property
    def bytes_transferred(self) -> int:
        return self.index_bytes + self.delta_bytes + self.download_bytes

    @property
    def bytes_saved(self) -> int:
        """Bytes not transferred thanks to the delta (negative when trying one cost more)."""
        return self.full_bytes - self.bytes_transferred

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "action": self.action,
            "method": self.method,
            "reason": self.reason,
            "path": str(self.path),
            "full_bytes": self.full_bytes,
            "bytes_transferred": self.bytes_transferred,
            "bytes_saved": self.bytes_saved,
            "index_bytes": self.index_bytes,
            "delta_bytes": self.delta_bytes,
            "download_bytes": self.download_bytes,
            "bytes_reused": self.bytes_reused,
        }


@dataclass
class UpdateReport:
    """What :func:`update_packages` did."""

    updated: list[PackageResult] = field(default_factory=list)
    """In the order applied: dependencies first."""
    current: dict[str, str] = field(default_factory=dict)
    """Packages already at their newest release: name to version."""
    notes: list[str] = field(default_factory=list)

    @property
    def full_bytes(self) -> int:
        return sum(result.full_bytes for result in self.updated)

    @property
    def bytes_transferred(self) -> int:
        return sum(result.bytes_transferred for result in self.updated)

    @property
    def bytes_saved(self) -> int:
        return self.full_bytes - self.bytes_transferred

    def to_json(self) -> dict[str, Any]:
        return {
            "updated": [result.to_json() for result in self.updated],
            "current": self.current,
            "notes": self.notes,
            "total": {
                "packages": len(self.updated),
                "full_bytes": self.full_bytes,
                "bytes_transferred": self.bytes_transferred,
                "bytes_saved": self.bytes_saved,
            },
        }


def choose_delta_files(index_bytes: int, costs: Sequence[FileCost]) -> list[int]:
    """The files to rebuild by delta: those where it pays, if it pays for them together.

    A file is worth it when its delta fetches fewer bytes than the file has;
    and those files together are, when what their deltas fetch plus the index
    is less than their size. (For a release of one file: when the delta plus
    the index costs less than the file.) The others download in full.
    """
    worth = [cost for cost in costs if cost.bytes_to_fetch < cost.length]
    fetched = sum(cost.bytes_to_fetch for cost in worth)
    if not worth or fetched + index_bytes >= sum(cost.length for cost in worth):
        return []
    return [cost.file for cost in worth]


@dataclass
class _Download:
    step: UpdateStep
    metainfo: Metainfo
    staged: Path
    result: PackageResult


def _recover(folder: Path) -> None:
    """Undo what a run that died while switching releases left behind."""
    state = folder / STATE_DIR
    aside = state / "previous"
    if aside.is_dir():
        for moved in sorted(aside.iterdir()):
            target = folder / moved.name
            if target.exists() or target.is_symlink():
                _remove(moved)  # the new release made it into place
            else:
                os.replace(moved, target)
        aside.rmdir()
    shutil.rmtree(state / "incoming", ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def update_packages(
    manifest: Manifest,
    manifest_location: str,
    folder: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] = (),
    peers: Sequence[tuple[str, int]] = (),
    sources: SourcePolicy = SourcePolicy.PREFER_P2P,
    client: Callable[[], Client] | None = None,
) -> UpdateReport:
    """Bring every package of ``manifest`` in ``folder`` to its newest release.

    ``manifest_location`` (the manifest's path or URL) anchors the releases'
    relative torrent paths. ``mirrors`` and ``peers`` are used for every
    package besides the release's own mirrors and its torrent's web seeds and
    trackers; ``client`` makes the :class:`Client` that downloads (default:
    one on 127.0.0.1). Raises :class:`~opendistro.errors.DownloadError` naming
    the package when any release cannot be had; nothing installed has changed
    then.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / STATE_DIR).mkdir(exist_ok=True)
    _recover(root)
    torrents = _Torrents(manifest_location)
    installed, notes = await find_installed(manifest, root, torrents)
    steps = plan_updates(manifest, {name: found.version for name, found in installed.items()})
    report = UpdateReport(notes=notes)
    report.current = {
        name: found.version
        for name, found in installed.items()
        if found.version is not None and found.version == manifest.newest(name).version
    }
    if not steps:
        return report
    incoming = root / STATE_DIR / "incoming"
    incoming.mkdir()
    downloads: list[_Download] = []
    step: UpdateStep | None = None
    try:
        async with (client or Client)() as downloader:
            for step in steps:
                metainfo = await torrents.get(step.release)
                _check_target(step, metainfo, installed, downloads)
                downloads.append(
                    await _fetch(
                        downloader, step, metainfo, installed.get(step.name), root, incoming,
                        mirrors=mirrors, peers=peers, sources=sources,
                    )
                )
    except (OpenDistroError, OSError) as exc:
        shutil.rmtree(incoming, ignore_errors=True)
        what = "update" if step is None else (
            f"{step.name} {step.installed_version or '(not installed)'} -> {step.release.version}"
        )
        raise DownloadError(
            f"{what}: {_describe(exc)}; nothing was changed, every installed package is as it was"
        ) from exc
    _switch(root, downloads)
    state = _read_state(root)
    for download in downloads:
        metainfo, release = download.metainfo, download.step.release
        state[release.name] = {
            "version": release.version,
            "path": metainfo.name,
            "info_hash": release.info_hash.hex(),
            "length": _data_length(metainfo),
        }
    _write_state(root, state)
    new_names = {download.metainfo.name for download in downloads}
    for download in downloads:
        old = installed.get(download.step.name)
        if old is not None and old.path not in new_names:
            _remove(root / old.path)
    shutil.rmtree(root / STATE_DIR / "previous", ignore_errors=True)
    shutil.rmtree(incoming, ignore_errors=True)
    report.updated = [download.result for download in downloads]
    return report


def _check_target(
    step: UpdateStep,
    metainfo: Metainfo,
    installed: Mapping[str, InstalledPackage],
    downloads: Collection[_Download],
) -> None:
    """The new release must not land on another package's files, nor on our own state."""
    name = metainfo.name
    if not _is_plain_name(name):
        raise StorageError(f"the torrent's name {name!r} cannot be a package in the folder")
    for other in downloads:
        if other.metainfo.name == name:
            raise StorageError(f"{other.step.release.label} is also called {name!r}")
    for found in installed.values():
        if found.name != step.name and found.path == name:
            raise StorageError(f"{name!r} in the folder is {found.name}, another package")


async def _fetch(
    downloader: Client,
    step: UpdateStep,
    metainfo: Metainfo,
    old: InstalledPackage | None,
    root: Path,
    incoming: Path,
    *,
    mirrors: Sequence[str],
    peers: Sequence[tuple[str, int]],
    sources: SourcePolicy,
) -> _Download:
    """Download (by delta where it pays) and verify one release into ``incoming``."""
    urls = list(dict.fromkeys([*step.release.mirrors, *mirrors, *metainfo.url_list]))
    if not urls and not peers and not metainfo.announce_tiers:
        raise DownloadError("no mirror, peer or tracker to fetch it from")
    result = PackageResult(
        name=step.name,
        old_version=step.installed_version,
        new_version=step.release.version,
        action=step.action,
        method="full",
        reason="",
        path=root / metainfo.name,
        full_bytes=_data_length(metainfo),
    )
    if old is None:
        result.reason = "not installed"
    elif not urls:
        result.reason = "no mirror to fetch a delta index from"
    else:
        outcome = await _try_delta(metainfo, incoming, root / old.path, urls, peers, result)
        if outcome is not None and outcome.files_rebuilt:
            result.method = "delta"
            whole = len(outcome.file_costs) - len(outcome.files_rebuilt)
            if whole:
                result.reason = f"{whole} of {len(outcome.file_costs)} files in full"
        elif outcome is not None:
            cost = sum(file.bytes_to_fetch for file in outcome.file_costs)
            result.reason = (
                f"a delta would fetch {cost} bytes plus the {outcome.index_bytes}-byte index, "
                f"the release is {result.full_bytes}"
            )
    torrent = await downloader.add_torrent(
        metainfo, incoming, peers=peers, sources=sources, mirrors=urls
    )
    await torrent.complete.wait()
    if torrent.error is not None:
        raise DownloadError(torrent.error)
    status = torrent.status()
    result.download_bytes = status.bytes_from_peers + status.bytes_from_mirrors
    assert torrent.final_path is not None
    return _Download(step, metainfo, torrent.final_path, result)


async def _try_delta(
    metainfo: Metainfo,
    incoming: Path,
    old: Path,
    urls: Sequence[str],
    peers: Sequence[tuple[str, int]],
    result: PackageResult,
) -> DeltaOutcome | None:
    """Rebuild what pays from the installed version; a failure only means a full download."""
    try:
        outcome = await update_from_previous(
            metainfo, incoming, [old], urls, peers=peers, choose=choose_delta_files
        )
    except (OpenDistroError, OSError) as exc:
        result.reason = f"no delta: {exc}"
        return None
    result.index_bytes = outcome.index_bytes
    result.delta_bytes = outcome.bytes_fetched
    result.bytes_reused = outcome.bytes_reused
    return outcome


def _switch(root: Path, downloads: Sequence[_Download]) -> None:
    """Move every new release into place; on failure put everything back as it was."""
    aside = root / STATE_DIR / "previous"
    aside.mkdir(exist_ok=True)
    done: list[tuple[_Download, Path | None]] = []
    try:
        for download in downloads:
            target = root / download.metainfo.name
            moved = None
            if target.exists() or target.is_symlink():
                moved = aside / target.name
                os.replace(target, moved)
            done.append((download, moved))
            os.replace(download.staged, target)
    except OSError as exc:
        for download, moved in reversed(done):
            target = root / download.metainfo.name
            if not download.staged.exists() and (target.exists() or target.is_symlink()):
                os.replace(target, download.staged)
            if moved is not None:
                os.replace(moved, target)
        raise StorageError(
            f"could not move the new releases into place ({exc}); nothing was changed"
        ) from exc
