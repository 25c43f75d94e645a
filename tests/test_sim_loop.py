"""The simulator's event loop: time order, ties, cancellation, bounds, determinism."""

from __future__ import annotations

import random

import pytest

from opendistro.errors import ConfigError
from opendistro.sim.loop import EventLoop


def test_events_run_in_time_order_and_the_clock_follows() -> None:
    loop = EventLoop()
    seen: list[tuple[str, float]] = []
    for when, label in [(3.0, "c"), (1.0, "a"), (2.0, "b")]:
        loop.call_at(when, lambda label=label: seen.append((label, loop.now)))
    loop.run()
    assert seen == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert loop.now == 3.0
    assert loop.events_processed == 3


def test_ties_run_in_insertion_order() -> None:
    loop = EventLoop()
    seen: list[int] = []
    for i in range(100):
        loop.call_at(5.0, seen.append, i)
    loop.run()
    assert seen == list(range(100))


def test_events_scheduled_now_run_after_those_already_due_now() -> None:
    loop = EventLoop()
    seen: list[str] = []

    def first() -> None:
        seen.append("first")
        loop.call_soon(seen.append, "scheduled-by-first")

    loop.call_at(1.0, first)
    loop.call_at(1.0, seen.append, "second")
    loop.run()
    assert seen == ["first", "second", "scheduled-by-first"]


def test_call_later_is_relative_to_now() -> None:
    loop = EventLoop()
    seen: list[float] = []
    loop.call_at(10.0, lambda: loop.call_later(2.5, lambda: seen.append(loop.now)))
    loop.run()
    assert seen == [12.5]


def test_cancelled_timers_never_run() -> None:
    loop = EventLoop()
    seen: list[int] = []
    timers = [loop.call_at(float(i), seen.append, i) for i in range(10)]
    for timer in timers[::2]:
        timer.cancel()
    timers[0].cancel()  # twice is harmless
    assert loop.pending == 5
    loop.run()
    assert seen == [1, 3, 5, 7, 9]
    assert loop.events_processed == 5
    assert not any(timer.pending for timer in timers)


def test_cancel_after_running_is_harmless_and_counts_stay_right() -> None:
    loop = EventLoop()
    timer = loop.call_at(1.0, lambda: None)
    loop.run()
    timer.cancel()
    assert loop.pending == 0
    loop.call_at(2.0, lambda: None)
    assert loop.pending == 1


def test_a_callback_may_cancel_a_later_event() -> None:
    loop = EventLoop()
    seen: list[str] = []
    later = loop.call_at(2.0, seen.append, "later")
    loop.call_at(1.0, later.cancel)
    loop.run()
    assert seen == []


def test_mass_cancellation_compacts_the_heap_and_keeps_order() -> None:
    loop = EventLoop()
    rng = random.Random(3)
    seen: list[float] = []
    timers = [loop.call_at(rng.uniform(0, 100), seen.append, i) for i in range(20_000)]
    keep = set(range(0, 20_000, 7))
    for i, timer in enumerate(timers):
        if i not in keep:
            timer.cancel()
    assert loop.pending == len(keep)
    assert len(loop._heap) < 20_000  # rebuilt: cancelled entries dropped
    order: list[float] = []
    for i in keep:
        timers[i].callback = lambda i=i: order.append(timers[i].when)
    loop.run()
    assert len(order) == len(keep)
    assert order == sorted(order)


def test_cancelling_during_run_triggers_compaction_safely() -> None:
    loop = EventLoop()
    seen: list[int] = []
    victims = [loop.call_at(50.0 + i * 1e-3, seen.append, -1) for i in range(10_000)]

    def cancel_all() -> None:
        for timer in victims:
            timer.cancel()
        loop.call_later(1.0, seen.append, 1)

    loop.call_at(1.0, cancel_all)
    loop.call_at(3.0, seen.append, 3)
    loop.run()
    assert seen == [1, 3]
    assert loop.now == 3.0


def test_run_until_stops_at_the_limit_inclusive_and_sets_the_clock() -> None:
    loop = EventLoop()
    seen: list[float] = []
    for when in (1.0, 2.0, 3.0, 4.0):
        loop.call_at(when, seen.append, when)
    loop.run(until=3.0)
    assert seen == [1.0, 2.0, 3.0]
    assert loop.now == 3.0
    loop.run(until=3.5)
    assert loop.now == 3.5
    assert seen == [1.0, 2.0, 3.0]
    loop.run()
    assert seen == [1.0, 2.0, 3.0, 4.0]


def test_run_until_with_nothing_scheduled_advances_the_clock() -> None:
    loop = EventLoop()
    loop.run(until=42.0)
    assert loop.now == 42.0


def test_max_events_bounds_one_run() -> None:
    loop = EventLoop()
    seen: list[int] = []
    for i in range(10):
        loop.call_at(float(i), seen.append, i)
    loop.run(max_events=4)
    assert seen == [0, 1, 2, 3]
    assert loop.now == 3.0
    loop.run(max_events=100)
    assert len(seen) == 10


def test_stop_returns_after_the_current_callback() -> None:
    loop = EventLoop()
    seen: list[int] = []
    loop.call_at(1.0, seen.append, 1)
    loop.call_at(2.0, loop.stop)
    loop.call_at(3.0, seen.append, 3)
    loop.run(until=10.0)
    assert seen == [1]
    assert loop.now == 2.0
    loop.run()
    assert seen == [1, 3]


def test_next_event_time_skips_cancelled_entries() -> None:
    loop = EventLoop()
    assert loop.next_event_time() is None
    first = loop.call_at(1.0, lambda: None)
    loop.call_at(2.0, lambda: None)
    first.cancel()
    assert loop.next_event_time() == 2.0


@pytest.mark.parametrize("when", [-1.0, float("nan")])
def test_scheduling_in_the_past_or_at_nan_is_refused(when: float) -> None:
    loop = EventLoop(start=0.0)
    with pytest.raises(ConfigError):
        loop.call_at(when, lambda: None)


def test_bad_delays_and_limits_are_refused() -> None:
    loop = EventLoop(start=5.0)
    with pytest.raises(ConfigError):
        loop.call_later(-0.1, lambda: None)
    with pytest.raises(ConfigError):
        loop.run(until=1.0)
    with pytest.raises(ConfigError):
        loop.run(max_events=-1)


def _random_workload(seed: int) -> list[tuple[float, int]]:
    loop = EventLoop()
    rng = random.Random(seed)
    trace: list[tuple[float, int]] = []

    def tick(n: int) -> None:
        trace.append((loop.now, n))
        if n < 2000:
            for _ in range(rng.randrange(1, 4)):
                timer = loop.call_later(rng.choice([0.0, 0.5, rng.random()]), tick, n + 1)
                if rng.random() < 0.2:
                    timer.cancel()

    for i in range(10):
        loop.call_at(0.0, tick, i * 100)
    loop.run(max_events=20_000)
    return trace


def test_a_run_is_a_pure_function_of_its_inputs() -> None:
    first = _random_workload(11)
    assert len(first) > 1000
    assert first == _random_workload(11)
    assert first != _random_workload(12)


def test_events_without_a_timer_share_the_order_of_timed_ones() -> None:
    # The network posts its control messages without a Timer (nobody cancels
    # them); they must interleave with timers by (when, scheduling order) and
    # survive both compaction and next_event_time's skipping of cancelled timers.
    loop = EventLoop()
    seen: list[str] = []
    doomed = [loop.call_at(0.5, seen.append, "cancelled") for _ in range(5000)]
    loop._post(2.0, seen.append, ("posted at 2, first",))
    loop.call_at(2.0, seen.append, "timer at 2, second")
    loop._post(1.0, seen.append, ("posted at 1",))
    loop.call_at(3.0, seen.append, "timer at 3")
    for timer in doomed:
        timer.cancel()
    assert len(loop._heap) < 1000 and loop.pending == 4  # compacted; the posted entries stayed
    assert loop.next_event_time() == 1.0
    loop.run(until=2.5)
    assert seen == ["posted at 1", "posted at 2, first", "timer at 2, second"]
    assert loop.events_processed == 3 and loop.now == 2.5
    doomed[0] = loop.call_at(2.6, seen.append, "cancelled")
    doomed[0].cancel()
    loop._post(2.7, seen.append, ("posted at 2.7",))
    assert loop.next_event_time() == 2.7
    loop.run()
    assert seen[3:] == ["posted at 2.7", "timer at 3"]
