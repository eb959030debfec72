import pytest

from tflite_edge.telemetry.system import SystemMonitor, read_cpu_temperature_c


def test_cpu_temperature_prefers_the_cpu_zone(tmp_path):
    for i, (kind, temp) in enumerate([("acpitz", "27800"), ("x86_pkg_temp", "52000"), ("iwlwifi_1", "40000")]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(temp + "\n")
    assert read_cpu_temperature_c(tmp_path) == 52.0
    assert read_cpu_temperature_c(tmp_path / "absent") is None


def test_cpu_load_and_memory_from_proc(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (tmp_path / "meminfo").write_text("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:  250 kB\n")
    monitor = SystemMonitor(proc_root=tmp_path, thermal_root=tmp_path / "none")
    stat.write_text("cpu  175 0 100 825 0 0 0 0 0 0\n")  # +75 busy, +25 idle
    snap = monitor.snapshot()
    assert snap.cpu_load_percent == pytest.approx(75.0)
    assert snap.memory_used_percent == pytest.approx(75.0)
    assert snap.cpu_temperature_c is None


def test_real_machine_gives_plausible_figures():
    monitor = SystemMonitor()
    sum(i * i for i in range(200_000))
    snap = monitor.snapshot()
    assert snap.cpu_load_percent is None or 0 <= snap.cpu_load_percent <= 100
    assert snap.memory_used_percent is not None and 0 < snap.memory_used_percent < 100
