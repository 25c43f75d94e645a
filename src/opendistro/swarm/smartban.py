"""Who sent the bad data: smart ban.

A piece that fails its hash check says only that *some* block of it was
wrong, not whose. Punishing every peer that contributed would ban honest
peers along with the liar (and a liar could get honest peers banned by
joining their pieces). Instead, as libtorrent does:

* when every block of the failed piece came from one peer, that peer sent
  bad data: it is banned at once;
* otherwise a digest of each block and its sender is remembered, and the
  piece is fetched again; once a copy passes, each remembered block is
  compared with the good one, and exactly the peers whose blocks differ are
  banned. Peers whose blocks were right are never punished. In a v2
  torrent the wait can be skipped: the true hashes of the piece's 16 KiB
  leaves (from a peer, proved against the piece hash) name the bad blocks,
  and :meth:`SmartBan.blame` names their senders.

The same piece failing with a *different* sole sender each time, or failing
again and again whoever sent it, means the torrent's own hash is wrong (or
the release was replaced), not that every peer lies: :meth:`SmartBan.piece_failed`
then names no one and :meth:`SmartBan.suspect_metainfo` reports the piece,
so the driver can stop with an integrity error instead of banning the
whole swarm.

This is bookkeeping only: the driver supplies digests (it holds the data),
the session decides what a ban means. Memory is bounded by ``max_records``
failed pieces, the oldest forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

__all__ = ["SmartBan"]

PeerKey = TypeVar("PeerKey", bound=Hashable)


class SmartBan(Generic[PeerKey]):
    """Finds the liars among the senders of a failed piece; see the module docstring."""

    def __init__(
        self, *, max_records: int = 256, max_sole_senders: int = 2, max_failures: int = 5
    ) -> None:
        self.max_records = max_records
        self.max_sole_senders = max_sole_senders
        self.max_failures = max_failures
        self._records: OrderedDict[int, dict[int, tuple[PeerKey, bytes]]] = OrderedDict()
        self._sole_senders: dict[int, set[PeerKey]] = {}
        self._failures: dict[int, int] = {}

    def wants_digests(self, index: int) -> bool:
        """Whether :meth:`piece_passed` needs this piece's block digests to judge anyone."""
        return index in self._records

    def suspect_metainfo(self, index: int) -> bool:
        """True once the piece failed whole from ``max_sole_senders`` different peers,
        or ``max_failures`` times in all."""
        return (
            len(self._sole_senders.get(index, ())) >= self.max_sole_senders
            or self._failures.get(index, 0) >= self.max_failures
        )

    def piece_failed(
        self,
        index: int,
        senders: Mapping[int, PeerKey],
        digests: Mapping[int, bytes],
    ) -> set[PeerKey]:
        """A piece failed; ``senders``/``digests`` map each block offset to its sender/digest.

        Returns the peers to ban now (a sole sender); the others are judged
        by :meth:`piece_passed` once a good copy arrives.
        """
        self._failures[index] = self._failures.get(index, 0) + 1
        distinct = set(senders.values())
        if len(distinct) == 1:
            (sender,) = distinct
            seen = self._sole_senders.setdefault(index, set())
            seen.add(sender)
            if len(seen) >= self.max_sole_senders:
                return set()  # several peers cannot all be lying the same way
            return {sender}
        record = self._records.setdefault(index, {})
        for begin, sender in senders.items():
            digest = digests.get(begin)
            if digest is not None:
                # A block that failed twice from different senders keeps the first record.
                record.setdefault(begin, (sender, digest))
        self._records.move_to_end(index)
        while len(self._records) > self.max_records:
            self._records.popitem(last=False)
        return set()

    def blame(self, index: int, bad_offsets: Iterable[int]) -> set[PeerKey]:
        """The blocks at ``bad_offsets`` are known to be wrong (v2 leaf hashes said so).

        Returns their senders, and forgets the piece: nobody else is to blame.
        """
        record = self._records.pop(index, None)
        if record is None:
            return set()
        return {record[begin][0] for begin in bad_offsets if begin in record}

    def piece_passed(self, index: int, digests: Mapping[int, bytes]) -> set[PeerKey]:
        """A piece passed; return the peers whose earlier blocks of it were wrong."""
        self._sole_senders.pop(index, None)
        self._failures.pop(index, None)
        record = self._records.pop(index, None)
        if record is None:
            return set()
        return {
            sender
            for begin, (sender, digest) in record.items()
            if begin in digests and digests[begin] != digest
        }
