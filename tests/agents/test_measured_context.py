"""What a device measures for its policy (pure logic: fake runtime and clock, real planning model,
real hwmon sensor and battery readers on fake sysfs trees)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from tflite_edge.agents import Objective, Simulator
from tflite_edge.agents.baselines import best_actions
from tflite_edge.agents.profiles import Platform
from tflite_edge.device.context import EdgeLoadTracker, PowerBudget, measured_device_speed, read_battery
from tflite_edge.device.plan import Plan
from tflite_edge.device.policy_loop import PolicyRunner, PolicySlot
from tflite_edge.device.result import InferenceResult
from tflite_edge.edge.load import LoadMeter
from tflite_edge.telemetry.power import HwmonPowerSensor
from tflite_edge.telemetry.publisher import TelemetryPublisher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class PlannerStandIn:
    """A policy that picks the action with the best predicted reward (ties: the fastest) from
    the planning model, so that its decisions follow the measured features by construction."""

    def __init__(self, simulator: Simulator, objective: Objective) -> None:
        self.bundle_id = simulator.manifest.bundle_id
        self.actions = simulator.actions
        self.labels = tuple(simulator.action_labels())
        self.planning_model = simulator.planning_model
        self.objective = objective

    def act(self, **context: float) -> Any:
        plan = self.planning_model
        features = {k: np.atleast_1d(v) for k, v in context.items() if k != "throughput_std_mbps"}
        rewards = plan.predicted_rewards(self.objective, **features)
        latency, _ = plan.predict(throughput_mbps=features["throughput_mbps"], rtt_ms=features["rtt_ms"],
                                  device_speed=features["device_speed"], edge_load=features["edge_load"])
        return self.actions[int(best_actions(rewards, latency)[0])]


class Runtime:
    def __init__(self, manifest: Any, segment_ms: list[float]) -> None:
        self.manifest = manifest
        self.segment_ms = segment_ms
        self.plans: list[Plan] = []

    def run(self, x: np.ndarray, plan: Plan) -> InferenceResult:
        self.plans.append(plan)
        offload = plan.partition <= self.manifest.exit(plan.exit).segment
        return InferenceResult(
            request_id=f"r{len(self.plans)}", exit=plan.exit, partition=plan.partition, top1_class=3,
            top1_score=0.9, device_ms=5.0, transfer_ms=2.0 if offload else 0.0, edge_ms=1.0, total_ms=20.0,
            ran_on="edge" if offload else "device", request_bytes=1000 if offload else 0,
            deadline_ms=plan.deadline_ms)


class Telemetry:
    def __init__(self, measured: dict[str, float | None] | None = None, sensor: Any = None) -> None:
        self.measured = measured or {"uplink_mbps": 200.0, "rtt_ms": 45.0}
        self.power_sensor = sensor
        self.records: list[dict[str, Any]] = []

    def context(self) -> dict[str, float | None]:
        return dict(self.measured)

    def record_experience(self, **record: Any) -> None:
        self.records.append(record)


@pytest.fixture
def setting(mobilenet_like) -> tuple[Simulator, PlannerStandIn]:  # type: ignore[no-untyped-def]
    manifest, _ = mobilenet_like
    from tflite_edge.agents.profiles import LatencyProfile

    # 10 ms per segment on the device at nominal speed; the edge is 10x faster.
    sim = Simulator(manifest, LatencyProfile((10.0, 10.0, 10.0)), device=Platform("dev", 1.0, 1000.0),
                    edge=Platform("edge", 0.1, 0.0), radio="wifi")
    return sim, PlannerStandIn(sim, Objective("accuracy"))


def make_runner(sim: Simulator, policy: PlannerStandIn, segment_ms: list[float], telemetry: Telemetry | None = None,
                **options: Any) -> PolicyRunner:
    return PolicyRunner(cast(Any, Runtime(sim.manifest, segment_ms)), PolicySlot(cast(Any, policy)),
                        cast(Any, telemetry or Telemetry()), deadline_ms=60.0, **options)


def test_device_speed_is_nominal_over_measured() -> None:
    assert measured_device_speed((10.0, 10.0, 10.0), (20.0, 20.0, 20.0)) == pytest.approx(0.5)
    assert measured_device_speed((10.0, 10.0), (0.0, 5.0)) == pytest.approx(2.0)  # unmeasured segments skipped
    assert measured_device_speed((), (5.0,)) is None
    assert measured_device_speed((10.0,), (1e-6,)) == 4.0  # clipped


def test_a_slowed_down_device_changes_its_decision(setting) -> None:  # type: ignore[no-untyped-def]
    sim, policy = setting
    assert sim.planning_model.device_segment_ms == (10.0, 10.0, 10.0)
    runner = make_runner(sim, policy, [10.0, 10.0, 10.0])
    x = np.zeros((1, 224, 224, 3), np.float32)
    runner.run(x)
    records = runner.telemetry.records  # type: ignore[union-attr]
    # At nominal speed all 30 ms run locally within the 60 ms deadline (sending takes 45 ms of RTT
    # + 6 ms of transfer); both meet it, and local is faster.
    assert records[-1]["action"]["label"] == "exit_2/local"
    assert runner.measurements["device_speed_measured"] == 1.0
    runner.runtime.segment_ms[:] = [40.0, 40.0, 40.0]  # type: ignore[attr-defined]  # throttled to a quarter
    context = runner.context()
    assert context.device_speed == pytest.approx(0.25)
    runner.run(x)
    assert records[-1]["action"]["label"] == "exit_2/K0"  # 120 ms locally: offload the raw input
    assert runner.runtime.plans[-1].partition == 0  # type: ignore[attr-defined]
    assert records[-1]["context"]["device_speed"] == pytest.approx(0.25)


def test_without_measurements_the_priors_hold(setting) -> None:  # type: ignore[no-untyped-def]
    sim, policy = setting
    runner = make_runner(sim, policy, [], device_speed=0.7, edge_load=0.2, power_budget_mw=1500.0)
    context = runner.context()
    assert (context.device_speed, context.edge_load, context.power_budget_mw) == (0.7, 0.2, 1500.0)
    assert runner.measurements["device_speed_measured"] == 0.0 and runner.measurements["edge_load_measured"] == 0.0


def test_a_published_edge_load_is_used_and_ignored_once_stale(setting) -> None:  # type: ignore[no-untyped-def]
    sim, policy = setting
    clock = Clock()
    tracker = EdgeLoadTracker(stale_after_s=5.0, clock=clock)
    runner = make_runner(sim, policy, [40.0, 40.0, 40.0], edge_load_tracker=tracker,
                         telemetry=Telemetry({"uplink_mbps": 200.0, "rtt_ms": 5.0}))
    assert runner.context().edge_load == 0.0
    x = np.zeros((1, 224, 224, 3), np.float32)
    records = runner.telemetry.records  # type: ignore[union-attr]
    runner.run(x)
    assert records[-1]["action"]["label"] == "exit_2/K0"  # a slow device, an idle edge
    assert tracker.handle(b'{"worker_id": "w1", "load": 0.95}')
    clock.now += 1.0
    assert runner.context().edge_load == pytest.approx(0.95)
    assert runner.measurements["edge_load_age_s"] == pytest.approx(1.0)
    runner.run(x)
    # The final exit on a saturated edge takes 3 ms x 20: an earlier exit is the best left.
    assert records[-1]["action"]["label"] == "exit_1/K0"
    assert records[-1]["context"]["edge_load"] == pytest.approx(0.95)
    clock.now += 4.5  # 5.5 s after the report: stale
    assert runner.context().edge_load == 0.0 and runner.measurements["edge_load_measured"] == 0.0
    runner.run(x)
    assert records[-1]["action"]["label"] == "exit_2/K0"
    # Two workers: the mean of the fresh ones; malformed reports are counted and ignored.
    assert tracker.handle(b'{"worker_id": "w1", "load": 0.2}') and tracker.handle(b'{"worker_id": "w2", "load": 0.6}')
    assert tracker.load()[0] == pytest.approx(0.4)
    bad_reports = (b"nonsense", b'{"worker_id": "w3", "load": 1.5}', b'{"load": 0.1}',
                   b'{"worker_id": "w", "load": true}')
    for bad in bad_reports:
        assert not tracker.handle(bad)
    assert tracker.rejected == 4


def test_edge_load_meter() -> None:
    clock = Clock()
    meter = LoadMeter(window_s=2.0, clock=clock)
    clock.now += 2.0
    assert meter.snapshot().load == 0.0
    meter.record(0.5, kind="a", compute_s=0.01)  # fastest seen for kind a
    meter.record(0.5, kind="a", compute_s=0.02)  # twice as slow
    snap = meter.snapshot()
    assert snap.busy_share == pytest.approx(0.5) and snap.compute_ratio == pytest.approx(1.5)
    assert snap.load == pytest.approx(1 - 0.5 / 1.5) and snap.requests == 2
    clock.now += 2.5
    assert meter.snapshot().requests == 0


def test_operator_budget_and_battery(tmp_path: Path) -> None:
    battery = tmp_path / "BAT0"
    battery.mkdir()
    (battery / "type").write_text("Battery\n")
    (battery / "capacity").write_text("40\n")
    (battery / "status").write_text("Discharging\n")
    mains = tmp_path / "AC"
    mains.mkdir()
    (mains / "type").write_text("Mains\n")
    assert read_battery(tmp_path) == read_battery(tmp_path) and read_battery(tmp_path).capacity_percent == 40.0  # type: ignore[union-attr]
    clock = Clock()
    budget = PowerBudget(2000.0, battery_root=tmp_path, battery_every_s=10.0, clock=clock)
    assert budget.current() == (pytest.approx(800.0), "configured+battery")
    assert budget.handle(b'{"power_budget_mw": 1000}')
    assert budget.current() == (pytest.approx(400.0), "operator+battery")
    (battery / "status").write_text("Charging\n")
    assert budget.current()[0] == pytest.approx(400.0)  # read at most every 10 s
    clock.now += 10.0
    assert budget.current() == (1000.0, "operator")
    assert budget.handle(b"1500") and budget.current()[0] == 1500.0
    assert not budget.handle(b"-3") and not budget.handle(b'{"power_budget_mw": "high"}') and budget.rejected == 2
    assert budget.handle(b"") and budget.current() == (2000.0, "configured")
    assert read_battery(tmp_path / "missing") is None
    assert PowerBudget(2000.0, battery_root=None).current() == (2000.0, "configured")


def test_a_real_sensors_reading_feeds_the_reward(setting, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A hwmon power channel (a fake sysfs tree) read by the telemetry publisher sets the reward's energy."""
    sim, policy = setting
    chip = tmp_path / "hwmon0"
    chip.mkdir()
    (chip / "name").write_text("ina260\n")
    (chip / "power1_input").write_text("3000000\n")  # µW: 3 W
    telemetry = TelemetryPublisher("dev-1", client=cast(Any, object()), power_sensor=HwmonPowerSensor(chip, 1))
    telemetry.observe_result(request_id="r0", exit="exit_2", partition=3, device_ms=5.0, total_ms=5.0, ran_on="device")
    telemetry.build_telemetry()  # reads the sensor, as the publisher's thread does every period
    records: list[dict[str, Any]] = []
    telemetry.record_experience = lambda **record: records.append(record)  # type: ignore[method-assign]
    runner = PolicyRunner(cast(Any, Runtime(sim.manifest, [10.0, 10.0, 10.0])), PolicySlot(cast(Any, policy)),
                          telemetry, deadline_ms=60.0, power_budget_mw=2000.0)
    runner.run(np.zeros((1, 224, 224, 3), np.float32))
    # 3 W for the request's 20 ms = 60 mJ, not the model's 1 W x 5 ms of compute.
    assert records[-1]["energy_mj"] == pytest.approx(60.0)
    assert records[-1]["context"]["power_mw"] == pytest.approx(3000.0)
    assert records[-1]["context"]["power_measured"] == 1.0
    # The same request with the labelled estimate instead of a sensor: the cost model's energy.
    estimate = Telemetry()
    estimate.measured["power_mw"] = 3000.0
    runner = make_runner(sim, policy, [10.0, 10.0, 10.0], telemetry=estimate)
    runner.run(np.zeros((1, 224, 224, 3), np.float32))
    assert estimate.records[-1]["energy_mj"] == pytest.approx(1000.0 * 5.0 / 1000.0)
    assert estimate.records[-1]["context"]["power_measured"] == 0.0
