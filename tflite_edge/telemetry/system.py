"""CPU load, CPU temperature and memory use, from /proc and /sys (psutil not required).

Devices often run without psutil, so the Linux files are read directly; every root is a
parameter so tests use fake trees. Figures that a machine does not expose are None.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SystemMonitor", "SystemSnapshot", "read_cpu_temperature_c"]

THERMAL_ROOT = Path("/sys/class/thermal")
PROC_ROOT = Path("/proc")

# Zone types that measure the CPU itself, best first (x86 package, Raspberry Pi, Jetson, generic).
_CPU_ZONE_TYPES = ("x86_pkg_temp", "cpu-thermal", "cpu_thermal", "cpu", "soc_thermal", "soc")


def read_cpu_temperature_c(root: str | Path = THERMAL_ROOT) -> float | None:
    """The CPU temperature in °C from /sys/class/thermal (millidegrees in ``temp``), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    zones: list[tuple[int, float]] = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip().lower()
            millideg = float((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        rank = next((i for i, t in enumerate(_CPU_ZONE_TYPES) if kind.startswith(t)), len(_CPU_ZONE_TYPES))
        zones.append((rank, millideg / 1000.0))
    if not zones:
        return None
    return min(zones, key=lambda z: z[0])[1]


def _cpu_times(proc: Path) -> tuple[float, float] | None:
    """(busy, total) jiffies from the aggregate ``cpu`` line of /proc/stat."""
    try:
        first = (proc / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    try:
        values = [float(v) for v in first[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    values = values[:8]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    total = sum(values)
    return total - idle, total


def _memory_used_percent(proc: Path) -> float | None:
    try:
        lines = (proc / "meminfo").read_text().splitlines()
    except OSError:
        return None
    info: dict[str, float] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            try:
                info[key] = float(parts[0])
            except ValueError:
                continue
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if not total or available is None:
        return None
    return 100.0 * (total - available) / total


@dataclass(frozen=True)
class SystemSnapshot:
    cpu_load_percent: float | None
    cpu_temperature_c: float | None
    memory_used_percent: float | None


class SystemMonitor:
    """CPU load over the interval since the previous ``snapshot()``, plus temperature and memory."""

    def __init__(self, *, proc_root: str | Path = PROC_ROOT, thermal_root: str | Path = THERMAL_ROOT) -> None:
        self.proc_root = Path(proc_root)
        self.thermal_root = Path(thermal_root)
        self._lock = threading.Lock()
        self._last = _cpu_times(self.proc_root)

    def cpu_load_percent(self) -> float | None:
        with self._lock:
            now = _cpu_times(self.proc_root)
            last, self._last = self._last, now
        if now is None or last is None:
            return None
        busy, total = now[0] - last[0], now[1] - last[1]
        if total <= 0:
            return None
        return max(0.0, min(100.0, 100.0 * busy / total))

    def snapshot(self) -> SystemSnapshot:
        return SystemSnapshot(
            cpu_load_percent=self.cpu_load_percent(),
            cpu_temperature_c=read_cpu_temperature_c(self.thermal_root),
            memory_used_percent=_memory_used_percent(self.proc_root),
        )
