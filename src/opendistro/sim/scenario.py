"""Simulation scenarios: who joins a swarm, when, over which links, and who leaves.

A :class:`Scenario` is plain, frozen data, loaded from a small TOML file so
that experiments can be shared and re-run exactly (every random choice flows
from its ``seed``). Sizes and rates may be written the way people think of
them (``"1 GiB"``, ``"20 Mbit/s"``, ``"40 ms"``) or as plain numbers of bytes,
bytes per second and seconds.

:func:`plan_peers` turns a scenario into the concrete list of peers a driver
creates: arrival times (all at once for a flash crowd, a Poisson process for
steady arrivals), link capacities, and for churners the fraction of the
download after which they walk away.

Example file::

    name = "example"
    file_size = "64 MiB"
    piece_length = "1 MiB"
    seed_upload = "50 Mbit/s"
    seed_download = "50 Mbit/s"
    arrival = "flash"
    seed = 7

    [[peers]]
    name = "cable"
    count = 100
    upload = "10 Mbit/s"
    download = "100 Mbit/s"
    latency = "30 ms"

Incentive experiments add a class with ``free_rider = true`` (peers that never
unchoke anyone, so never upload), pick the unchoke policy with ``choking``,
start with several seeds with ``seeds``, and let finished peers leave with a
seeding policy (``seed_ratio_target``, ``seed_time_target``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..swarm.choker import CHOKING_POLICIES
from ..swarm.seeding_policy import SeedingPolicy

__all__ = [
    "PeerClass",
    "PeerPlan",
    "Scenario",
    "builtin_scenarios",
    "parse_duration",
    "parse_rate",
    "parse_size",
    "plan_peers",
]

MIN_PIECE_LENGTH = 16 * 1024

_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BIT_UNITS = {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8}
_DURATION_UNITS = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def _split(text: str, what: str) -> tuple[float, str]:
    match = _QUANTITY.match(text)
    if match is None:
        raise ConfigError(f"cannot read {text!r} as a {what}")
    return float(match.group(1)), match.group(2).lower()


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number or a string with a unit, got {value!r}")
    result = float(value)
    if not math.isfinite(result) or result < 0:
        raise ConfigError(f"{what} must be finite and non-negative, got {value!r}")
    return result


def parse_size(value: object, what: str = "size") -> int:
    """Bytes from an int or a string like ``"1 GiB"`` / ``"512 KiB"`` / ``"10 MB"``."""
    if isinstance(value, str):
        number, unit = _split(value, what)
        if unit not in _SIZE_UNITS:
            raise ConfigError(f"unknown size unit in {value!r} (use B, KiB, MiB, GiB, KB, MB...)")
        number *= _SIZE_UNITS[unit]
    else:
        number = _number(value, what)
    if number != int(number):
        raise ConfigError(f"{what} must be a whole number of bytes, got {value!r}")
    return int(number)


def parse_rate(value: object, what: str = "rate") -> float:
    """Bytes per second from a number or ``"20 Mbit/s"`` / ``"2.5 MB/s"`` / ``"1 MiB/s"``."""
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("/s"):
            raise ConfigError(f"a rate needs a per-second unit, like '20 Mbit/s', got {value!r}")
        number, unit = _split(text[:-2], what)
        if unit in _BIT_UNITS:
            return number * _BIT_UNITS[unit]
        if unit in _SIZE_UNITS:
            return number * _SIZE_UNITS[unit]
        raise ConfigError(f"unknown rate unit in {value!r} (use Mbit/s, MB/s, MiB/s...)")
    return _number(value, what)


def parse_duration(value: object, what: str = "duration") -> float:
    """Seconds from a number or ``"40 ms"`` / ``"10 s"`` / ``"5 min"`` / ``"2 h"``."""
    if isinstance(value, str):
        number, unit = _split(value, what)
        if unit not in _DURATION_UNITS:
            raise ConfigError(f"unknown time unit in {value!r} (use ms, s, min, h)")
        return number * _DURATION_UNITS[unit]
    return _number(value, what)


@dataclass(frozen=True)
class PeerClass:
    """A group of ``count`` peers with the same access link (rates in bytes/s)."""

    name: str
    count: int
    upload: float
    download: float
    latency: float
    free_rider: bool = False
    """These peers never unchoke anyone: they download and never upload."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a peer class needs a name")
        if not isinstance(self.free_rider, bool):
            raise ConfigError(f"peer class {self.name!r}: free_rider must be true or false")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ConfigError(f"peer class {self.name!r}: count must be an integer >= 0")
        for field_name in ("upload", "download", "latency"):
            _number(getattr(self, field_name), f"peer class {self.name!r}: {field_name}")
        if self.download <= 0:
            raise ConfigError(f"peer class {self.name!r}: download must be positive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeerClass:
        _reject_unknown(
            data, {"name", "count", "upload", "download", "latency", "free_rider"}, "[[peers]]"
        )
        try:
            name = data["name"]
            count = data["count"]
            upload, download = data["upload"], data["download"]
        except KeyError as missing:
            raise ConfigError(f"[[peers]] entry is missing {missing.args[0]!r}") from None
        if not isinstance(name, str):
            raise ConfigError(f"peer class name must be a string, got {name!r}")
        return cls(
            name=name,
            count=count,
            upload=parse_rate(upload, f"peer class {name!r}: upload"),
            download=parse_rate(download, f"peer class {name!r}: download"),
            latency=parse_duration(data.get("latency", 0.02), f"peer class {name!r}: latency"),
            free_rider=data.get("free_rider", False),
        )


@dataclass(frozen=True)
class Scenario:
    """One reproducible experiment (sizes in bytes, rates in bytes/s, times in seconds)."""

    name: str
    file_size: int
    piece_length: int
    seed_upload: float
    seed_download: float
    peers: tuple[PeerClass, ...]
    arrival: Literal["flash", "steady"]
    arrival_rate: float
    """Peers per second, for steady arrivals (a Poisson process)."""
    churn_fraction: float
    """Share of peers that leave at a random point of their download, never finishing."""
    seed_leaves_after_copies: float | None
    """The initial seed goes offline once it uploaded this many copies (None: never)."""
    seed: int
    max_connections: int = 40
    duration_limit: float = 86400.0
    """Virtual seconds after which the run stops, finished or not."""
    description: str = ""
    choking: str | None = None
    """Unchoke policy of every peer (None: the session default); a run may override it."""
    seeds: int = 1
    """How many seeds hold the whole file at the start (each with ``seed_upload``)."""
    seed_ratio_target: float | None = None
    """Peers that finish leave once their share ratio reaches this (None: no ratio target)."""
    seed_time_target: float | None = None
    """Peers that finish leave after seeding this long (None: no time target)."""

    def __post_init__(self) -> None:
        if self.file_size <= 0:
            raise ConfigError(f"file_size must be positive, got {self.file_size}")
        length = self.piece_length
        if length < MIN_PIECE_LENGTH or length & (length - 1):
            raise ConfigError(f"piece_length must be a power of two >= 16 KiB, got {length}")
        _number(self.seed_upload, "seed_upload")
        _number(self.seed_download, "seed_download")
        if self.seed_upload <= 0:
            raise ConfigError("seed_upload must be positive: the seed is the only source")
        if not self.peers:
            raise ConfigError("a scenario needs at least one [[peers]] class")
        names = [peer.name for peer in self.peers]
        if len(set(names)) != len(names):
            raise ConfigError(f"peer class names must be unique, got {names}")
        if self.total_peers < 1:
            raise ConfigError("a scenario needs at least one peer")
        if self.arrival not in ("flash", "steady"):
            raise ConfigError(f"arrival must be 'flash' or 'steady', got {self.arrival!r}")
        _number(self.arrival_rate, "arrival_rate")
        if self.arrival == "steady" and self.arrival_rate <= 0:
            raise ConfigError("steady arrivals need a positive arrival_rate")
        if not 0.0 <= _number(self.churn_fraction, "churn_fraction") <= 1.0:
            raise ConfigError(f"churn_fraction must be within [0, 1], got {self.churn_fraction}")
        if self.seed_leaves_after_copies is not None and not (
            _number(self.seed_leaves_after_copies, "seed_leaves_after_copies") > 0
        ):
            raise ConfigError("seed_leaves_after_copies must be positive (or left out)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if (
            isinstance(self.max_connections, bool)
            or not isinstance(self.max_connections, int)
            or self.max_connections < 1
        ):
            raise ConfigError(
                f"max_connections must be an integer >= 1, got {self.max_connections}"
            )
        if not _number(self.duration_limit, "duration_limit") > 0:
            raise ConfigError("duration_limit must be positive")
        if self.choking is not None and self.choking not in CHOKING_POLICIES:
            raise ConfigError(
                f"choking must be one of {', '.join(CHOKING_POLICIES)}, got {self.choking!r}"
            )
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        SeedingPolicy(ratio_target=self.seed_ratio_target, time_target=self.seed_time_target)

    @property
    def seeding_policy(self) -> SeedingPolicy:
        """When peers that finished stop seeding and leave (by default: never)."""
        return SeedingPolicy(
            ratio_target=self.seed_ratio_target, time_target=self.seed_time_target
        )

    # -- derived -------------------------------------------------------------

    @property
    def free_riders(self) -> int:
        return sum(peer.count for peer in self.peers if peer.free_rider)

    @property
    def total_peers(self) -> int:
        return sum(peer.count for peer in self.peers)

    @property
    def num_pieces(self) -> int:
        return -(-self.file_size // self.piece_length)

    # -- loading -------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Load a scenario file; any problem with it is a :class:`ConfigError`."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read scenario {path}: {exc}") from exc
        return cls.from_toml_text(text, default_name=Path(path).stem)

    @classmethod
    def from_toml_text(cls, text: str, *, default_name: str = "scenario") -> Scenario:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"scenario is not valid TOML: {exc}") from exc
        data.setdefault("name", default_name)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build from plain data (as read from TOML); units are parsed, unknown keys refused."""
        if not isinstance(data, Mapping):
            raise ConfigError("a scenario must be a table")
        known = {f.name for f in dataclasses.fields(cls)}
        _reject_unknown(data, known, "scenario")
        required = ("name", "file_size", "piece_length", "seed_upload", "peers", "seed")
        missing = [key for key in required if key not in data]
        if missing:
            raise ConfigError(f"scenario is missing {', '.join(missing)}")
        peers = data["peers"]
        if not isinstance(peers, list) or not all(isinstance(p, Mapping) for p in peers):
            raise ConfigError("peers must be an array of tables ([[peers]])")
        name = data["name"]
        description = data.get("description", "")
        arrival = data.get("arrival", "flash")
        if not isinstance(name, str) or not isinstance(description, str):
            raise ConfigError("name and description must be strings")
        if arrival not in ("flash", "steady"):
            raise ConfigError(f"arrival must be 'flash' or 'steady', got {arrival!r}")
        leaves = data.get("seed_leaves_after_copies")
        choking = data.get("choking")
        if choking is not None and not isinstance(choking, str):
            raise ConfigError(f"choking must be a string, got {choking!r}")
        ratio_target = data.get("seed_ratio_target")
        time_target = data.get("seed_time_target")
        seed_upload = parse_rate(data["seed_upload"], "seed_upload")
        return cls(
            name=name,
            description=description,
            file_size=parse_size(data["file_size"], "file_size"),
            piece_length=parse_size(data["piece_length"], "piece_length"),
            seed_upload=seed_upload,
            seed_download=parse_rate(data.get("seed_download", seed_upload), "seed_download"),
            peers=tuple(PeerClass.from_dict(peer) for peer in peers),
            arrival=arrival,
            arrival_rate=_number(data.get("arrival_rate", 0.0), "arrival_rate"),
            churn_fraction=_number(data.get("churn_fraction", 0.0), "churn_fraction"),
            seed_leaves_after_copies=(
                None if leaves is None else _number(leaves, "seed_leaves_after_copies")
            ),
            seed=data["seed"],
            max_connections=data.get("max_connections", 40),
            duration_limit=parse_duration(data.get("duration_limit", 86400.0), "duration_limit"),
            choking=choking,
            seeds=data.get("seeds", 1),
            seed_ratio_target=(
                None if ratio_target is None else _number(ratio_target, "seed_ratio_target")
            ),
            seed_time_target=(
                None if time_target is None else parse_duration(time_target, "seed_time_target")
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (numbers in bytes, bytes/s and seconds); from_dict reads it back."""
        data = dataclasses.asdict(self)
        data["peers"] = [dataclasses.asdict(peer) for peer in self.peers]
        for optional in ("seed_leaves_after_copies", "choking", "seed_ratio_target",
                         "seed_time_target"):
            if data[optional] is None:
                del data[optional]
        return data

    # -- variants ------------------------------------------------------------

    def scaled(self, *, peers: int | None = None, file_size: int | None = None) -> Scenario:
        """The same experiment, smaller (for ``--quick`` runs and tests).

        ``peers`` is shared among the classes in proportion to their counts
        (largest remainders first) and the steady arrival rate shrinks with
        it, so arrivals still span the same time. A smaller ``file_size``
        shrinks the piece length if needed so that there is still at least
        one whole piece.
        """
        changes: dict[str, Any] = {}
        if peers is not None:
            if peers < 1:
                raise ConfigError(f"a scaled scenario needs at least one peer, got {peers}")
            counts = _apportion([peer.count for peer in self.peers], peers)
            changes["peers"] = tuple(
                dataclasses.replace(peer, count=count)
                for peer, count in zip(self.peers, counts, strict=True)
            )
            changes["arrival_rate"] = self.arrival_rate * peers / self.total_peers
        if file_size is not None:
            if file_size <= 0:
                raise ConfigError(f"file_size must be positive, got {file_size}")
            changes["file_size"] = file_size
            piece_length = self.piece_length
            while piece_length > file_size and piece_length > MIN_PIECE_LENGTH:
                piece_length //= 2
            changes["piece_length"] = piece_length
        return dataclasses.replace(self, **changes)


def _apportion(weights: list[int], total: int) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder method)."""
    weight_sum = sum(weights)
    quotas = [total * w / weight_sum for w in weights]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _reject_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(map(str, unknown))}")


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """One peer a driver should create: when it arrives, its links, and whether it quits."""

    index: int
    peer_class: str
    arrival: float
    upload: float
    download: float
    latency: float
    leave_at_fraction: float | None
    """Leave once this fraction of the file is downloaded (None: stay and seed)."""
    free_rider: bool = False
    """Never unchoke anyone (never upload)."""


def plan_peers(scenario: Scenario) -> list[PeerPlan]:
    """Every peer of ``scenario``, in arrival order; the same list for the same scenario."""
    rng = random.Random(scenario.seed)
    classes = [peer for peer in scenario.peers for _ in range(peer.count)]
    rng.shuffle(classes)
    total = len(classes)
    churners = set(rng.sample(range(total), round(scenario.churn_fraction * total)))
    plans = []
    clock = 0.0
    for index, peer in enumerate(classes):
        if scenario.arrival == "steady":
            clock += rng.expovariate(scenario.arrival_rate)
        leave = rng.uniform(0.1, 0.9) if index in churners else None
        plans.append(
            PeerPlan(
                index=index,
                peer_class=peer.name,
                arrival=clock,
                upload=peer.upload,
                download=peer.download,
                latency=peer.latency,
                leave_at_fraction=leave,
                free_rider=peer.free_rider,
            )
        )
    return plans


def builtin_scenarios() -> dict[str, Scenario]:
    """The scenarios shipped in ``opendistro/sim/scenarios/*.toml``, by name."""
    folder = resources.files(__package__ or "opendistro.sim").joinpath("scenarios")
    found: dict[str, Scenario] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".toml"):
            scenario = Scenario.from_toml_text(
                entry.read_text(encoding="utf-8"), default_name=entry.name[: -len(".toml")]
            )
            found[scenario.name] = scenario
    return found
