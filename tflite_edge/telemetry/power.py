"""Power sensors behind one small interface, and the search for the one a device has.

``PowerSensor.read()`` returns a ``PowerReading``. Real sources live here (Linux hwmon,
Intel RAPL) and beside this module (``power_i2c``: INA219/INA260 over I2C;
``power_serial``: a serial power meter; ``power_pi``: the Raspberry Pi 5 PMIC). When none
is found, ``discover_power_sensor`` falls back to the model-based estimate of
``energy.EstimatedPowerSensor``, whose readings say ``estimated=True`` so that no message
passes a guess off as a measurement.

Every sysfs root is a parameter, so tests run each source against a fake tree.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PowerSensorError

__all__ = [
    "HWMON_ROOT",
    "POWERCAP_ROOT",
    "HwmonPowerSensor",
    "IIO_ROOT",
    "IioPowerSensor",
    "PowerReading",
    "PowerSensor",
    "RaplPowerSensor",
    "discover_power_sensor",
    "find_hwmon_sensors",
    "find_iio_sensors",
    "find_rapl_zones",
]

log = logging.getLogger(__name__)

HWMON_ROOT = Path("/sys/class/hwmon")
POWERCAP_ROOT = Path("/sys/class/powercap")
IIO_ROOT = Path("/sys/bus/iio/devices")


@dataclass(frozen=True)
class PowerReading:
    """One power figure and where it came from; ``estimated`` is True for model-based figures."""

    power_mw: float
    voltage_mv: float | None
    current_ma: float | None
    source: str
    estimated: bool


class PowerSensor(ABC):
    """Anything that can say how much power the device draws right now."""

    #: a short description used as ``PowerReading.source`` (e.g. ``hwmon:ina3221:VDD_IN``)
    source: str = "unknown"
    estimated: bool = False

    @abstractmethod
    def read(self) -> PowerReading:
        """The current (or most recent interval's average) power draw."""

    def close(self) -> None:  # noqa: B027 - most sensors hold nothing to release
        """Release the bus, port or file the sensor holds."""

    def __enter__(self) -> PowerSensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_number(path: Path) -> float:
    try:
        text = path.read_text().strip()
    except PermissionError as e:
        raise PowerSensorError(
            f"{path} is not readable by this user; run as root or grant read access (e.g. a udev rule)"
        ) from e
    except OSError as e:
        raise PowerSensorError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return float(text)
    except ValueError as e:
        raise PowerSensorError(f"{path} does not hold a number: {text[:40]!r}") from e


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# ---------------------------------------------------------------- Linux hwmon


class HwmonPowerSensor(PowerSensor):
    """One channel of a Linux hwmon device (kernel ``ina2xx``, Jetson ``ina3221``, ...).

    hwmon units: ``power*_input``/``power*_average`` in µW, ``in*_input`` in mV,
    ``curr*_input`` in mA. A channel with a power file is read directly; one with only
    voltage and current (INA3221) gives V × I. The ``ina2xx`` driver's ``in0`` is the shunt
    voltage, not the supply, so for that driver the bus voltage ``in1`` is reported.
    """

    def __init__(self, device_dir: str | Path, channel: int) -> None:
        self.device_dir = Path(device_dir)
        self.channel = channel
        self.chip = _read_text(self.device_dir / "name") or self.device_dir.name
        d, c = self.device_dir, channel
        self._power = next((p for p in (d / f"power{c}_input", d / f"power{c}_average") if p.exists()), None)
        volt_channel = 1 if self.chip.startswith("ina2") and c == 1 else c
        self._voltage = d / f"in{volt_channel}_input"
        self._current = d / f"curr{c}_input"
        if self._power is None and not (self._voltage.exists() and self._current.exists()):
            raise PowerSensorError(
                f"{d} channel {c} has neither power{c}_input nor in{c}_input + curr{c}_input"
            )
        label = (
            _read_text(d / f"in{c}_label")
            or _read_text(d / f"power{c}_label")
            or _read_text(d / f"curr{c}_label")
            or f"ch{c}"
        )
        self.label = label
        self.source = f"hwmon:{self.chip}:{label}"

    def read(self) -> PowerReading:
        voltage_mv = _read_number(self._voltage) if self._voltage.exists() else None
        current_ma = _read_number(self._current) if self._current.exists() else None
        if self._power is not None:
            power_mw = _read_number(self._power) / 1000.0
        else:
            assert voltage_mv is not None and current_ma is not None
            power_mw = voltage_mv * current_ma / 1000.0
        if power_mw < 0:
            raise PowerSensorError(f"{self.source} reported negative power {power_mw} mW; check the shunt wiring")
        return PowerReading(power_mw, voltage_mv, current_ma, self.source, False)


_CHANNEL = re.compile(r"^(?:power(\d+)_(?:input|average)|curr(\d+)_input)$")


def find_hwmon_sensors(root: str | Path = HWMON_ROOT) -> list[HwmonPowerSensor]:
    """Every hwmon channel under ``root`` that gives power, best first.

    Within a device, a channel labelled as the input rail (``VDD_IN`` on Jetson modules,
    which is the whole module's supply) comes first, then channels in number order.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[HwmonPowerSensor] = []
    for device in sorted(root.iterdir(), key=lambda p: p.name):
        channels: set[int] = set()
        try:
            names = [p.name for p in device.iterdir()]
        except OSError:
            continue
        for name in names:
            m = _CHANNEL.match(name)
            if m:
                channels.add(int(m.group(1) or m.group(2)))
        sensors: list[HwmonPowerSensor] = []
        for channel in sorted(channels):
            try:
                sensors.append(HwmonPowerSensor(device, channel))
            except PowerSensorError:
                continue
        sensors.sort(key=lambda s: (0 if s.label.upper().endswith("_IN") or s.label.upper() == "VIN" else 1))
        found.extend(sensors)
    return found


# ---------------------------------------------------------------- Linux IIO (older Jetson)


class IioPowerSensor(PowerSensor):
    """One rail of an IIO power monitor: the ``ina3221x`` driver of Jetson Nano/TX2 (L4T 32).

    Files per channel N: ``in_power{N}_input`` (mW), ``in_voltage{N}_input`` (mV),
    ``in_current{N}_input`` (mA) and ``rail_name_{N}`` (e.g. ``POM_5V_IN``, the module input).
    """

    def __init__(self, device_dir: str | Path, channel: int) -> None:
        self.device_dir = Path(device_dir)
        self.channel = channel
        self._power = self.device_dir / f"in_power{channel}_input"
        if not self._power.exists():
            raise PowerSensorError(f"{self.device_dir} has no in_power{channel}_input")
        self._voltage = self.device_dir / f"in_voltage{channel}_input"
        self._current = self.device_dir / f"in_current{channel}_input"
        self.label = _read_text(self.device_dir / f"rail_name_{channel}") or f"ch{channel}"
        chip = _read_text(self.device_dir / "name") or "iio"
        self.source = f"iio:{chip}:{self.label}"

    def read(self) -> PowerReading:
        power_mw = _read_number(self._power)
        voltage = _read_number(self._voltage) if self._voltage.exists() else None
        current = _read_number(self._current) if self._current.exists() else None
        if power_mw < 0:
            raise PowerSensorError(f"{self.source} reported negative power {power_mw} mW")
        return PowerReading(power_mw, voltage, current, self.source, False)


def find_iio_sensors(root: str | Path = IIO_ROOT) -> list[IioPowerSensor]:
    """IIO power rails under ``root`` (``/sys/bus/iio/devices``), the input rail of each device first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[IioPowerSensor] = []
    for device in sorted(root.iterdir(), key=lambda p: p.name):
        try:
            channels = sorted(
                int(m.group(1)) for p in device.iterdir() if (m := re.fullmatch(r"in_power(\d+)_input", p.name))
            )
        except OSError:
            continue
        sensors = [IioPowerSensor(device, c) for c in channels]
        sensors.sort(key=lambda s: 0 if s.label.upper().endswith("_IN") else 1)
        found.extend(sensors)
    return found


# ---------------------------------------------------------------- Intel RAPL


class RaplPowerSensor(PowerSensor):
    """Average power of Intel RAPL zones, from their energy counters differentiated over time.

    ``energy_uj`` counts µJ and wraps at ``max_energy_range_uj``; a counter smaller than
    its previous value has wrapped once (reads are far more frequent than the minutes a
    wrap takes). The first ``read()`` waits ``min_interval_s`` to have an interval at all.
    """

    def __init__(
        self,
        zones: Sequence[str | Path],
        *,
        min_interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not zones:
            raise PowerSensorError("no RAPL zone given")
        self.zones = [Path(z) for z in zones]
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._sleep = sleep
        names = [_read_text(z / "name") or z.name for z in self.zones]
        self.source = "rapl:" + "+".join(names)
        self._ranges = [
            _read_number(z / "max_energy_range_uj") if (z / "max_energy_range_uj").exists() else float(2**32)
            for z in self.zones
        ]
        self._last: tuple[float, list[float]] = (self._clock(), self._energies())
        self._last_power_mw: float | None = None

    def _energies(self) -> list[float]:
        return [_read_number(z / "energy_uj") for z in self.zones]

    def read(self) -> PowerReading:
        then, before = self._last
        elapsed = self._clock() - then
        if elapsed < self.min_interval_s:
            if self._last_power_mw is not None:
                return PowerReading(self._last_power_mw, None, None, self.source, False)
            self._sleep(self.min_interval_s - elapsed)
        now = self._clock()
        after = self._energies()
        delta_uj = 0.0
        for b, a, wrap in zip(before, after, self._ranges, strict=True):
            delta_uj += a - b if a >= b else a + wrap - b
        elapsed = now - then
        if elapsed <= 0:
            raise PowerSensorError("RAPL: the clock did not advance between two readings")
        self._last = (now, after)
        power_mw = delta_uj / elapsed / 1000.0  # µJ/s = µW
        self._last_power_mw = power_mw
        return PowerReading(power_mw, None, None, self.source, False)


def find_rapl_zones(root: str | Path = POWERCAP_ROOT) -> list[Path]:
    """The top-level RAPL zones (``intel-rapl:N``, one per package, or ``psys`` for the platform).

    A ``psys`` zone covers the whole platform and is returned alone when present; otherwise
    the packages. Sub-zones (``intel-rapl:0:0``) are part of their package and are skipped,
    or they would be counted twice.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    top = [
        p
        for p in sorted(root.iterdir(), key=lambda p: p.name)
        if re.fullmatch(r"intel-rapl:\d+", p.name) and (p / "energy_uj").exists()
    ]
    psys = [p for p in top if _read_text(p / "name") == "psys"]
    return psys or top


# ---------------------------------------------------------------- discovery


def discover_power_sensor(
    *,
    hwmon_root: str | Path = HWMON_ROOT,
    powercap_root: str | Path = POWERCAP_ROOT,
    iio_root: str | Path = IIO_ROOT,
    fallback: Callable[[], PowerSensor] | None = None,
    probe_vcgencmd: bool = True,
) -> PowerSensor:
    """The best power sensor this machine has: hwmon, IIO, the Pi 5 PMIC, RAPL, then the estimate.

    A source is taken only if one reading succeeds (RAPL counters are often root-only).
    I2C and serial meters cannot be probed safely (probing a bus can upset other chips),
    so those are built explicitly: ``Ina219Sensor``, ``Ina260Sensor``, ``SerialPowerMeter``.
    ``fallback`` builds the sensor used when nothing is found; by default the
    model-based ``EstimatedPowerSensor``, whose readings are labelled ``estimated``.
    """
    candidates: list[PowerSensor] = [*find_hwmon_sensors(hwmon_root), *find_iio_sensors(iio_root)]
    for sensor in candidates:
        try:
            sensor.read()
        except PowerSensorError as e:
            log.info("skipping %s: %s", sensor.source, e)
            continue
        log.info("power sensor: %s", sensor.source)
        return sensor
    if probe_vcgencmd and shutil.which("vcgencmd"):
        from .power_pi import PmicPowerSensor

        pmic = PmicPowerSensor()
        try:
            pmic.read()
            log.info("power sensor: %s", pmic.source)
            return pmic
        except PowerSensorError as e:
            log.info("skipping vcgencmd: %s", e)
    zones = find_rapl_zones(powercap_root)
    if zones:
        try:
            rapl = RaplPowerSensor(zones)
            log.info("power sensor: %s", rapl.source)
            return rapl
        except PowerSensorError as e:
            log.info("skipping RAPL: %s", e)
    if fallback is None:
        from .energy import EstimatedPowerSensor

        fallback = EstimatedPowerSensor
    estimate = fallback()
    # Said once per process: a demo or benchmark opens many runtimes on the same machine.
    level = logging.INFO if estimate.source in _ESTIMATES_ANNOUNCED else logging.WARNING
    _ESTIMATES_ANNOUNCED.add(estimate.source)
    log.log(level, "no power sensor found; power figures are model-based estimates (%s)", estimate.source)
    return estimate


_ESTIMATES_ANNOUNCED: set[str] = set()
