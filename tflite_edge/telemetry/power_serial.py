"""A power meter that prints text lines on a serial port (a USB meter, or a microcontroller with a shunt).

Accepted line formats (one reading per line, ASCII, ``\\n`` or ``\\r\\n``):

* ``power_mw=812.5 voltage_mv=5010 current_ma=162.2`` — ``key=value`` pairs separated by
  spaces, commas or semicolons; keys carry their unit: ``power_mw``/``power_w``,
  ``voltage_mv``/``voltage_v``, ``current_ma``/``current_a``. Power may be left out when
  voltage and current are given.
* ``812.5`` — a bare number, in mW.

Anything else (banners, comments starting with ``#``) is skipped. Lines are bounded to
``MAX_LINE_BYTES`` so a meter that never sends a newline cannot exhaust memory.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from ..errors import PowerSensorError
from .power import PowerReading, PowerSensor

__all__ = ["MAX_LINE_BYTES", "SerialPowerMeter", "parse_meter_line"]

MAX_LINE_BYTES = 256

_SCALE = {
    "power_mw": ("power_mw", 1.0),
    "power_w": ("power_mw", 1000.0),
    "voltage_mv": ("voltage_mv", 1.0),
    "voltage_v": ("voltage_mv", 1000.0),
    "current_ma": ("current_ma", 1.0),
    "current_a": ("current_ma", 1000.0),
}
_SEPARATORS = re.compile(r"[\s,;]+")


def parse_meter_line(line: str, source: str = "serial") -> PowerReading | None:
    """One meter line to a reading, or None when the line carries no reading."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    values: dict[str, float] = {}
    if "=" not in text:
        try:
            values["power_mw"] = float(text)
        except ValueError:
            return None
    else:
        for item in _SEPARATORS.split(text):
            key, sep, value = item.partition("=")
            if not sep or key.strip().lower() not in _SCALE:
                continue
            name, scale = _SCALE[key.strip().lower()]
            try:
                values[name] = float(value) * scale
            except ValueError:
                return None
    voltage = values.get("voltage_mv")
    current = values.get("current_ma")
    power = values.get("power_mw")
    if power is None and voltage is not None and current is not None:
        power = voltage * current / 1000.0
    if power is None or power != power or power < 0:  # missing, NaN or negative
        return None
    return PowerReading(power, voltage, current, source, False)


class SerialPowerMeter(PowerSensor):
    """Reads a serial power meter in a background thread; ``read()`` returns the latest line's value.

    ``port`` is a device path or pyserial URL (``/dev/ttyUSB0``, ``loop://``), or an open
    object with ``readline(size)`` and ``close()``. ``read()`` waits up to ``timeout_s`` for
    the first reading and fails when the newest one is older than ``stale_s``.
    """

    def __init__(
        self,
        port: str | Any,
        *,
        baudrate: int = 115200,
        timeout_s: float = 2.0,
        stale_s: float = 5.0,
    ) -> None:
        if isinstance(port, str):
            try:
                import serial
            except ImportError as e:
                raise PowerSensorError("a serial power meter needs pyserial: pip install pyserial") from e
            try:
                self._port = serial.serial_for_url(port, baudrate=baudrate, timeout=0.2)
            except (serial.SerialException, ValueError) as e:
                raise PowerSensorError(f"cannot open the power meter on {port}: {e}") from e
            self.source = f"serial:{port}"
        else:
            self._port = port
            self.source = f"serial:{getattr(port, 'name', 'port')}"
        self.timeout_s = timeout_s
        self.stale_s = stale_s
        self._latest: tuple[float, PowerReading] | None = None
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, name="serial-power-meter", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                chunk = self._port.readline(MAX_LINE_BYTES)
            except Exception as e:  # the port went away (unplugged meter, closed pty)
                with self._cond:
                    self._error = e
                    self._cond.notify_all()
                return
            if not chunk:
                continue
            pending += chunk
            if not pending.endswith(b"\n"):
                if len(pending) >= MAX_LINE_BYTES:
                    pending = b""  # an over-long line: drop it rather than grow without bound
                continue
            line, pending = pending.decode("ascii", errors="replace"), b""
            reading = parse_meter_line(line, self.source)
            if reading is not None:
                with self._cond:
                    self._latest = (time.monotonic(), reading)
                    self._cond.notify_all()

    def read(self) -> PowerReading:
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None or self._error is not None, self.timeout_s)
            if self._latest is None:
                if self._error is not None:
                    raise PowerSensorError(f"{self.source}: the port failed: {self._error}") from self._error
                raise PowerSensorError(
                    f"{self.source}: no reading within {self.timeout_s:.1f} s; check the baud rate and line format"
                )
            stamp, reading = self._latest
        age_s = time.monotonic() - stamp
        if age_s > self.stale_s:
            raise PowerSensorError(f"{self.source}: the last reading is {age_s:.1f} s old; is the meter still sending?")
        return reading

    def close(self) -> None:
        self._stop.set()
        try:
            self._port.close()
        except Exception:  # closing a port that already failed
            pass
        self._thread.join(timeout=1.0)
