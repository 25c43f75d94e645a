"""The CLI's limit options: applied to the running client, refused when not positive."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.create import create_torrent
from opendistro.wire import messages as m

from .adversaries import RawPeer
from .chaos_tools import free_port


def opendistro(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opendistro.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


async def test_seed_max_peers_accepts_only_that_many_connections(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(100_000,))
    metainfo = create_torrent(release, version="v1", piece_length=32768)
    torrent_file = tmp_path / "t.torrent"
    torrent_file.write_bytes(metainfo.to_bytes())
    port = free_port()
    command = [
        sys.executable, "-m", "opendistro.cli", "seed", str(torrent_file),
        "--data", str(release), "--host", "127.0.0.1", "--port", str(port),
        "--max-peers", "1", "--no-credit",
    ]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            lambda task_status: trio.run_process(
                command, stdout=subprocess.PIPE, check=False, task_status=task_status
            )
        )
        assert process.stdout is not None
        with trio.fail_after(30):
            assert b"seeding" in await process.stdout.receive_some(4096)
            first = await RawPeer.dial(port, metainfo, peer_id=b"-XX0001-firstfirst01")
            await first.receive_until(
                lambda: any(isinstance(e, m.HaveAll | m.BitfieldMessage) for e in first.events)
            )
            second = await RawPeer.dial(port, metainfo, peer_id=b"-XX0001-secondsecond")
            await second.drain()  # closed: the torrent has its one peer
            assert not any(isinstance(e, m.HaveAll | m.BitfieldMessage) for e in second.events)
            assert await first.send_raw(bytes(4))  # a keep-alive: the first is still served
        process.terminate()


@pytest.mark.parametrize(
    "args",
    [
        ["get", "x.torrent", "--max-peers", "0"],
        ["seed", "x.torrent", "--data", ".", "--max-connections-per-ip", "-1"],
        ["get", "x.torrent", "--max-peer-requests", "many"],
        ["tracker", "--max-announces-per-ip", "0"],
    ],
)
def test_limits_must_be_positive_whole_numbers(args: list[str]) -> None:
    result = opendistro(*args)
    assert result.returncode == 2
    assert "expected a positive whole number" in result.stderr
