"""Downloading what a Metalink document describes, through the same engine as a torrent.

:func:`~opendistro.mirrors.metalink_release.plan_downloads` says which
torrents to fetch from which mirrors; this drives each with its own
:class:`~opendistro.io.client.Client`, in a staging folder under the output's
``.opendistro`` folder. Only when a download is complete, every piece checked,
and its files match the Metalink's whole-file hashes and (with a keyring)
OpenPGP signatures, are the files moved to their final paths. A failed or
interrupted run leaves its verified pieces in staging, and the next run with
the same Metalink resumes from them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import http_get
from ..checksums.openpgp import Keyring, verify_detached_file
from ..errors import DownloadError, MetalinkError, SignatureError
from ..metainfo import MAX_TORRENT_SIZE, Metainfo
from ..mirrors.metalink import Metalink
from ..mirrors.metalink_release import (
    MetalinkDownload,
    check_whole_file,
    plan_downloads,
    torrent_metaurl,
)
from ..paths import validate_path
from ..swarm.sources import SourcePolicy
from .client import Client
from .torrent import Torrent

__all__ = ["MetalinkResult", "download_metalink", "fetch_metaurl_torrent"]

METAURL_TIMEOUT = 30.0


@dataclass
class MetalinkResult:
    """Where the files went, where their bytes came from, and what vouched for them."""

    paths: list[Path] = field(default_factory=list)
    bytes_from_peers: int = 0
    bytes_from_mirrors: int = 0
    whole_file_hashes: dict[str, str] = field(default_factory=dict)
    """Final path to the whole-file hash it matched (``sha-256``, ...)."""
    signers: dict[str, str] = field(default_factory=dict)
    """Final path to the fingerprint of the OpenPGP key whose signature it carries."""


async def fetch_metaurl_torrent(metalink: Metalink, *, timeout: float = METAURL_TIMEOUT) -> (
    Metainfo | None
):
    """The .torrent the document's ``torrent`` metaurl points at, or None without one."""
    url = torrent_metaurl(metalink)
    if url is None:
        return None
    status, body = await http_get.get(
        url, error=MetalinkError, what="metaurl", max_body=MAX_TORRENT_SIZE, timeout=timeout
    )
    if status != 200:
        raise MetalinkError(f"metaurl {url} answered HTTP {status}")
    return Metainfo.from_bytes(body)


async def download_metalink(
    make_client: Callable[[], Client],
    metalink: Metalink,
    output: Path,
    *,
    torrent: Metainfo | None = None,
    sources: SourcePolicy = SourcePolicy.PREFER_P2P,
    peers: Sequence[tuple[str, int]] = (),
    keyring: Keyring | None = None,
    watch: Callable[[Torrent], Awaitable[None]] | None = None,
) -> MetalinkResult:
    """Download every file of ``metalink`` into ``output``; see the module docstring.

    ``torrent`` is what its metaurl pointed at (:func:`fetch_metaurl_torrent`);
    with it the swarm joins in under ``sources``; without it each file comes
    from its mirrors alone, checked against the Metalink's piece hashes.
    ``make_client`` makes a client (not yet entered) per download, so each
    one's files are closed before they are checked and moved. ``watch`` is
    awaited until a download completes (progress display).
    """
    result = MetalinkResult()
    for download in plan_downloads(metalink, torrent):
        staging = output / ".opendistro" / "metalink" / download.metainfo.wire_info_hash.hex()
        target = staging.joinpath(*download.subdirectory)
        async with make_client() as client:
            handle = await client.add_torrent(
                download.metainfo,
                target,
                peers=peers if torrent is not None else (),
                sources=sources if torrent is not None else SourcePolicy.MIRRORS_ONLY,
                mirrors=download.mirrors,
            )
            if watch is not None:
                await watch(handle)
            await handle.complete.wait()
            status = handle.status()
        if handle.error is not None:
            raise DownloadError(handle.error)
        result.bytes_from_peers += status.bytes_from_peers
        result.bytes_from_mirrors += status.bytes_from_mirrors
        _check_and_move(download, staging, output, keyring, result)
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _check_and_move(
    download: MetalinkDownload,
    staging: Path,
    output: Path,
    keyring: Keyring | None,
    result: MetalinkResult,
) -> None:
    """Whole-file hashes and signatures first, for every file; then move them all."""
    moves: list[tuple[Path, Path]] = []
    for item, _ in download.files:
        relative = Path(*validate_path(list(item.path)))
        staged, final = staging / relative, output / relative
        label = os.fspath(final)
        algorithm = check_whole_file(item, staged)
        if algorithm is not None:
            result.whole_file_hashes[label] = algorithm
        if keyring is not None:
            if item.signature is None:
                raise SignatureError(f"missing: the Metalink has no signature of {item.name!r}")
            verified = verify_detached_file(staged, item.signature.text.encode(), keyring)
            result.signers[label] = verified.fingerprint
        moves.append((staged, final))
    for staged, final in moves:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        result.paths.append(final)
