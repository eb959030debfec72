"""Scenario files: how the world changes during a run, as piecewise-constant schedules.

A scenario file is a JSON object whose keys name context quantities and whose values list
``[time_s, value]`` steps over trace time (seconds since the first request of an episode;
an episode with a scenario file starts at the beginning of its trace, so trace time and
scenario time agree). Each value holds from its time until the next step; the first step
must be at 0 and times must increase. Example::

    {
      "description": "a throttling period, a burst of edge load, a budget drop",
      "device_speed":    [[0, 1.0], [60, 0.4], [120, 1.0]],
      "edge_load":       [[0, 0.1], [150, 0.9], [190, 0.1]],
      "power_budget_mw": [[0, 3000], [240, 800]],
      "rtt_ms":          [[0, 40]]
    }

Keys (all optional, at least one): ``device_speed`` (> 0, 1 = as profiled), ``edge_load``
(0 <= load < 1), ``power_budget_mw`` (> 0), ``rtt_ms`` (>= 0, the base round trip; the
scenario's jitter is added). A quantity without a schedule follows the scenario's random
draws. ``description`` is free text. Anything else is an error that names the key.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ScenarioError

__all__ = ["SCHEDULED_QUANTITIES", "Schedule", "load_scenario_file", "parse_scenario"]

MAX_SCENARIO_BYTES = 1024 * 1024
MAX_STEPS = 10_000

# Each quantity's validity rule and how to say it in an error.
SCHEDULED_QUANTITIES: dict[str, tuple[Callable[[float], bool], str]] = {
    "device_speed": (lambda v: 0 < v <= 100, "a speed > 0 (1 = as profiled)"),
    "edge_load": (lambda v: 0 <= v < 1, "a load in [0, 1)"),
    "power_budget_mw": (lambda v: v > 0, "a power budget > 0 mW"),
    "rtt_ms": (lambda v: v >= 0, "a round-trip time >= 0 ms"),
}


@dataclass(frozen=True)
class Schedule:
    """A piecewise-constant function of time: ``values[i]`` from ``times_s[i]`` to ``times_s[i + 1]``."""

    times_s: tuple[float, ...]
    values: tuple[float, ...]

    def at(self, t_s: np.ndarray | float) -> np.ndarray:
        """The value in force at each time in ``t_s`` (the last one holds forever)."""
        index = np.searchsorted(np.asarray(self.times_s), np.asarray(t_s, dtype=np.float64), side="right") - 1
        return np.asarray(self.values, dtype=np.float64)[np.maximum(index, 0)]

    def to_list(self) -> list[list[float]]:
        return [[t, v] for t, v in zip(self.times_s, self.values, strict=True)]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{where} must be a finite number, got {json.dumps(value)[:40]}")
    return float(value)


def parse_scenario(doc: Any, source: str = "scenario") -> dict[str, Schedule]:
    """The schedules of a scenario document (see the module docstring); ``ScenarioError`` names what is wrong."""
    if not isinstance(doc, Mapping):
        raise ScenarioError(f"{source}: expected a JSON object with keys such as device_speed, edge_load")
    unknown = sorted(set(doc) - set(SCHEDULED_QUANTITIES) - {"description"})
    if unknown:
        raise ScenarioError(f"{source}: unknown key {unknown[0]!r}; use {', '.join(SCHEDULED_QUANTITIES)} "
                            "or description")
    if "description" in doc and not isinstance(doc["description"], str):
        raise ScenarioError(f"{source}: description must be text")
    schedules: dict[str, Schedule] = {}
    for key, (valid, meaning) in SCHEDULED_QUANTITIES.items():
        if key not in doc:
            continue
        steps = doc[key]
        if not isinstance(steps, list) or not steps or len(steps) > MAX_STEPS:
            raise ScenarioError(f"{source}: {key} must be a non-empty list of [time_s, value] steps "
                                f"(at most {MAX_STEPS})")
        times: list[float] = []
        values: list[float] = []
        for i, step in enumerate(steps):
            where = f"{source}: {key}[{i}]"
            if not isinstance(step, list) or len(step) != 2:
                raise ScenarioError(f"{where} must be a [time_s, value] pair, got {json.dumps(step)[:40]}")
            t, v = _number(step[0], f"{where} time"), _number(step[1], f"{where} value")
            if i == 0 and t != 0:
                raise ScenarioError(f"{where}: the first step must start at time 0, not {t:g}")
            if times and t <= times[-1]:
                raise ScenarioError(f"{where}: times must increase ({t:g} s after {times[-1]:g} s)")
            if not valid(v):
                raise ScenarioError(f"{where}: {v:g} is not {meaning}")
            times.append(t)
            values.append(v)
        schedules[key] = Schedule(tuple(times), tuple(values))
    if not schedules:
        raise ScenarioError(f"{source}: no schedule; give at least one of {', '.join(SCHEDULED_QUANTITIES)}")
    return schedules


def load_scenario_file(path: str | os.PathLike[str]) -> dict[str, Schedule]:
    """Read and validate a scenario JSON file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_SCENARIO_BYTES + 1)
    except FileNotFoundError as e:
        raise ScenarioError(f"{p}: no such scenario file; see docs/policy.md for the format") from e
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read the scenario file: {e.strerror or e}") from e
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{p}: larger than {MAX_SCENARIO_BYTES} bytes; a scenario file is a few steps")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ScenarioError(f"{p}: not valid JSON ({e})") from e
    return parse_scenario(doc, str(p))
