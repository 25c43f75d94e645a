"""RateMeter: totals, a recent rate that follows changes within its window, and idle decay."""

from __future__ import annotations

import pytest

from opendistro.swarm.rates import RateMeter


def test_a_new_meter_has_nothing() -> None:
    meter = RateMeter(now=100.0)
    assert meter.total == 0
    assert meter.rate(now=100.0) == 0.0
    assert meter.rate(now=200.0) == 0.0


def test_the_total_counts_every_byte_however_close_together() -> None:
    meter = RateMeter(now=0.0)
    for step in range(10):
        meter.add(100, now=step * 0.01)
    assert meter.total == 1000


def test_bytes_within_a_tenth_of_a_second_are_folded_in_later_not_lost() -> None:
    meter = RateMeter(now=0.0, window=1.0)
    meter.add(500, now=0.05)  # too soon to measure: held back
    assert meter.rate(now=0.05) == 0.0
    # A whole window later the rate is exactly what arrived over that time.
    assert meter.rate(now=1.0) == pytest.approx(500.0)


def test_a_steady_flow_is_measured_and_a_change_is_followed_gradually() -> None:
    meter = RateMeter(now=0.0, window=5.0)
    for second in range(1, 61):
        meter.add(1000, now=float(second))
    assert meter.rate(now=60.0) == pytest.approx(1000.0, rel=1e-3)
    meter.add(4000, now=61.0)  # one second at 4000 B/s moves it a fifth of the way
    assert meter.rate(now=61.0) == pytest.approx(1000.0 + (4000.0 - 1000.0) / 5, rel=1e-3)


def test_an_idle_meter_decays_to_zero_after_a_window() -> None:
    meter = RateMeter(now=0.0, window=5.0)
    for second in range(1, 11):
        meter.add(1000, now=float(second))
    assert 0.0 < meter.rate(now=12.0) < 1000.0
    assert meter.rate(now=30.0) == 0.0
    assert meter.total == 10_000
