"""Device emulation and the demo's per-request planning (pure logic, fake clocks)."""

import numpy as np
import pytest

from tflite_edge.agents import step_trace
from tflite_edge.device.emulation import Emulation, TraceUplink
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
    # 1 MB = 8 Mbit: 2 s at 8 Mbit/s carries 16 Mbit... send 3 MB = 24 Mbit: 16 in the first
    # 2 s, the remaining 8 Mbit at 1 Mbit/s take 8 s more.
    assert link.transfer_s(3_000_000) == pytest.approx(10.0)
    clock.now += 1.0  # 10 s: the slow stretch
    assert link.bandwidth_mbps() == pytest.approx(1.0)
    assert link.position_s() == pytest.approx(10.0)
    with pytest.raises(InputError):
        TraceUplink(trace, speedup=0)


def test_compute_stretch_uses_the_profile_when_given():
    slept = []
    emulation = Emulation(compute_slowdown=10.0, segment_ms=(2.0, 4.0), _sleep=slept.append)
    # Segment 1 takes 10 x 4 ms on the emulated device, whatever this run's noise was.
    assert emulation.stretch_compute(0.009, 1) == pytest.approx(0.040)
    assert slept[-1] == pytest.approx(0.031)
    # Without a segment index the measured time is multiplied.
    assert emulation.stretch_compute(0.001) == pytest.approx(0.010)
    # A run slower than the target is not shortened.
    assert emulation.stretch_compute(0.050, 0) == pytest.approx(0.050)
    assert Emulation().send_delay_s(10_000) == 0.0
    with pytest.raises(InputError):
        Emulation(compute_slowdown=0.5)


def test_planner_reserves_local_time_for_offloads():
    from tflite_edge.agents import get_objective
    from tflite_edge.agents.planning import PlanningModel
    from tflite_edge.demo.live import _plan

    # Two actions: local at 7 ms (accuracy 0.95), offload at 2 ms + transfer (accuracy 0.98).
    planner = PlanningModel(
        device_ms=np.array([7.0, 0.0]), edge_ms=np.array([0.0, 0.1]), megabits=np.array([0.0, 0.008]),
        accuracy=np.array([0.95, 0.98]), offloaded=np.array([0.0, 1.0]), device_power_mw=1000.0,
        radio_alpha_mw_per_mbps=100.0, radio_beta_mw=100.0,
    )
    assert planner.probe_action() == 1  # the only offload
    objective = get_objective("accuracy")  # _plan's default budget is irrelevant to this objective
    reserve = np.array([0.0, 5.0])
    # Fast link: 8 kbit at 8 Mbit/s = 1 ms + 1 ms RTT + 5 ms reserve = 7.1 <= 9: offload.
    assert _plan(planner, objective, reserve, 8.0, 1.0, 9.0) == 1
    # Slow link: 8 ms transfer; with the reserve it cannot be on time: stay local.
    assert _plan(planner, objective, reserve, 1.0, 1.0, 9.0) == 0
    # Nothing meets the deadline: the fastest action (local 7 ms vs 8 + 1 + 0.1 ms offloaded).
    assert _plan(planner, objective, reserve, 1.0, 1.0, 1.0) == 0
    assert _plan(planner, objective, reserve, 80.0, 0.1, 1.0) == 1
