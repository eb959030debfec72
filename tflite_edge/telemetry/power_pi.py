"""Raspberry Pi 5 power from its PMIC, through ``vcgencmd pmic_read_adc``.

The Pi 5's PMIC reports the current and voltage of each rail it generates, one per line,
e.g. ``VDD_CORE_A current(7)=0.73410000A`` and ``VDD_CORE_V volt(15)=0.72040000V``, plus
the USB-C input voltage ``EXT5V_V``. Power is the sum of V × I over the rails that have
both. That leaves out conversion losses in the PMIC and what the USB ports draw, so it is
a lower bound of the board's input power: the figure is labelled ``vcgencmd:pmic``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

from ..errors import PowerSensorError
from .power import PowerReading, PowerSensor

__all__ = ["PmicPowerSensor", "parse_pmic_adc"]

_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)_([AV])\b[^=]*=\s*([-+0-9.eE]+)\s*[AV]?\s*$")


def parse_pmic_adc(text: str) -> tuple[float, float | None]:
    """(power in mW over all rails with current and voltage, input voltage in mV or None)."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        rail, kind, value = m.group(1), m.group(2), float(m.group(3))
        (amps if kind == "A" else volts)[rail] = value
    rails = sorted(set(amps) & set(volts))
    if not rails:
        raise PowerSensorError("vcgencmd pmic_read_adc gave no rail with both current and voltage (not a Pi 5?)")
    power_mw = sum(amps[r] * volts[r] for r in rails) * 1000.0
    input_v = volts.get("EXT5V")
    return power_mw, None if input_v is None else input_v * 1000.0


def _run_vcgencmd() -> str:
    executable = shutil.which("vcgencmd")
    if executable is None:
        raise PowerSensorError("vcgencmd is not installed (it ships with Raspberry Pi OS)")
    try:
        done = subprocess.run([executable, "pmic_read_adc"], capture_output=True, text=True, timeout=2.0)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PowerSensorError(f"vcgencmd pmic_read_adc failed: {e}") from e
    if done.returncode != 0:
        raise PowerSensorError(f"vcgencmd pmic_read_adc failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class PmicPowerSensor(PowerSensor):
    """Raspberry Pi 5 PMIC rails summed; ``run`` returns the command's output (injectable for tests)."""

    source = "vcgencmd:pmic"

    def __init__(self, run: Callable[[], str] = _run_vcgencmd) -> None:
        self._run = run

    def read(self) -> PowerReading:
        power_mw, input_mv = parse_pmic_adc(self._run())
        return PowerReading(power_mw, input_mv, None, self.source, False)
