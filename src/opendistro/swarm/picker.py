"""Which block to ask which peer for next.

The picker is pure bookkeeping: it knows how many peers have each piece, which
pieces we have, and which blocks of the pieces in progress are requested or
received. Drivers (trio over TCP, or the simulator) tell it what happens and ask
it for requests; it never does I/O.

Policy, as in every mainstream client:

* finish pieces already in progress before starting new ones, so verified
  pieces (which we can upload and which survive a crash) appear early;
* otherwise start the rarest piece the peer has, ties broken at random, so
  that scarce pieces spread before their only holders leave;
* a peer that would sit idle because everything it has is already asked of
  others takes over the last queued block of a busier peer, so a piece in
  demand comes from several sources at once;
* once every missing block is requested (endgame), ask a second peer for
  blocks still outstanding, and tell the driver to cancel duplicates when one
  arrives, so the last few blocks of a download do not wait on one slow peer.

The picker runs after every read from every peer, so its costs matter: pieces
not yet started sit in buckets by availability (moving between buckets is
O(1)), the blocks of a piece in progress that nobody was asked for sit in a
heap, and a peer that found nothing to duplicate in endgame is not searched
again until some request is released.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..bitfield import Bitfield
from ..errors import ConfigError

__all__ = ["BLOCK_SIZE", "DEFAULT_PRIORITY", "MAX_PRIORITY", "SKIP", "Block", "PiecePicker"]

BLOCK_SIZE = 16384
SKIP = 0
DEFAULT_PRIORITY = 4
MAX_PRIORITY = 7

Block = tuple[int, int, int]
"""(piece index, offset within the piece, length): the unit of a request."""

PeerKey = TypeVar("PeerKey", bound=Hashable)


_AVAILABILITY_BITS = 32
_AVAILABILITY_MASK = (1 << _AVAILABILITY_BITS) - 1


def _rotated(items: list[int], start: int) -> Iterator[int]:
    """Every item of a bucket, starting at position ``start`` and wrapping around."""
    count = len(items)
    for offset in range(count):
        yield items[(start + offset) % count]


@dataclass
class _PieceProgress(Generic[PeerKey]):
    """Blocks of one piece being downloaded: who was asked for what, and what arrived.

    ``free`` is a heap of block numbers nobody has been asked for.
    """

    size: int
    block_size: int = BLOCK_SIZE
    free: list[int] = field(default_factory=list)
    requested: dict[int, set[PeerKey]] = field(default_factory=dict)
    received: set[int] = field(default_factory=set)

    @property
    def num_blocks(self) -> int:
        return -(-self.size // self.block_size)

    def block(self, number: int, index: int) -> Block:
        begin = number * self.block_size
        return index, begin, min(self.block_size, self.size - begin)

    def release(self, number: int) -> None:
        """Nobody is fetching this block any more: make it pickable again."""
        if number not in self.received and not self.requested.get(number):
            self.requested.pop(number, None)
            if number not in self.free:
                heapq.heappush(self.free, number)

    @property
    def complete(self) -> bool:
        return len(self.received) == self.num_blocks


class PiecePicker(Generic[PeerKey]):
    """Rarest-first block selection with partial-piece priority and endgame."""

    def __init__(
        self,
        num_pieces: int,
        *,
        piece_length: int,
        total_length: int,
        have: Bitfield | None = None,
        padding: Iterable[tuple[int, int]] = (),
        rng: random.Random | None = None,
        endgame_duplicates: int = 2,
        block_size: int = BLOCK_SIZE,
        sequential: bool = False,
        random_first: int = 4,
    ) -> None:
        self.num_pieces = num_pieces
        self.block_size = block_size
        self.piece_length = piece_length
        self.total_length = total_length
        self.have = have if have is not None else Bitfield(num_pieces)
        self._availability = [0] * num_pieces
        self._in_progress: dict[int, _PieceProgress[PeerKey]] = {}
        self._missing = num_pieces - self.have.count
        self._priority = [DEFAULT_PRIORITY] * num_pieces
        self._buckets: dict[int, list[int]] = {}
        """Pickable pieces by :meth:`_key`; a bucket never stays empty."""
        self._key_of: list[int | None] = [None] * num_pieces
        """The key of the bucket each pickable piece sits in (None for the others)."""
        self._slot = [0] * num_pieces
        """Where each bucketed piece sits in its bucket: removal swaps the last one in, O(1)."""
        for index in self.have.missing():
            self._insert(index)
        self._rng = rng or random.Random()
        self._endgame_duplicates = endgame_duplicates
        self._padding = sorted(padding)
        self._padding_starts = [start for start, _ in self._padding]
        self._releases = 0
        self._endgame_dry: dict[PeerKey, int] = {}
        self.sequential = sequential
        """Pick pieces in order (for streaming) instead of rarest first."""
        self.random_first = random_first
        """Pick at random until this many pieces are had or in progress."""
        self._sequential_cursor = 0
        self._single_source: dict[int, PeerKey | None] = {}
        """Failed pieces to fetch again from one peer only, and that peer once chosen."""

    # -- what peers have -------------------------------------------------

    def piece_size(self, index: int) -> int:
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    def _key(self, index: int) -> int:
        """Buckets sort by priority (highest first), then availability (rarest first).

        One int rather than a tuple, as it is computed on every Have: the
        priority's distance from the default above the availability bits, so
        that at the default priority the key is the availability itself.
        """
        rank = DEFAULT_PRIORITY - self._priority[index]
        return (rank << _AVAILABILITY_BITS) + self._availability[index]

    def _insert(self, index: int) -> None:
        """Put a piece that just became pickable in the bucket it belongs to."""
        key = self._key(index)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
        self._slot[index] = len(bucket)
        bucket.append(index)
        self._key_of[index] = key

    def _unbucket(self, index: int) -> None:
        key = self._key_of[index]
        assert key is not None, "only a pickable piece sits in a bucket"
        self._key_of[index] = None
        self._take_out(index, key)

    def _take_out(self, index: int, key: int) -> None:
        bucket = self._buckets[key]
        last = bucket.pop()
        if last != index:
            position = self._slot[index]
            bucket[position] = last
            self._slot[last] = position
        elif not bucket:
            del self._buckets[key]

    def _is_pickable(self, index: int) -> bool:
        return (
            not self.have.has(index)
            and index not in self._in_progress
            and self._priority[index] != SKIP
        )

    def set_priority(self, index: int, priority: int) -> None:
        """0 skips the piece; 1..7 order pieces, higher first (4 is the default)."""
        if not SKIP <= priority <= MAX_PRIORITY:
            raise ConfigError(f"piece priority must be {SKIP}..{MAX_PRIORITY}, got {priority}")
        if self._priority[index] == priority:
            return
        was_pickable = self._is_pickable(index)
        if was_pickable:
            self._unbucket(index)
        if not self.have.has(index):
            self._missing -= (priority == SKIP) - (self._priority[index] == SKIP)
        self._priority[index] = priority
        if self._is_pickable(index):
            self._insert(index)

    def _move(self, index: int, delta: int) -> None:
        """A peer gained (+1) or lost (-1) the piece: into the next bucket, if in one."""
        self._availability[index] += delta
        key = self._key_of[index]
        if key is None:
            return
        self._take_out(index, key)
        key += delta  # the availability is the low part of the key
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = []
        self._slot[index] = len(bucket)
        bucket.append(index)
        self._key_of[index] = key

    def peer_has(self, index: int) -> None:
        self._move(index, 1)

    def peer_has_bitfield(self, bitfield: Bitfield) -> None:
        for index in bitfield:
            self._move(index, +1)

    def peer_lost(self, key: PeerKey, bitfield: Bitfield | None) -> list[Block]:
        """Forget a departed peer: its pieces no longer count, its requests are free again."""
        if bitfield is not None:
            for index in bitfield:
                self._move(index, -1)
        self._endgame_dry.pop(key, None)
        return self.release_peer_requests(key)

    def availability(self, index: int) -> int:
        return self._availability[index]

    # -- choosing requests ----------------------------------------------

    @property
    def in_endgame(self) -> bool:
        """True when every missing block has been requested from someone."""
        if len(self._in_progress) < self._missing:
            return False
        return not any(progress.free for progress in self._in_progress.values())

    def interesting(self, bitfield: Bitfield) -> bool:
        """Whether a peer with ``bitfield`` has any piece we still want."""
        if bitfield.complete:
            return self._missing > 0
        return any(not self.have.has(index) for index in bitfield)

    def pick(
        self, key: PeerKey, peer_has: Bitfield, count: int, suggested: list[int] | None = None
    ) -> list[Block]:
        """Up to ``count`` new blocks to request from peer ``key``, marked as requested.

        ``suggested`` lists pieces the peer suggested (BEP 6), oldest first: they
        come before everything else of the highest priority (not in sequential
        mode, whose order is the point), because an initial seed suggests the pieces
        it has handed out least, and following it is what gets every piece into
        the swarm once before any twice. Pieces taken or no longer wanted are
        removed from the list.
        """
        picked: list[Block] = []
        if count <= 0:
            return picked
        if suggested and not self.sequential:
            self._take_suggested(key, peer_has, count, suggested, picked)
            if len(picked) >= count:
                return picked
        for index, progress in self._in_progress.items():
            if progress.free and peer_has.has(index) and self._may_take(key, index):
                self._take_free(key, index, progress, count, picked)
                if len(picked) >= count:
                    return picked
        while len(picked) < count:
            new_index = self._rarest_new_piece(peer_has)
            if new_index is None:
                break
            progress = self._start_piece(new_index)
            self._may_take(key, new_index)  # claims a failed piece for this peer
            self._take_free(key, new_index, progress, count, picked)
        if len(picked) < count and self.in_endgame:
            self._pick_endgame(key, peer_has, count, picked)
        return picked

    def _take_suggested(
        self,
        key: PeerKey,
        peer_has: Bitfield,
        count: int,
        suggested: list[int],
        picked: list[Block],
    ) -> None:
        # A suggestion never jumps ahead of a more urgent piece (a file set to high priority).
        top = SKIP
        if self._buckets:
            top = DEFAULT_PRIORITY - (min(self._buckets) >> _AVAILABILITY_BITS)
        while suggested and len(picked) < count:
            index = suggested[0]
            progress = self._in_progress.get(index)
            if (
                progress is None
                and peer_has.has(index)
                and self._is_pickable(index)
                and self._priority[index] >= top
            ):
                progress = self._start_piece(index)
            if (
                progress is not None
                and progress.free
                and peer_has.has(index)
                and self._may_take(key, index)
            ):
                self._take_free(key, index, progress, count, picked)
                if progress.free:
                    return
            del suggested[0]

    def pick_run(self, key: PeerKey, max_pieces: int) -> list[int]:
        """Consecutive whole pieces for a source that has everything (an HTTP mirror).

        A piece a departed source left half done comes first, alone. Otherwise
        the run starts at the highest-priority, rarest piece nobody has started
        (pieces no peer has come first: only a mirror can deliver them) and
        extends over the following pieces while they are free too, so that one
        range request fetches it. Every block of the run is marked as asked of
        ``key``.
        """
        if max_pieces < 1:
            return []
        abandoned = self._abandoned_piece()
        if abandoned is not None:
            progress = self._in_progress[abandoned]
            self._take_free(key, abandoned, progress, progress.num_blocks, [])
            return [abandoned]
        start = self._rarest_for_mirror()
        if start is None:
            return []
        run: list[int] = []
        index = start
        while index < self.num_pieces and len(run) < max_pieces and self._is_pickable(index):
            progress = self._start_piece(index)
            picked: list[Block] = []
            self._take_free(key, index, progress, progress.num_blocks, picked)
            run.append(index)
            index += 1
        return run

    def _abandoned_piece(self) -> int | None:
        """A piece begun by a source that left, with no block asked of anyone now.

        Peers pick such pieces up through their free blocks; a mirror takes
        the whole piece, so it is not stuck when no peer is left to do it.
        """
        for index, progress in self._in_progress.items():
            if progress.free and not any(progress.requested.values()):
                return index
        return None

    def _rarest_for_mirror(self) -> int | None:
        if self.sequential:
            return next(
                (i for i in range(self._sequential_cursor, self.num_pieces)
                 if self._is_pickable(i)),
                None,
            )
        for key in sorted(self._buckets):
            bucket = self._buckets[key]
            return next(_rotated(bucket, self._rng.randrange(len(bucket))))
        return None

    def release_run(self, key: PeerKey, indices: Iterable[int] | None = None) -> None:
        """A mirror failed or stopped early: its untouched pieces become new again.

        With ``indices``, only those pieces of its run are given up (the mirror
        keeps the rest); otherwise every piece and block asked of ``key`` is.
        """
        wanted = None if indices is None else set(indices)
        for index, progress in list(self._in_progress.items()):
            if wanted is not None and index not in wanted:
                continue
            askers = progress.requested.values()
            if progress.received or any(asked - {key} for asked in askers):
                continue
            if any(key in asked for asked in askers):
                del self._in_progress[index]
                if self._is_pickable(index):
                    self._insert(index)
        if wanted is None:
            self.release_peer_requests(key)
        self._releases += 1

    def hand_over(self, old: PeerKey, new: PeerKey, indices: Iterable[int]) -> list[int]:
        """Move whole pieces asked only of source ``old`` to source ``new``; returns those moved.

        A faster mirror takes the tail of a slower one's run this way: the
        pieces stay in progress (no other source starts them meanwhile) and
        only their owner changes. Pieces with any block received, or asked of
        a third source too, stay where they are.
        """
        moved: list[int] = []
        for index in indices:
            progress = self._in_progress.get(index)
            if progress is None or progress.received or progress.free:
                continue
            if any(asked != {old} for asked in progress.requested.values()):
                continue
            for number in progress.requested:
                progress.requested[number] = {new}
            moved.append(index)
        return moved

    def run_received(self, key: PeerKey, index: int) -> set[PeerKey]:
        """A mirror delivered all of piece ``index``; returns peers asked for any of its blocks."""
        progress = self._in_progress.get(index)
        if progress is None:
            return set()
        others: set[PeerKey] = set()
        for number in range(progress.num_blocks):
            askers = progress.requested.pop(number, set())
            askers.discard(key)
            others |= askers
            progress.received.add(number)
        progress.free = []
        return others

    def steal(self, key: PeerKey, peer_has: Bitfield) -> tuple[Block, PeerKey] | None:
        """Move one queued request from a busier peer to idle peer ``key``.

        Called when ``key`` lets us download but :meth:`pick` found nothing:
        every block it could send is already asked of someone else. Rather
        than leave that connection idle, the last block another peer holds
        two or more requests for in the same piece is re-assigned, so a piece
        is fetched from two sources at once. The caller cancels the block at
        the returned previous holder (which keeps at least one request) and
        requests it from ``key``. None when there is nothing worth moving.
        A piece being fetched again from one peer (see :meth:`piece_failed`)
        is never shared this way.
        """
        for index, progress in self._in_progress.items():
            if not peer_has.has(index) or index in self._single_source:
                continue
            held: dict[PeerKey, list[int]] = {}
            for number, askers in progress.requested.items():
                if len(askers) == 1:
                    (holder,) = askers
                    held.setdefault(holder, []).append(number)
            for holder, numbers in held.items():
                if holder != key and len(numbers) >= 2:
                    number = max(numbers)
                    progress.requested[number] = {key}
                    return progress.block(number, index), holder
        return None

    def _may_take(self, key: PeerKey, index: int) -> bool:
        """A piece that failed with several senders goes whole to the first peer that asks."""
        if index not in self._single_source:
            return True
        owner = self._single_source[index]
        if owner is None:
            self._single_source[index] = key
            return True
        return owner == key

    def _restart_single_source(self, index: int) -> None:
        """The one peer chosen for a failed piece gave up: what it sent is dropped too.

        Not once every block arrived: that copy is being hashed, and its verdict
        (and who to blame for it) must be about the blocks the driver is checking.
        Starting over meanwhile let a second copy complete while the first was
        hashed, and smart ban then blamed the first copy's bytes on the second's
        senders.
        """
        progress = self._in_progress.get(index)
        if progress is not None and progress.complete:
            return
        self._single_source[index] = None
        if self._in_progress.pop(index, None) is not None:
            if self._is_pickable(index):  # not if it was skipped meanwhile
                self._insert(index)
            self._releases += 1

    def _take_free(
        self,
        key: PeerKey,
        index: int,
        progress: _PieceProgress[PeerKey],
        count: int,
        picked: list[Block],
    ) -> None:
        while progress.free and len(picked) < count:
            number = heapq.heappop(progress.free)
            if number in progress.received:
                continue
            progress.requested.setdefault(number, set()).add(key)
            picked.append(progress.block(number, index))

    def _start_piece(self, index: int) -> _PieceProgress[PeerKey]:
        """Begin a piece; blocks lying wholly in padding count as received (they are zeros)."""
        self._unbucket(index)
        block_size = self.block_size
        progress: _PieceProgress[PeerKey] = _PieceProgress(self.piece_size(index), block_size)
        piece_start = index * self.piece_length
        first = max(bisect.bisect_right(self._padding_starts, piece_start) - 1, 0)
        for pad_start, pad_end in self._padding[first:]:
            if pad_start >= piece_start + progress.size:
                break
            for number in range(progress.num_blocks):
                block_start = piece_start + number * block_size
                block_end = block_start + min(block_size, progress.size - number * block_size)
                if pad_start <= block_start and block_end <= pad_end:
                    progress.received.add(number)
        progress.free = [n for n in range(progress.num_blocks) if n not in progress.received]
        self._in_progress[index] = progress
        return progress

    def _rarest_new_piece(self, peer_has: Bitfield) -> int | None:
        """The next piece to start from this peer, by the picking mode in force.

        Normally the highest-priority, rarest piece it has, ties broken at
        random; in sequential mode the lowest-numbered one (for streaming);
        and until we hold ``random_first`` pieces a random one, since a rare
        piece has few sources and a newcomer needs something to trade soon.
        Availability 0 is skipped: a piece the peer has is available at least once.
        """
        if self.sequential:
            return self._first_in_order(peer_has)
        if self.have.count + len(self._in_progress) < self.random_first:
            return self._random_piece(peer_has)
        for key in sorted(self._buckets):
            if not key & _AVAILABILITY_MASK:
                continue
            bucket = self._buckets[key]
            start = self._rng.randrange(len(bucket))
            for index in _rotated(bucket, start):
                if peer_has.has(index):
                    return index
        return None

    def _first_in_order(self, peer_has: Bitfield) -> int | None:
        for index in range(self._sequential_cursor, self.num_pieces):
            if not self._is_pickable(index):
                if index == self._sequential_cursor and index not in self._in_progress:
                    self._sequential_cursor += 1
                continue
            if peer_has.has(index):
                return index
        return None

    def _random_piece(self, peer_has: Bitfield) -> int | None:
        candidates = [
            index
            for key, bucket in self._buckets.items()
            if key & _AVAILABILITY_MASK
            for index in bucket
            if peer_has.has(index)
        ]
        return self._rng.choice(candidates) if candidates else None

    def _pick_endgame(
        self, key: PeerKey, peer_has: Bitfield, count: int, picked: list[Block]
    ) -> None:
        if self._endgame_dry.get(key) == self._releases:
            return  # nothing was released since this peer last found nothing
        before = len(picked)
        for index, progress in self._in_progress.items():
            if not peer_has.has(index) or self._single_source.get(index, key) != key:
                continue
            for number, askers in progress.requested.items():
                if key in askers or len(askers) >= self._endgame_duplicates:
                    continue
                askers.add(key)
                picked.append(progress.block(number, index))
                if len(picked) >= count:
                    return
        if len(picked) == before:
            self._endgame_dry[key] = self._releases

    # -- outcomes ---------------------------------------------------------

    def block_received(self, key: PeerKey, block: Block) -> tuple[bool, set[PeerKey]]:
        """Record an arrived block.

        Returns whether it was new (a duplicate in endgame is not) and the other
        peers that were also asked for it, whose requests the driver should cancel.
        """
        index, begin, _ = block
        progress = self._in_progress.get(index)
        if progress is None:
            return False, set()
        number = begin // self.block_size
        askers = progress.requested.pop(number, set())
        if number in progress.received:
            return False, set()
        progress.received.add(number)
        askers.discard(key)
        return True, askers

    def piece_complete(self, index: int) -> bool:
        progress = self._in_progress.get(index)
        return progress is not None and progress.complete

    def piece_verified(self, index: int) -> None:
        """The piece passed its hash check: we have it now."""
        if self.have.has(index):
            return
        self._single_source.pop(index, None)
        if index in self._in_progress:
            del self._in_progress[index]
        elif self._is_pickable(index):
            self._unbucket(index)
        if self._priority[index] != SKIP:
            self._missing -= 1
        self.have.set(index)

    def piece_failed(self, index: int, *, single_source: bool = False) -> None:
        """The piece failed its hash check: every block must be fetched again.

        With ``single_source`` (it came from several peers) the next copy comes
        whole from one peer, so it either passes, and smart ban can compare, or
        fails with a sole sender to blame. Otherwise a liar that poisons one
        block and refuses the others could make every copy fail.
        """
        if single_source:
            self._single_source[index] = None
        else:
            self._single_source.pop(index, None)
        if self._in_progress.pop(index, None) is not None:
            if self._is_pickable(index):  # not if it was skipped meanwhile
                self._insert(index)
            self._releases += 1
            self._sequential_cursor = min(self._sequential_cursor, index)

    def request_failed(self, key: PeerKey, block: Block) -> None:
        """A request was rejected, timed out or dropped by a choke: free the block."""
        index, begin, _ = block
        progress = self._in_progress.get(index)
        if progress is None:
            return
        number = begin // self.block_size
        askers = progress.requested.get(number)
        if askers is not None:
            askers.discard(key)
        progress.release(number)
        self._releases += 1
        if self._single_source.get(index) == key:
            self._restart_single_source(index)  # it refused: start over with another peer

    def release_peer_requests(self, key: PeerKey) -> list[Block]:
        """Free every block requested from ``key``; return them."""
        released: list[Block] = []
        for index, owner in list(self._single_source.items()):
            if owner == key:
                self._restart_single_source(index)
        for index, progress in self._in_progress.items():
            for number, askers in list(progress.requested.items()):
                if key in askers:
                    askers.discard(key)
                    released.append(progress.block(number, index))
                    progress.release(number)
        if released:
            self._releases += 1
        return released

    @property
    def complete(self) -> bool:
        return self._missing == 0
