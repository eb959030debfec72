"""The device's decision loop and the agent's replay, with a real TFLite policy and stand-ins
for the telemetry publisher and the device runtime (pure logic: no broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from tflite_edge.agents.online import CONTEXT_KEYS, ExperienceReplay
from tflite_edge.agents.tflite_policy import TFLitePolicy
from tflite_edge.device.plan import Plan
from tflite_edge.device.policy_loop import PolicyRunner, PolicySlot
from tflite_edge.device.result import InferenceResult
from tflite_edge.errors import PolicyError
from tflite_edge.telemetry.schema import ExperienceRecord

pytestmark = pytest.mark.slow  # the policy fixture trains one


class Telemetry:
    def __init__(self) -> None:
        self.measured: dict[str, float | None] = {"uplink_mbps": None, "rtt_ms": None}
        self.records: list[dict[str, Any]] = []

    def context(self) -> dict[str, float | None]:
        return dict(self.measured)

    def record_experience(self, **record: Any) -> None:
        self.records.append(record)


class Runtime:
    """Answers every plan at once; ``outcome`` shapes the next result."""

    def __init__(self, manifest: Any) -> None:
        self.manifest = manifest
        self.plans: list[Plan] = []
        self.outcome: dict[str, Any] = {}

    def run(self, x: np.ndarray, plan: Plan) -> InferenceResult:
        self.plans.append(plan)
        offload = plan.partition <= self.manifest.exit(plan.exit).segment
        fields: dict[str, Any] = dict(
            request_id=f"r{len(self.plans)}", exit=plan.exit, partition=plan.partition, top1_class=3,
            top1_score=0.9, device_ms=5.0, transfer_ms=2.0 if offload else 0.0, edge_ms=0.1, total_ms=8.0,
            ran_on="edge" if offload else "device", fell_back=False, early_exit=False,
            request_bytes=100 if offload else 0, deadline_ms=plan.deadline_ms,
        )
        fields.update(self.outcome)
        return InferenceResult(**fields)


@pytest.fixture
def runner(trained_policy: Path, digits_bundle) -> PolicyRunner:  # type: ignore[no-untyped-def]
    return PolicyRunner(cast(Any, Runtime(digits_bundle.manifest)), PolicySlot(TFLitePolicy(trained_policy)),
                        cast(Any, Telemetry()), deadline_ms=100.0)


def test_context_uses_priors_then_measurements(runner: PolicyRunner) -> None:
    first = runner.context()
    assert first.throughput_mbps == 1.0 and first.rtt_ms == 50.0 and first.deadline_ms == 100.0
    runner.telemetry.measured.update(uplink_mbps=2.0, rtt_ms=7.0)  # type: ignore[union-attr]
    runner.context()
    runner.telemetry.measured.update(uplink_mbps=4.0)  # type: ignore[union-attr]
    context = runner.context()
    assert context.throughput_mbps == 4.0 and context.rtt_ms == 7.0 and context.throughput_std_mbps == 1.0


def test_a_timed_out_offload_bounds_the_uplink(runner: PolicyRunner) -> None:
    runner.telemetry.measured.update(uplink_mbps=5.0, rtt_ms=3.0)  # type: ignore[union-attr]
    policy, _ = runner.slot.current()
    offloading = int(np.flatnonzero(policy.planning_model.offloaded)[0])
    runner.decide = lambda policy, context: (offloading, False)  # type: ignore[method-assign]
    runner.runtime.outcome = dict(fell_back=True, ran_on="device", request_bytes=1000, total_ms=30.0,  # type: ignore[attr-defined]
                                  device_ms=10.0)
    runner.run(np.zeros((8, 8, 1), np.float32))
    # 1000 bytes did not arrive within 20 ms: the uplink is below 0.4 Mbit/s.
    assert runner.context().throughput_mbps == pytest.approx(0.4)
    runner.telemetry.measured.update(uplink_mbps=0.3)  # type: ignore[union-attr]
    assert runner.context().throughput_mbps == 0.3  # a new measurement replaces the bound


def test_requests_follow_the_policy_and_record_experience(runner: PolicyRunner, digits_bundle) -> None:  # type: ignore[no-untyped-def]
    policy, _ = runner.slot.current()
    runner.telemetry.measured.update(uplink_mbps=0.05, rtt_ms=20.0)  # type: ignore[union-attr]
    for label in (3, 4):
        runner.run(np.zeros((8, 8, 1), np.float32), label=label)
    records = runner.telemetry.records  # type: ignore[union-attr]
    context = runner.context()
    expected = policy.actions.index(policy.act(**context.as_dict()))
    assert [r["action"]["index"] for r in records] == [expected, expected]
    assert set(CONTEXT_KEYS) <= set(records[0]["context"])
    plan = runner.runtime.plans[0]  # type: ignore[attr-defined]
    assert plan.partition == policy.actions[expected].partition and plan.deadline_ms == 100.0
    assert plan.exit == digits_bundle.manifest.exits[policy.actions[expected].exit].name
    # Correct and in time: reward 1 under the accuracy objective; wrong: 0.
    assert [r["reward"] for r in records] == [1.0, 0.0] and records[0]["deadline_met"] is True


def test_probe_after_many_local_requests(runner: PolicyRunner) -> None:
    policy, _ = runner.slot.current()
    plan = policy.planning_model
    local = int(np.flatnonzero(plan.offloaded == 0)[0])
    policy.act = lambda **context: policy.actions[local]  # type: ignore[method-assign]
    runner.probe_every = 3
    indices = []
    for _ in range(8):
        runner.run(np.zeros((8, 8, 1), np.float32))
        indices.append(runner.telemetry.records[-1]["action"]["index"])  # type: ignore[union-attr]
    probes = [i for i, r in enumerate(runner.telemetry.records) if r["action"]["probe"]]  # type: ignore[union-attr]
    assert probes == [3, 7]
    offloading = np.flatnonzero(plan.offloaded)
    assert plan.megabits[indices[3]] == plan.megabits[offloading].min() and plan.offloaded[indices[3]]


def test_policy_for_another_bundle_is_refused(trained_policy: Path, digits_bundle) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    manifest = digits_bundle.manifest
    renamed = tuple(replace(e, name=f"{e.name}_x") for e in manifest.exits)
    other = replace(manifest, exits=renamed, bundle_id="")
    assert other.bundle_id != manifest.bundle_id
    with pytest.raises(PolicyError, match="trained for bundle"):
        PolicyRunner(cast(Any, Runtime(other)), PolicySlot(TFLitePolicy(trained_policy)), None, deadline_ms=10)
    with pytest.raises(PolicyError, match="positive deadline"):
        PolicyRunner(cast(Any, Runtime(digits_bundle.manifest)), PolicySlot(TFLitePolicy(trained_policy)), None,
                     deadline_ms=0)


def _record(label: Any, reward: float = 1.0, **context: float | None) -> ExperienceRecord:
    full: dict[str, float | None] = {k: 1.0 for k in CONTEXT_KEYS}
    full.update(context)
    return ExperienceRecord(time_unix_s=0.0, context=full, action={"label": label, "exit": "x", "partition": 0},
                            reward=reward, latency_ms=1.0, deadline_ms=None, deadline_met=None, energy_mj=None)


def test_replay_is_bounded_and_keeps_only_usable_records() -> None:
    replay = ExperienceReplay(["a", "b"], capacity=3)
    assert replay.add(_record("a")) and replay.add(_record("b", 0.5))
    assert not replay.add(_record("c"))  # unknown action
    assert not replay.add(_record(7))  # not a label
    assert not replay.add(_record("a", rtt_ms=None))  # incomplete context
    assert not replay.add(_record("a", float("nan")))
    assert not replay.add(_record("a", 1e9))
    assert replay.skipped == 5
    for _ in range(3):
        replay.add(_record("b", 0.25, rtt_ms=9.0))
    contexts, actions, rewards = replay.arrays()
    assert len(replay) == 3 and replay.added == 5
    assert actions.tolist() == [1, 1, 1] and rewards.tolist() == [0.25] * 3 and contexts["rtt_ms"].tolist() == [9.0] * 3
    with pytest.raises(PolicyError):
        ExperienceReplay(["a"]).arrays()
