"""Per-request observations and their summary over one telemetry window.

``RequestObservation`` is what the device runtime reports per request (plain numbers, so
any runtime can fill it in); ``observation_from_result`` accepts the runtime's own result
object by attribute name. ``WindowStats`` accumulates observations and produces the
``requests`` and ``latency`` parts of a telemetry message, then starts over.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .schema import LatencyStats, RequestStats

__all__ = ["RequestObservation", "WindowStats", "observation_from_result", "percentile", "sanitized"]


@dataclass(frozen=True)
class RequestObservation:
    """One finished (or failed) request as the device saw it; times in ms, sizes in bytes.

    ``partition`` is the number of segments the device ran; ``transfer_ms`` is the upload
    of ``bytes_sent`` (0 when nothing was offloaded); ``rtt_ms`` is request sent -> reply
    received. ``deadline_met`` is None when the request had no deadline. ``timed_out`` and
    ``link_failed`` describe the offload (a request may still have been answered locally).
    """

    exit: str
    partition: int
    total_ms: float
    device_compute_ms: float = 0.0
    transfer_ms: float = 0.0
    edge_compute_ms: float = 0.0
    rtt_ms: float | None = None
    bytes_sent: int = 0
    deadline_ms: float | None = None
    deadline_met: bool | None = None
    ok: bool = True
    timed_out: bool = False
    link_failed: bool = False
    segment_ms: Mapping[str, float] = field(default_factory=dict)
    request_id: str | None = None

    @property
    def offloaded(self) -> bool:
        """True when an activation went over the link (answered by the edge or not)."""
        return self.bytes_sent > 0


def _get(result: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(result, Mapping) and name in result:
            return result[name]
        if hasattr(result, name):
            return getattr(result, name)
    return default


def _from_inference_result(result: Any) -> RequestObservation:
    """The device runtime's ``InferenceResult``: every result carries an answer.

    A fallback (``fell_back``) still answered locally, so it counts as a success of the
    request but as a loss of the link: a timeout when the deadline ran out, else an error.
    Its ``transfer_ms`` is the offload round trip minus edge compute (both directions), so
    the uplink estimate from it is conservative.
    """
    offloaded = bool(result.offloaded)
    error = result.error or ""
    return RequestObservation(
        exit=str(result.exit),
        partition=int(result.partition),
        total_ms=float(result.total_ms),
        device_compute_ms=float(result.device_ms),
        transfer_ms=float(result.transfer_ms),
        edge_compute_ms=float(result.edge_ms),
        rtt_ms=float(result.transfer_ms + result.edge_ms) if offloaded else None,
        bytes_sent=int(result.request_bytes),
        deadline_ms=result.deadline_ms,
        deadline_met=result.met_deadline,
        ok=True,
        timed_out=bool(result.fell_back) and ("no reply" in error or "deadline" in error or "timed out" in error),
        link_failed=bool(result.fell_back) and bool(result.request_bytes),
        request_id=result.request_id,
    )


def observation_from_result(result: Any) -> RequestObservation:
    """A ``RequestObservation`` from any result object or mapping with matching attribute names.

    The device runtime's ``InferenceResult`` is understood as such. Otherwise accepts the
    names above and common variants (``exit_name``, ``device_ms``, ``edge_ms``,
    ``latency_ms``, ``error``); durations given in seconds (``*_s``) are converted.
    """
    if isinstance(result, RequestObservation):
        return result
    if all(hasattr(result, name) for name in ("ran_on", "fell_back", "request_bytes", "device_ms")):
        return _from_inference_result(result)

    def ms(*names: str, default: float | None = 0.0) -> float | None:
        value = _get(result, *names)
        if value is not None:
            return float(value)
        seconds = _get(result, *(n[:-3] + "_s" for n in names if n.endswith("_ms")))
        return float(seconds) * 1000.0 if seconds is not None else default

    total = ms("total_ms", "latency_ms")
    error = _get(result, "error")
    deadline_ms = ms("deadline_ms", default=None)
    met = _get(result, "deadline_met")
    if met is None and deadline_ms is not None and total is not None:
        met = total <= deadline_ms
    segments = _get(result, "segment_ms", "segments_ms", default={}) or {}
    return RequestObservation(
        exit=str(_get(result, "exit", "exit_name", default="?")),
        partition=int(_get(result, "partition", default=0)),
        total_ms=total or 0.0,
        device_compute_ms=ms("device_compute_ms", "device_ms") or 0.0,
        transfer_ms=ms("transfer_ms") or 0.0,
        edge_compute_ms=ms("edge_compute_ms", "edge_ms") or 0.0,
        rtt_ms=ms("rtt_ms", default=None),
        bytes_sent=int(_get(result, "bytes_sent", "activation_bytes", default=0) or 0),
        deadline_ms=deadline_ms,
        deadline_met=None if met is None else bool(met),
        ok=bool(_get(result, "ok", default=error is None)),
        timed_out=bool(_get(result, "timed_out", default=False)),
        segment_ms={str(k): float(v) for k, v in dict(segments).items()},
        request_id=_get(result, "request_id", "rid"),
    )


#: no request takes a day; longer figures are clock or unit errors and are capped here
MAX_DURATION_MS = 86_400_000.0


def _duration(value: float) -> float:
    return min(value, MAX_DURATION_MS) if math.isfinite(value) and value > 0 else 0.0


def sanitized(obs: RequestObservation) -> RequestObservation:
    """The observation with impossible figures neutralised, so no message is ever invalid.

    A clock step can make a measured duration negative and a bug can make it NaN; such a
    duration counts as 0 (an RTT as unmeasured), negative sizes and partitions as 0, and
    durations beyond a day are capped at a day.
    """
    durations = (obs.total_ms, obs.device_compute_ms, obs.transfer_ms, obs.edge_compute_ms, *obs.segment_ms.values())
    if (  # the usual case, checked cheaply: nothing to change
        obs.exit
        and obs.partition >= 0
        and obs.bytes_sent >= 0
        and all(0 <= d <= MAX_DURATION_MS for d in durations)
        and (obs.rtt_ms is None or 0 <= obs.rtt_ms <= MAX_DURATION_MS)
        and (obs.deadline_ms is None or 0 <= obs.deadline_ms < math.inf)
        and all(obs.segment_ms)
    ):
        return obs
    rtt = obs.rtt_ms if obs.rtt_ms is not None and 0 <= obs.rtt_ms <= MAX_DURATION_MS else None
    deadline = obs.deadline_ms
    if deadline is not None and not (math.isfinite(deadline) and deadline >= 0):
        deadline = None
    return dataclasses.replace(
        obs,
        exit=obs.exit or "?",
        partition=max(int(obs.partition), 0),
        total_ms=_duration(obs.total_ms),
        device_compute_ms=_duration(obs.device_compute_ms),
        transfer_ms=_duration(obs.transfer_ms),
        edge_compute_ms=_duration(obs.edge_compute_ms),
        rtt_ms=rtt,
        bytes_sent=max(int(obs.bytes_sent), 0),
        deadline_ms=deadline,
        segment_ms={k: _duration(v) for k, v in obs.segment_ms.items() if k},
    )


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class WindowStats:
    """Accumulates one window's observations (not thread-safe: the publisher holds a lock)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.failed = 0
        self.deadline_met = 0
        self.deadline_missed = 0
        self.bytes_sent = 0
        self.exits: Counter[str] = Counter()
        self.partitions: Counter[str] = Counter()
        self.total_ms: list[float] = []
        self.device_ms: list[float] = []
        self.transfer_ms: list[float] = []
        self.edge_ms: list[float] = []
        self.segments: dict[str, list[float]] = {}
        self.energy_mj: list[float] = []

    def add(self, obs: RequestObservation, energy_mj: float | None = None) -> None:
        self.count += 1
        self.bytes_sent += obs.bytes_sent
        if not obs.ok:
            self.failed += 1
            return
        if obs.deadline_met is True:
            self.deadline_met += 1
        elif obs.deadline_met is False:
            self.deadline_missed += 1
        self.exits[obs.exit] += 1
        self.partitions[str(obs.partition)] += 1
        self.total_ms.append(obs.total_ms)
        self.device_ms.append(obs.device_compute_ms)
        if obs.offloaded:
            self.transfer_ms.append(obs.transfer_ms)
            self.edge_ms.append(obs.edge_compute_ms)
        for name, value in obs.segment_ms.items():
            self.segments.setdefault(name, []).append(value)
        if energy_mj is not None:
            self.energy_mj.append(energy_mj)

    def requests(self) -> RequestStats:
        return RequestStats(
            count=self.count,
            deadline_met=self.deadline_met,
            deadline_missed=self.deadline_missed,
            failed=self.failed,
            exits=dict(self.exits),
            partitions=dict(self.partitions),
        )

    def latency(self) -> LatencyStats:
        return LatencyStats(
            total_p50_ms=percentile(self.total_ms, 50),
            total_p95_ms=percentile(self.total_ms, 95),
            total_max_ms=max(self.total_ms) if self.total_ms else None,
            device_compute_mean_ms=_mean(self.device_ms),
            transfer_mean_ms=_mean(self.transfer_ms),
            edge_compute_mean_ms=_mean(self.edge_ms),
            device_segments_mean_ms={k: sum(v) / len(v) for k, v in sorted(self.segments.items())},
        )

    def energy_per_inference_mj(self) -> float | None:
        return _mean(self.energy_mj)
