"""A discrete-event loop with a virtual clock: the simulator's notion of time.

The simulator runs the real sans-I/O core objects, which never read a clock;
time is whatever this loop says it is. Events are kept in one binary heap
(:mod:`heapq`) ordered by ``(when, sequence)``, so two events due at the same
instant run in the order they were scheduled and a run is a pure function of
its inputs: no wall clock, no global random state, no hash-order dependence.

Cancelling a :class:`Timer` only marks it (lazy deletion): removing an entry
from the middle of a heap costs O(n), skipping it when it surfaces costs
nothing. When cancelled entries outnumber live ones the heap is rebuilt, so a
caller that reschedules a lot (the network re-rates flows constantly) cannot
make it grow without bound.

Per-event cost is the point of this module: the scale goal is tens of millions
of events, so the hot path is a handful of attribute reads and one ``heappop``,
and scheduling allocates only a slotted :class:`Timer` and its heap tuple
(measured faster than list-based heap entries). A heap entry is
``(when, sequence, callback, args)``; a cancellable event stores its Timer in
place of the callback and None in place of the arguments. Events nobody will
cancel (the network's control messages, most of all events) skip the Timer
altogether. ``events_processed`` is brought up to date when
:meth:`EventLoop.run` returns.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = ["EventLoop", "Timer"]

# Rebuild the heap when cancelled entries exceed live ones and there are at
# least this many of them (small heaps are not worth the rebuild).
_COMPACT_MIN_CANCELLED = 4096


class Timer:
    """A scheduled call; :meth:`cancel` it to make sure it never runs."""

    __slots__ = ("_loop", "_queued", "args", "callback", "cancelled", "when")

    def __init__(
        self, loop: EventLoop, when: float, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        self._loop = loop
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._queued = True  # sits in the loop's heap until it runs or is compacted away

    def cancel(self) -> None:
        """Make sure the call never happens; harmless if it already ran or was cancelled."""
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = _never_called
        self.args = ()
        if self._queued:
            self._loop._note_cancelled()

    @property
    def pending(self) -> bool:
        """True until the timer runs or is cancelled."""
        return self._queued and not self.cancelled

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "scheduled"
        return f"<Timer {state} at {self.when:.6f} {getattr(self.callback, '__name__', '?')}>"


def _never_called(*_args: Any) -> None:  # pragma: no cover - cancelled timers never run
    """Placeholder for a cancelled timer's callback (drops references early)."""


class EventLoop:
    """A virtual clock plus a priority queue of timed callbacks.

    ``now`` only moves forward, jumping from one event to the next. Callbacks
    run one at a time and may schedule further events, including at ``now``
    itself (those run after every event already due at ``now``).
    """

    __slots__ = ("_cancelled", "_heap", "_seq", "_stopping", "events_processed", "now")

    def __init__(self, start: float = 0.0) -> None:
        self.now: float = start
        self.events_processed: int = 0
        # (when, seq, callback, args), or (when, seq, timer, None) for a Timer.
        self._heap: list[tuple[float, int, Any, tuple[Any, ...] | None]] = []
        self._seq = 0
        self._cancelled = 0
        self._stopping = False

    # -- scheduling --------------------------------------------------------

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` at virtual time ``when`` (not before ``now``)."""
        if not when >= self.now:  # written so that NaN fails it too
            if when != when:
                raise ConfigError("cannot schedule an event at NaN")
            raise ConfigError(f"cannot schedule an event in the past ({when} < {self.now})")
        timer = Timer(self, when, callback, args)
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._heap, (when, seq, timer, None))
        return timer

    def _schedule(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> Timer:
        """:meth:`call_at` without the checks, for callers in this package that
        guarantee ``when >= now`` (the network's hot path)."""
        timer = Timer(self, when, callback, args)
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._heap, (when, seq, timer, None))
        return timer

    def _post(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        """:meth:`_schedule` for an event that will never be cancelled: no Timer.

        It takes its place in the ``(when, sequence)`` order all the same.
        """
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._heap, (when, seq, callback, args))

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` ``delay`` virtual seconds from now."""
        if not delay >= 0.0:  # also rejects NaN
            raise ConfigError(f"delay must be non-negative, got {delay}")
        return self.call_at(self.now + delay, callback, *args)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` at ``now``, after everything already due at ``now``."""
        return self.call_at(self.now, callback, *args)

    # -- running -----------------------------------------------------------

    def run(self, until: float | None = None, *, max_events: int | None = None) -> None:
        """Run events in time order.

        Stops when the queue is empty, when the next event is due after
        ``until`` (events due exactly at ``until`` do run, and the clock is
        then left at ``until``), after ``max_events`` callbacks, or when a
        callback calls :meth:`stop`.
        """
        if until is not None and not until >= self.now:
            raise ConfigError(f"cannot run until {until}, the clock is already at {self.now}")
        if max_events is not None and max_events < 0:
            raise ConfigError(f"max_events must be non-negative, got {max_events}")
        heap = self._heap
        heappop = heapq.heappop
        limit = math.inf if until is None else until
        budget = -1 if max_events is None else max_events
        processed = 0
        self._stopping = False
        try:
            while heap and processed != budget:
                when, _seq, callback, args = heap[0]
                if when > limit:
                    break
                heappop(heap)
                if args is None:
                    timer = callback
                    timer._queued = False
                    if timer.cancelled:
                        self._cancelled -= 1
                        continue
                    callback = timer.callback
                    args = timer.args
                self.now = when
                processed += 1
                callback(*args)
                if self._stopping:
                    break
        finally:
            self.events_processed += processed
        if until is not None and not self._stopping and processed != budget and self.now < until:
            self.now = until

    def stop(self) -> None:
        """Ask :meth:`run` to return after the callback that is running now."""
        self._stopping = True

    # -- introspection -----------------------------------------------------

    @property
    def pending(self) -> int:
        """How many scheduled, not cancelled, events are waiting."""
        return len(self._heap) - self._cancelled

    def next_event_time(self) -> float | None:
        """When the next live event is due, or None if nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][3] is None and heap[0][2].cancelled:
            heapq.heappop(heap)[2]._queued = False
            self._cancelled -= 1
        return heap[0][0] if heap else None

    # -- internals ---------------------------------------------------------

    def _note_cancelled(self) -> None:
        self._cancelled += 1
        if self._cancelled >= _COMPACT_MIN_CANCELLED and self._cancelled * 2 > len(self._heap):
            self._compact()

    def _compact(self) -> None:
        """Drop cancelled entries; heapify keeps the (when, seq) order intact.

        Done in place: :meth:`run` holds a reference to the list while a
        callback (which may cancel timers) is running.
        """
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[3] is not None or not entry[2].cancelled]
        heapq.heapify(heap)
        self._cancelled = 0
