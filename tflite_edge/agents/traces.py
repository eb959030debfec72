"""Uplink bandwidth traces: reading the common text format and generating synthetic ones.

A trace is a piecewise-constant bandwidth over time. The common text format (used by the
Norway 3G/HSDPA traces and many adaptive-streaming simulators) has one sample per line::

    0.0         4.03768755221
    0.549999952 4.79283060109

``time_s`` then ``Mbit/s``, separated by whitespace; lines starting with ``#`` are comments.
Each sample holds until the next one; the last one holds for the median sampling interval.
A trace repeats cyclically, so an episode may be longer than the recording.

Transfers are integrated exactly over the piecewise-constant bandwidth: the time to send
``b`` megabits starting at ``t`` is where the cumulative-megabits curve reaches
``C(t) + b``. Both directions are vectorised (``np.interp`` on the knots), which is what makes
the simulator fast.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TraceError

__all__ = [
    "MIN_MBPS",
    "Trace",
    "load_trace",
    "load_traces",
    "markov_trace",
    "step_trace",
    "split_traces",
]

# A reported 0 Mbit/s would make a transfer take forever; an outage is modelled as an
# almost-dead link (1 kbit/s) instead, so latency is huge but finite and deadlines are missed.
MIN_MBPS = 1e-3
# Trace files are small text files (the Norway ones are < 10 KB); refuse anything absurd
# before reading it into memory.
MAX_TRACE_BYTES = 64 * 1024 * 1024
_SKIP_NAMES = ("license", "readme", "copying")


@dataclass(frozen=True, eq=False)
class Trace:
    """A cyclic piecewise-constant bandwidth trace.

    ``times_s[i]`` is when sample ``i`` starts (``times_s[0] == 0``), ``mbps[i]`` its
    bandwidth; the trace lasts ``duration_s`` and then repeats.
    """

    name: str
    times_s: np.ndarray
    mbps: np.ndarray
    duration_s: float
    # Knots of the cumulative curves: time, megabits sent since 0, and integral of bw^2
    # (for the variance of the bandwidth over a window).
    _knots_s: np.ndarray = field(init=False, repr=False)
    _cum_mbit: np.ndarray = field(init=False, repr=False)
    _cum_sq: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        times = np.asarray(self.times_s, dtype=np.float64)
        mbps = np.maximum(np.asarray(self.mbps, dtype=np.float64), MIN_MBPS)
        if times.ndim != 1 or times.shape != mbps.shape or times.size == 0:
            raise TraceError(f"trace {self.name!r}: times and bandwidths must be equal-length 1-D arrays")
        if times[0] != 0.0 or np.any(np.diff(times) <= 0) or not times[-1] < self.duration_s:
            raise TraceError(f"trace {self.name!r}: times must start at 0 and increase strictly within the duration")
        widths = np.diff(np.append(times, self.duration_s))
        knots = np.append(times, self.duration_s)
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "mbps", mbps)
        object.__setattr__(self, "_knots_s", knots)
        object.__setattr__(self, "_cum_mbit", np.concatenate((np.zeros(1), np.cumsum(mbps * widths))))
        object.__setattr__(self, "_cum_sq", np.concatenate((np.zeros(1), np.cumsum(mbps * mbps * widths))))

    # -- basic views -------------------------------------------------------------------
    @property
    def mean_mbps(self) -> float:
        """Time-weighted mean bandwidth over one period."""
        return float(self._cum_mbit[-1] / self.duration_s)

    def __len__(self) -> int:
        return int(self.mbps.size)

    def bandwidth_at(self, t_s: np.ndarray | float) -> np.ndarray:
        """Bandwidth (Mbit/s) at time(s) ``t_s``, wrapping cyclically."""
        phase = np.mod(np.asarray(t_s, dtype=np.float64), self.duration_s)
        index = np.searchsorted(self.times_s, phase, side="right") - 1
        return self.mbps[np.clip(index, 0, self.mbps.size - 1)]

    # -- integrals ---------------------------------------------------------------------
    def _integral(self, cum: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        periods = np.floor(t_s / self.duration_s)
        phase = t_s - periods * self.duration_s
        return periods * cum[-1] + np.interp(phase, self._knots_s, cum)

    def megabits_until(self, t_s: np.ndarray | float) -> np.ndarray:
        """Megabits a saturated link delivers in ``[0, t_s)``."""
        return self._integral(self._cum_mbit, np.asarray(t_s, dtype=np.float64))

    def transfer_end_s(self, start_s: np.ndarray | float, megabits: np.ndarray | float) -> np.ndarray:
        """When a transfer of ``megabits`` starting at ``start_s`` completes (exact, vectorised)."""
        target = self.megabits_until(start_s) + np.asarray(megabits, dtype=np.float64)
        per_period = self._cum_mbit[-1]
        periods = np.floor(target / per_period)
        remainder = target - periods * per_period
        return periods * self.duration_s + np.interp(remainder, self._cum_mbit, self._knots_s)

    def window_stats(self, end_s: np.ndarray | float, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the bandwidth over ``[end_s - window_s, end_s)``.

        This is what a device can know at ``end_s`` from its recent link measurements; the
        window may reach before time 0 (the trace is cyclic).
        """
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        end = np.asarray(end_s, dtype=np.float64) + self.duration_s  # keep the window start >= 0
        start = end - window_s
        mean = (self._integral(self._cum_mbit, end) - self._integral(self._cum_mbit, start)) / window_s
        second = (self._integral(self._cum_sq, end) - self._integral(self._cum_sq, start)) / window_s
        return mean, np.sqrt(np.maximum(second - mean * mean, 0.0))

    def to_text(self) -> str:
        """The trace in the common ``time_s <tab> Mbit/s`` format."""
        return "".join(f"{t:.6f}\t{b:.6f}\n" for t, b in zip(self.times_s, self.mbps, strict=False))


def _from_samples(name: str, times_s: Sequence[float] | np.ndarray, mbps: Sequence[float] | np.ndarray) -> Trace:
    times = np.asarray(times_s, dtype=np.float64)
    rates = np.asarray(mbps, dtype=np.float64)
    if times.size < 2:
        raise TraceError(f"trace {name!r}: needs at least two samples, got {times.size}")
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(rates))):
        raise TraceError(f"trace {name!r}: times and bandwidths must be finite numbers")
    if np.any(rates < 0):
        raise TraceError(f"trace {name!r}: bandwidth must not be negative (line {int(np.argmax(rates < 0)) + 1})")
    steps = np.diff(times)
    if np.any(steps <= 0):
        raise TraceError(
            f"trace {name!r}: times must increase strictly (line {int(np.argmax(steps <= 0)) + 2} does not)"
        )
    times = times - times[0]
    duration = float(times[-1] + np.median(steps))
    return Trace(name, times, rates, duration)


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read one trace file in the ``time_s <whitespace> Mbit/s`` format."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise TraceError(f"{p}: {size} bytes is too large for a bandwidth trace (limit {MAX_TRACE_BYTES})")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise TraceError(f"{p}: no such trace file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{p}: cannot read the trace: {e}") from e
    times: list[float] = []
    rates: list[float] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            raise TraceError(f"{p}:{number}: expected `time_s Mbit/s`, got {line.strip()!r}")
        try:
            times.append(float(fields[0]))
            rates.append(float(fields[1]))
        except ValueError as e:
            raise TraceError(f"{p}:{number}: not a number in {line.strip()!r}") from e
    return _from_samples(p.name, times, rates)


def load_traces(directory: str | os.PathLike[str], pattern: str = "*") -> list[Trace]:
    """Every trace file in ``directory`` matching ``pattern``, sorted by name.

    Hidden files and licence/readme files are skipped; a directory without traces is an error.
    """
    root = Path(directory)
    if not root.is_dir():
        raise TraceError(f"{root} is not a directory of bandwidth traces")
    paths = sorted(
        p for p in root.glob(pattern)
        if p.is_file() and not p.name.startswith(".") and not p.name.lower().startswith(_SKIP_NAMES)
    )
    if not paths:
        raise TraceError(f"{root}: no trace files matching {pattern!r}")
    return [load_trace(p) for p in paths]


def markov_trace(
    *,
    seed: int,
    duration_s: float = 300.0,
    step_s: float = 1.0,
    levels_mbps: Sequence[float] = (0.3, 1.0, 3.0, 8.0),
    stay_probability: float = 0.9,
    jitter: float = 0.2,
    name: str | None = None,
) -> Trace:
    """A regime-switching trace: a Markov chain over bandwidth levels with log-normal jitter.

    Every ``step_s`` the chain stays in its level with ``stay_probability`` or moves to an
    adjacent level (mobile links degrade and recover gradually rather than jumping
    from the best to the worst level).
    """
    if not levels_mbps or any(level <= 0 for level in levels_mbps):
        raise TraceError("levels_mbps must be positive bandwidths")
    if not 0.0 <= stay_probability <= 1.0:
        raise TraceError("stay_probability must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    steps = max(2, int(math.ceil(duration_s / step_s)))
    levels = np.asarray(levels_mbps, dtype=np.float64)
    state = int(rng.integers(levels.size))
    states = np.empty(steps, dtype=np.int64)
    moves = rng.random(steps)
    directions = rng.choice((-1, 1), size=steps)
    for i in range(steps):
        if moves[i] > stay_probability and levels.size > 1:
            state = int(np.clip(state + directions[i], 0, levels.size - 1))
        states[i] = state
    rates = levels[states] * np.exp(jitter * rng.standard_normal(steps) - jitter * jitter / 2)
    return Trace(name or f"markov-{seed}", np.arange(steps) * step_s, rates, steps * step_s)


def step_trace(
    *,
    levels_mbps: Sequence[float] = (4.0, 0.5),
    hold_s: float = 30.0,
    duration_s: float = 120.0,
    step_s: float = 1.0,
    jitter: float = 0.0,
    seed: int = 0,
    name: str | None = None,
) -> Trace:
    """Step changes: cycle through ``levels_mbps``, holding each for ``hold_s`` seconds."""
    if not levels_mbps or any(level <= 0 for level in levels_mbps):
        raise TraceError("levels_mbps must be positive bandwidths")
    if hold_s <= 0 or step_s <= 0 or duration_s <= 0:
        raise TraceError("hold_s, step_s and duration_s must be positive")
    steps = max(2, int(math.ceil(duration_s / step_s)))
    times = np.arange(steps) * step_s
    levels = np.asarray(levels_mbps, dtype=np.float64)
    rates = levels[(times // hold_s).astype(np.int64) % levels.size]
    if jitter > 0:
        rng = np.random.default_rng(seed)
        rates = rates * np.exp(jitter * rng.standard_normal(steps) - jitter * jitter / 2)
    return Trace(name or "step", times, rates, steps * step_s)


def split_traces(traces: Iterable[Trace], *, held_out: float = 0.25, seed: int = 0) -> tuple[list[Trace], list[Trace]]:
    """Split traces into (training, held-out) sets at random but reproducibly."""
    pool = list(traces)
    if not 0.0 < held_out < 1.0 or len(pool) < 2:
        raise TraceError("held_out must lie in (0, 1) and at least two traces are needed to split")
    order = np.random.default_rng(seed).permutation(len(pool))
    count = min(len(pool) - 1, max(1, int(round(held_out * len(pool)))))
    test = sorted(int(i) for i in order[:count])
    return [t for i, t in enumerate(pool) if i not in test], [pool[i] for i in test]
