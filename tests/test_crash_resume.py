"""Crash safety: ``opendistro get`` SIGKILLed mid-download resumes without losing verified
data, and the tracker keeps its swarms across a crash and lets clients ride out an outage.

Everything runs for real on 127.0.0.1: the downloads are ``opendistro get``
subprocesses, the seeder is our client, and between them a relay
(:class:`tests.chaos_tools.ChaosProxy`, injecting nothing here) logs every
Piece message with the run of the leecher that received it.

"Verified" means what a restart can know: a piece whose bytes in the staged
file pass the hash check at the moment of the kill. Those must never cross the
wire again. Blocks of pieces not yet intact on disk at the kill (requested,
half received, or hashed but not yet written) may be fetched again: nothing
durable vouches for them, so the tolerance for them is "any", and for
verified pieces it is zero.

SIGKILL keeps the page cache, so these tests see the order of *writes*
(resume state never claims a piece before its bytes were written); the fsync
before each resume save, which matters for power loss, is checked by reading
the code (see ``Torrent._save_resume_soon`` and ``FileStorage.flush``).
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from pathlib import Path

import trio

from opendistro.create import create_torrent
from opendistro.io.client import Client
from opendistro.metainfo import Metainfo
from opendistro.tracker.client import announce
from opendistro.tracker.protocol import AnnounceEvent, AnnounceRequest
from opendistro.tracker.store import TrackerStore

from .chaos_tools import (
    LOOPBACK,
    ChaosProxy,
    Program,
    free_port,
    good_pieces,
    resume_claims,
    staged_file,
    wait_listening,
)

PIECE = 32768
SIZE = 1_600_000
RATE = 200_000.0
"""Seeder upload cap, bytes/s: the 1.6 MB download takes 8 s, long enough for a resume save."""


def _without_trackers(metainfo: Metainfo) -> Metainfo:
    return Metainfo.from_info_bytes(metainfo.info_bytes)


async def _seed(
    metainfo: Metainfo,
    data_dir: Path,
    rate: float | None,
    *,
    task_status: trio.TaskStatus[Client] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with Client(host=LOOPBACK, upload_limit=rate) as client:
        await client.seed(metainfo, data_dir)
        task_status.started(client)
        await trio.sleep_forever()


async def test_sigkilled_get_resumes_and_never_fetches_a_verified_piece_again(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(SIZE,), seed=8)
    metainfo = create_torrent(release, version="hybrid", piece_length=PIECE)
    torrent_file = tmp_path / "release.torrent"
    torrent_file.write_bytes(metainfo.to_bytes())
    target = tmp_path / "dl"
    rng = random.Random(8)
    # The first run is killed once it saved resume state (every 5 s); then three quick kills.
    kill_at = [rng.uniform(0.3, 0.4) * SIZE]
    kill_at += sorted(rng.uniform(0.6, 0.95) * SIZE for _ in range(3))
    on_disk_at_kill: list[set[int]] = []
    resume_checked = 0

    async with trio.open_nursery() as nursery:
        seeder = await nursery.start(_seed, _without_trackers(metainfo), release.parent, RATE)
        proxy = ChaosProxy(seeder.port)
        await nursery.start(proxy.serve)
        leecher = Program(
            "get",
            [
                "get",
                str(torrent_file),
                "-o",
                str(target),
                "--host",
                LOOPBACK,
                "--encryption",
                "plaintext",
                "--peer",
                f"{LOOPBACK}:{proxy.port}",
                "--json",
            ],
            tmp_path / "logs",
        )
        for run, threshold in enumerate(kill_at):
            proxy.run = run
            leecher.start()
            with trio.fail_after(60):
                while leecher.running and (
                    proxy.piece_bytes < threshold
                    or (run == 0 and resume_claims(target, metainfo) is None)
                ):
                    await trio.sleep(0.01)
            assert leecher.running, leecher.stderr_tail()
            leecher.kill()
            on_disk = good_pieces(staged_file(target, metainfo), metainfo)
            on_disk_at_kill.append(on_disk)
            claims = resume_claims(target, metainfo)
            if claims is not None:
                resume_checked += 1
                assert claims <= on_disk, "resume state claims pieces that were never written"
        proxy.run = len(kill_at)
        leecher.start()
        with trio.fail_after(60):
            code = await leecher.wait()
        nursery.cancel_scope.cancel()

    assert code == 0, leecher.stderr_tail()
    summary = leecher.last_json()
    assert summary["ok"] is True and summary["verified"] is True
    assert (target / release.name).read_bytes() == release.read_bytes()
    assert leecher.kills == len(kill_at)
    assert resume_checked == len(kill_at)
    assert len(on_disk_at_kill[-1]) > len(on_disk_at_kill[0]) > 0
    for run in range(1, len(kill_at) + 1):
        fetched = {d.index for d in proxy.deliveries if d.run == run}
        refetched = fetched & on_disk_at_kill[run - 1]
        assert not refetched, f"run {run} fetched verified pieces again: {sorted(refetched)}"
    # The last run fetched exactly what was not verified on disk after the last kill
    # (each piece once, as no fault was injected between it and the seeder).
    last = [d for d in proxy.deliveries if d.run == len(kill_at)]
    missing = set(range(metainfo.num_pieces)) - on_disk_at_kill[-1]
    assert {d.index for d in last} == missing


def _request(info_hash: bytes, number: int, port: int) -> AnnounceRequest:
    return AnnounceRequest(
        info_hash=info_hash,
        peer_id=b"-XX0001-" + number.to_bytes(12, "big"),
        port=port,
        left=1000,
        event=AnnounceEvent.STARTED,
    )


async def test_tracker_keeps_its_swarms_across_sigkill_and_a_clean_restart(
    tmp_path: Path,
) -> None:
    """A tracker killed without warning comes back with what it had saved; a stopped one
    with everything. The restarted tracker is the ``opendistro tracker`` command."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/announce"
    database = tmp_path / "tracker.sqlite"
    info_hash = bytes(range(20))
    command = ["tracker", "--host", LOOPBACK, "--port", str(port), "--db", str(database)]
    crashing = Program("crashing", [*command, "--persist-interval", "0.2"], tmp_path / "logs")
    crashing.start()
    try:
        await wait_listening(port)
        for number in range(3):
            await announce(url, _request(info_hash, number, 7000 + number), timeout=5)
        with trio.fail_after(20):  # saved every 0.2 s: wait until the file holds all three
            while sum(len(s.peers) for s in TrackerStore(database).load()) < 3:
                await trio.sleep(0.05)
    finally:
        crashing.kill()

    # Peers live two intervals: long enough that a loaded machine cannot expire them mid-test.
    tracker = Program("tracker", [*command, "--interval", "60"], tmp_path / "logs")
    tracker.start()
    try:
        await wait_listening(port)
        response = await announce(url, _request(info_hash, 3, 7003), timeout=5)
        assert {p for _, p in response.peers} == {7000, 7001, 7002}
        tracker.interrupt()  # a clean stop saves the swarm, the fourth peer included
        assert tracker.returncode is not None
        tracker.start()
        await wait_listening(port)
        response = await announce(url, _request(info_hash, 4, 7004), timeout=5)
        assert {p for _, p in response.peers} == {7000, 7001, 7002, 7003}
        tracker.interrupt(signal.SIGTERM)  # as systemd or docker stop it: saved too
        assert tracker.returncode is not None
        assert sum(len(s.peers) for s in TrackerStore(database).load()) == 5
    finally:
        tracker.kill()


async def test_a_download_rides_through_a_tracker_outage(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    """The leecher knows its seeder only from the tracker; the tracker dies early on."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/announce"
    release = make_release(sizes=(1_000_000,), seed=9)
    metainfo = create_torrent(release, version="hybrid", piece_length=PIECE, trackers=[url])
    torrent_file = tmp_path / "release.torrent"
    torrent_file.write_bytes(metainfo.to_bytes())
    tracker = Program(
        "tracker",
        [
            "tracker",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--db",
            str(tmp_path / "tracker.sqlite"),
            "--interval",
            "2",
        ],
        tmp_path / "logs",
    )
    leecher = Program(
        "get",
        ["get", str(torrent_file), "-o", str(tmp_path / "dl"), "--host", LOOPBACK, "--json"],
        tmp_path / "logs",
    )
    tracker.start()
    try:
        await wait_listening(port)
        async with trio.open_nursery() as nursery:
            seeder = await nursery.start(_seed, metainfo, release.parent, 400_000.0)
            (seeding,) = seeder.torrents
            leecher.start()
            with trio.fail_after(30):
                while seeding.status().bytes_uploaded < 200_000:
                    await trio.sleep(0.02)
            tracker.kill()
            with trio.fail_after(60):
                code = await leecher.wait()
            assert not tracker.running  # it finished with the tracker still down
            nursery.cancel_scope.cancel()
    finally:
        tracker.kill()
        if leecher.running:
            leecher.kill()
    assert code == 0, leecher.stderr_tail()
    assert leecher.last_json()["verified"] is True
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
