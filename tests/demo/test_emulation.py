"""Device emulation: a fixed device profile, the uplink trace model, and holding the profile
while another process loads the CPU."""

import json
import subprocess
import sys

import pytest

from tflite_edge.agents import step_trace
from tflite_edge.device import DeviceRuntime, Plan
from tflite_edge.device.emulation import DeviceProfile, Emulation, TraceUplink, edgent_rpi3_profile
from tflite_edge.errors import InputError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trace_uplink_integrates_over_bandwidth_changes():
    trace = step_trace(levels_mbps=(8.0, 1.0), hold_s=10.0, duration_s=20.0)
    clock = Clock()
    link = TraceUplink(trace, speedup=2.0, clock=clock)
    assert link.bandwidth_mbps() == pytest.approx(8.0)
    assert link.transfer_s(1_000_000) == pytest.approx(1.0)  # 8 Mbit at 8 Mbit/s
    clock.now += 4.0  # 8 s into the trace at 2x
    # 3 MB = 24 Mbit: 16 in the first 2 s at 8 Mbit/s, the remaining 8 Mbit at 1 Mbit/s take 8 s more.
    assert link.transfer_s(3_000_000) == pytest.approx(10.0)
    clock.now += 1.0  # 10 s: the slow stretch
    assert link.bandwidth_mbps() == pytest.approx(1.0)
    assert link.position_s() == pytest.approx(10.0)
    link.restart()
    assert link.position_s() == 0.0
    with pytest.raises(InputError):
        TraceUplink(trace, speedup=0)


class SleepingClock(Clock):
    """A clock that ``sleep`` advances, for the emulation's waits."""

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_segment_lasts_its_profiled_latency_whatever_the_host_took():
    clock = SleepingClock()
    device = DeviceProfile((2.0, 4.0), 1500.0, "test")
    emulation = Emulation(device=device, spin_s=0.0, _sleep=clock.sleep, _clock=clock)
    start = clock.now
    clock.now += 0.0015  # the host computed segment 1 in 1.5 ms
    assert emulation.finish_segment(1, start) * 1e3 == pytest.approx(4.0)
    # A throttled device: half speed doubles the target.
    emulation.set_speed(0.5)
    start = clock.now
    clock.now += 0.001
    assert emulation.finish_segment(0, start) * 1e3 == pytest.approx(4.0)
    assert emulation.overruns == 0
    # The host took longer than the target: the segment cannot be shortened, and it is counted.
    emulation.set_speed(1.0)
    start = clock.now
    clock.now += 0.003
    assert emulation.finish_segment(0, start) * 1e3 == pytest.approx(3.0)
    assert emulation.overruns == 1
    report = emulation.report()
    assert report["device"]["compute_power_mw"] == 1500.0
    seg0 = report["segments"][0]
    assert seg0["runs"] == 2 and seg0["overruns"] == 1 and seg0["profile_ms"] == 2.0
    # Without a profile, the relative slowdown multiplies the host's time.
    relative = Emulation(compute_slowdown=10.0, spin_s=0.0, _sleep=clock.sleep, _clock=clock)
    start = clock.now
    clock.now += 0.001
    assert relative.finish_segment(0, start) * 1e3 == pytest.approx(10.0)
    assert Emulation().send_delay_s(10_000) == 0.0
    with pytest.raises(InputError):
        Emulation(compute_slowdown=0.5)
    with pytest.raises(InputError):
        emulation.set_speed(0.0)


def test_device_profile_round_trip_and_a_measured_profile(tmp_path):
    profile = DeviceProfile((10.2, 8.1, 6.1), 2000.0, "derived", "bundle-1")
    path = profile.save(tmp_path / "device.json")
    assert DeviceProfile.load(path) == profile
    # What `tflite-edge profile -o` writes on the device: the power comes from the caller.
    measured = {"bundle_id": "bundle-1", "segments": [{"index": 1, "median_ms": 3.0}, {"index": 0, "median_ms": 2.0}]}
    (tmp_path / "measured.json").write_text(json.dumps(measured))
    loaded = DeviceProfile.load(tmp_path / "measured.json", compute_power_mw=900.0)
    assert loaded.segment_ms == (2.0, 3.0) and loaded.compute_power_mw == 900.0
    with pytest.raises(InputError, match="--power-mw"):
        DeviceProfile.load(tmp_path / "measured.json")
    with pytest.raises(InputError, match="3 segments, the bundle 2"):
        profile.check(2)
    with pytest.raises(InputError, match="not 'other'"):
        profile.check(3, "other")
    with pytest.raises(InputError, match="no such device profile"):
        DeviceProfile.load(tmp_path / "absent.json")
    with pytest.raises(InputError, match="positive"):
        DeviceProfile((1.0, 0.0), 1.0, "bad")


def test_edgent_profile_counts_every_convolution_and_dense_layer(digits_bundle):
    profile = edgent_rpi3_profile(digits_bundle, kernel_speedup=1.0)
    assert profile.bundle_id == digits_bundle.manifest.bundle_id
    assert len(profile.segment_ms) == digits_bundle.manifest.num_segments
    assert all(ms > 0 for ms in profile.segment_ms)
    assert profile.compute_power_mw == 2000.0 and "Edgent" in profile.source
    faster = edgent_rpi3_profile(digits_bundle, kernel_speedup=20.0)
    assert faster.segment_ms == pytest.approx(tuple(ms / 20 for ms in profile.segment_ms))


BUSY = "import sys\nprint('busy', flush=True)\nwhile True:\n    pass\n"


def test_emulated_latency_holds_the_profile_while_another_process_loads_the_cpu(digits_bundle, digits_split):
    """The emulated device keeps its profile on a loaded host: the host's own time is part of
    each segment's target, not added to it, and late wake-ups are off the device's clock."""
    profile = DeviceProfile((6.0, 5.0, 4.0), 2000.0, "test device")
    emulation = Emulation(device=profile)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True) for _ in range(1)]
    try:
        for process in busy:  # every loader is spinning before the first request
            assert process.stdout is not None and process.stdout.readline().strip() == "busy"
        with DeviceRuntime(digits_bundle, emulation=emulation) as runtime:
            results = [runtime.run(sample, Plan(exit="final", partition=3)) for sample in digits_split[2][:40]]
    finally:
        for process in busy:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
    report = emulation.report()
    assert [s["runs"] for s in report["segments"]] == [40, 40, 40]
    # The runtime measures on the emulated clock: a local request's device time is the profile's sum.
    assert results[-1].device_ms == pytest.approx(profile.total_ms, rel=0.05)
    for segment in report["segments"]:
        # Tolerance of the emulator: the median within 5 % of the profile. Single runs can be
        # late when the scheduler preempts the device for a loader: bounded loosely.
        assert segment["median_emulated_ms"] == pytest.approx(segment["profile_ms"], rel=0.05), segment
        assert segment["p95_ratio_to_target"] <= 1.5, segment
        assert segment["median_wall_ms"] >= segment["profile_ms"]  # the device really waited
        assert segment["overruns"] <= 2, segment
