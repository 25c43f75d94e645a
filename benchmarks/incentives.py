"""Seeding incentives in the simulator: plain tit-for-tat against the deficit choker.

Runs each experiment under both unchoke policies, on the same scenario and seed:

(a) ``free_riders``: a flash crowd in which a fifth of the peers never upload.
    Reported: the median free rider's completion time over the median
    contributor's (goal >= 2) and the contributors' median completion (goal: no
    slower than under tit-for-tat). Run twice: with finished peers leaving at
    share ratio 1.0 (a seeding policy; the usual case), and with every finished
    peer seeding until the end (then free riders finish soon after contributors
    whatever the choker does, since nobody refuses a free rider when idle).
(b) ``flash_crowd``: Jain's index of the leechers' share ratios (goal >= 0.9).
    The share ratio is :meth:`RunMetrics.share_ratios`: each peer's payload
    uploaded over downloaded *at the end of the run*, so it includes what a
    peer uploaded after it finished (in ``flash_crowd`` every finished peer
    seeds until the last one completes). Run twice as well: as the scenario
    defines it (the goal is judged here), and with finished peers leaving at
    share ratio 1.0, the seeding policy that would equalise ratios if any could.
    Neither reaches 0.9: with uplinks 20x apart (5 to 100 Mbit/s) in a flash
    crowd, fast peers get pieces first and are net uploaders (ratio ~2 at
    completion even under the deficit choker) while slow ones finish with a
    ratio of ~0.2, and the run ends when the last (slow) peer completes, so it
    never seeds its ratio up. The ratio *at completion* is not in RunMetrics
    (it needs the runner to keep each peer's counters when it completes); the
    ratio-1 variant bounds it: a peer that leaves at ratio 1 kept its ratio at
    completion if that was above 1.
(c) ``several_seeds``: Jain's index of what each of four seeds uploaded (goal >= 0.9).

    python3 benchmarks/incentives.py [--quick] [--peers N] [--size-mib N]

Defaults: 300 peers and 128 MiB (about 6 minutes on one core); --quick: 80
peers and 96 MiB. (a) says which goals the chosen policy meets, in the
ratio-1 variant. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from opendistro.sim.metrics import peak_rss_mb
from opendistro.sim.runner import run_scenario
from opendistro.sim.scenario import Scenario, builtin_scenarios

POLICIES = ("tit-for-tat", "deficit")
CHOSEN = "deficit"


def run(scenario: Scenario, policy: str) -> dict[str, Any]:
    started = time.perf_counter()
    summary = run_scenario(scenario, choking=policy).summary()
    summary["wall"] = time.perf_counter() - started
    return summary


def median(figures: dict[str, Any] | None) -> float | None:
    return None if figures is None else float(figures["median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peers", type=int)
    parser.add_argument("--size-mib", type=int)
    args = parser.parse_args()
    peers = args.peers or (80 if args.quick else 300)
    size = (args.size_mib or (96 if args.quick else 128)) << 20
    builtin = builtin_scenarios()

    def scaled(name: str, **changes: Any) -> Scenario:
        return dataclasses.replace(builtin[name].scaled(peers=peers, file_size=size), **changes)

    experiments = {
        "free_riders_ratio_1": scaled("free_riders", seed_ratio_target=1.0),
        "free_riders_stay": scaled("free_riders"),
        "flash_crowd": scaled("flash_crowd"),
        "flash_crowd_ratio_1": scaled("flash_crowd", seed_ratio_target=1.0),
        "several_seeds": scaled("several_seeds"),
    }
    print(f"incentives: {peers} peers, {size >> 20} MiB per experiment", flush=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, scenario in experiments.items():
        results[name] = {}
        for policy in POLICIES:
            summary = run(scenario, policy)
            results[name][policy] = summary
            print(f"  {name:20} {policy:12} done in {summary['wall']:.0f} s wall", flush=True)

    figures: dict[str, Any] = {"benchmark": "incentives", "peers": peers, "size_bytes": size,
                               "chosen": CHOSEN}
    print()
    print(f"{'':52}{'tit-for-tat':>14}{'deficit':>14}")

    def row(label: str, key: str, values: dict[str, float | None], fmt: str) -> None:
        cells = "".join(
            f"{'n/a' if values[p] is None else format(values[p], fmt):>14}" for p in POLICIES
        )
        print(f"{label:52}{cells}")
        for policy in POLICIES:
            figures[f"{key}_{policy.replace('-', '_')}"] = values[policy]

    for variant, label in (("free_riders_ratio_1", "seeders leave at ratio 1"),
                           ("free_riders_stay", "seeders stay")):
        by_policy = results[variant]
        row(f"(a) free-rider slowdown, {label}", f"{variant}_slowdown",
            {p: by_policy[p]["free_rider_slowdown"] for p in POLICIES}, ".2f")
        row(f"    contributors' median s, {label}", f"{variant}_contributor_median",
            {p: median(by_policy[p]["contributor_completion_seconds"]) for p in POLICIES}, ".1f")
        row(f"    contributors' p95 s, {label}", f"{variant}_contributor_p95",
            {p: (by_policy[p]["contributor_completion_seconds"] or {}).get("p95")
             for p in POLICIES}, ".1f")
        row(f"    free riders finished, {label}", f"{variant}_free_riders_completed",
            {p: by_policy[p]["free_riders_completed"] for p in POLICIES}, "d")
    row("(b) flash crowd: share-ratio Jain", "flash_crowd_share_ratio_jain",
        {p: results["flash_crowd"][p]["share_ratio_jain"] for p in POLICIES}, ".3f")
    row("    flash crowd: last peer / fluid bound", "flash_crowd_last_over_bound",
        {p: results["flash_crowd"][p]["last_over_bound"] for p in POLICIES}, ".2f")
    row("    leave at ratio 1: share-ratio Jain", "flash_crowd_ratio_1_share_ratio_jain",
        {p: results["flash_crowd_ratio_1"][p]["share_ratio_jain"] for p in POLICIES}, ".3f")
    row("    leave at ratio 1: last peer / fluid bound", "flash_crowd_ratio_1_last_over_bound",
        {p: results["flash_crowd_ratio_1"][p]["last_over_bound"] for p in POLICIES}, ".2f")
    row("(c) several seeds: seeds' upload Jain", "several_seeds_upload_jain",
        {p: results["several_seeds"][p]["seeds_upload_jain"] for p in POLICIES}, ".3f")

    free_riders = results["free_riders_ratio_1"]
    ours, base = free_riders[CHOSEN], free_riders["tit-for-tat"]
    ours_median = median(ours["contributor_completion_seconds"])
    base_median = median(base["contributor_completion_seconds"])
    goals = {
        "free_riders_2x_slower": (ours["free_rider_slowdown"] or 0.0) >= 2.0,
        "contributors_no_slower": (
            ours_median is not None and base_median is not None and ours_median <= base_median
        ),
        "share_ratio_jain_0_9": results["flash_crowd"][CHOSEN]["share_ratio_jain"] >= 0.9,
        "seeds_upload_jain_0_9": results["several_seeds"][CHOSEN]["seeds_upload_jain"] >= 0.9,
    }
    figures["goals_met"] = goals
    print()
    for goal, met in goals.items():
        print(f"goal {goal:28} {'met' if met else 'NOT met'} (policy {CHOSEN})")
    figures["peak_rss_mb"] = peak_rss_mb()
    print(f"peak RSS {figures['peak_rss_mb']:.0f} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
