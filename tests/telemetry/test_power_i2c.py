"""INA219/INA260 register arithmetic, against register values worked out from the datasheets."""

import pytest

from tflite_edge.errors import PowerSensorError
from tflite_edge.telemetry.power_i2c import Ina219Sensor, Ina260Sensor


class FakeBus:
    """Registers as the chip would send them: most significant byte first."""

    def __init__(self, registers: dict[int, int], address: int = 0x40) -> None:
        self.registers = registers
        self.address = address
        self.closed = False

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        if i2c_addr != self.address:
            raise OSError(121, "Remote I/O error")
        value = self.registers[register]
        return [(value >> 8) & 0xFF, value & 0xFF][:length]

    def close(self) -> None:
        self.closed = True


def test_ina219_shunt_and_bus_voltage():
    # 5.000 V bus: 5000 / 4 = 1250 -> 1250 << 3 = 0x2710 (CNVR bit 1 set: 0x2712).
    # 32.00 mV across 0.1 Ω = 320 mA: 32000 µV / 10 µV = 3200 = 0x0C80.
    sensor = Ina219Sensor(FakeBus({0x01: 0x0C80, 0x02: 0x2712}), shunt_ohms=0.1)
    reading = sensor.read()
    assert reading.voltage_mv == 5000.0
    assert reading.current_ma == pytest.approx(320.0)
    assert reading.power_mw == pytest.approx(1600.0)
    assert reading.source == "ina219:i2c:0x40" and not reading.estimated


def test_ina219_negative_current_and_overflow():
    # -1.00 mV (two's complement of 100) through 0.01 Ω = -100 mA
    sensor = Ina219Sensor(FakeBus({0x01: 0x10000 - 100, 0x02: 0x2710}), shunt_ohms=0.01)
    assert sensor.read().current_ma == pytest.approx(-100.0)
    overflowing = Ina219Sensor(FakeBus({0x01: 0x7FFF, 0x02: 0x2711}))
    with pytest.raises(PowerSensorError, match="overflow"):
        overflowing.read()


def test_ina260_registers():
    # 1.25 mA/bit: 800 -> 1000 mA; 1.25 mV/bit: 4000 -> 5000 mV; 10 mW/bit: 500 -> 5000 mW
    bus = FakeBus({0xFE: 0x5449, 0x01: 800, 0x02: 4000, 0x03: 500}, address=0x41)
    sensor = Ina260Sensor(bus, address=0x41)
    reading = sensor.read()
    assert (reading.current_ma, reading.voltage_mv, reading.power_mw) == (1000.0, 5000.0, 5000.0)
    sensor.close()
    assert not bus.closed  # a bus object we were given stays open for its owner


def test_ina260_checks_the_manufacturer_id_and_wiring():
    with pytest.raises(PowerSensorError, match="not 0x5449"):
        Ina260Sensor(FakeBus({0xFE: 0x1234}))
    with pytest.raises(PowerSensorError, match="check the wiring"):
        Ina260Sensor(FakeBus({0xFE: 0x5449}, address=0x45))
    with pytest.raises(PowerSensorError, match="outside"):
        Ina219Sensor(FakeBus({}), address=0x90)


def test_bus_number_needs_smbus2_or_a_device():
    # smbus2 is optional: either it is missing (clear error) or /dev/i2c-250 does not exist here.
    with pytest.raises(PowerSensorError, match="smbus2|i2c-250"):
        Ina219Sensor(250)
