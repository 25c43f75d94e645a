"""Run metrics: the Kumar & Ross bound, Jain's index, percentiles, the JSON summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from opendistro.errors import ConfigError
from opendistro.sim.metrics import (
    RunMetrics,
    fluid_lower_bound,
    jain_index,
    peak_rss_mb,
    percentiles,
    scenario_bound,
)
from opendistro.sim.plot import matplotlib_available, plot_completion_cdf, text_cdf
from opendistro.sim.scenario import builtin_scenarios


def test_bound_limited_by_aggregate_upload() -> None:
    # F = 100, seed 10, 4 peers uploading 5 each: N F / (u_s + sum u) = 400 / 30.
    bound = fluid_lower_bound(100, 10, [5, 5, 5, 5], [1000, 1000, 1000, 1000])
    assert bound == pytest.approx(400 / 30)


def test_bound_limited_by_the_seed() -> None:
    # Rich peers cannot help before the seed has sent one copy: F / u_s.
    assert fluid_lower_bound(100, 1, [1000, 1000], [1000, 1000]) == pytest.approx(100.0)


def test_bound_limited_by_the_slowest_downlink() -> None:
    assert fluid_lower_bound(100, 100, [100, 100], [100, 2]) == pytest.approx(50.0)


def test_bound_edge_cases() -> None:
    assert fluid_lower_bound(100, 10, [], []) == 0.0
    assert fluid_lower_bound(100, 0, [0], [10]) == math.inf
    with pytest.raises(ConfigError):
        fluid_lower_bound(100, 10, [1, 2], [1])
    with pytest.raises(ConfigError):
        fluid_lower_bound(-1, 10, [1], [1])


def test_jain_index_known_values() -> None:
    assert jain_index([3, 3, 3, 3]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)  # one does everything: 1/n
    assert jain_index([1, 2, 3]) == pytest.approx(36 / (3 * 14))
    assert jain_index([]) == 1.0
    assert jain_index([0, 0]) == 1.0
    with pytest.raises(ConfigError):
        jain_index([1, -1])


def test_percentiles_interpolate_like_numpy() -> None:
    values = list(range(1, 101))  # 1..100
    got = percentiles(values)
    assert got["min"] == 1 and got["max"] == 100
    assert got["median"] == pytest.approx(50.5)
    assert got["p95"] == pytest.approx(95.05)
    assert percentiles([7.0]) == {"min": 7.0, "median": 7.0, "p95": 7.0, "max": 7.0}
    assert percentiles([4, 1, 3, 2])["median"] == pytest.approx(2.5)
    with pytest.raises(ConfigError):
        percentiles([])


def test_summary_is_json_and_has_the_headline_figures() -> None:
    metrics = RunMetrics(
        completion_times={1: 10.0, 2: 20.0, 3: 30.0},
        uploaded={1: 100, 2: 100, 3: 100, 4: 0},
        downloaded={1: 100, 2: 100, 3: 100, 4: 50},
        seed_uploaded=250,
        file_size=100,
        bound=15.0,
        wall_seconds=2.0,
        events=1000,
        peak_rss_mb=12.5,
    )
    summary = json.loads(json.dumps(metrics.summary()))
    assert summary["peers"] == 4
    assert summary["completed"] == 3
    assert summary["completion_seconds"]["median"] == 20.0
    assert summary["completion_seconds"]["max"] == 30.0
    assert summary["last_over_bound"] == pytest.approx(2.0)
    assert summary["seed_upload_copies"] == pytest.approx(2.5)
    assert summary["share_ratio"]["min"] == 0.0
    assert summary["share_ratio_jain"] == pytest.approx(9 / (4 * 3))
    assert summary["events_per_wall_second"] == pytest.approx(500.0)


def test_summary_of_a_run_where_nobody_finished() -> None:
    metrics = RunMetrics({}, {}, {}, 0, 100, math.inf, 0.0, 0, 1.0)
    summary = json.loads(json.dumps(metrics.summary(), allow_nan=False))
    assert summary["completion_seconds"] is None
    assert summary["bound_seconds"] is None
    assert summary["last_over_bound"] is None
    assert summary["events_per_wall_second"] is None


def test_peak_rss_is_plausible() -> None:
    assert 1.0 < peak_rss_mb() < 100_000.0


def test_text_cdf_shows_each_decile() -> None:
    text = text_cdf([float(i) for i in range(1, 101)], width=20, rows=4)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("100%") and "100.0s" in lines[-1]
    assert lines[-1].count("#") == 20
    assert lines[0].count("#") == 5  # 25 s is a quarter of the slowest
    assert text_cdf([]) == "(no peer completed)"
    with pytest.raises(ConfigError):
        text_cdf([1.0], width=0)


def test_plot_writes_a_file_or_reports_matplotlib_missing(tmp_path: Path) -> None:
    run = RunMetrics({1: 1.0, 2: 2.0}, {}, {}, 0, 10, 0.5, 1.0, 10, 1.0)
    target = tmp_path / "cdf.png"
    written = plot_completion_cdf({"run": run}, target)
    assert written == matplotlib_available()
    assert target.exists() == written


def test_scenario_bound_matches_the_formula() -> None:
    flash = builtin_scenarios()["flash_crowd"]
    uploads = [c.upload for c in flash.peers for _ in range(c.count)]
    expected = 10_000 * flash.file_size / (flash.seed_upload + sum(uploads))
    assert scenario_bound(flash) == pytest.approx(expected)
    assert scenario_bound(flash) > flash.file_size / flash.seed_upload
