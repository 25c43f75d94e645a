"""Fault injection on 127.0.0.1 for crash and chaos tests (and benchmarks/chaos.py).

Each tool plays the hostile part of a real network around our real programs:
``opendistro`` subprocesses killed with SIGKILL and started again, a TCP proxy
that cuts connections in the middle of a piece or flips bits in piece payloads,
a peer that answers with garbage, a tracker that goes away for a while. They
also keep the books the tests judge by: how many faults of each kind were
injected, which pieces each leecher had verified on disk when it was killed,
and which pieces it said it had (its first Bitfield) when it came back.

The proxies parse the BitTorrent stream, so leechers in front of them use
``--encryption plaintext``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from opendistro.bitfield import Bitfield
from opendistro.integrity.pieces import PieceVerifier
from opendistro.metainfo import Metainfo
from opendistro.wire import messages as m
from opendistro.wire.connection import PeerConnection
from opendistro.wire.extensions.handshake import ExtensionHandshake

from .wire_framing import WireFramer, is_piece

LOOPBACK = "127.0.0.1"
_NETWORK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


# -- processes -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now (and whose UDP twin is free too)."""
    while True:
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((LOOPBACK, port))
            except OSError:
                continue
        return port


def opendistro_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "opendistro.cli", *args]


async def wait_listening(port: int, timeout: float = 30) -> None:
    """Until something accepts TCP connections on ``port``."""
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream(LOOPBACK, port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


class Program:
    """One ``opendistro`` subprocess that can be SIGKILLed and started again, as often as wanted.

    Its stdout and stderr go to files under ``logs`` (one pair per run), so a
    pipe nobody reads can never block it.
    """

    def __init__(self, name: str, args: Sequence[str], logs: Path) -> None:
        self.name = name
        self.args = list(args)
        self.logs = logs
        self.runs = 0
        self.kills = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        with (
            open(self.stdout_path, "wb") as stdout,
            open(self.logs / f"{self.name}.{self.runs}.err", "wb") as stderr,
        ):
            self.process = subprocess.Popen(
                opendistro_command(*self.args),
                stdout=stdout,
                stderr=stderr,
                env={**os.environ, "PYTHONFAULTHANDLER": "1"},
            )

    @property
    def stdout_path(self) -> Path:
        return self.logs / f"{self.name}.{self.runs}.out"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the program."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.kills += 1
        self.process.wait()

    def dump_and_kill(self) -> None:
        """SIGABRT: a stuck program prints every thread's stack to its stderr, then dies."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def interrupt(self, how: signal.Signals = signal.SIGINT) -> None:
        """SIGINT (Ctrl-C) or SIGTERM (a service manager): the program shuts down cleanly."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(how)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    async def wait(self) -> int:
        assert self.process is not None
        while self.process.poll() is None:
            await trio.sleep(0.05)
        return self.process.returncode

    def last_json(self) -> dict[str, Any]:
        lines = self.stdout_path.read_text().strip().splitlines()
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return result

    def stderr_tail(self, lines: int = 20) -> str:
        path = self.logs / f"{self.name}.{self.runs}.err"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- data on disk ------------------------------------------------------------------


def staged_file(download_dir: Path, metainfo: Metainfo) -> Path:
    """Where a single-file download is written until it is complete."""
    return download_dir / f".{metainfo.name}.opendistro" / metainfo.name


def good_pieces(path: Path, metainfo: Metainfo) -> set[int]:
    """The pieces of a single-file torrent that ``path`` holds intact right now."""
    verifier = PieceVerifier(metainfo)
    good: set[int] = set()
    if not path.is_file():
        return good
    with open(path, "rb") as handle:
        for index in range(metainfo.num_pieces):
            handle.seek(index * metainfo.piece_length)
            data = handle.read(metainfo.piece_size(index))
            if verifier.verify(index, data):
                good.add(index)
    return good


def resume_claims(download_dir: Path, metainfo: Metainfo) -> set[int] | None:
    """The pieces the leecher's resume database says are on disk (None: nothing saved yet)."""
    database = download_dir / ".opendistro" / "resume.sqlite"
    if not database.exists():
        return None
    with contextlib.closing(sqlite3.connect(database)) as connection:
        try:
            row = connection.execute(
                "SELECT have FROM resume WHERE info_hash = ?", (metainfo.wire_info_hash,)
            ).fetchone()
        except sqlite3.Error:
            return None
    return None if row is None else set(Bitfield(metainfo.num_pieces, bytes(row[0])))


def pieces_size(metainfo: Metainfo, pieces: set[int]) -> int:
    return sum(metainfo.piece_size(index) for index in pieces)


# -- proxies -------------------------------------------------------------------------


@dataclass
class PieceDelivery:
    """One Piece message a proxy passed on: to which connection, for which run."""

    connection: int
    run: int
    index: int
    length: int


@dataclass
class ChaosProxy:
    """A TCP relay in front of one peer that misbehaves on the peer's Piece messages.

    With ``reset_chance`` it forwards half of a Piece message and then resets
    both sides of the connection (RST, SO_LINGER 0): a connection lost in the
    middle of a piece. With ``corrupt_chance`` it flips one bit of the block
    data, keeping the framing intact, so only the hash check can tell. Both use
    ``rng``, so a seeded run injects the same faults at the same messages.

    Every Piece message passed on is logged with the current ``run`` tag (set
    by the test) so a test can tell which run of a leecher received which piece.
    """

    upstream_port: int
    rng: random.Random = field(default_factory=random.Random)
    reset_chance: float = 0.0
    corrupt_chance: float = 0.0
    port: int = 0
    run: int = 0
    connections: int = 0
    resets: int = 0
    corrupted: int = 0
    deliveries: list[PieceDelivery] = field(default_factory=list)

    @property
    def piece_bytes(self) -> int:
        return sum(delivery.length for delivery in self.deliveries)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=LOOPBACK)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        run = self.run
        try:
            upstream = await trio.open_tcp_stream(LOOPBACK, self.upstream_port)
        except OSError:
            await trio.aclose_forcefully(downstream)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, downstream, upstream, nursery.cancel_scope)
            nursery.start_soon(
                self._filter, upstream, downstream, nursery.cancel_scope, number, run
            )
        await trio.aclose_forcefully(upstream)
        await trio.aclose_forcefully(downstream)

    async def _filter(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        scope: trio.CancelScope,
        number: int,
        run: int,
    ) -> None:
        framer = WireFramer()
        try:
            while chunk := await source.receive_some(65536):
                out = bytearray()
                for unit in framer.feed(chunk):
                    if is_piece(unit):
                        if self.rng.random() < self.reset_chance:
                            out += unit[: len(unit) // 2]
                            await sink.send_all(bytes(out))
                            self.resets += 1
                            _reset(source)
                            _reset(sink)
                            scope.cancel()
                            return
                        if self.rng.random() < self.corrupt_chance:
                            unit[13 + self.rng.randrange(len(unit) - 13)] ^= 0x20
                            self.corrupted += 1
                        (index,) = struct.unpack(">I", unit[5:9])
                        self.deliveries.append(PieceDelivery(number, run, index, len(unit) - 13))
                    out += unit
                if out:
                    await sink.send_all(bytes(out))
        except _NETWORK_ERRORS:
            pass
        scope.cancel()


async def _pump(
    source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
) -> None:
    try:
        while chunk := await source.receive_some(65536):
            await sink.send_all(chunk)
    except _NETWORK_ERRORS:
        pass
    scope.cancel()


def _reset(stream: trio.SocketStream) -> None:
    """Make the coming close send RST instead of FIN: the connection breaks, it does not end."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- a garbage peer that also takes note of what each leecher has --------------------


@dataclass
class Greeting:
    """What a leecher said it had when it connected: its first Bitfield (or HaveAll/HaveNone)."""

    listen_port: int | None
    peer_id: bytes
    have: frozenset[int]


@dataclass
class GarbagePeer:
    """A peer that completes the handshake honestly, then sends random bytes.

    Before the garbage it waits (a little) for the leecher's availability and
    BEP 10 handshake and keeps them as a :class:`Greeting`: the pieces a
    restarted leecher announces are the pieces it trusts after its restart,
    which is how the chaos run sees verified data a crash made it lose.
    """

    metainfo: Metainfo
    rng: random.Random = field(default_factory=random.Random)
    garbage_bytes: int = 4096
    port: int = 0
    sessions: int = 0
    garbage_sent: int = 0
    greetings: list[Greeting] = field(default_factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=LOOPBACK)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._session, listeners)

    def first_greetings(self, listen_port: int) -> list[Greeting]:
        """The first greeting of each run (peer id) of the leecher listening on ``listen_port``."""
        seen: set[bytes] = set()
        found: list[Greeting] = []
        for greeting in self.greetings:
            if greeting.listen_port == listen_port and greeting.peer_id not in seen:
                seen.add(greeting.peer_id)
                found.append(greeting)
        return found

    async def _session(self, stream: trio.SocketStream) -> None:
        self.sessions += 1
        connection = PeerConnection(
            info_hash=self.metainfo.wire_info_hash,
            our_peer_id=b"-GB0001-" + self.rng.randbytes(12),
            num_pieces=self.metainfo.num_pieces,
            initiator=False,
        )
        have: frozenset[int] | None = None
        extensions: ExtensionHandshake | None = None
        try:
            with trio.move_on_after(5):
                greeted = False
                while have is None or extensions is None:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    events = connection.receive_data(chunk)
                    if not greeted and connection.remote_peer_id is not None:
                        greeted = True
                        await stream.send_all(connection.send_handshake())
                    for event in events:
                        if isinstance(event, m.BitfieldMessage | m.HaveAll | m.HaveNone):
                            peer_has = connection.peer_has
                            have = frozenset(peer_has) if peer_has is not None else frozenset()
                        elif isinstance(event, ExtensionHandshake):
                            extensions = event
            if have is not None and connection.remote_peer_id is not None:
                port = extensions.p if extensions is not None else None
                self.greetings.append(Greeting(port, connection.remote_peer_id, have))
            garbage = self.rng.randbytes(self.garbage_bytes)
            await stream.send_all(garbage)
            self.garbage_sent += len(garbage)
            with trio.move_on_after(2):
                while await stream.receive_some(65536):
                    pass
        except (*_NETWORK_ERRORS, Exception):
            pass
        finally:
            await trio.aclose_forcefully(stream)


# -- the chaos swarm ------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosConfig:
    """How big the swarm is and how hard it is shaken."""

    seed: int = 1
    size: int = 3_000_000
    piece_length: int = 32768
    leechers: int = 3
    seeder_rate: float = 600_000.0
    """Upload cap of each honest seeder, bytes/s: keeps the download long enough to hurt."""
    kills: int = 4
    reset_chance: float = 0.02
    corrupt_chance: float = 0.05
    tracker_outage: float = 4.0
    time_limit: float = 60.0
    verbose: bool = False
    """Run the leechers with ``-v``: their logs (in WORKDIR/logs) then say what they did."""


@dataclass
class ChaosReport:
    """What was injected and what came out."""

    faults: Counter[str] = field(default_factory=Counter)
    leechers: int = 0
    bit_exact: int = 0
    bytes_lost: int = 0
    """Verified bytes a crash made a leecher fetch again, plus bytes missing or wrong at the end."""
    refetched_pieces: int = 0
    hash_failures: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "faults": dict(sorted(self.faults.items())),
            "leechers": self.leechers,
            "bit_exact": self.bit_exact,
            "bytes_lost": self.bytes_lost,
            "refetched_pieces": self.refetched_pieces,
            "hash_failures_reported": self.hash_failures,
            "seconds": round(self.seconds, 2),
            "failures": self.failures,
        }


@dataclass
class _Leecher:
    program: Program
    listen_port: int
    directory: Path
    kill_points: list[set[int]] = field(default_factory=list)
    """Pieces verified on disk at each SIGKILL."""


def _without_trackers(metainfo: Metainfo) -> Metainfo:
    """The same torrent with no announce URLs: a seeder only reachable through its proxy."""
    return Metainfo.from_info_bytes(metainfo.info_bytes)


async def run_chaos(config: ChaosConfig, workdir: Path) -> ChaosReport:
    """Run a shaken swarm of real ``opendistro get`` processes and judge the outcome.

    Seeders are in-process clients: one honest one behind a proxy that resets
    connections mid-piece, one behind a proxy that corrupts blocks (so it gets
    banned). A garbage peer and our tracker (a subprocess, SIGKILLed once and
    started again on the same port and database after ``tracker_outage``
    seconds) complete the picture. Leechers are SIGKILLed at random moments and
    started again until every one finishes.
    """
    from opendistro.create import create_torrent

    rng = random.Random(config.seed)
    report = ChaosReport(leechers=config.leechers)
    started = time.monotonic()
    release = workdir / "publisher" / "release.bin"
    release.parent.mkdir(parents=True, exist_ok=True)
    release.write_bytes(random.Random(config.seed).randbytes(config.size))
    tracker_port = free_port()
    announce_url = f"http://{LOOPBACK}:{tracker_port}/announce"
    metainfo = create_torrent(
        release, version="hybrid", piece_length=config.piece_length, trackers=[announce_url]
    )
    torrent_file = workdir / "release.torrent"
    torrent_file.write_bytes(metainfo.to_bytes())
    logs = workdir / "logs"
    tracker = Program(
        "tracker",
        [
            "tracker",
            "--host",
            LOOPBACK,
            "--port",
            str(tracker_port),
            "--db",
            str(workdir / "tracker.sqlite"),
            "--interval",
            "2",
        ],
        logs,
    )
    hidden = _without_trackers(metainfo)
    original = release.read_bytes()

    async with trio.open_nursery() as nursery:
        tracker.start()
        await wait_listening(tracker_port)
        honest = await nursery.start(_seeder, hidden, release.parent, config.seeder_rate)
        tainted = await nursery.start(_seeder, hidden, release.parent, None)
        # A well-behaved seeder everyone may find: without it a leecher whose only source
        # reset its connection would wait out the client's 30 s reconnect back-off.
        direct = await nursery.start(_seeder, metainfo, release.parent, config.seeder_rate / 2)
        resetting = ChaosProxy(
            honest, random.Random(rng.random()), reset_chance=config.reset_chance
        )
        corrupting = ChaosProxy(
            tainted, random.Random(rng.random()), corrupt_chance=config.corrupt_chance
        )
        garbage = GarbagePeer(metainfo, random.Random(rng.random()))
        for server in (resetting, corrupting, garbage):
            await nursery.start(server.serve)
        leechers: list[_Leecher] = []
        for number in range(config.leechers):
            port = free_port()
            directory = workdir / f"leecher{number}"
            args = [
                "get",
                str(torrent_file),
                "-o",
                str(directory),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--encryption",
                "plaintext",
                "--json",
                "--peer",
                f"{LOOPBACK}:{garbage.port}",
                "--peer",
                f"{LOOPBACK}:{resetting.port}",
                "--peer",
                f"{LOOPBACK}:{corrupting.port}",
                "--peer",
                f"{LOOPBACK}:{direct}",
            ]
            if config.verbose:
                args.append("-v")
            leechers.append(_Leecher(Program(f"leecher{number}", args, logs), port, directory))
        for leecher in leechers:
            leecher.program.start()

        kill_times = sorted(
            rng.uniform(0.1, 0.7) * _expected_seconds(config) for _ in range(config.kills)
        )
        outage_at = rng.uniform(0.2, 0.5) * _expected_seconds(config)
        outage_over: float | None = None
        deadline = started + config.time_limit
        while True:
            now = time.monotonic() - started
            if time.monotonic() > deadline:
                report.failures.append(f"not done after {config.time_limit} s")
                break
            if outage_over is None and now >= outage_at:
                tracker.kill()
                report.faults["tracker_outages"] += 1
                outage_over = now + config.tracker_outage
            elif outage_over is not None and not tracker.running and now >= outage_over:
                tracker.start()
                report.faults["tracker_seconds_down"] += round(config.tracker_outage)
            if kill_times and now >= kill_times[0]:
                victim = _pick_victim(leechers, garbage, rng)
                if victim is not None:
                    kill_times.pop(0)
                    victim.program.kill()
                    staged = staged_file(victim.directory, metainfo)
                    on_disk = good_pieces(staged, metainfo)
                    victim.kill_points.append(on_disk)
                    claims = resume_claims(victim.directory, metainfo)
                    if claims is not None and not claims <= on_disk:
                        report.failures.append(
                            f"{victim.program.name}: resume state claims pieces "
                            f"{sorted(claims - on_disk)} that were not on disk"
                        )
                    report.faults["sigkills"] += 1
                    await trio.sleep(rng.uniform(0.1, 0.5))
                    victim.program.start()
            if all(leecher.program.returncode is not None for leecher in leechers) and (
                tracker.running
            ):
                break
            await trio.sleep(0.05)
        for leecher in leechers:
            if leecher.program.running:
                leecher.program.dump_and_kill()
        tracker.interrupt()
        nursery.cancel_scope.cancel()

    report.faults["connection_resets"] = resetting.resets
    report.faults["corrupted_blocks"] = corrupting.corrupted
    report.faults["garbage_sessions"] = garbage.sessions
    for leecher in leechers:
        _judge(leecher, metainfo, original, garbage, report)
    report.seconds = time.monotonic() - started
    return report


def _expected_seconds(config: ChaosConfig) -> float:
    """How long the download takes undisturbed: the seeders' caps add up to 1.5 x seeder_rate."""
    return config.size / (1.5 * config.seeder_rate)


def _pick_victim(
    leechers: list[_Leecher], garbage: GarbagePeer, rng: random.Random
) -> _Leecher | None:
    """A running leecher whose current run has already greeted the garbage peer.

    Killing only after the greeting keeps the greetings in step with the runs:
    the first greeting of run N+1 says what survived kill N.
    """
    ready = [
        leecher
        for leecher in leechers
        if leecher.program.running
        and len(garbage.first_greetings(leecher.listen_port)) >= leecher.program.runs
    ]
    return rng.choice(ready) if ready else None


def _judge(
    leecher: _Leecher,
    metainfo: Metainfo,
    original: bytes,
    garbage: GarbagePeer,
    report: ChaosReport,
) -> None:
    program = leecher.program
    final = leecher.directory / metainfo.name
    if program.returncode != 0:
        report.failures.append(
            f"{program.name} exited with {program.returncode}: {program.stderr_tail()}"
        )
    else:
        summary = program.last_json()
        report.hash_failures += int(summary.get("hash_failures", 0))
    data = final.read_bytes() if final.is_file() else b""
    if data == original:
        report.bit_exact += 1
    else:
        wrong = sum(a != b for a, b in zip(data, original, strict=False))
        report.bytes_lost += wrong + max(len(original) - len(data), 0)
        report.failures.append(f"{program.name}: final file differs from the release")
    greetings = garbage.first_greetings(leecher.listen_port)
    for kill, on_disk in enumerate(leecher.kill_points, start=1):
        if kill >= len(greetings):
            report.failures.append(f"{program.name}: run {kill + 1} never said what it had")
            continue
        lost = on_disk - greetings[kill].have
        report.refetched_pieces += len(lost)
        report.bytes_lost += pieces_size(metainfo, set(lost))


async def _seeder(
    metainfo: Metainfo,
    data_dir: Path,
    rate: float | None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    from opendistro.io.client import Client

    async with Client(host=LOOPBACK, upload_limit=rate) as client:
        await client.seed(metainfo, data_dir)
        task_status.started(client.port)
        await trio.sleep_forever()
