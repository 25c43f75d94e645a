"""An update from a previous version over a real mirror on 127.0.0.1, for the delta tests."""

from __future__ import annotations

from pathlib import Path

import trio

from opendistro.io.client import Client
from opendistro.io.delta_update import DeltaOutcome, update_from_previous
from opendistro.metainfo import Metainfo
from opendistro.swarm.sources import SourcePolicy

from .mirror_server import MirrorServer

LOOPBACK = "127.0.0.1"


async def update_over_mirror(
    root: Path, metainfo: Metainfo, previous: list[Path], target: Path
) -> tuple[DeltaOutcome, int]:
    """Rebuild from ``previous`` with a mirror of ``root``, then let a client finish from the
    mirror alone; what the rebuild reports and the bytes the client still took from the mirror."""
    async with trio.open_nursery() as nursery:
        mirror = MirrorServer(root)
        await nursery.start(mirror.serve)
        outcome = await update_from_previous(metainfo, target, previous, [mirror.url])
        async with Client(host=LOOPBACK) as client:
            torrent = await client.add_torrent(
                metainfo, target, sources=SourcePolicy.MIRRORS_ONLY, mirrors=[mirror.url]
            )
            with trio.fail_after(60):
                await torrent.complete.wait()
            status = torrent.status()
        nursery.cancel_scope.cancel()
    assert torrent.error is None
    return outcome, status.bytes_from_mirrors
