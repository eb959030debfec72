"""INA219 and INA260 current/power monitors read directly over I2C (e.g. on a Raspberry Pi).

Use these when the chip is not bound to the kernel's ``ina2xx`` driver (then hwmon is
simpler). ``bus`` is an I2C bus number (opened with the optional ``smbus2`` package) or
any object with ``read_i2c_block_data(address, register, length) -> list[int]``, which is
how the register arithmetic is tested without hardware.

Register maps (Texas Instruments datasheets, SBOS448 for the INA219, SBOS656 for the INA260);
both chips send the most significant byte first:

INA219: 0x01 shunt voltage, signed, 10 µV/bit; 0x02 bus voltage, bits 15..3, 4 mV/bit
        (bit 0 = math overflow). Current = shunt voltage / shunt resistance, which needs no
        calibration register and so cannot disagree with how someone else programmed it.
INA260: 0x01 current, signed, 1.25 mA/bit; 0x02 bus voltage, 1.25 mV/bit; 0x03 power,
        10 mW/bit; 0xFE manufacturer id 0x5449 ("TI"), 0xFF die id 0x227x.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import PowerSensorError
from .power import PowerReading, PowerSensor

__all__ = ["I2cBus", "Ina219Sensor", "Ina260Sensor", "open_i2c_bus"]


class I2cBus(Protocol):
    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...


def open_i2c_bus(bus: int | I2cBus) -> tuple[I2cBus, bool]:
    """An I2C bus object and whether we opened it (and so must close it)."""
    if not isinstance(bus, int):
        return bus, False
    try:
        import smbus2
    except ImportError as e:
        raise PowerSensorError("reading an INA219/INA260 over I2C needs the smbus2 package: pip install smbus2") from e
    try:
        return smbus2.SMBus(bus), True
    except OSError as e:
        raise PowerSensorError(
            f"cannot open /dev/i2c-{bus}: {e.strerror or e}; enable I2C (raspi-config) and check permissions"
        ) from e


def _signed16(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


class _InaBase(PowerSensor):
    chip = "ina"

    def __init__(self, bus: int | I2cBus = 1, address: int = 0x40) -> None:
        if not 0x03 <= address <= 0x77:
            raise PowerSensorError(f"I2C address 0x{address:02x} is outside 0x03..0x77")
        self.address = address
        self._bus, self._owned = open_i2c_bus(bus)
        bus_name = f"i2c-{bus}" if isinstance(bus, int) else "i2c"
        self.source = f"{self.chip}:{bus_name}:0x{address:02x}"

    def _register(self, register: int) -> int:
        try:
            data = self._bus.read_i2c_block_data(self.address, register, 2)
        except OSError as e:
            raise PowerSensorError(
                f"{self.source}: reading register 0x{register:02x} failed ({e.strerror or e}); "
                "check the wiring and the address (i2cdetect -y 1)"
            ) from e
        if len(data) != 2:
            raise PowerSensorError(f"{self.source}: register 0x{register:02x} returned {len(data)} bytes, not 2")
        return (int(data[0]) << 8) | int(data[1])

    def close(self) -> None:
        if self._owned:
            closer: Any = getattr(self._bus, "close", None)
            if closer is not None:
                closer()
            self._owned = False


class Ina219Sensor(_InaBase):
    """An INA219 with an external shunt of ``shunt_ohms`` (0.1 Ω on the common breakout boards)."""

    chip = "ina219"

    def __init__(self, bus: int | I2cBus = 1, address: int = 0x40, *, shunt_ohms: float = 0.1) -> None:
        if shunt_ohms <= 0:
            raise PowerSensorError(f"shunt_ohms must be positive, got {shunt_ohms}")
        self.shunt_ohms = shunt_ohms
        super().__init__(bus, address)

    def read(self) -> PowerReading:
        shunt_uv = _signed16(self._register(0x01)) * 10.0
        bus_raw = self._register(0x02)
        if bus_raw & 0x1:
            raise PowerSensorError(f"{self.source}: math overflow flag set; the current exceeds the chip's range")
        voltage_mv = (bus_raw >> 3) * 4.0
        current_ma = shunt_uv / self.shunt_ohms / 1000.0  # µV / Ω = µA
        return PowerReading(voltage_mv * current_ma / 1000.0, voltage_mv, current_ma, self.source, False)


class Ina260Sensor(_InaBase):
    """An INA260 (integrated 2 mΩ shunt); checks the manufacturer id on construction."""

    chip = "ina260"

    def __init__(self, bus: int | I2cBus = 1, address: int = 0x40) -> None:
        super().__init__(bus, address)
        maker = self._register(0xFE)
        if maker != 0x5449:
            self.close()
            raise PowerSensorError(
                f"{self.source}: manufacturer id is 0x{maker:04x}, not 0x5449 (TI); is this an INA260?"
            )

    def read(self) -> PowerReading:
        current_ma = _signed16(self._register(0x01)) * 1.25
        voltage_mv = self._register(0x02) * 1.25
        power_mw = self._register(0x03) * 10.0
        return PowerReading(power_mw, voltage_mv, current_ma, self.source, False)
