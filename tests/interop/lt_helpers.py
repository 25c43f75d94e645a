"""Run ../shared/interop/lt_peer.py (a loopback-only libtorrent peer) from trio tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

LT_PEER = Path(__file__).resolve().parents[3] / "shared" / "interop" / "lt_peer.py"


def require_libtorrent() -> None:
    pytest.importorskip("libtorrent")
    if not LT_PEER.exists():
        pytest.skip(f"{LT_PEER} is missing")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return


async def lt_download(
    torrent: Path, save: Path, connect: list[int], *, timeout: float = 60
) -> dict[str, Any]:
    """Download with libtorrent from our peers; return lt_peer's JSON summary."""
    save.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(LT_PEER),
        "--torrent",
        str(torrent),
        "--save",
        str(save),
        "--port",
        str(free_port()),
        "--no-trackers",
        "--no-webseeds",
        "--timeout",
        str(timeout),
    ]
    for port in connect:
        command += ["--connect", f"127.0.0.1:{port}"]
    result = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, result.stderr.decode()[-2000:]
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["returncode"] = result.returncode
    summary["stderr"] = result.stderr.decode()[-2000:]
    return summary


@asynccontextmanager
async def lt_seeder(
    torrent: Path, save: Path, *, extra: tuple[str, ...] = ()
) -> AsyncIterator[int]:
    """A libtorrent seeder of ``save`` on 127.0.0.1; yields its port once it listens."""
    port = free_port()
    command = [
        sys.executable,
        str(LT_PEER),
        "--torrent",
        str(torrent),
        "--save",
        str(save),
        "--port",
        str(port),
        "--seed",
        "--no-trackers",
        "--no-webseeds",
        "--timeout",
        "120",
        *extra,
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_listening(port)
        yield port
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
