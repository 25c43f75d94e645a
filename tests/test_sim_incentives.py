"""Incentives in the simulator: free riders, choking policies, several seeds, seeding policies."""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from opendistro.errors import ConfigError
from opendistro.sim.runner import run_scenario, simulation_config
from opendistro.sim.scenario import Scenario, builtin_scenarios, plan_peers

MIB = 1 << 20


def crowd(**changes: object) -> Scenario:
    base = Scenario.from_dict(
        {
            "name": "crowd",
            "file_size": 16 * MIB,
            "piece_length": 256 * 1024,
            "seed_upload": "20 Mbit/s",
            "arrival": "flash",
            "seed": 3,
            "max_connections": 12,
            "choking": "deficit",
            "seed_ratio_target": 1.0,
            "peers": [
                {"name": "cable", "count": 24, "upload": "10 Mbit/s", "download": "50 Mbit/s"},
                {"name": "rider", "count": 6, "upload": "10 Mbit/s", "download": "50 Mbit/s",
                 "free_rider": True},
            ],
        }
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_free_riders_never_upload_and_finish_after_contributors() -> None:
    scenario = builtin_scenarios()["free_riders"].scaled(peers=40, file_size=32 * MIB)
    metrics = run_scenario(dataclasses.replace(scenario, seed_ratio_target=1.0), choking="deficit")
    assert len(metrics.free_riders) == 8
    assert all(metrics.uploaded[peer] == 0 for peer in metrics.free_riders)
    assert len(metrics.completion_times) == 40
    riders = [t for p, t in metrics.completion_times.items() if p in metrics.free_riders]
    contributors = [t for p, t in metrics.completion_times.items() if p not in metrics.free_riders]
    assert statistics.median(riders) > statistics.median(contributors)
    figures = metrics.summary()
    assert figures["free_riders_completed"] == 8
    assert figures["free_rider_slowdown"] > 1.0


def test_the_run_can_override_the_scenarios_choking_policy() -> None:
    assert simulation_config(crowd()).choking == "deficit"
    assert simulation_config(crowd(choking=None)).choking == "tit-for-tat"
    deficit = run_scenario(crowd())
    tit_for_tat = run_scenario(crowd(), choking="tit-for-tat")
    assert deficit.completion_times != tit_for_tat.completion_times
    assert run_scenario(crowd(choking="tit-for-tat")).completion_times == (
        tit_for_tat.completion_times
    )


def test_several_seeds_each_report_their_upload() -> None:
    scenario = crowd(seeds=3, peers=crowd().peers[:1], seed_ratio_target=None)
    metrics = run_scenario(scenario)
    assert len(metrics.seeds_uploaded) == 3
    assert all(uploaded > 0 for uploaded in metrics.seeds_uploaded)
    assert metrics.seed_uploaded == sum(metrics.seeds_uploaded)
    summary = metrics.summary()
    assert summary["seeds"] == 3
    assert 1 / 3 <= summary["seeds_upload_jain"] <= 1.0
    assert summary["free_riders"] == 0 and summary["free_rider_slowdown"] is None


def test_a_seeding_policy_retires_finished_peers_and_the_run_still_ends() -> None:
    stays = run_scenario(crowd(seed_ratio_target=None))
    leaves = run_scenario(crowd(seed_time_target=0.0))
    assert len(leaves.completion_times) == len(stays.completion_times) == 30
    # with finished peers leaving at once, there is less upload to go round
    assert max(leaves.completion_times.values()) > max(stays.completion_times.values())


def test_scenario_files_read_the_incentive_options() -> None:
    scenario = Scenario.from_toml_text(
        """
        name = "x"
        file_size = "4 MiB"
        piece_length = "256 KiB"
        seed_upload = "10 Mbit/s"
        seed = 1
        seeds = 2
        choking = "deficit"
        seed_ratio_target = 2.0
        seed_time_target = "10 min"
        [[peers]]
        name = "a"
        count = 3
        upload = "1 Mbit/s"
        download = "10 Mbit/s"
        free_rider = true
        """
    )
    assert scenario.seeds == 2 and scenario.choking == "deficit" and scenario.free_riders == 3
    assert scenario.seeding_policy.ratio_target == 2.0
    assert scenario.seeding_policy.time_target == 600.0
    assert all(plan.free_rider for plan in plan_peers(scenario))
    assert Scenario.from_dict(scenario.as_dict()) == scenario
    assert {"free_riders", "several_seeds"} <= set(builtin_scenarios())


@pytest.mark.parametrize(
    "changes",
    [
        {"choking": "generous"},
        {"seeds": 0},
        {"seed_ratio_target": -1},
        {"seed_time_target": "soon"},
    ],
)
def test_bad_incentive_options_are_config_errors(changes: dict[str, object]) -> None:
    data = crowd().as_dict() | changes
    with pytest.raises(ConfigError):
        Scenario.from_dict(data)


def test_a_free_rider_flag_must_be_a_boolean() -> None:
    data = crowd().as_dict()
    data["peers"][1]["free_rider"] = "yes"
    with pytest.raises(ConfigError):
        Scenario.from_dict(data)
