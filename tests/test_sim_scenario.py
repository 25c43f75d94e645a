"""Scenarios: the shipped files load, bad files are ConfigErrors, scaling and plans behave."""

from __future__ import annotations

from pathlib import Path

import pytest

from opendistro.errors import ConfigError
from opendistro.sim.scenario import (
    Scenario,
    builtin_scenarios,
    parse_duration,
    parse_rate,
    parse_size,
    plan_peers,
)

NAMES = {
    "flash_crowd",
    "steady_arrivals",
    "heavy_churn",
    "heterogeneous",
    "seed_leaves_early",
    "free_riders",
    "several_seeds",
}

GOOD = """
name = "tiny"
file_size = "8 MiB"
piece_length = "256 KiB"
seed_upload = "10 Mbit/s"
arrival = "steady"
arrival_rate = 4
churn_fraction = 0.25
seed_leaves_after_copies = 2
seed = 3

[[peers]]
name = "a"
count = 30
upload = "1 MB/s"
download = "8 MiB/s"
latency = "25 ms"

[[peers]]
name = "b"
count = 10
upload = 250000
download = 1000000
"""


def test_every_builtin_scenario_loads() -> None:
    scenarios = builtin_scenarios()
    assert set(scenarios) == NAMES
    for name, scenario in scenarios.items():
        assert scenario.name == name
        assert scenario.total_peers >= 1000
        assert scenario.num_pieces >= 1
    flash = scenarios["flash_crowd"]
    assert flash.total_peers == 10_000 and flash.file_size == 1 << 30
    assert scenarios["steady_arrivals"].arrival == "steady"
    assert scenarios["heavy_churn"].churn_fraction > 0
    assert scenarios["seed_leaves_early"].seed_leaves_after_copies == 1.5


def test_a_file_with_units_loads(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(GOOD)
    scenario = Scenario.from_toml(path)
    assert scenario.file_size == 8 << 20
    assert scenario.piece_length == 256 << 10
    assert scenario.seed_upload == pytest.approx(1.25e6)
    assert scenario.seed_download == scenario.seed_upload  # defaults to the upload
    assert scenario.peers[0].download == 8 << 20
    assert scenario.peers[0].latency == pytest.approx(0.025)
    assert scenario.peers[1].latency == pytest.approx(0.02)
    assert scenario.max_connections == 40
    assert Scenario.from_dict(scenario.as_dict()) == scenario


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("seed = 3", "seed = 3\nbogus = 1", "unknown"),
        ('file_size = "8 MiB"', 'file_size = "-8 MiB"', "size"),
        ('file_size = "8 MiB"', "file_size = -5", "non-negative"),
        ('file_size = "8 MiB"', "file_size = 0", "positive"),
        ('file_size = "8 MiB"', 'file_size = "8 parsecs"', "unit"),
        ("seed = 3", 'seed = 3\nseed_download = "5 Mbit"', "per-second"),
        ('piece_length = "256 KiB"', 'piece_length = "100 KiB"', "power of two"),
        ('piece_length = "256 KiB"', 'piece_length = "8 KiB"', "power of two"),
        ("churn_fraction = 0.25", "churn_fraction = 1.5", "churn_fraction"),
        ("seed = 3", 'seed = "x"', "seed"),
        ("seed = 3", "seed = 3\nmax_connections = 0", "max_connections"),
        ("seed = 3", 'seed = 3\nduration_limit = "soon"', "duration"),
        ("seed_leaves_after_copies = 2", "seed_leaves_after_copies = 0", "seed_leaves"),
        ('seed_upload = "10 Mbit/s"', "seed_upload = 0", "seed_upload"),
        ('name = "tiny"', "name = 5", "name"),
        ('name = "tiny"', 'name = "tiny"\nfile_size = 1', "TOML"),
    ],
)
def test_bad_files_raise_config_error(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message):
        Scenario.from_toml(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name = "b"', 'name = "a"', "unique"),
        ("count = 10", "count = -1", "count"),
        ("count = 10", "count = 1.5", "count"),
        ("upload = 250000", "upload = 250000\nspeed = 3", "unknown"),
        ("download = 1000000", "download = 0", "download"),
        ("arrival_rate = 4", "arrival_rate = 0", "arrival_rate"),
        ('arrival = "steady"', 'arrival = "sometimes"', "arrival"),
        ('latency = "25 ms"', 'latency = "25 years"', "unit"),
    ],
)
def test_bad_peer_classes_and_arrivals_raise_config_error(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        Scenario.from_toml_text(GOOD.replace(old, new, 1))


def test_missing_keys_and_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        Scenario.from_dict({"name": "x"})
    with pytest.raises(ConfigError, match="peers"):
        Scenario.from_toml_text(GOOD.split("[[peers]]")[0])
    with pytest.raises(ConfigError):
        Scenario.from_toml(tmp_path / "absent.toml")
    with pytest.raises(ConfigError):
        Scenario.from_dict({"name": "x", "peers": "many"})


def test_unit_parsers() -> None:
    assert parse_size("1 GiB") == 1 << 30
    assert parse_size("1.5 KB") == 1500
    assert parse_size(4096) == 4096
    assert parse_rate("8 Mbit/s") == pytest.approx(1e6)
    assert parse_rate("2 MiB/s") == 2 << 20
    assert parse_duration("2 min") == 120.0
    assert parse_duration(0.5) == 0.5
    for bad in ("1.5 B", True, "GiB", [1]):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_scaled_keeps_the_mix_and_the_arrival_span() -> None:
    scenario = Scenario.from_toml_text(GOOD)
    small = scenario.scaled(peers=8, file_size=100_000)
    assert small.total_peers == 8
    assert [p.count for p in small.peers] == [6, 2]
    assert small.arrival_rate == pytest.approx(4 * 8 / 40)
    assert small.file_size == 100_000
    assert small.piece_length == 64 << 10  # shrunk to fit, still a power of two
    assert small.name == scenario.name
    assert scenario.scaled(file_size=1000).piece_length == 16 << 10
    with pytest.raises(ConfigError):
        scenario.scaled(peers=0)
    flash = builtin_scenarios()["flash_crowd"].scaled(peers=100)
    assert flash.total_peers == 100
    assert [p.count for p in flash.peers] == [60, 20, 20]


def test_plan_peers_is_deterministic_and_follows_the_scenario() -> None:
    scenario = Scenario.from_toml_text(GOOD)
    plans = plan_peers(scenario)
    assert plans == plan_peers(scenario)
    assert len(plans) == 40
    assert sum(p.peer_class == "a" for p in plans) == 30
    arrivals = [p.arrival for p in plans]
    assert arrivals == sorted(arrivals) and arrivals[0] > 0
    # Poisson at 4/s: 40 arrivals take ~10 s; allow a wide margin.
    assert 3.0 < arrivals[-1] < 30.0
    churners = [p for p in plans if p.leave_at_fraction is not None]
    assert len(churners) == 10
    assert all(0.0 < p.leave_at_fraction < 1.0 for p in churners if p.leave_at_fraction)
    reseeded = plan_peers(Scenario.from_toml_text(GOOD.replace("seed = 3", "seed = 4")))
    assert [p.arrival for p in reseeded] != arrivals


def test_flash_crowds_arrive_together() -> None:
    plans = plan_peers(builtin_scenarios()["heavy_churn"].scaled(peers=50))
    assert {p.arrival for p in plans} == {0.0}
    assert sum(p.leave_at_fraction is not None for p in plans) == round(0.33 * 50)
