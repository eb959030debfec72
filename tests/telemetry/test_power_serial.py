"""The serial power meter, driven through a real pseudo-terminal."""

import os
import time

import pytest

from tflite_edge.errors import PowerSensorError
from tflite_edge.telemetry.power_serial import MAX_LINE_BYTES, SerialPowerMeter, parse_meter_line

serial = pytest.importorskip("serial")


def test_line_formats():
    r = parse_meter_line("power_mw=812.5 voltage_mv=5010 current_ma=162.2")
    assert (r.power_mw, r.voltage_mv, r.current_ma) == (812.5, 5010.0, 162.2)
    r = parse_meter_line("voltage_v=5.0,current_a=0.2\r\n")
    assert r.power_mw == pytest.approx(1000.0) and r.voltage_mv == 5000.0
    assert parse_meter_line("1234.5").power_mw == 1234.5
    assert parse_meter_line("power_w=1.5; extra=3").power_mw == 1500.0
    for junk in ("", "# meter v1.2", "hello", "power_mw=abc", "power_mw=-5", "nan"):
        assert parse_meter_line(junk) is None


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    name = os.ttyname(slave)
    yield master, name
    os.close(master)
    os.close(slave)


def test_meter_on_a_pty_returns_the_latest_reading(pty_pair):
    master, name = pty_pair
    meter = SerialPowerMeter(name, timeout_s=2.0)
    try:
        os.write(master, b"# meter starting\r\n" + b"x" * (MAX_LINE_BYTES * 3) + b"\npower_mw=500\n")
        deadline = time.monotonic() + 2
        while meter.read().power_mw != 500.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert meter.read().power_mw == 500.0
        os.write(master, b"voltage_mv=5000 current_ma=300\n")
        deadline = time.monotonic() + 2
        while meter.read().power_mw != 1500.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        reading = meter.read()
        assert (reading.power_mw, reading.current_ma) == (1500.0, 300.0)
        assert reading.source == f"serial:{name}" and not reading.estimated
    finally:
        meter.close()


def test_silent_meter_times_out_and_stale_readings_fail(pty_pair):
    master, name = pty_pair
    meter = SerialPowerMeter(name, timeout_s=0.2, stale_s=0.3)
    try:
        with pytest.raises(PowerSensorError, match="no reading within"):
            meter.read()
        os.write(master, b"42\n")
        time.sleep(0.1)
        assert meter.read().power_mw == 42.0
        time.sleep(0.4)
        with pytest.raises(PowerSensorError, match="old"):
            meter.read()
    finally:
        meter.close()


def test_missing_port_is_a_clear_error(tmp_path):
    with pytest.raises(PowerSensorError, match="cannot open the power meter"):
        SerialPowerMeter(str(tmp_path / "ttyNONE"))
