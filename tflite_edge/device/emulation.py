"""Making this machine behave like a given device on a given link.

Development hosts are far faster than IoT devices and talk to their edge over loopback. For
demos, tests and experiments, ``Emulation`` makes every segment the device runs last as long
as a fixed **device profile** says (absolute milliseconds per segment, see
:class:`DeviceProfile`), and holds every offload request for the time its bytes would take
on an uplink that follows a bandwidth trace. The real segments still run and the real MQTT
messages are still sent; only time is added, and every result's timings include it.

The emulation sleeps until the profile's latency has passed since the segment started, so
the host's own compute time is part of the target, not added to it, and a wake-up that a
loaded host delays is taken off the emulated device's clock (``Emulation.clock``, which the
runtime measures with): a loaded host does not make the emulated device slower. When the
host's own compute time exceeds the target the segment cannot be shortened; the emulation
counts these overruns (``Emulation.stats``) so a run can say that this machine did not keep up.

A device profile comes from a measurement on the real device (``tflite-edge profile BUNDLE
-o device.json --power-mw MW`` run on it) or from a documented model
(:func:`edgent_rpi3_profile`), and is stored with the figures of the run that used it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:  # only the types: a device need not import the policy package
    from ..agents.traces import Trace
    from ..bundle import Bundle

__all__ = ["DeviceProfile", "Emulation", "SegmentStats", "TraceUplink", "edgent_rpi3_profile"]

# The last stretch of an emulated segment is waited out on the clock rather than slept:
# time.sleep() wakes up tens of microseconds late, more on a loaded host.
SPIN_S = 2e-4
MAX_SAMPLES = 20_000  # per segment, for medians (a long run keeps the first ones)


@dataclass(frozen=True)
class DeviceProfile:
    """A device in absolute terms: each segment's latency (ms) and the power drawn while computing (mW).

    The JSON form extends what ``tflite-edge profile --json`` prints (``segments[].median_ms``),
    so a profile measured on the real device is a device profile as it is, and the policy
    tools read a device profile as a latency profile::

        {"kind": "device-profile", "bundle_id": "digits-…", "compute_power_mw": 2000.0,
         "source": "measured on a Raspberry Pi 3B with tflite-edge profile",
         "segments": [{"index": 0, "median_ms": 10.2}, {"index": 1, "median_ms": 8.1}, …]}
    """

    segment_ms: tuple[float, ...]
    compute_power_mw: float
    source: str
    bundle_id: str | None = None

    def __post_init__(self) -> None:
        if not self.segment_ms or not all(math.isfinite(ms) and ms > 0 for ms in self.segment_ms):
            raise InputError(f"device profile ({self.source}): every segment latency must be a positive number")
        if not (math.isfinite(self.compute_power_mw) and self.compute_power_mw >= 0):
            raise InputError(f"device profile ({self.source}): compute_power_mw must be a non-negative number")

    @property
    def total_ms(self) -> float:
        return float(sum(self.segment_ms))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "device-profile",
            "bundle_id": self.bundle_id,
            "source": self.source,
            "compute_power_mw": self.compute_power_mw,
            "segments": [{"index": i, "median_ms": ms} for i, ms in enumerate(self.segment_ms)],
            "sum_of_segments_ms": self.total_ms,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, compute_power_mw: float | None = None,
                  source: str = "device profile") -> DeviceProfile:
        """Read a device profile, or a ``tflite-edge profile`` document measured on the device.

        ``compute_power_mw`` is used when the document states no power (a plain profile).
        """
        segments = doc.get("segments") if isinstance(doc, Mapping) else None
        if not isinstance(segments, list) or not segments:
            raise InputError(f"{source}: expected an object with a `segments` list (from `tflite-edge profile`)")
        try:
            by_index = {int(s.get("index", i)): float(s["median_ms"]) for i, s in enumerate(segments)}
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: every segment needs a numeric `median_ms`") from e
        if sorted(by_index) != list(range(len(by_index))):
            raise InputError(f"{source}: segment indices must be 0..{len(by_index) - 1}")
        power = doc.get("compute_power_mw", compute_power_mw)
        if power is None:
            raise InputError(f"{source} states no compute power: record it with `tflite-edge profile --power-mw MW`")
        return cls(tuple(by_index[i] for i in range(len(by_index))), float(power),
                   str(doc.get("source") or source), doc.get("bundle_id"))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, compute_power_mw: float | None = None) -> DeviceProfile:
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise InputError(f"{p}: no such device profile; measure one with "
                             "`tflite-edge profile BUNDLE -o FILE --power-mw MW` on the device") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{p}: cannot read the device profile: {e}") from e
        return cls.from_dict(doc, compute_power_mw=compute_power_mw, source=str(p))

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p

    def check(self, num_segments: int, bundle_id: str | None = None) -> None:
        """``InputError`` unless the profile fits a bundle with ``num_segments`` segments (and this id)."""
        if len(self.segment_ms) != num_segments:
            raise InputError(f"the device profile ({self.source}) has {len(self.segment_ms)} segments, the bundle "
                             f"{num_segments}; profile this bundle on the device")
        if bundle_id is not None and self.bundle_id is not None and bundle_id != self.bundle_id:
            raise InputError(f"the device profile ({self.source}) is for bundle {self.bundle_id!r}, not {bundle_id!r}")

    def describe(self) -> str:
        per_segment = ", ".join(f"{ms:.2f}" for ms in self.segment_ms)
        return f"segments {per_segment} ms, {self.compute_power_mw:g} mW computing ({self.source})"


def edgent_rpi3_profile(bundle: Bundle, *, kernel_speedup: float = 20.0, backend: str | None = None) -> DeviceProfile:
    """A Raspberry Pi 3 profile of ``bundle`` from Edgent's per-layer latency regressions.

    Edgent (Li, Zhou, Chen, MECOMM 2018 / IEEE TWC 2019) fitted the Pi 3's latency per layer
    type; this applies its convolution regression (``x1`` = input elements, ``x2`` =
    (kernel / stride)² × filters) and its fully-connected regression (``x1`` = inputs, ``x2``
    = outputs) to every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED operation of each
    segment, a layer never below 0 ms (the convolution fit is negative for small layers).
    Other operations (pooling, activation, reshape, softmax) are not counted. Edgent timed a
    Python framework with float kernels; ``kernel_speedup`` divides its figures to stand for
    TFLite's int8 NEON kernels (an assumption, stated in the profile's source: replace it
    with a profile measured on your device). Compute power: 2,000 mW, the Pi 3 figure of
    ``tflite_edge.agents.profiles``.
    """
    from ..agents.profiles import edgent_conv_ms, edgent_fc_ms, get_platform
    from ..runtime.backends import SegmentInterpreter

    if not kernel_speedup > 0:
        raise InputError(f"kernel_speedup must be positive, got {kernel_speedup}")
    segment_ms = []
    for spec in bundle.manifest.segments:
        interpreter = SegmentInterpreter(bundle.segment_path(spec.index).read_bytes(), backend=backend,
                                         label=f"segment {spec.index}")
        ms = sum(_edgent_layer_ms(op, shapes, edgent_conv_ms, edgent_fc_ms)
                 for op, shapes in interpreter.operations())
        segment_ms.append(max(ms / kernel_speedup, 1e-3))
    return DeviceProfile(
        tuple(segment_ms), get_platform("rpi3-edgent").compute_power_mw,
        f"Edgent's Raspberry Pi 3 per-layer regressions (convolution and fully-connected layers) / {kernel_speedup:g} "
        "for TFLite int8 kernels (assumed)",
        bundle.manifest.bundle_id,
    )


def _edgent_layer_ms(op: str, shapes: tuple[list[tuple[int, ...]], list[tuple[int, ...]]],
                     conv_ms: Callable[..., float], fc_ms: Callable[..., float]) -> float:
    inputs, outputs = shapes
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(inputs) >= 2 and outputs:
        x, kernel, y = inputs[0], inputs[1], outputs[0]
        stride = max(x[1] / y[1], 1.0) if len(x) == 4 and len(y) == 4 and y[1] else 1.0
        filters = y[-1]
        return max(conv_ms(math.prod(x[1:]), (kernel[1] / stride) ** 2 * filters, device=True), 0.0)
    if op == "FULLY_CONNECTED" and inputs and outputs:
        return max(fc_ms(math.prod(inputs[0][1:]), math.prod(outputs[0][1:]), device=True), 0.0)
    return 0.0


class TraceUplink:
    """An uplink whose bandwidth follows ``trace``, played ``speedup`` times faster than real time.

    The trace position advances with the wall clock (times ``speedup``, so a long recording
    fits in a short demo); a transfer itself takes the physical time its bytes need at the
    trace's bandwidth from the current position on, integrated over bandwidth changes.
    """

    def __init__(self, trace: Trace, *, speedup: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if speedup <= 0:
            raise InputError(f"trace speedup must be positive, got {speedup}")
        self.trace = trace
        self.speedup = speedup
        self._clock = clock
        self._start = clock()

    def restart(self) -> None:
        """Start the trace again from its beginning, now."""
        self._start = self._clock()

    def position_s(self) -> float:
        """Where in the trace the link is now (seconds, wrapping around)."""
        return ((self._clock() - self._start) * self.speedup) % self.trace.duration_s

    def elapsed_trace_s(self) -> float:
        """Trace seconds played since the start (not wrapped)."""
        return (self._clock() - self._start) * self.speedup

    def bandwidth_mbps(self) -> float:
        """The trace's bandwidth at the current position."""
        return float(self.trace.bandwidth_at(self.position_s()))

    def transfer_s(self, nbytes: int) -> float:
        """Seconds to send ``nbytes`` starting now."""
        start = self.position_s()
        return float(self.trace.transfer_end_s(start, nbytes * 8 / 1e6)) - start


@dataclass
class SegmentStats:
    """What the emulation did for one segment: emulated and host latencies, overruns."""

    target_ms: float = 0.0  # the latest target (the profile's latency / the device speed)
    count: int = 0
    overruns: int = 0  # the host's own time exceeded the target
    emulated_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)  # emulated / target
    wall_ms: list[float] = field(default_factory=list)  # including the host's late wake-ups
    wall_ratio: list[float] = field(default_factory=list)  # wall / target

    def add(self, target_ms: float, emulated_ms: float, host_ms: float, wall_ms: float) -> None:
        self.target_ms = target_ms
        self.count += 1
        self.overruns += host_ms > target_ms
        if len(self.emulated_ms) < MAX_SAMPLES:
            self.emulated_ms.append(emulated_ms)
            self.host_ms.append(host_ms)
            self.ratio.append(emulated_ms / target_ms)
            self.wall_ms.append(wall_ms)
            self.wall_ratio.append(wall_ms / target_ms)

    def summary(self) -> dict[str, float]:
        def quantile(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

        return {"runs": self.count, "overruns": self.overruns,
                "median_emulated_ms": quantile(self.emulated_ms, 0.5),
                "median_host_ms": quantile(self.host_ms, 0.5),
                "median_wall_ms": quantile(self.wall_ms, 0.5),
                "median_wall_ratio_to_target": quantile(self.wall_ratio, 0.5),
                "median_ratio_to_target": quantile(self.ratio, 0.5),
                "p95_ratio_to_target": quantile(self.ratio, 0.95),
                "max_ratio_to_target": max(self.ratio, default=float("nan"))}


@dataclass
class Emulation:
    """Device and uplink emulation for a device runtime.

    With ``device`` (a :class:`DeviceProfile`) every segment lasts its profiled latency
    divided by ``speed`` (1 = the device as profiled; 0.5 = throttled to half speed): the
    runtime calls :meth:`finish_segment` when the host has computed a segment, and the
    emulation waits until the target has passed since the segment started. Without a
    profile, ``compute_slowdown`` multiplies the host's own time (a relative slowdown that
    moves with the host's load; tests use it). ``uplink`` (optional) delays every offload
    request. ``stats`` holds per-segment :class:`SegmentStats`.
    """

    device: DeviceProfile | None = None
    compute_slowdown: float = 1.0
    uplink: TraceUplink | None = None
    speed: float = 1.0
    spin_s: float = SPIN_S
    _sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    _clock: Callable[[], float] = field(default=time.perf_counter, repr=False)
    stats: dict[int, SegmentStats] = field(default_factory=dict, repr=False)
    _lag_s: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not self.compute_slowdown >= 1.0:
            raise InputError(f"compute slowdown must be >= 1, got {self.compute_slowdown}")
        self.set_speed(self.speed)

    def set_speed(self, speed: float) -> None:
        """Change the emulated device's speed (1 = as profiled), e.g. for a throttled period."""
        if not (math.isfinite(speed) and speed > 0):
            raise InputError(f"device speed must be positive, got {speed}")
        self.speed = speed

    def target_ms(self, segment: int, host_ms: float) -> float:
        """How long ``segment`` lasts on the emulated device when the host took ``host_ms``."""
        if self.device is not None and segment < len(self.device.segment_ms):
            return self.device.segment_ms[segment] / self.speed
        return host_ms * self.compute_slowdown / self.speed

    def finish_segment(self, segment: int, started_s: float) -> float:
        """Called when the host finished ``segment``, started at ``started_s`` (``time.perf_counter``):
        waits out the rest of the emulated latency; returns the segment's emulated seconds.

        The emulated time is the target, or the host's own time when that was longer. A wait
        that ends late (the host scheduled another process) is not the device's time: the
        delay is taken off :meth:`clock`, the emulated device's clock, on which the runtime
        measures latencies and deadlines.
        """
        host_s = self._clock() - started_s
        target_s = self.target_ms(segment, host_s * 1e3) / 1e3
        end = started_s + target_s
        remaining = end - self._clock()
        if remaining > self.spin_s:
            self._sleep(remaining - self.spin_s)
        while self._clock() < end:
            pass
        wall_s = self._clock() - started_s
        emulated_s = max(target_s, host_s)
        self._lag_s += max(wall_s - emulated_s, 0.0)
        self.stats.setdefault(segment, SegmentStats()).add(target_s * 1e3, emulated_s * 1e3, host_s * 1e3,
                                                           wall_s * 1e3)
        return emulated_s

    def clock(self) -> float:
        """The emulated device's clock (seconds, like ``time.perf_counter``): wall time less the
        time this host was late in ending emulated segments."""
        return self._clock() - self._lag_s

    @property
    def lag_ms(self) -> float:
        """Total time the host ended emulated segments late (taken off :meth:`clock`)."""
        return self._lag_s * 1e3

    @property
    def overruns(self) -> int:
        """Segments whose host time exceeded the emulated latency (the host did not keep up)."""
        return sum(s.overruns for s in self.stats.values())

    def reset_stats(self) -> None:
        self.stats.clear()
        self._lag_s = 0.0

    def report(self) -> dict[str, Any]:
        """Per segment: the profile's latency and what was emulated (JSON-ready)."""
        segments = []
        for index in sorted(self.stats):
            entry: dict[str, Any] = {"index": index, **self.stats[index].summary()}
            if self.device is not None and index < len(self.device.segment_ms):
                entry["profile_ms"] = self.device.segment_ms[index]
            segments.append(entry)
        return {"device": None if self.device is None else self.device.to_dict(), "segments": segments,
                "overruns": self.overruns, "host_lag_ms": self.lag_ms}

    def send_delay_s(self, nbytes: int) -> float:
        """How long the emulated uplink needs for a request of ``nbytes`` (0 without an uplink)."""
        return 0.0 if self.uplink is None else self.uplink.transfer_s(nbytes)
