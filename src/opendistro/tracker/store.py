"""SQLite persistence of the tracker's swarms, so a restart does not empty them.

Synchronous and small on purpose: the trio server calls :meth:`TrackerStore.save`
and :meth:`TrackerStore.load` in a worker thread. Each call opens its own
connection, because a ``sqlite3`` connection belongs to the thread that made it
and a worker thread is not guaranteed to be the same one twice. A save replaces
the whole snapshot in one transaction, so a crash mid-save leaves the previous
snapshot intact.

The credit identity a peer proved (and the time of its latest proof, which
makes an older proof a replay) are kept beside each peer, in a table of their
own so that files written before identities existed still load.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field

from ..errors import StorageError
from .registry import PeerRecord, TrackerRegistry

__all__ = ["SwarmSnapshot", "TrackerStore", "snapshot_registry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    info_hash BLOB NOT NULL,
    peer_id BLOB NOT NULL,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    left_bytes INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (info_hash, peer_id)
);
CREATE TABLE IF NOT EXISTS identities (
    info_hash BLOB NOT NULL,
    peer_id BLOB NOT NULL,
    identity BLOB NOT NULL,
    proof_time INTEGER NOT NULL,
    PRIMARY KEY (info_hash, peer_id)
);
CREATE TABLE IF NOT EXISTS completed (
    info_hash BLOB PRIMARY KEY,
    count INTEGER NOT NULL
);
"""


@dataclass
class SwarmSnapshot:
    """One swarm as stored: plain data, safe to hand to another thread."""

    info_hash: bytes
    completed: int = 0
    peers: list[PeerRecord] = field(default_factory=list)


def snapshot_registry(registry: TrackerRegistry) -> list[SwarmSnapshot]:
    """Copy the registry's swarms so they can be written while the registry keeps changing."""
    return [
        SwarmSnapshot(
            info_hash=info_hash,
            completed=swarm.completed,
            peers=[
                PeerRecord(
                    p.peer_id,
                    p.ip,
                    p.port,
                    p.left,
                    p.last_seen,
                    identity=p.identity,
                    proof_time=p.proof_time,
                )
                for p in swarm.peers.values()
            ],
        )
        for info_hash, swarm in registry.swarms()
    ]


class TrackerStore:
    """A tracker database file holding the latest snapshot of every swarm."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path)
            connection.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open tracker database {self.path!r}: {exc}") from exc
        return connection

    def save(self, swarms: Iterable[SwarmSnapshot]) -> None:
        """Replace the stored snapshot with ``swarms`` atomically."""
        try:
            with closing(self._connect()) as connection, connection:
                connection.execute("DELETE FROM peers")
                connection.execute("DELETE FROM identities")
                connection.execute("DELETE FROM completed")
                for swarm in swarms:
                    if swarm.completed:
                        connection.execute(
                            "INSERT INTO completed (info_hash, count) VALUES (?, ?)",
                            (swarm.info_hash, swarm.completed),
                        )
                    connection.executemany(
                        "INSERT OR REPLACE INTO peers"
                        " (info_hash, peer_id, ip, port, left_bytes, last_seen)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (swarm.info_hash, p.peer_id, p.ip, p.port, p.left, p.last_seen)
                            for p in swarm.peers
                        ],
                    )
                    connection.executemany(
                        "INSERT OR REPLACE INTO identities"
                        " (info_hash, peer_id, identity, proof_time) VALUES (?, ?, ?, ?)",
                        [
                            (swarm.info_hash, p.peer_id, p.identity, p.proof_time)
                            for p in swarm.peers
                            if p.identity is not None
                        ],
                    )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot save tracker database {self.path!r}: {exc}") from exc

    def load(self) -> list[SwarmSnapshot]:
        """Every stored swarm (an empty list for a new file)."""
        swarms: dict[bytes, SwarmSnapshot] = {}
        try:
            with closing(self._connect()) as connection:
                for info_hash, count in connection.execute(
                    "SELECT info_hash, count FROM completed"
                ):
                    swarms[bytes(info_hash)] = SwarmSnapshot(bytes(info_hash), int(count))
                rows = connection.execute(
                    "SELECT p.info_hash, p.peer_id, ip, port, left_bytes, last_seen,"
                    " identity, proof_time FROM peers AS p LEFT JOIN identities AS i"
                    " ON p.info_hash = i.info_hash AND p.peer_id = i.peer_id"
                )
                for info_hash, peer_id, ip, port, left, last_seen, identity, proof in rows:
                    swarm = swarms.setdefault(bytes(info_hash), SwarmSnapshot(bytes(info_hash)))
                    swarm.peers.append(
                        PeerRecord(
                            bytes(peer_id),
                            str(ip),
                            int(port),
                            int(left),
                            float(last_seen),
                            identity=None if identity is None else bytes(identity),
                            proof_time=-1 if proof is None else int(proof),
                        )
                    )
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise StorageError(f"cannot read tracker database {self.path!r}: {exc}") from exc
        return list(swarms.values())

    @staticmethod
    def restore_into(registry: TrackerRegistry, swarms: Iterable[SwarmSnapshot]) -> None:
        """Load saved swarms into ``registry``."""
        for swarm in swarms:
            registry.restore(swarm.info_hash, swarm.peers, swarm.completed)
