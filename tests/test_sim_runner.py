"""The simulator running the real swarm logic: completion, determinism, churn, departures."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from opendistro.errors import ConfigError
from opendistro.sim.command import load_scenario
from opendistro.sim.runner import run_scenario
from opendistro.sim.scenario import Scenario

MIB = 1 << 20


def small(**changes: object) -> Scenario:
    base = Scenario.from_dict(
        {
            "name": "small",
            "file_size": 8 * MIB,
            "piece_length": 256 * 1024,
            "seed_upload": "50 Mbit/s",
            "seed_download": "50 Mbit/s",
            "arrival": "flash",
            "seed": 11,
            "max_connections": 10,
            "peers": [
                {"name": "slow", "count": 15, "upload": "5 Mbit/s", "download": "50 Mbit/s"},
                {"name": "fast", "count": 15, "upload": "40 Mbit/s", "download": "200 Mbit/s"},
            ],
        }
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_every_peer_of_a_flash_crowd_completes_no_faster_than_the_fluid_bound() -> None:
    summary = run_scenario(small()).summary()
    assert summary["completed"] == summary["peers"] == 30
    assert summary["completion_seconds"]["max"] >= summary["bound_seconds"]
    assert summary["last_over_bound"] < 5
    # the swarm, not the seed, carried most of the data
    assert summary["seed_upload_copies"] < 30 / 2


def test_the_same_seed_gives_the_same_run() -> None:
    first = run_scenario(small())
    second = run_scenario(small())
    assert first.completion_times == second.completion_times
    assert first.uploaded == second.uploaded
    other = run_scenario(small(seed=12))
    assert other.completion_times != first.completion_times


def test_peers_that_stay_complete_when_a_third_leave_mid_download() -> None:
    metrics = run_scenario(small(churn_fraction=0.34))
    quitters = round(0.34 * 30)
    assert len(metrics.completion_times) >= 30 - quitters
    assert metrics.peers == 30


def test_peers_complete_when_the_seed_leaves_after_one_and_a_half_copies() -> None:
    metrics = run_scenario(small(seed_leaves_after_copies=1.5))
    assert len(metrics.completion_times) == 30
    # super-seeding lets the swarm finish on little more than one copy from the seed
    assert metrics.seed_uploaded <= 1.5 * 8 * MIB + 10 * 256 * 1024


def test_churn_and_a_departing_seed_together_leave_no_remaining_peer_behind() -> None:
    for seed in (21, 22, 23):
        metrics = run_scenario(small(churn_fraction=0.34, seed_leaves_after_copies=1.5, seed=seed))
        assert len(metrics.completion_times) >= 30 - round(0.34 * 30)


def test_steady_arrivals_complete() -> None:
    metrics = run_scenario(small(arrival="steady", arrival_rate=5.0))
    assert len(metrics.completion_times) == 30


def test_unknown_scenario_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_scenario("no-such-scenario")


def test_simulate_command_prints_json_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opendistro.cli", "simulate", "heterogeneous", "--peers", "40",
         "--file-size", str(8 * MIB), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["scenario"] == "heterogeneous"
    assert summary["completed"] == 40
    assert summary["last_over_bound"] >= 1.0


def test_simulate_can_plot_completion_and_progress(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    picture = tmp_path / "run.png"
    result = subprocess.run(
        [sys.executable, "-m", "opendistro.cli", "simulate", "steady_arrivals", "--peers", "30",
         "--file-size", str(4 * MIB), "--plot", str(picture), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["plot"] == str(picture)
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_runner_records_progress_over_time() -> None:
    metrics = run_scenario(small())
    fractions = [downloaded for _, downloaded, _ in metrics.timeline]
    assert fractions == sorted(fractions)
    assert metrics.timeline[-1][2] == 1.0
