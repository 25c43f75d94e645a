"""Start real third-party BitTorrent clients on 127.0.0.1 from trio tests, and stop them.

Each runner writes the client's configuration into a temporary folder so that the
client touches nothing outside it, binds to loopback only, and has DHT, LSD, PeX
and port mapping switched off: the only peers a client can meet are the ones the
test hands it (a tracker on 127.0.0.1, or a dial). Every client runs in its own
process group, and the group is killed when the ``async with`` block ends, even
on failure or cancellation, so no test leaves a client behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

LOOPBACK = "127.0.0.1"


def require(binary: str) -> str:
    """The path of ``binary``, or skip the test when the client is not installed."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def same_bytes(path: Path, expected: bytes) -> bool:
    """True once ``path`` holds exactly ``expected`` (clients write in place, out of order)."""
    try:
        return path.stat().st_size == len(expected) and path.read_bytes() == expected
    except OSError:
        return False


@dataclass
class Running:
    """A started client: its process, its BitTorrent listen port and its log file."""

    process: trio.Process
    port: int
    log: Path

    def tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""


@asynccontextmanager
async def process_group(
    command: list[str], log: Path, port: int, *, home: Path | None = None
) -> AsyncIterator[Running]:
    """Run ``command`` in a new session, output to ``log``; kill the whole group afterwards.

    ``home`` replaces HOME, for clients that would otherwise read or write dot files there.
    """
    env = {**os.environ, "HOME": str(home)} if home is not None else None
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Running(process, port, log)
    finally:
        with trio.CancelScope(shield=True):
            await _stop_group(process)


async def _stop_group(process: trio.Process) -> None:
    """SIGTERM the group, give it five seconds, then SIGKILL whatever is left of it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with trio.move_on_after(5):
        await process.wait()
    # also reaches children that outlive the leader
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


# ---------------------------------------------------------------- aria2


def aria2_command(
    torrent: Path, directory: Path, port: int, *, seed: bool, rc4_only: bool = False
) -> list[str]:
    command = [
        require("aria2c"),
        "--no-conf=true",
        f"--dir={directory}",
        "--interface=127.0.0.1",
        "--disable-ipv6=true",
        f"--listen-port={port}",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--bt-tracker-interval=1",
    ]
    if rc4_only:
        command += ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"]
    if seed:
        command += ["--check-integrity=true", "--seed-ratio=0.0", "--seed-time=10"]
    else:
        command += ["--seed-time=0"]
    return [*command, str(torrent)]


@asynccontextmanager
async def aria2(
    torrent: Path, directory: Path, *, seed: bool, rc4_only: bool = False
) -> AsyncIterator[Running]:
    """aria2c on ``directory``; it finds peers only through the torrent's tracker.

    ``rc4_only`` makes it refuse any connection that is not MSE with RC4.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = aria2_command(torrent, directory, port, seed=seed, rc4_only=rc4_only)
    home = directory.parent / "aria2-home"
    home.mkdir(exist_ok=True)
    async with process_group(command, home / "aria2.log", port, home=home) as running:
        yield running


# ---------------------------------------------------------------- rtorrent


@asynccontextmanager
async def rtorrent(
    torrent: Path, directory: Path, *, seed: bool, rc4_only: bool = False
) -> AsyncIterator[Running]:
    """rtorrent with data in ``directory``; it announces to the torrent's tracker.

    ``rc4_only`` makes it refuse any connection that is not MSE with RC4.
    """
    binary = require("rtorrent")
    home = directory.parent / "rtorrent-home"
    session = home / "session"
    session.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = home / "rt.rc"
    lines = [
        f"directory.default.set = {directory}",
        f"session.path.set = {session}",
        f"network.port_range.set = {port}-{port}",
        "network.port_random.set = no",
        "network.bind_address.set = 127.0.0.1",
        "dht.mode.set = disable",
        "protocol.pex.set = no",
        "trackers.use_udp.set = no",
        "system.daemon.set = true",
    ]
    if rc4_only:
        lines.append("protocol.encryption.set = allow_incoming,try_outgoing,require,require_RC4")
    if not seed:
        lines.append(
            'method.set_key = event.download.finished,quit_when_done,"system.shutdown.normal="'
        )
    config.write_text("\n".join(lines) + "\n")
    command = [binary, "-n", "-o", f"import={config}", str(torrent)]
    async with process_group(command, home / "rtorrent.log", port, home=home) as running:
        yield running


# ---------------------------------------------------------------- Transmission


@asynccontextmanager
async def transmission(torrent: Path, directory: Path, *, seed: bool) -> AsyncIterator[Running]:
    """transmission-cli on ``directory``. It never dials loopback peers: dial it instead."""
    binary = require("transmission-cli")
    home = directory.parent / "transmission-home"
    home.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings: dict[str, Any] = {
        "bind-address-ipv4": LOOPBACK,
        "bind-address-ipv6": "::1",
        "dht-enabled": False,
        "lpd-enabled": False,
        "pex-enabled": False,
        "utp-enabled": False,
        "port-forwarding-enabled": False,
        "peer-port": port,
        "peer-port-random-on-start": False,
        "rpc-enabled": False,
        "download-dir": str(directory),
        "incomplete-dir-enabled": False,
        "rename-partial-files": True,
        "speed-limit-up-enabled": False,
        "speed-limit-down-enabled": False,
        "message-level": 2,
        # downloading: stop (and exit) once complete; seeding: never stop
        "ratio-limit-enabled": not seed,
        "ratio-limit": 0,
        "idle-seeding-limit-enabled": False,
    }
    (home / "settings.json").write_text(json.dumps(settings, indent=1))
    command = [binary, "-g", str(home), "-w", str(directory), "-M", "-D", "-U", "-p", str(port)]
    if seed:
        command.append("-v")
    command.append(str(torrent))
    async with process_group(command, home / "transmission.log", port, home=home) as running:
        yield running


# ---------------------------------------------------------------- qBittorrent


@dataclass
class QBittorrent:
    """A running qbittorrent-nox and a small client for its Web API on 127.0.0.1."""

    running: Running
    web_port: int

    @property
    def port(self) -> int:
        return self.running.port

    def _url(self, endpoint: str) -> str:
        return f"http://{LOOPBACK}:{self.web_port}/api/v2/{endpoint}"

    def _post_sync(self, endpoint: str, body: bytes, content_type: str) -> bytes:
        request = urllib.request.Request(
            self._url(endpoint), data=body, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            data: bytes = response.read()
            return data

    async def post_form(self, endpoint: str, fields: dict[str, str]) -> bytes:
        body = urllib.parse.urlencode(fields).encode()
        content_type = "application/x-www-form-urlencoded"
        return await trio.to_thread.run_sync(self._post_sync, endpoint, body, content_type)

    async def get(self, endpoint: str, **params: str) -> bytes:
        url = self._url(endpoint) + ("?" + urllib.parse.urlencode(params) if params else "")

        def fetch() -> bytes:
            with urllib.request.urlopen(url, timeout=10) as response:
                data: bytes = response.read()
                return data

        return await trio.to_thread.run_sync(fetch)

    async def get_json(self, endpoint: str, **params: str) -> Any:
        return json.loads(await self.get(endpoint, **params))

    async def add(self, torrent: Path, save_path: Path) -> None:
        """Add ``torrent`` (multipart upload, as the Web UI does), saving into ``save_path``."""
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        fields = {"savepath": str(save_path), "paused": "false", "autoTMM": "false"}
        for name, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="torrents"; '
            f'filename="{torrent.name}"\r\nContent-Type: application/x-bittorrent\r\n\r\n'.encode()
            + torrent.read_bytes()
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        answer = await trio.to_thread.run_sync(
            self._post_sync,
            "torrents/add",
            b"".join(parts),
            f"multipart/form-data; boundary={boundary}",
        )
        assert answer.strip() == b"Ok.", answer

    async def info(self, info_hash: str) -> dict[str, Any]:
        """The torrent's entry from ``/torrents/info`` ({} until qBittorrent has it)."""
        entries = await self.get_json("torrents/info", hashes=info_hash)
        return dict(entries[0]) if entries else {}

    async def add_peer(self, info_hash: str, port: int) -> None:
        await self.post_form(
            "torrents/addPeers", {"hashes": info_hash, "peers": f"{LOOPBACK}:{port}"}
        )

    async def wait_ready(self, seconds: float = 30) -> None:
        with trio.fail_after(seconds):
            while True:
                try:
                    await self.get("app/webapiVersion")
                    return
                except OSError as exc:
                    if self.running.process.returncode is not None:
                        message = "qbittorrent-nox exited:\n" + self.running.tail()
                        raise RuntimeError(message) from exc
                    await trio.sleep(0.2)


def qbittorrent_config(port: int, web_port: int, save_path: Path, *, rc4_only: bool) -> str:
    return "\n".join(
        [
            "[LegalNotice]",
            "Accepted=true",
            "",
            "[BitTorrent]",
            "Session\\Interface=lo",
            "Session\\InterfaceName=lo",
            "Session\\InterfaceAddress=127.0.0.1",
            f"Session\\Port={port}",
            "Session\\DHTEnabled=false",
            "Session\\LSDEnabled=false",
            "Session\\PeXEnabled=false",
            "Session\\QueueingSystemEnabled=false",
            # 0 prefers encryption, 1 requires it (RC4 only)
            f"Session\\Encryption={1 if rc4_only else 0}",
            "Session\\AnonymousModeEnabled=false",
            f"Session\\DefaultSavePath={save_path}",
            "",
            "[Preferences]",
            "Connection\\UPnP=false",
            f"Connection\\PortRangeMin={port}",
            "Downloads\\PreAllocation=false",
            "WebUI\\Enabled=true",
            "WebUI\\Address=127.0.0.1",
            f"WebUI\\Port={web_port}",
            "WebUI\\LocalHostAuth=false",
            "WebUI\\CSRFProtection=false",
            "WebUI\\HostHeaderValidation=false",
            "WebUI\\UseUPnP=false",
            "",
        ]
    )


@asynccontextmanager
async def qbittorrent(directory: Path, *, rc4_only: bool = False) -> AsyncIterator[QBittorrent]:
    """qbittorrent-nox with a fresh profile; add torrents through the returned Web API client.

    ``rc4_only`` makes it refuse any connection that is not MSE with RC4.
    """
    binary = require("qbittorrent-nox")
    profile = directory.parent / "qbittorrent-profile"
    config_dir = profile / "qBittorrent" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    port, web_port = free_port(), free_port()
    (config_dir / "qBittorrent.conf").write_text(
        qbittorrent_config(port, web_port, directory, rc4_only=rc4_only)
    )
    command = [binary, f"--profile={profile}", f"--webui-port={web_port}"]
    async with process_group(command, profile / "qbittorrent.log", port, home=profile) as running:
        client = QBittorrent(running, web_port)
        await client.wait_ready()
        yield client
