"""Each power source against a fake sysfs tree laid out like the real one."""

from pathlib import Path

import pytest

from tflite_edge.errors import PowerSensorError
from tflite_edge.telemetry.energy import (
    RADIO_MODELS,
    ComputePowerModel,
    EstimatedPowerSensor,
    request_energy_mj,
)
from tflite_edge.telemetry.power import (
    HwmonPowerSensor,
    RaplPowerSensor,
    discover_power_sensor,
    find_hwmon_sensors,
    find_iio_sensors,
    find_rapl_zones,
)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def test_hwmon_ina2xx_reads_power_in_microwatts(tmp_path):
    # The kernel ina2xx driver: in0 = shunt voltage, in1 = bus voltage, curr1, power1 (µW).
    root = write_tree(
        tmp_path / "hwmon",
        {
            "hwmon0/name": "coretemp",
            "hwmon0/temp1_input": "45000",
            "hwmon1/name": "ina219",
            "hwmon1/in0_input": "12",
            "hwmon1/in1_input": "5080",
            "hwmon1/curr1_input": "640",
            "hwmon1/power1_input": "3251200",
        },
    )
    sensors = find_hwmon_sensors(root)
    assert [s.source for s in sensors] == ["hwmon:ina219:ch1"]
    reading = sensors[0].read()
    assert reading.power_mw == pytest.approx(3251.2)
    assert (reading.voltage_mv, reading.current_ma, reading.estimated) == (5080.0, 640.0, False)


def test_hwmon_ina3221_prefers_the_input_rail_and_multiplies_v_by_i(tmp_path):
    # Jetson: three channels with labels, only mV and mA files.
    files = {"hwmon3/name": "ina3221"}
    for ch, (label, mv, ma) in enumerate(
        [("VDD_CPU_GPU_CV", 5000, 300), ("VDD_IN", 5080, 1200), ("VDD_SOC", 5000, 250)], start=1
    ):
        files |= {f"hwmon3/in{ch}_label": label, f"hwmon3/in{ch}_input": str(mv), f"hwmon3/curr{ch}_input": str(ma)}
    root = write_tree(tmp_path / "hwmon", files)
    sensors = find_hwmon_sensors(root)
    assert sensors[0].source == "hwmon:ina3221:VDD_IN"
    assert sensors[0].read().power_mw == pytest.approx(5080 * 1200 / 1000)
    assert len(sensors) == 3


def test_iio_ina3221x_of_older_jetsons(tmp_path):
    # Jetson Nano (L4T 32): the ina3221x IIO driver, power in mW per named rail.
    files = {"iio:device0/name": "ina3221x"}
    for ch, (rail, mw, mv, ma) in enumerate([("POM_5V_IN", 4230, 5000, 846), ("POM_5V_GPU", 120, 5000, 24)]):
        files |= {
            f"iio:device0/rail_name_{ch}": rail,
            f"iio:device0/in_power{ch}_input": str(mw),
            f"iio:device0/in_voltage{ch}_input": str(mv),
            f"iio:device0/in_current{ch}_input": str(ma),
        }
    root = write_tree(tmp_path / "iio", files)
    sensors = find_iio_sensors(root)
    assert [s.source for s in sensors] == ["iio:ina3221x:POM_5V_IN", "iio:ina3221x:POM_5V_GPU"]
    reading = sensors[0].read()
    assert (reading.power_mw, reading.voltage_mv, reading.current_ma) == (4230.0, 5000.0, 846.0)
    empty = tmp_path / "empty"
    found = discover_power_sensor(hwmon_root=empty, powercap_root=empty, iio_root=root, probe_vcgencmd=False)
    assert found.source == "iio:ina3221x:POM_5V_IN"


def test_hwmon_power_average_and_errors(tmp_path):
    root = write_tree(tmp_path / "hwmon", {"hwmon0/name": "amdgpu", "hwmon0/power1_average": "15000000"})
    sensor = HwmonPowerSensor(root / "hwmon0", 1)
    assert sensor.read().power_mw == 15000.0
    (root / "hwmon0" / "power1_average").write_text("garbage\n")
    with pytest.raises(PowerSensorError, match="does not hold a number"):
        sensor.read()
    with pytest.raises(PowerSensorError, match="neither"):
        HwmonPowerSensor(root / "hwmon0", 2)
    assert find_hwmon_sensors(tmp_path / "no-such-dir") == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def rapl_tree(root: Path) -> Path:
    return write_tree(
        root / "powercap",
        {
            "intel-rapl/enabled": "1",
            "intel-rapl:0/name": "package-0",
            "intel-rapl:0/energy_uj": "1000000",
            "intel-rapl:0/max_energy_range_uj": "262143328850",
            "intel-rapl:0:0/name": "core",
            "intel-rapl:0:0/energy_uj": "500",
        },
    )


def test_rapl_differentiates_energy_and_handles_wrap_around(tmp_path):
    root = rapl_tree(tmp_path)
    zones = find_rapl_zones(root)
    assert [z.name for z in zones] == ["intel-rapl:0"]  # the core sub-zone is inside the package
    clock = FakeClock()
    sensor = RaplPowerSensor(zones, clock=clock, sleep=clock.sleep)
    energy = root / "intel-rapl:0" / "energy_uj"
    clock.now += 2.0
    energy.write_text(str(1_000_000 + 9_000_000))  # 9 J in 2 s = 4.5 W
    reading = sensor.read()
    assert reading.power_mw == pytest.approx(4500.0)
    assert reading.source == "rapl:package-0" and not reading.estimated
    # the counter wraps at max_energy_range_uj: 1 J before the wrap + 2 J after, in 1 s
    energy.write_text(str(262143328850 - 1_000_000))
    clock.now += 1.0
    sensor.read()
    energy.write_text(str(2_000_000))
    clock.now += 1.0
    assert sensor.read().power_mw == pytest.approx(3000.0)


def test_rapl_first_read_waits_for_an_interval(tmp_path):
    root = rapl_tree(tmp_path)
    clock = FakeClock()
    sensor = RaplPowerSensor(find_rapl_zones(root), min_interval_s=0.1, clock=clock, sleep=clock.sleep)
    assert sensor.read().power_mw == 0.0  # the counter did not move while we waited
    assert clock.now == pytest.approx(100.1)


def test_rapl_prefers_the_platform_zone(tmp_path):
    root = rapl_tree(tmp_path)
    write_tree(root, {"intel-rapl:1/name": "psys", "intel-rapl:1/energy_uj": "7"})
    assert [z.name for z in find_rapl_zones(root)] == ["intel-rapl:1"]


def test_unreadable_rapl_counter_is_a_clear_error(tmp_path):
    root = rapl_tree(tmp_path)
    energy = root / "intel-rapl:0" / "energy_uj"
    energy.chmod(0)
    try:
        if energy.stat().st_uid == 0 and __import__("os").geteuid() == 0:
            pytest.skip("root reads files regardless of their mode")
        with pytest.raises(PowerSensorError, match="not readable"):
            RaplPowerSensor(find_rapl_zones(root))
    finally:
        energy.chmod(0o644)


def test_unreadable_counter_file_is_a_clear_error(tmp_path):
    root = rapl_tree(tmp_path)
    energy = root / "intel-rapl:0" / "energy_uj"
    energy.unlink()
    energy.mkdir()  # reading a directory fails for root too
    with pytest.raises(PowerSensorError, match="cannot read"):
        RaplPowerSensor(find_rapl_zones(root))


def test_discovery_order_hwmon_then_rapl_then_labelled_estimate(tmp_path):
    hwmon = write_tree(tmp_path / "hwmon", {"hwmon0/name": "ina260", "hwmon0/power1_input": "1000000"})
    powercap = rapl_tree(tmp_path)
    empty = tmp_path / "empty"
    assert discover_power_sensor(hwmon_root=hwmon, powercap_root=powercap).source == "hwmon:ina260:ch1"
    rapl = discover_power_sensor(hwmon_root=empty, powercap_root=powercap, iio_root=empty, probe_vcgencmd=False)
    assert rapl.source == "rapl:package-0"
    fallback = discover_power_sensor(hwmon_root=empty, powercap_root=empty, iio_root=empty, probe_vcgencmd=False)
    assert isinstance(fallback, EstimatedPowerSensor)
    reading = fallback.read()
    assert reading.estimated and reading.source == "model:wifi"


def test_radio_model_uses_huang_et_al_coefficients():
    wifi, lte = RADIO_MODELS["wifi"], RADIO_MODELS["lte"]
    assert wifi.power_mw(10.0) == pytest.approx(283.17 * 10 + 132.86)
    assert lte.power_mw(5.0) == pytest.approx(438.39 * 5 + 1288.04)
    # 1 s of LTE upload at 5 Mbit/s costs 3.48 J
    assert lte.energy_mj(1.0, 5.0) == pytest.approx(3480.0, rel=1e-3)


def test_request_energy_model():
    compute = ComputePowerModel(active_mw=5000, idle_mw=2000)
    energy = request_energy_mj(
        compute_s=0.010, transmit_s=0.020, total_s=0.050, throughput_mbps=10.0,
        compute=compute, radio=RADIO_MODELS["wifi"],
    )
    radio_mw = 283.17 * 10 + 132.86
    assert energy == pytest.approx(5000 * 0.010 + (2000 + radio_mw) * 0.020 + 2000 * 0.020)


def test_estimated_sensor_averages_the_interval():
    clock = FakeClock()
    sensor = EstimatedPowerSensor(ComputePowerModel(active_mw=6000, idle_mw=2000), "wifi", clock=clock)
    clock.now += 1.0
    assert sensor.read().power_mw == pytest.approx(2000)  # idle all second
    sensor.observe(compute_s=0.5, transmit_s=0.0)
    clock.now += 1.0
    reading = sensor.read()
    assert reading.power_mw == pytest.approx(4000)  # half busy
    assert reading.estimated
    with pytest.raises(PowerSensorError, match="unknown radio model"):
        EstimatedPowerSensor(radio="5g")


PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.01000000A
       3V3_SYS_A current(1)=0.05000000A
        VDD_CORE_A current(7)=1.00000000A
     3V7_WL_SW_V volt(8)=3.70000000V
       3V3_SYS_V volt(9)=3.30000000V
        VDD_CORE_V volt(15)=0.80000000V
         EXT5V_V volt(24)=5.10000000V
        BATT_V volt(25)=0.00000000V
"""


def test_pi5_pmic_rails_are_summed():
    from tflite_edge.telemetry.power_pi import PmicPowerSensor, parse_pmic_adc

    power_mw, input_mv = parse_pmic_adc(PMIC_OUTPUT)
    assert power_mw == pytest.approx((0.01 * 3.7 + 0.05 * 3.3 + 1.0 * 0.8) * 1000)
    assert input_mv == pytest.approx(5100.0)
    reading = PmicPowerSensor(run=lambda: PMIC_OUTPUT).read()
    assert reading.source == "vcgencmd:pmic" and not reading.estimated and reading.voltage_mv == pytest.approx(5100)
    with pytest.raises(PowerSensorError, match="not a Pi 5"):
        parse_pmic_adc("error=1 error_msg=\"Command not registered\"")
