"""The seeding policy: ratio target, time target, either or both."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendistro.errors import ConfigError
from opendistro.swarm.seeding_policy import SeedingPolicy

SIZE = 1000


def stop(policy: SeedingPolicy, *, up: int, down: int = SIZE, seconds: float = 0.0) -> bool:
    return policy.should_stop(uploaded=up, downloaded=down, total_length=SIZE, seeding_for=seconds)


def test_without_targets_a_torrent_seeds_forever() -> None:
    policy = SeedingPolicy()
    assert policy.seeds_forever
    assert not stop(policy, up=10**12, seconds=1e9)


def test_a_ratio_target_stops_once_uploaded_over_downloaded_reaches_it() -> None:
    policy = SeedingPolicy(ratio_target=1.5)
    assert not stop(policy, up=1499)
    assert stop(policy, up=1500)
    assert not stop(policy, up=2999, down=2000)  # downloaded twice over (failed pieces)


def test_an_initial_seed_counts_its_ratio_against_the_size() -> None:
    policy = SeedingPolicy(ratio_target=2.0)
    assert not stop(policy, up=1999, down=0)
    assert stop(policy, up=2000, down=0)
    assert policy.ratio(uploaded=500, downloaded=0, total_length=SIZE) == 0.5
    assert policy.ratio(uploaded=0, downloaded=0, total_length=0) == math.inf


def test_a_time_target_stops_after_seeding_that_long() -> None:
    policy = SeedingPolicy(time_target=3600.0)
    assert not stop(policy, up=0, seconds=3599.9)
    assert stop(policy, up=0, seconds=3600.0)


def test_either_target_is_enough_by_default_and_both_can_be_required() -> None:
    either = SeedingPolicy(ratio_target=1.0, time_target=60.0)
    both = SeedingPolicy(ratio_target=1.0, time_target=60.0, require="both")
    assert stop(either, up=1000, seconds=0.0)
    assert stop(either, up=0, seconds=60.0)
    assert not stop(both, up=1000, seconds=0.0)
    assert not stop(both, up=0, seconds=60.0)
    assert stop(both, up=1000, seconds=60.0)
    # "both" with a single target means that target.
    assert stop(SeedingPolicy(ratio_target=1.0, require="both"), up=1000)


@pytest.mark.parametrize(
    "settings_",
    [
        {"ratio_target": -1.0},
        {"time_target": math.nan},
        {"time_target": math.inf},
        {"ratio_target": True},
        {"ratio_target": "2"},
        {"require": "neither"},
    ],
)
def test_bad_targets_are_config_errors(settings_: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SeedingPolicy(**settings_)  # type: ignore[arg-type]


def test_bad_counts_are_config_errors() -> None:
    policy = SeedingPolicy(ratio_target=1.0)
    with pytest.raises(ConfigError):
        policy.should_stop(uploaded=-1, downloaded=0, total_length=SIZE, seeding_for=0.0)
    with pytest.raises(ConfigError):
        policy.should_stop(uploaded=0, downloaded=0, total_length=SIZE, seeding_for=math.nan)


@settings(max_examples=100, deadline=None)
@given(
    ratio=st.none() | st.floats(0, 10),
    time_target=st.none() | st.floats(0, 1e6),
    require=st.sampled_from(["either", "both"]),
    up=st.integers(0, 10**6),
    extra_up=st.integers(0, 10**6),
    down=st.integers(0, 10**6),
    seconds=st.floats(0, 1e6),
    extra_seconds=st.floats(0, 1e6),
)
def test_once_stopped_more_upload_or_time_never_resumes_seeding(
    ratio: float | None,
    time_target: float | None,
    require: str,
    up: int,
    extra_up: int,
    down: int,
    seconds: float,
    extra_seconds: float,
) -> None:
    policy = SeedingPolicy(ratio_target=ratio, time_target=time_target, require=require)  # type: ignore[arg-type]
    if stop(policy, up=up, down=down, seconds=seconds):
        assert stop(policy, up=up + extra_up, down=down, seconds=seconds + extra_seconds)
