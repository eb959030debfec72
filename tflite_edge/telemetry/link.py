"""Link quality as the device sees it: round-trip time, uplink throughput, losses, Wi-Fi signal.

Everything here is pure bookkeeping fed by the transport (one call per request/response or
ping), so it is testable without a network. ``LinkMonitor`` bundles the pieces and gives a
``LinkSnapshot`` for each telemetry message.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LinkMonitor",
    "LinkSnapshot",
    "LossCounter",
    "RttTracker",
    "ThroughputEstimator",
    "WifiSignal",
    "read_wifi_signal",
]

WIRELESS_PATH = Path("/proc/net/wireless")


class RttTracker:
    """Round-trip time: smoothed mean and deviation as in RFC 6298, plus window min/max.

    The smoothed value reacts within a few samples yet ignores single outliers; the
    minimum over the window approximates the uncongested path delay.
    """

    # RFC 6298's gains: 1/8 for the mean, 1/4 for the deviation.
    ALPHA = 0.125
    BETA = 0.25

    def __init__(self, window: int = 64) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._samples: deque[float] = deque(maxlen=window)
        self.srtt_ms: float | None = None
        self.rttvar_ms: float | None = None
        self.count = 0

    def add(self, rtt_ms: float) -> None:
        """Record one measured round trip (request sent -> reply received, or a ping)."""
        if not math.isfinite(rtt_ms) or rtt_ms < 0:
            raise ValueError(f"rtt_ms must be a finite non-negative number, got {rtt_ms!r}")
        self._samples.append(rtt_ms)
        self.count += 1
        if self.srtt_ms is None or self.rttvar_ms is None:
            self.srtt_ms, self.rttvar_ms = rtt_ms, rtt_ms / 2
        else:
            self.rttvar_ms = (1 - self.BETA) * self.rttvar_ms + self.BETA * abs(self.srtt_ms - rtt_ms)
            self.srtt_ms = (1 - self.ALPHA) * self.srtt_ms + self.ALPHA * rtt_ms

    @property
    def min_ms(self) -> float | None:
        return min(self._samples) if self._samples else None

    @property
    def max_ms(self) -> float | None:
        return max(self._samples) if self._samples else None

    @property
    def last_ms(self) -> float | None:
        return self._samples[-1] if self._samples else None


class ThroughputEstimator:
    """Uplink throughput from recent transfers: the harmonic mean of per-transfer rates.

    With equal weights the harmonic mean of rates is dominated by the slow transfers, so a
    single lucky burst does not inflate the estimate; this is the estimator adaptive video
    players use for the same reason. Transfers that are too short to time reliably are
    ignored (below ``min_bytes`` or ``min_time_s``).
    """

    def __init__(self, window: int = 20, *, min_bytes: int = 1, min_time_s: float = 1e-6) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._rates_bps: deque[float] = deque(maxlen=window)
        # Recomputed exactly per transfer (a window is short), read for free per request.
        self._estimate_bps: float | None = None
        self.min_bytes = min_bytes
        self.min_time_s = min_time_s
        self.total_bytes = 0
        self.total_time_s = 0.0
        self.count = 0

    def add(self, nbytes: int, time_s: float) -> bool:
        """Record one transfer of ``nbytes`` that took ``time_s``; False if it was too small to use."""
        if nbytes < 0 or not math.isfinite(time_s) or time_s < 0:
            raise ValueError(f"invalid transfer: {nbytes} bytes in {time_s} s")
        self.total_bytes += nbytes
        self.total_time_s += time_s
        if nbytes < self.min_bytes or time_s < self.min_time_s:
            return False
        self._rates_bps.append(8.0 * nbytes / time_s)
        self._estimate_bps = len(self._rates_bps) / sum(1.0 / r for r in self._rates_bps)
        self.count += 1
        return True

    @property
    def bits_per_s(self) -> float | None:
        """Harmonic mean of the recent transfer rates in bit/s, or None before the first transfer."""
        return self._estimate_bps

    @property
    def mbps(self) -> float | None:
        rate = self.bits_per_s
        return None if rate is None else rate / 1e6

    def expected_time_s(self, nbytes: int) -> float | None:
        """How long ``nbytes`` would take at the current estimate (None without an estimate)."""
        rate = self.bits_per_s
        return None if rate is None else 8.0 * nbytes / rate


class LossCounter:
    """Requests sent, answered and timed out; the loss ratio over a sliding window of outcomes."""

    def __init__(self, window: int = 100) -> None:
        self._outcomes: deque[bool] = deque(maxlen=window)
        self.sent = 0
        self.answered = 0
        self.timeouts = 0
        self.errors = 0

    def success(self) -> None:
        self.sent += 1
        self.answered += 1
        self._outcomes.append(True)

    def timeout(self) -> None:
        self.sent += 1
        self.timeouts += 1
        self._outcomes.append(False)

    def error(self) -> None:
        """A request that failed for a reason other than a timeout (an error reply, a lost connection)."""
        self.sent += 1
        self.errors += 1
        self._outcomes.append(False)

    @property
    def loss_ratio(self) -> float:
        if not self._outcomes:
            return 0.0
        return sum(1 for ok in self._outcomes if not ok) / len(self._outcomes)


@dataclass(frozen=True)
class WifiSignal:
    """One interface's line of /proc/net/wireless."""

    interface: str
    link_quality: float
    signal_dbm: float
    noise_dbm: float | None


def read_wifi_signal(path: str | Path = WIRELESS_PATH, interface: str | None = None) -> WifiSignal | None:
    """The Wi-Fi signal of ``interface`` (or the first wireless interface), None without Wi-Fi.

    /proc/net/wireless has two header lines, then ``iface: status link level noise ...``
    where level and noise are dBm (some drivers add a trailing dot, and report
    level as an unsigned byte, e.g. 196 meaning -60 dBm).
    """
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines[2:]:
        if ":" not in line:
            continue
        name, _, rest = line.partition(":")
        name = name.strip()
        if interface is not None and name != interface:
            continue
        fields = rest.split()
        if len(fields) < 4:
            continue
        try:
            link = float(fields[1].rstrip("."))
            level = float(fields[2].rstrip("."))
            noise = float(fields[3].rstrip("."))
        except ValueError:
            continue
        if level > 63:  # an unsigned 8-bit dBm value
            level -= 256
        noise_dbm: float | None = noise - 256 if noise > 63 else noise
        if noise_dbm == -256 or noise_dbm == 0:  # drivers that do not report noise
            noise_dbm = None
        return WifiSignal(name, link, level, noise_dbm)
    return None


@dataclass(frozen=True)
class LinkSnapshot:
    """The link as it is now; None where nothing has been measured yet."""

    rtt_ms: float | None
    rtt_min_ms: float | None
    rtt_var_ms: float | None
    uplink_mbps: float | None
    transfers: int
    requests_sent: int
    timeouts: int
    errors: int
    loss_ratio: float
    wifi: WifiSignal | None


class LinkMonitor:
    """RTT, throughput and losses together; thread-safe, since replies arrive on the MQTT thread."""

    def __init__(
        self,
        *,
        rtt_window: int = 64,
        throughput_window: int = 20,
        loss_window: int = 100,
        wireless_path: str | Path = WIRELESS_PATH,
        wifi_interface: str | None = None,
    ) -> None:
        self.rtt = RttTracker(rtt_window)
        self.throughput = ThroughputEstimator(throughput_window)
        self.losses = LossCounter(loss_window)
        self.wireless_path = Path(wireless_path)
        self.wifi_interface = wifi_interface
        # Also taken by TelemetryPublisher.context() to read a consistent set of figures.
        self._lock = threading.Lock()

    def record_transfer(self, nbytes: int, transfer_s: float) -> None:
        """An uplink transfer of ``nbytes`` (activation upload) that took ``transfer_s``."""
        with self._lock:
            self.throughput.add(nbytes, transfer_s)

    def record_rtt(self, rtt_ms: float) -> None:
        """A request/response round trip or a ping."""
        with self._lock:
            self.rtt.add(rtt_ms)

    def record_success(self) -> None:
        with self._lock:
            self.losses.success()

    def record_timeout(self) -> None:
        with self._lock:
            self.losses.timeout()

    def record_error(self) -> None:
        with self._lock:
            self.losses.error()

    def estimates(self) -> tuple[float | None, float | None, float]:
        """(uplink Mbit/s, smoothed RTT ms, loss ratio) as measured so far, read together."""
        with self._lock:
            return self.throughput.mbps, self.rtt.srtt_ms, self.losses.loss_ratio

    def snapshot(self) -> LinkSnapshot:
        with self._lock:
            return LinkSnapshot(
                rtt_ms=self.rtt.srtt_ms,
                rtt_min_ms=self.rtt.min_ms,
                rtt_var_ms=self.rtt.rttvar_ms,
                uplink_mbps=self.throughput.mbps,
                transfers=self.throughput.count,
                requests_sent=self.losses.sent,
                timeouts=self.losses.timeouts,
                errors=self.losses.errors,
                loss_ratio=self.losses.loss_ratio,
                wifi=read_wifi_signal(self.wireless_path, self.wifi_interface),
            )
