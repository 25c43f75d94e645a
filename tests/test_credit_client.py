"""Seeding credit in the running client: real TCP on 127.0.0.1, real SQLite in tmp_path.

Two of our clients with credit identities exchange a file: the downloader signs
receipts, the seeder keeps them in its ledger and posts them to the bundled
tracker; both ledgers survive a restart. Peers without od_credit (ours with
credit off, libtorrent) are served as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opendistro.cli import main
from opendistro.create import create_torrent
from opendistro.credit import CreditIdentity, CreditLedger, issue_receipt, verify_receipt
from opendistro.credit.identity import IDENTITY_FILE_NAME, is_valid_signature
from opendistro.credit.ledger import LEDGER_FILE_NAME
from opendistro.io.client import Client
from opendistro.io.credit import CreditOptions
from opendistro.io.torrent import Torrent
from opendistro.metainfo import Metainfo
from opendistro.tracker.credit_client import fetch_standing
from opendistro.tracker.server import TrackerServer
from opendistro.wire.connection import PeerConnection
from opendistro.wire.extensions.handshake import ExtensionHandshake
from opendistro.wire.extensions.od_credit import (
    RECEIPT_INTERVAL,
    Hello,
    decode_credit_message,
    encode_credit_message,
    hello_signed_bytes,
)
from opendistro.wire.messages import Extended
from opendistro.wire.mse import EncryptionPolicy

from .interop.lt_helpers import lt_download, require_libtorrent

LOOPBACK = "127.0.0.1"
SIZE = 2 * RECEIPT_INTERVAL + 300_001
"""Two whole receipt intervals and a bit: receipts come during the download, and the
last part is only covered by the receipt a stopping seeder asks for."""
# Answers to a stopping seeder's receipt request come at once; the generous time-out
# only matters on a machine so loaded that it would otherwise make the test flaky.
OPTIONS = CreditOptions(settle_timeout=30.0)


def release_torrent(make_release: Callable[..., Path], **kwargs: object) -> tuple[Metainfo, Path]:
    release = make_release(sizes=(SIZE,))
    return create_torrent(release, version="hybrid", piece_length=65536, **kwargs), release  # type: ignore[arg-type]


async def download(client: Client, metainfo: Metainfo, target: Path, port: int) -> Torrent:
    torrent = await client.add_torrent(metainfo, target, peers=[(LOOPBACK, port)])
    with trio.fail_after(60):
        await torrent.complete.wait()
    assert torrent.error is None
    return torrent


async def credit_round(
    metainfo: Metainfo, release: Path, target: Path, seeder_state: Path, leecher_state: Path
) -> tuple[bytes, bytes, int]:
    """One seeder, one downloader, both keeping credit; the seeder stops first.

    Returns both identities and the bytes the seeder uploaded.
    """
    async with (
        Client(host=LOOPBACK, state_dir=leecher_state, credit_options=OPTIONS) as leecher,
        Client(host=LOOPBACK, state_dir=seeder_state, credit_options=OPTIONS) as seeder,
    ):  # the last one entered, the seeder, stops first
        assert seeder.credit is not None and leecher.credit is not None
        seeded = await seeder.seed(metainfo, release.parent)
        await download(leecher, metainfo, target, seeder.port)
        assert (target / release.name).read_bytes() == release.read_bytes()
        uploaded = seeded.status().bytes_uploaded
        identities = seeder.credit.public_key, leecher.credit.public_key
    return (*identities, uploaded)


def ledger(state_dir: Path) -> CreditLedger:
    identity = CreditIdentity.load(state_dir / IDENTITY_FILE_NAME)
    return CreditLedger.open(state_dir, owner=identity.public_key)


async def test_downloader_signs_receipts_the_seeder_keeps(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = release_torrent(make_release)
    info_hash = metainfo.wire_info_hash
    seeder_id, leecher_id, uploaded = await credit_round(
        metainfo, release, tmp_path / "dl", tmp_path / "seeder", tmp_path / "leecher"
    )
    assert seeder_id != leecher_id
    assert uploaded >= SIZE
    # Both clients have stopped: what follows is read back from their files.
    with ledger(tmp_path / "seeder") as seeder_ledger:
        best = seeder_ledger.best_receipt(leecher_id, info_hash)
        assert best is not None
        verify_receipt(best, torrent=info_hash, giver=seeder_id, receiver=leecher_id)
        # Within one receipt interval at worst; the stopping seeder asked for the rest.
        assert SIZE - RECEIPT_INTERVAL < best.total <= SIZE
        assert best.total == SIZE
        exchange = seeder_ledger.exchange(leecher_id, info_hash)
        assert exchange.held == SIZE and exchange.received == 0
        assert exchange.sent == uploaded
        assert seeder_ledger.totals(leecher_id) == (0, uploaded)
    with ledger(tmp_path / "leecher") as leecher_ledger:
        exchange = leecher_ledger.exchange(seeder_id, info_hash)
        assert exchange.received == SIZE and exchange.sent == 0 and exchange.held == 0
        assert leecher_ledger.receipts_to_submit() == []  # it uploaded nothing


async def test_a_stopping_downloader_leaves_the_seeder_an_exact_receipt(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = release_torrent(make_release)
    info_hash = metainfo.wire_info_hash
    async with Client(host=LOOPBACK, state_dir=tmp_path / "seeder") as seeder:
        assert seeder.credit is not None
        seeded = await seeder.seed(metainfo, release.parent)
        async with Client(host=LOOPBACK, state_dir=tmp_path / "leecher") as leecher:
            assert leecher.credit is not None
            leecher_id = leecher.credit.public_key
            await download(leecher, metainfo, tmp_path / "dl", seeder.port)
        # The downloader left first: its parting receipt covers the last, partial
        # interval, which the seeder (still running) never had to ask for.
        with trio.fail_after(30):
            while (session_total := seeder.credit.history(leecher_id, info_hash)[0].held) < SIZE:
                await trio.sleep(0.05)
        assert session_total == SIZE
        assert seeded.status().bytes_uploaded >= SIZE
    with ledger(tmp_path / "seeder") as seeder_ledger:
        best = seeder_ledger.best_receipt(leecher_id, info_hash)
        assert best is not None and best.total == SIZE


async def test_restarted_clients_resume_totals_with_the_same_identity(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = release_torrent(make_release)
    info_hash = metainfo.wire_info_hash
    seeder_state, leecher_state = tmp_path / "seeder", tmp_path / "leecher"
    first = await credit_round(metainfo, release, tmp_path / "one", seeder_state, leecher_state)
    key_file = (seeder_state / IDENTITY_FILE_NAME).read_bytes()
    second = await credit_round(metainfo, release, tmp_path / "two", seeder_state, leecher_state)
    assert second[:2] == first[:2]  # same identities, loaded from the state folders
    assert (seeder_state / IDENTITY_FILE_NAME).read_bytes() == key_file
    # Receipts are cumulative: the second run's continue from the first run's total
    # (had the downloader started from zero, the seeder would have ignored them as stale).
    with ledger(seeder_state) as seeder_ledger:
        exchange = seeder_ledger.exchange(first[1], info_hash)
        assert exchange.held == 2 * SIZE
        assert exchange.sent == first[2] + second[2]
    with ledger(leecher_state) as leecher_ledger:
        assert leecher_ledger.exchange(first[0], info_hash).received == 2 * SIZE


async def test_only_verified_bytes_earn_credit(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = release_torrent(make_release)
    rotting = tmp_path / "rotting"
    rotting.mkdir()
    (rotting / release.name).write_bytes(release.read_bytes())
    async with (
        Client(host=LOOPBACK, state_dir=tmp_path / "bad") as bad,
        Client(host=LOOPBACK, state_dir=tmp_path / "good") as good,
        Client(host=LOOPBACK, state_dir=tmp_path / "leecher", credit_options=OPTIONS) as leecher,
    ):
        assert bad.credit is not None and good.credit is not None
        bad_id, good_id = bad.credit.public_key, good.credit.public_key
        await bad.seed(metainfo, rotting)  # checked and found whole
        await good.seed(metainfo, release.parent)
        with (rotting / release.name).open("r+b") as handle:  # then the disk goes bad
            for offset in range(1000, metainfo.total_length, 3 * metainfo.piece_length):
                handle.seek(offset)
                handle.write(b"\xff\x00\xff")
        torrent = await leecher.add_torrent(
            metainfo, tmp_path / "dl", peers=[(LOOPBACK, bad.port), (LOOPBACK, good.port)]
        )
        with trio.fail_after(60):
            await torrent.complete.wait()
        assert torrent.error is None and torrent.hash_failures > 0
        from_bad = torrent.bytes_from_peer[f"{LOOPBACK}:{bad.port}"]
        assert f"{LOOPBACK}:{bad.port}" in leecher.banned
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
    with ledger(tmp_path / "leecher") as leecher_ledger:
        credited_bad = leecher_ledger.exchange(bad_id, metainfo.wire_info_hash).received
        credited_good = leecher_ledger.exchange(good_id, metainfo.wire_info_hash).received
    # Every verified byte is credited to exactly one sender, and nothing else is.
    assert credited_bad + credited_good == SIZE
    assert credited_bad < from_bad


async def test_seeder_submits_receipts_to_the_bundled_tracker(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    tracker = TrackerServer(
        host=LOOPBACK, port=0, interval=60, udp=False, credit_db_path=tmp_path / "credit.sqlite"
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        metainfo, release = release_torrent(make_release, trackers=[tracker.announce_url])
        quick = CreditOptions(submit_interval=0.1, settle_timeout=30.0)
        async with Client(host=LOOPBACK, state_dir=tmp_path / "leecher") as leecher:
            async with Client(
                host=LOOPBACK, state_dir=tmp_path / "seeder", credit_options=quick
            ) as seeder:
                assert seeder.credit is not None and leecher.credit is not None
                seeder_id, leecher_id = seeder.credit.public_key, leecher.credit.public_key
                await seeder.seed(metainfo, release.parent)
                await download(leecher, metainfo, tmp_path / "dl", seeder.port)
                # While running: receipts signed at each whole interval reach the tracker.
                with trio.fail_after(30):
                    while (await fetch_standing(tracker.credit_url, seeder_id)).uploaded < (
                        2 * RECEIPT_INTERVAL
                    ):
                        await trio.sleep(0.05)
            # Stopping: the seeder asked for a last receipt and posted it.
            standing = await fetch_standing(tracker.credit_url, seeder_id)
            assert standing.uploaded == SIZE and standing.receivers == 1
            downloader = await fetch_standing(tracker.credit_url, leecher_id)
            assert downloader.downloaded == SIZE and downloader.uploaded == 0
        with ledger(tmp_path / "seeder") as seeder_ledger:
            assert seeder_ledger.receipts_to_submit() == []
        nursery.cancel_scope.cancel()


async def test_a_tracker_without_credit_is_not_fatal(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    tracker = TrackerServer(host=LOOPBACK, port=0, interval=60, udp=False)  # /credit: 404
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        metainfo, release = release_torrent(make_release, trackers=[tracker.announce_url])
        messages: list[str] = []
        quick = CreditOptions(submit_interval=0.05, settle_timeout=30.0)
        async with (
            Client(host=LOOPBACK, state_dir=tmp_path / "leecher") as leecher,
            Client(
                host=LOOPBACK,
                state_dir=tmp_path / "seeder",
                credit_options=quick,
                log=messages.append,
            ) as seeder,
        ):
            await seeder.seed(metainfo, release.parent)
            await download(leecher, metainfo, tmp_path / "dl", seeder.port)
            with trio.fail_after(30):
                while not any("cannot submit" in message for message in messages):
                    await trio.sleep(0.05)
            assert seeder.torrents[0].error is None
        with ledger(tmp_path / "seeder") as seeder_ledger:
            unsent = seeder_ledger.receipts_to_submit()
            assert [receipt.total for receipt in unsent] == [SIZE]  # kept for a later try
        nursery.cancel_scope.cancel()


async def test_credit_client_and_credit_less_client_exchange_normally(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = release_torrent(make_release)
    plain_state = tmp_path / "plain-state"
    async with (
        Client(host=LOOPBACK, state_dir=tmp_path / "seeder", credit_options=OPTIONS) as seeder,
        Client(host=LOOPBACK, state_dir=plain_state, credit=False) as plain,
    ):
        assert plain.credit is None
        seeded = await seeder.seed(metainfo, release.parent)
        await download(plain, metainfo, tmp_path / "dl", seeder.port)
        assert seeded.credit is not None and plain.torrents[0].credit is None
        sessions = [seeded.credit.session(peer) for peer in seeded.peers]
        assert sessions and all(s is not None and not s.active for s in sessions)
        uploaded = seeded.status().bytes_uploaded
    assert (tmp_path / "dl" / release.name).read_bytes() == release.read_bytes()
    assert uploaded >= SIZE
    assert not plain_state.exists()  # credit off: nothing written there
    with ledger(tmp_path / "seeder") as seeder_ledger:
        assert len(seeder_ledger) == 0  # an anonymous peer earns and owes nothing


async def test_a_forged_hello_costs_the_forger_its_connection(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = release_torrent(make_release)
    forger_id = b"-XX0001-forgerforger"
    nonce = bytes(range(16))
    messages: list[str] = []
    async with Client(
        host=LOOPBACK,
        state_dir=tmp_path / "seeder",
        encryption=EncryptionPolicy.PLAINTEXT,
        log=messages.append,
    ) as seeder:
        assert seeder.credit is not None
        await seeder.seed(metainfo, release.parent)
        stream = await trio.open_tcp_stream(LOOPBACK, seeder.port)
        connection = PeerConnection(
            info_hash=metainfo.wire_info_hash,
            our_peer_id=forger_id,
            num_pieces=metainfo.num_pieces,
            initiator=True,
        )
        await stream.send_all(connection.send_handshake())
        hello: Hello | None = None
        closed = False
        with trio.fail_after(30):
            while not closed:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:  # a reset is a hang-up too
                    data = b""
                if not data:
                    closed = True
                    break
                out = bytearray()
                for event in connection.receive_data(data):
                    if isinstance(event, ExtensionHandshake):
                        extra = {b"od_credit_nonce": nonce}
                        ours = ExtensionHandshake(m={"od_credit": 9}, extra=extra)
                        out += connection.send(ours)
                    elif isinstance(event, Extended) and event.extension_id == 9:
                        message = decode_credit_message(event.payload)
                        assert isinstance(message, Hello) and hello is None
                        hello = message
                        remote = connection.remote_extensions
                        assert remote is not None
                        forged = Hello(CreditIdentity.generate().public_key, bytes(64))
                        out += connection.send(
                            Extended(remote.m["od_credit"], encode_credit_message(forged))
                        )
                if out:
                    await stream.send_all(bytes(out))
        await stream.aclose()
    # The seeder's own hello was genuine and bound to this connection and our nonce...
    assert hello is not None and hello.identity == seeder.credit.public_key
    signed = hello_signed_bytes(
        identity=hello.identity,
        info_hash=metainfo.wire_info_hash,
        sender=seeder.peer_id,
        recipient=forger_id,
        nonce=nonce,
    )
    assert is_valid_signature(hello.identity, hello.signature, signed)
    # ...and ours, which was not, made it hang up.
    assert closed
    assert any("hello signature" in message for message in messages)


@pytest.mark.interop
async def test_libtorrent_downloads_from_a_credit_client(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    require_libtorrent()
    metainfo, release = release_torrent(make_release)
    torrent_file = tmp_path / "release.torrent"
    torrent_file.write_bytes(metainfo.to_bytes())
    async with Client(host=LOOPBACK, state_dir=tmp_path / "seeder") as seeder:
        seeded = await seeder.seed(metainfo, release.parent)
        summary = await lt_download(torrent_file, tmp_path / "lt", [seeder.port])
        uploaded = seeded.status().bytes_uploaded
    assert summary["done"], summary["stderr"]
    assert (tmp_path / "lt" / release.name).read_bytes() == release.read_bytes()
    assert uploaded >= SIZE
    with ledger(tmp_path / "seeder") as seeder_ledger:
        assert len(seeder_ledger) == 0


# -- the command line -------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_credit_view_of_an_empty_state_dir_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    code, out, _ = run_cli(capsys, "credit", "--state-dir", str(state), "--json")
    assert code == 0
    view = json.loads(out.strip().splitlines()[-1])
    assert view["identity"] is None and view["peers"] == [] and view["held"] == 0
    assert not state.exists()
    code, out, _ = run_cli(capsys, "credit", "--state-dir", str(state))
    assert code == 0 and "no credit identity" in out


def test_credit_view_shows_identity_and_per_peer_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    us = CreditIdentity.load_or_create(state)
    giver, taker = CreditIdentity.generate(), CreditIdentity.generate()
    torrent_a, torrent_b = bytes(range(20)), bytes(range(1, 21))
    with CreditLedger.open(state, owner=us.public_key) as book:
        book.record(giver.public_key, torrent_a, received=5000, sent=100)
        book.record(giver.public_key, torrent_b, received=700)
        book.record(taker.public_key, torrent_a, sent=9000)
        book.keep_receipt(
            issue_receipt(taker, torrent=torrent_a, giver=us.public_key, total=8192)
        )
    before = sorted(p.name for p in state.iterdir())
    ledger_bytes = (state / LEDGER_FILE_NAME).read_bytes()
    code, out, _ = run_cli(capsys, "credit", "--state-dir", str(state), "--json")
    assert code == 0
    view = json.loads(out.strip().splitlines()[-1])
    assert view["identity"] == us.public_key.hex()
    assert view["unsubmitted"] == 1
    peers = {peer["identity"]: peer for peer in view["peers"]}
    assert peers[giver.public_key.hex()] == {
        "identity": giver.public_key.hex(), "received": 5700, "sent": 100, "held": 0,
        "credit": 5600, "torrents": 2,
    }
    assert peers[taker.public_key.hex()] == {
        "identity": taker.public_key.hex(), "received": 0, "sent": 9000, "held": 8192,
        "credit": -9000, "torrents": 1,
    }
    assert (view["received"], view["sent"], view["held"]) == (5700, 9100, 8192)
    code, out, _ = run_cli(capsys, "credit", "--state-dir", str(state))
    assert code == 0 and us.public_key.hex() in out and giver.public_key.hex() in out
    assert sorted(p.name for p in state.iterdir()) == before  # a view writes nothing
    assert (state / LEDGER_FILE_NAME).read_bytes() == ledger_bytes


def test_credit_view_refuses_a_corrupt_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    key = state / IDENTITY_FILE_NAME
    key.write_bytes(b"not a key")
    key.chmod(0o600)
    code, out, err = run_cli(capsys, "credit", "--state-dir", str(state), "--json")
    assert code == 1
    assert json.loads(out.strip().splitlines()[-1])["type"] == "CreditError"
    assert "corrupt credit identity" in err


def test_cli_get_with_state_dir_keeps_credit(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    metainfo, release = release_torrent(make_release)
    torrent = tmp_path / "release.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    cli = [sys.executable, "-m", "opendistro.cli"]
    seeder = subprocess.Popen(
        [*cli, "seed", str(torrent), "--data", str(release.parent), "--host", LOOPBACK,
         "--state-dir", str(tmp_path / "seeder")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert seeder.stdout is not None
        listening = seeder.stdout.readline()  # "seeding NAME on HOST:PORT"
        assert " on " in listening, seeder.stderr.read() if seeder.stderr else ""
        port = listening.strip().rpartition(":")[2]
        identity = seeder.stdout.readline().split()[-1]  # "credit identity HEX"
        got = subprocess.run(
            [*cli, "get", str(torrent), "-o", str(tmp_path / "dl"), "--host", LOOPBACK,
             "--peer", f"{LOOPBACK}:{port}", "--state-dir", str(tmp_path / "leecher"), "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        seeder.terminate()
        seeder.wait(10)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["credit_identity"] is not None
    assert identity != report["credit_identity"]
    view = subprocess.run(
        [*cli, "credit", "--state-dir", str(tmp_path / "leecher"), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert view.returncode == 0, view.stderr
    summary = json.loads(view.stdout.strip().splitlines()[-1])
    assert summary["identity"] == report["credit_identity"]
    assert [(p["identity"], p["received"]) for p in summary["peers"]] == [(identity, SIZE)]


def test_cli_keeps_credit_in_the_user_state_dir_by_default(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    """``seed`` and ``get`` with no credit options share the per-user state folder
    (one identity for both: credit is off between them, the data flows); ``--no-credit``
    writes nothing there."""
    metainfo, release = release_torrent(make_release)
    torrent = tmp_path / "release.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    cli = [sys.executable, "-m", "opendistro.cli"]
    home = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    untouched = tmp_path / "xdg-untouched"
    seeder = subprocess.Popen(
        [*cli, "seed", str(torrent), "--data", str(release.parent), "--host", LOOPBACK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home,
    )
    try:
        assert seeder.stdout is not None
        listening = seeder.stdout.readline()  # "seeding NAME on HOST:PORT"
        assert " on " in listening, seeder.stderr.read() if seeder.stderr else ""
        port = listening.strip().rpartition(":")[2]
        identity = seeder.stdout.readline().split()[-1]  # "credit identity HEX"
        get = [*cli, "get", str(torrent), "--host", LOOPBACK, "--peer", f"{LOOPBACK}:{port}",
               "--json"]
        shared = subprocess.run(
            [*get, "-o", str(tmp_path / "shared")],
            capture_output=True, text=True, timeout=120, check=False, env=home,
        )
        anonymous = subprocess.run(
            [*get, "-o", str(tmp_path / "anonymous"), "--no-credit"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "XDG_STATE_HOME": str(untouched)},
        )
    finally:
        seeder.terminate()
        seeder.wait(10)
    assert shared.returncode == 0, shared.stderr
    assert json.loads(shared.stdout.strip().splitlines()[-1])["credit_identity"] == identity
    assert (tmp_path / "xdg" / "opendistro" / IDENTITY_FILE_NAME).is_file()
    assert anonymous.returncode == 0, anonymous.stderr
    assert json.loads(anonymous.stdout.strip().splitlines()[-1])["credit_identity"] is None
    assert not untouched.exists()
    for folder in ("shared", "anonymous"):
        assert (tmp_path / folder / release.name).read_bytes() == release.read_bytes()
    view = subprocess.run(
        [*cli, "credit", "--json"], capture_output=True, text=True, timeout=60, check=False,
        env=home,
    )
    assert view.returncode == 0, view.stderr
    summary = json.loads(view.stdout.strip().splitlines()[-1])
    assert summary["identity"] == identity
    assert summary["state_dir"] == str(tmp_path / "xdg" / "opendistro")
    assert summary["peers"] == []  # giving to ourselves earns nothing


def test_state_dir_takes_a_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--state-dir`` before the positional argument can no longer swallow it."""
    with pytest.raises(SystemExit) as exit_info:
        main(["get", "--state-dir"])
    assert exit_info.value.code == 2
    assert "expected one argument" in capsys.readouterr().err
