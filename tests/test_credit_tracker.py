"""The tracker's credit ledger over real HTTP on 127.0.0.1, with real SQLite files."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from opendistro import http_get
from opendistro.bencode import decode, encode
from opendistro.credit.identity import CreditIdentity
from opendistro.credit.receipts import Receipt, issue_receipt
from opendistro.errors import StorageError, TrackerError
from opendistro.tracker.credit import (
    MAX_SUBMISSION,
    MAX_SUBMISSION_BODY,
    CreditStore,
    Standing,
    SubmitResult,
    decode_submission,
    encode_submission,
)
from opendistro.tracker.credit_client import credit_url_for, fetch_standing, submit_receipts
from opendistro.tracker.server import TrackerServer

SEEDER = CreditIdentity.from_seed(bytes([31]) * 32)
LEECHER = CreditIdentity.from_seed(bytes([32]) * 32)
LEECHER2 = CreditIdentity.from_seed(bytes([33]) * 32)
NEWCOMER = CreditIdentity.from_seed(bytes([34]) * 32)
TORRENT = b"\x51" * 20
MiB = 1 << 20


def receipt(total: int, receiver: CreditIdentity = LEECHER, torrent: bytes = TORRENT) -> Receipt:
    return issue_receipt(receiver, torrent=torrent, giver=SEEDER.public_key, total=total)


@asynccontextmanager
async def running(tmp_path: Path, **kwargs: Any) -> AsyncIterator[TrackerServer]:
    kwargs.setdefault("credit_db_path", tmp_path / "credit.sqlite")
    async with trio.open_nursery() as nursery:
        server = TrackerServer(udp=False, **kwargs)
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def post(
    port: int, target: str, body: bytes, *, length: int | None = None
) -> tuple[int, bytes]:
    """One raw POST with our own h11 client, to see status codes the credit client hides."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        headers = [("Host", "t"), ("Content-Length", str(len(body) if length is None else length))]
        await stream.send_all(
            connection.send(h11.Request(method="POST", target=target, headers=headers))
            + connection.send(h11.Data(data=body))
            + (connection.send(h11.EndOfMessage()) if length is None else b"")
        )
        status, answer = 0, b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                connection.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, answer


async def test_receipts_submitted_over_http_become_standing(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        url = credit_url_for(server.announce_url)
        assert url == server.credit_url
        result = await submit_receipts(url, [receipt(3 * MiB), receipt(2 * MiB, LEECHER2)])
        assert result == SubmitResult(accepted=2, stale=0, rejected=0, credited=5 * MiB)
        result = await submit_receipts(url, [receipt(4 * MiB)])  # a later, higher receipt
        assert result.credited == MiB
        seeder = await fetch_standing(url, SEEDER.public_key)
        assert (seeder.uploaded, seeder.downloaded, seeder.receivers) == (6 * MiB, 0, 2)
        assert seeder.score == 6 * MiB and not seeder.is_newcomer
        leecher = await fetch_standing(url, LEECHER.public_key)
        assert (leecher.uploaded, leecher.downloaded, leecher.givers) == (0, 4 * MiB, 1)
        assert leecher.balance == -4 * MiB and leecher.score == 0


async def test_a_newcomer_has_standing_zero(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        standing = await fetch_standing(server.credit_url, NEWCOMER.public_key)
        assert standing.is_newcomer
        assert (standing.uploaded, standing.downloaded, standing.score) == (0, 0, 0)


async def test_replayed_forged_and_inflated_receipts_add_nothing(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        url = server.credit_url
        honest = receipt(5 * MiB)
        assert (await submit_receipts(url, [honest])).accepted == 1
        replayed = await submit_receipts(url, [honest, receipt(MiB)])
        assert (replayed.accepted, replayed.stale, replayed.credited) == (0, 2, 0)
        inflated = dataclasses.replace(honest, total=50 * MiB)
        forged = dataclasses.replace(
            receipt(60 * MiB), signature=SEEDER.sign(receipt(60 * MiB).signed_bytes())
        )
        moved = dataclasses.replace(honest, torrent=b"\x52" * 20)
        refused = await submit_receipts(url, [inflated, forged, moved])
        assert (refused.accepted, refused.rejected, refused.credited) == (0, 3, 0)
        standing = await fetch_standing(url, SEEDER.public_key)
        assert standing.uploaded == 5 * MiB


async def test_credit_survives_a_tracker_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        await submit_receipts(server.credit_url, [receipt(7 * MiB)])
    async with running(tmp_path) as server:
        assert (await fetch_standing(server.credit_url, SEEDER.public_key)).uploaded == 7 * MiB
        again = await submit_receipts(server.credit_url, [receipt(7 * MiB)])
        assert again.stale == 1


async def test_malformed_entries_are_rejected_one_by_one(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        body = encode([receipt(MiB).to_fields(), {b"v": 1}, b"not a receipt"])
        status, answer = await post(server.port, "/credit", body)
        assert status == 200
        assert SubmitResult.decode(answer) == SubmitResult(1, 0, 2, MiB)


@pytest.mark.parametrize(
    "body",
    [b"garbage", encode({b"receipts": []}), encode([b"x"] * (MAX_SUBMISSION + 1)),
     b"l" + b"d1:bi1e1:ai1ee" + b"e"],
    ids=["not bencoded", "not a list", "too many", "not canonical"],
)
async def test_bad_submissions_are_refused_whole(tmp_path: Path, body: bytes) -> None:
    async with running(tmp_path) as server:
        status, answer = await post(server.port, "/credit", body)
        assert status == 400
        assert b"failure reason" in decode(answer)


async def test_an_oversized_body_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        status, answer = await post(server.port, "/credit", bytes(70_000), length=10**9)
        assert status == 413
        assert b"failure reason" in decode(answer)


async def test_bad_standing_queries_and_methods(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        for query in ("", "?identity=zz", "?identity=00", f"?identity={'00' * 32}&identity=0"):
            status, answer = await http_get.get(
                server.credit_url + query, error=TrackerError, what="t", max_body=1000, timeout=10
            )
            assert status == 400
            assert b"64 hex digits" in decode(answer)[b"failure reason"]
        status, _ = await post(server.port, "/announce", b"")
        assert status == 405


async def test_a_tracker_without_a_credit_database_has_no_credit_endpoint(tmp_path: Path) -> None:
    async with running(tmp_path, credit_db_path=None) as server:
        with pytest.raises(TrackerError, match="keeps no credit"):
            await submit_receipts(server.credit_url, [receipt(MiB)])


async def test_receipts_for_torrents_not_tracked_here_are_rejected(tmp_path: Path) -> None:
    async with running(tmp_path, allow_list=[TORRENT]) as server:
        result = await submit_receipts(
            server.credit_url, [receipt(MiB), receipt(MiB, torrent=b"\x99" * 20)]
        )
        assert (result.accepted, result.rejected) == (1, 1)


def test_a_full_store_still_takes_improvements_of_known_rows(tmp_path: Path) -> None:
    with CreditStore(tmp_path / "c.sqlite", max_rows=1) as store:
        assert store.submit([receipt(MiB)]).accepted == 1
        assert store.submit([receipt(MiB, LEECHER2)]).rejected == 1
        assert store.submit([receipt(2 * MiB)]).accepted == 1
        assert store.best_total(LEECHER.public_key, SEEDER.public_key, TORRENT) == 2 * MiB


def test_huge_totals_cannot_break_the_sums(tmp_path: Path) -> None:
    biggest = (1 << 63) - 1
    with CreditStore(tmp_path / "c.sqlite") as store:
        store.submit([receipt(biggest), receipt(biggest, LEECHER2)])
        assert store.standing(SEEDER.public_key).uploaded >= biggest


def test_credit_url_is_derived_from_the_announce_url() -> None:
    assert credit_url_for("https://t.example/x/announce?k=1") == "https://t.example/x/credit"
    with pytest.raises(TrackerError):
        credit_url_for("udp://t.example:6969/announce")
    with pytest.raises(TrackerError):
        credit_url_for("http://t.example/tracker")


def test_a_full_store_still_adds_seeding_time_to_known_rows(tmp_path: Path) -> None:
    with CreditStore(tmp_path / "c.sqlite", max_rows=1) as store:
        assert store.add_seeding_time({(SEEDER.public_key, TORRENT): 60.0}) == 1
        assert store.add_seeding_time({(LEECHER.public_key, TORRENT): 60.0,
                                       (SEEDER.public_key, TORRENT): 30.0}) == 1
        assert store.standing(SEEDER.public_key).seeding_seconds == 90
        assert store.standing(LEECHER.public_key).seeding_seconds == 0


@pytest.mark.parametrize("kind", ["directory", "not a database"])
def test_an_unusable_credit_database_is_a_storage_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "credit.sqlite"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open tracker credit database"):
        CreditStore(path)


def test_a_submission_is_bounded_on_both_ends() -> None:
    with pytest.raises(TrackerError, match=f"at most {MAX_SUBMISSION} receipts"):
        encode_submission([receipt(MiB)] * (MAX_SUBMISSION + 1))
    assert len(decode_submission(encode_submission([receipt(MiB)] * MAX_SUBMISSION))) == 256
    with pytest.raises(TrackerError, match=f"at most {MAX_SUBMISSION_BODY} bytes"):
        decode_submission(b"l" + b"0:" * (MAX_SUBMISSION_BODY // 2) + b"e")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"garbage", "not bencoded"),
        (encode([1, 2]), "not a dictionary"),
        (encode({b"failure reason": b"no credit here"}), "tracker refused: no credit here"),
        (encode({b"identity": b"short"}), "names no identity"),
        (encode({b"identity": bytes(32), b"uploaded": -1}), "uploaded must be a non-negative"),
        (encode({b"identity": bytes(32), b"uploaded": 1, b"downloaded": b"2"}), "downloaded"),
    ],
    ids=["not bencoded", "a list", "refusal", "no identity", "negative", "not an integer"],
)
def test_a_malformed_standing_is_a_tracker_error(body: bytes, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        Standing.decode(body)


def test_a_standing_without_seeding_time_reads_as_zero_seconds() -> None:
    fields = {b"identity": SEEDER.public_key, b"uploaded": 5, b"downloaded": 1,
              b"receivers": 1, b"givers": 0}
    standing = Standing.decode(encode(fields))
    assert standing.seeding_seconds == 0 and standing.balance == 4
    with_seeding = Standing(SEEDER.public_key, 5, 1, 1, 0, seeding_seconds=60)
    assert Standing.decode(with_seeding.encode()) == with_seeding
