"""The pure tracker registry (explicit time) and its SQLite store (real files)."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from opendistro.credit.identity import CreditIdentity
from opendistro.errors import StorageError, TrackerError
from opendistro.tracker import registry as registry_module
from opendistro.tracker.credit import Standing
from opendistro.tracker.protocol import AnnounceEvent, AnnounceRequest, ScrapeStats, sign_announce
from opendistro.tracker.registry import PeerRecord, Swarm, TrackerRegistry
from opendistro.tracker.store import TrackerStore, snapshot_registry

HASH_A = b"A" * 20
HASH_B = b"B" * 20
SEEDER = CreditIdentity.from_seed(bytes([61]) * 32)
OTHER_SEEDER = CreditIdentity.from_seed(bytes([62]) * 32)


def peer_id(n: int) -> bytes:
    return f"-OD0001-{n:012d}".encode()


def announce(
    registry: TrackerRegistry,
    n: int,
    *,
    now: float = 0.0,
    left: int = 100,
    event: AnnounceEvent = AnnounceEvent.NONE,
    info_hash: bytes = HASH_A,
    numwant: int = 50,
    ip: str | None = None,
) -> tuple[tuple[str, int], ...]:
    request = AnnounceRequest(
        info_hash, peer_id(n), 10_000 + n, left=left, event=event, numwant=numwant
    )
    return registry.announce(request, ip or f"127.0.0.{n % 250 + 1}", now).peers


def make_registry(**kwargs: object) -> TrackerRegistry:
    return TrackerRegistry(rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


def test_peers_see_each_other_but_never_themselves() -> None:
    registry = make_registry()
    assert announce(registry, 1) == ()
    assert announce(registry, 2) == (("127.0.0.2", 10_001),)
    assert announce(registry, 1) == (("127.0.0.3", 10_002),)


def test_seeders_are_not_sent_seeders() -> None:
    registry = make_registry()
    announce(registry, 1, left=0)
    announce(registry, 2, left=0)
    announce(registry, 3, left=50)
    seen_by_seed = announce(registry, 1, left=0)
    assert seen_by_seed == (("127.0.0.4", 10_003),)
    assert len(announce(registry, 3, left=50)) == 2


def test_numwant_is_capped_and_sampled() -> None:
    registry = make_registry(max_numwant=20)
    for n in range(60):
        announce(registry, n)
    answer = announce(registry, 100, numwant=1000)
    assert len(answer) == 20
    assert len(set(answer)) == 20
    answers = {announce(registry, 100, numwant=5) for _ in range(10)}
    assert len(answers) > 1  # a random sample, not always the same first peers


def test_stopped_removes_and_completed_counts_once() -> None:
    registry = make_registry()
    announce(registry, 1, event=AnnounceEvent.STARTED)
    announce(registry, 2, event=AnnounceEvent.STARTED)
    announce(registry, 1, left=0, event=AnnounceEvent.COMPLETED)
    announce(registry, 1, left=0, event=AnnounceEvent.COMPLETED)  # repeated: not counted again
    assert registry.scrape([HASH_A]) == {HASH_A: ScrapeStats(1, 1, 1)}
    announce(registry, 2, event=AnnounceEvent.STOPPED)
    assert registry.scrape([HASH_A]) == {HASH_A: ScrapeStats(1, 1, 0)}
    assert announce(registry, 3) == (("127.0.0.2", 10_001),)


def test_peers_expire_after_ttl_with_explicit_time() -> None:
    registry = make_registry(interval=100, peer_ttl=200)
    announce(registry, 1, now=0)
    announce(registry, 2, now=150)
    assert registry.expire(now=199) == 0
    assert registry.expire(now=201) == 1
    assert announce(registry, 3, now=210) == (("127.0.0.3", 10_002),)
    assert registry.expire(now=1000) == 2
    assert registry.stats().torrents == 0


def test_default_ttl_is_two_intervals() -> None:
    assert make_registry(interval=300).peer_ttl == 600


def test_allow_list_refuses_unknown_torrents() -> None:
    registry = make_registry(allow_list=[HASH_A])
    announce(registry, 1)
    with pytest.raises(TrackerError, match="not tracked"):
        announce(registry, 1, info_hash=HASH_B)
    assert registry.scrape([HASH_B]) == {}
    assert registry.stats().torrents == 1


def test_scrape_all_and_stats() -> None:
    registry = make_registry()
    announce(registry, 1, left=0)
    announce(registry, 2, info_hash=HASH_B)
    announce(registry, 2, info_hash=HASH_B, left=0, event=AnnounceEvent.COMPLETED)
    announce(registry, 3, info_hash=HASH_B)
    assert registry.scrape() == {HASH_A: ScrapeStats(1, 0, 0), HASH_B: ScrapeStats(1, 1, 1)}
    stats = registry.stats()
    assert (stats.torrents, stats.seeders, stats.leechers, stats.completed) == (2, 2, 1, 1)


def test_swarm_size_is_bounded() -> None:
    registry = make_registry(max_peers_per_swarm=3)
    for n in range(10):
        announce(registry, n)
    assert registry.scrape([HASH_A])[HASH_A].incomplete == 3
    assert len(announce(registry, 99)) == 3  # a newcomer still gets peers


def test_a_stop_from_a_stranger_is_answered_without_making_a_swarm() -> None:
    registry = make_registry()
    assert announce(registry, 1, event=AnnounceEvent.STOPPED) == ()
    assert registry.stats().torrents == 0
    assert registry.counters.announces == 1
    announce(registry, 2)
    assert announce(registry, 3, event=AnnounceEvent.STOPPED) == ()  # never announced before
    assert registry.scrape([HASH_A]) == {HASH_A: ScrapeStats(0, 0, 1)}


def test_a_full_tracker_refuses_new_torrents_but_serves_known_ones() -> None:
    registry = make_registry(max_swarms=1)
    announce(registry, 1)
    with pytest.raises(TrackerError, match="tracker is full"):
        announce(registry, 2, info_hash=HASH_B)
    assert registry.counters.refused == 1
    assert announce(registry, 2) == (("127.0.0.2", 10_001),)


def test_numwant_zero_gets_no_peers_but_is_recorded() -> None:
    registry = make_registry()
    announce(registry, 1)
    assert announce(registry, 2, numwant=0) == ()
    assert registry.scrape([HASH_A]) == {HASH_A: ScrapeStats(0, 0, 2)}


def test_restoring_an_empty_swarm_keeps_nothing() -> None:
    registry = make_registry()
    registry.restore(HASH_A, [], 0)
    registry.restore(HASH_B, [], 3)
    assert registry.scrape() == {HASH_B: ScrapeStats(0, 3, 0)}


def test_a_swarm_that_knows_no_size_judges_a_leecher_at_zero() -> None:
    swarm = Swarm()
    leecher = PeerRecord(peer_id(1), "127.0.0.1", 1, left=10, last_seen=0.0)
    assert swarm.completion(leecher) == 0.0
    swarm.put(leecher)
    assert swarm.completion(PeerRecord(peer_id(2), "127.0.0.1", 2, left=5, last_seen=0.0)) == 0.5
    assert swarm.completion(PeerRecord(peer_id(3), "127.0.0.1", 3, left=0, last_seen=0.0)) == 1.0


def test_proved_identities_wait_for_a_standing_until_given_one() -> None:
    registry = make_registry()
    request = AnnounceRequest(HASH_A, peer_id(1), 10_001, left=0)
    registry.announce(sign_announce(request, SEEDER, time=1000), "127.0.0.2", 1000.0)
    assert registry.needs_standings
    assert registry.identities() == {SEEDER.public_key}
    registry.set_standings([Standing(SEEDER.public_key, uploaded=5)])
    assert not registry.needs_standings
    assert registry.priority(SEEDER.public_key) == 5
    assert registry.priority(None) == 0


def test_remembered_standings_are_bounded_but_known_ones_still_update() -> None:
    registry = make_registry()
    crowd = [Standing(n.to_bytes(32, "big")) for n in range(100_000)]
    registry.set_standings(crowd)
    registry.remember_standing(Standing(SEEDER.public_key, uploaded=9))
    assert not registry.knows_standing(SEEDER.public_key)  # no room for a stranger
    registry.remember_standing(Standing(crowd[0].identity, uploaded=9))
    assert registry.priority(crowd[0].identity) == 9


def test_seeding_time_needs_time_to_pass_between_proved_seed_announces() -> None:
    registry = make_registry(interval=100)
    request = AnnounceRequest(HASH_A, peer_id(1), 10_001, left=0)
    registry.announce(sign_announce(request, SEEDER, time=1000), "127.0.0.2", 1000.0)
    registry.announce(sign_announce(request, SEEDER, time=1001), "127.0.0.2", 1000.0)
    assert registry.take_seeding_credit() == {}  # no time passed: nothing to credit
    registry.announce(sign_announce(request, SEEDER, time=1030), "127.0.0.2", 1030.0)
    assert registry.take_seeding_credit() == {(SEEDER.public_key, HASH_A): 30.0}


def test_pending_seeding_credit_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_MAX_PENDING", 1)
    registry = make_registry(interval=100)

    def seed(n: int, identity: CreditIdentity, now: int) -> None:
        request = AnnounceRequest(HASH_A, peer_id(n), 10_000 + n, left=0)
        registry.announce(sign_announce(request, identity, time=now), "127.0.0.2", float(now))

    for now in (1000, 1010, 1030):
        seed(1, SEEDER, now)
        seed(2, OTHER_SEEDER, now)
    # room for one pending (identity, torrent): the first keeps counting, the second waits
    assert registry.take_seeding_credit() == {(SEEDER.public_key, HASH_A): 30.0}
    seed(2, OTHER_SEEDER, 1040)
    assert registry.take_seeding_credit() == {(OTHER_SEEDER.public_key, HASH_A): 10.0}


def test_store_round_trip_through_sqlite_file(tmp_path: Path) -> None:
    registry = make_registry()
    announce(registry, 1, now=5.0, left=0)
    announce(registry, 2, now=6.0, info_hash=HASH_B, event=AnnounceEvent.COMPLETED, left=0)
    announce(registry, 2, now=7.0, info_hash=HASH_B, event=AnnounceEvent.STOPPED)
    store = TrackerStore(tmp_path / "tracker.db")
    store.save(snapshot_registry(registry))

    restored = make_registry()
    TrackerStore.restore_into(restored, TrackerStore(tmp_path / "tracker.db").load())
    assert restored.scrape() == registry.scrape()
    swarm = restored.swarm(HASH_A)
    assert swarm is not None
    record = swarm.peers[peer_id(1)]
    assert (record.ip, record.port, record.left, record.last_seen) == ("127.0.0.2", 10_001, 0, 5.0)
    # the swarm of HASH_B has no peers left but keeps its completed count
    assert restored.scrape([HASH_B]) == {HASH_B: ScrapeStats(0, 1, 0)}

    # a second save replaces, not appends
    announce(registry, 1, now=8.0, event=AnnounceEvent.STOPPED)
    store.save(snapshot_registry(registry))
    assert [s.info_hash for s in store.load()] == [HASH_B]


def test_store_keeps_proved_identities_across_a_restart(tmp_path: Path) -> None:
    registry = make_registry(interval=100)
    request = AnnounceRequest(HASH_A, peer_id(1), 10_001, left=0)
    registry.announce(sign_announce(request, SEEDER, time=1000), "127.0.0.2", 1000.0)
    announce(registry, 2, now=1000.0)  # an anonymous leecher
    store = TrackerStore(tmp_path / "tracker.db")
    store.save(snapshot_registry(registry))

    restored = make_registry(interval=100)
    TrackerStore.restore_into(restored, TrackerStore(tmp_path / "tracker.db").load())
    swarm = restored.swarm(HASH_A)
    assert swarm is not None
    seeder = swarm.peers[peer_id(1)]
    assert (seeder.identity, seeder.proof_time) == (SEEDER.public_key, 1000)
    assert swarm.peers[peer_id(2)].identity is None
    # seeding since the last proved announce before the restart still counts ...
    restored.announce(sign_announce(request, SEEDER, time=1030), "127.0.0.2", 1030.0)
    assert restored.take_seeding_credit() == {(SEEDER.public_key, HASH_A): 30.0}
    # ... and a proof made before the restart is still a replay
    restored.announce(sign_announce(request, SEEDER, time=1000), "127.0.0.2", 1031.0)
    assert restored.counters.proofs_ignored == 1


def test_store_reports_unusable_file_as_storage_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        TrackerStore(bad).load()


def test_store_reports_a_failed_save_and_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE peers (info_hash BLOB, peer_id BLOB)")  # an older, other layout
        db.execute("INSERT INTO peers VALUES (x'00', x'01')")
    registry = make_registry()
    announce(registry, 1)
    with pytest.raises(StorageError, match="cannot save"):
        TrackerStore(path).save(snapshot_registry(registry))
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM peers").fetchone() == (1,)  # rolled back


def test_store_reports_unreadable_rows_as_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    TrackerStore(path).save([])
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO peers VALUES (x'00', x'01', '127.0.0.1', 'port', 0, 0.0)")
    with pytest.raises(StorageError, match="cannot read"):
        TrackerStore(path).load()
