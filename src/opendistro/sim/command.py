"""``opendistro simulate``: run a scenario and print its figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .plot import plot_run
from .runner import run_scenario
from .scenario import Scenario, builtin_scenarios

__all__ = ["load_scenario", "simulate"]


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a scenario file."""
    builtin = builtin_scenarios()
    if name_or_path in builtin:
        return builtin[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return Scenario.from_toml(path)
    raise ConfigError(
        f"no scenario {name_or_path!r}: use a .toml file or one of {', '.join(sorted(builtin))}"
    )


def simulate(args: argparse.Namespace) -> int:
    if args.list:
        for name, scenario in sorted(builtin_scenarios().items()):
            print(f"{name:20} {scenario.description}")
        return 0
    scenario = load_scenario(args.scenario)
    if args.peers is not None or args.file_size is not None:
        scenario = scenario.scaled(peers=args.peers, file_size=args.file_size)

    def report(now: float, completed: int, total: int) -> None:
        if not args.json and int(now) % 30 == 0:
            print(f"t={now:8.0f}s  {completed}/{total} peers complete", file=sys.stderr)

    metrics = run_scenario(scenario, progress=report)
    summary = metrics.summary()
    summary["scenario"] = scenario.name
    if args.plot is not None:
        if not plot_run(metrics, args.plot, title=f"{scenario.name}: {summary['peers']} peers"):
            raise ConfigError("--plot needs matplotlib: pip install 'opendistro[plot]'")
        summary["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(summary))
        return 0
    completion = summary["completion_seconds"] or {}
    print(f"scenario {scenario.name}: {summary['completed']}/{summary['peers']} peers completed")
    for key in ("min", "median", "p95", "max"):
        if key in completion:
            print(f"  completion {key:>6}: {completion[key]:10.1f} s")
    print(f"  fluid lower bound: {summary['bound_seconds']:10.1f} s "
          f"(last peer at {summary['last_over_bound'] or float('nan'):.2f}x)")
    print(f"  seed uploaded {summary['seed_upload_copies']:.2f} copies; "
          f"Jain index of share ratios {summary['share_ratio_jain']:.3f}")
    print(f"  {summary['events']} events in {summary['wall_seconds']:.1f} s wall, "
          f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    return 0
