"""Making this machine behave like a slower device on a slower link.

Development hosts are far faster than IoT devices and talk to their edge over loopback. For
demos, tests and experiments, ``Emulation`` stretches the device's measured compute time by
a factor and holds every offload request for the time its bytes would take on an uplink
that follows a bandwidth trace. The real segments still run and the real MQTT messages are
still sent; only time is added, and every result's timings include it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # only the type: a device need not import the policy package
    from ..agents.traces import Trace

__all__ = ["Emulation", "TraceUplink"]


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

    def position_s(self) -> float:
        """Where in the trace the link is now (seconds, wrapping around)."""
        return ((self._clock() - self._start) * self.speedup) % self.trace.duration_s

    def bandwidth_mbps(self) -> float:
        """The trace's bandwidth at the current position."""
        return float(self.trace.bandwidth_at(self.position_s()))

    def transfer_s(self, nbytes: int) -> float:
        """Seconds to send ``nbytes`` starting now."""
        start = self.position_s()
        return float(self.trace.transfer_end_s(start, nbytes * 8 / 1e6)) - start


@dataclass
class Emulation:
    """Compute slowdown and uplink emulation for a device runtime.

    ``compute_slowdown`` multiplies the time of every segment run on the device (1 = this
    machine's own speed). With ``segment_ms`` (this machine's median latency per segment,
    as ``tflite-edge profile`` measures it) each segment takes ``compute_slowdown`` times
    its median instead of times its latest run: on a busy host a 50 µs scheduling hiccup
    would otherwise become milliseconds of emulated compute. ``uplink`` (optional) delays
    every offload request.
    """

    compute_slowdown: float = 1.0
    uplink: TraceUplink | None = None
    segment_ms: tuple[float, ...] | None = None
    _sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if not self.compute_slowdown >= 1.0:
            raise InputError(f"compute slowdown must be >= 1, got {self.compute_slowdown}")
        if self.segment_ms is not None and not all(ms > 0 for ms in self.segment_ms):
            raise InputError("segment_ms must hold positive latencies")

    def stretch_compute(self, elapsed_s: float, segment: int | None = None) -> float:
        """Sleep so that segment work that took ``elapsed_s`` lasts as long as on the emulated
        device; returns the emulated duration in seconds."""
        if self.segment_ms is not None and segment is not None and segment < len(self.segment_ms):
            target_s = self.segment_ms[segment] * self.compute_slowdown / 1e3
        else:
            target_s = elapsed_s * self.compute_slowdown
        extra = target_s - elapsed_s
        if extra > 0:
            self._sleep(extra)
        return max(target_s, elapsed_s)

    def send_delay_s(self, nbytes: int) -> float:
        """How long the emulated uplink needs for a request of ``nbytes`` (0 without an uplink)."""
        return 0.0 if self.uplink is None else self.uplink.transfer_s(nbytes)
