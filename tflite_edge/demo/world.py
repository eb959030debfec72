"""A changing world for live runs of the shipped policy loop, and the contenders that run in it.

Used by the demo and by ``bench/bench_live_policy.py``. One *run* sends the same labelled
requests, paced, through ``PolicyRunner`` (the loop ``tflite-edge device --policy`` runs) on
a ``DeviceRuntime`` that emulates a fixed device profile on an uplink following a bandwidth
trace, while a schedule over trace time changes the world:

- ``device_speed``: the emulated device slows down (``Emulation.set_speed``);
- ``edge_load``: above 0.5, a second device floods the edge worker with real requests
  (``python -m tflite_edge.demo.flood``), so the edge is really loaded;
- ``power_budget_mw``: the device's power budget (what an operator sets) changes.

The contenders: the learned TF-Agents policy, a planner that sees only the link, a planner
that sees every measured feature, and every static (exit, partition) action; each run
reports deadline-hit rate, accuracy within the deadline, mean reward under the objective,
energy per inference and, per world change, how many requests passed until the chosen
action changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..agents.objectives import Objective
from ..agents.planning import PlanningModel
from ..agents.scenario import Schedule, load_scenario_file
from ..agents.simulator import Action
from ..bundle import Bundle
from ..device.context import ContextSubscriber, EdgeLoadTracker, PowerBudget
from ..device.emulation import DeviceProfile, Emulation, TraceUplink
from ..device.policy_loop import PolicyRunner, PolicySlot, RunnerOptions, attached_telemetry
from ..errors import InputError

__all__ = ["Contender", "LiveWorld", "PlannerPolicy", "StaticPolicy", "World", "contenders", "default_world",
           "flood_process", "load_world", "run_contender", "simulator_for_device", "wait_for_edge"]

FLOOD_LOAD = 0.5  # an edge_load above this means a second device floods the edge
FLOOD_START_TIMEOUT_S = 60.0
NOMINAL = {"device_speed": 1.0, "edge_load": 0.0, "power_budget_mw": 2000.0}


@dataclass(frozen=True)
class World:
    """Piecewise-constant schedules over trace time, one per feature (the scenario file's
    ``Schedule``). In a live run, request ``i`` meets the world at trace time
    ``i × interval × speedup``.
    """

    schedules: Mapping[str, Schedule]
    name: str = "world"

    @classmethod
    def from_steps(cls, steps: Mapping[str, Sequence[tuple[float, float]]], name: str = "world") -> World:
        """``{feature: ((from_s, value), ...)}``, each starting at time 0."""
        return cls({k: Schedule(tuple(t for t, _ in v), tuple(x for _, x in v)) for k, v in steps.items()}, name)

    def value(self, feature: str, t_s: float, default: float) -> float:
        schedule = self.schedules.get(feature)
        return default if schedule is None else float(schedule.at(t_s))

    def phase(self, t_s: float) -> int:
        """Index of the stretch of constant world at trace time ``t_s`` (0 before any change)."""
        return sum(1 for start in self.change_times() if t_s >= start)

    def change_times(self) -> list[float]:
        return sorted({start for s in self.schedules.values() for start in s.times_s if start > 0})

    def to_dict(self) -> dict[str, Any]:
        return {k: s.to_list() for k, s in self.schedules.items()}


def load_world(path: str | os.PathLike[str]) -> World:
    """Read a scenario file (the format of ``tflite_edge.agents.scenario``, which checks it)."""
    return World(load_scenario_file(path), Path(path).stem)


def default_world(duration_s: float) -> World:
    """Five equal stretches of trace time: nominal, the device at 40 % speed, nominal, the edge
    flooded by another device, the power budget down from 2,000 to 800 mW."""
    step = duration_s / 5
    return World.from_steps({
        "device_speed": ((0.0, 1.0), (step, 0.4), (2 * step, 1.0)),
        "edge_load": ((0.0, 0.0), (3 * step, 0.9), (4 * step, 0.0)),
        "power_budget_mw": ((0.0, 2000.0), (4 * step, 800.0)),
    }, "default")


def simulator_for_device(bundle: Bundle, host_profile: Mapping[str, Any], device: DeviceProfile, **options: Any) -> Any:
    """A simulator whose device is ``device`` (absolute latencies and power) and whose edge is this host."""
    from ..agents.from_bundle import simulator_for_bundle
    from ..agents.profiles import LatencyProfile, Platform

    device.check(bundle.manifest.num_segments)
    host_ms = sum(s["median_ms"] for s in host_profile["segments"])
    return simulator_for_bundle(
        bundle, LatencyProfile(device.segment_ms, device.source),
        device=Platform("emulated", 1.0, device.compute_power_mw, device.source),
        # The edge is this host: its latency relative to the device's, over the whole chain.
        edge=Platform("host", host_ms / device.total_ms, 15_000.0, "this machine"), **options,
    )


class _FixedPolicy:
    """What ``PolicyRunner`` needs of a policy, for policies that are not a TFLite model."""

    name = "fixed"

    def __init__(self, like: Any) -> None:
        self.actions: tuple[Action, ...] = tuple(like.actions)
        self.labels: tuple[str, ...] = tuple(like.labels)
        self.planning_model: PlanningModel = like.planning_model
        self.objective: Objective = like.objective
        self.bundle_id: str = like.bundle_id
        self.reference_ms: float = like.reference_ms


class StaticPolicy(_FixedPolicy):
    """Always the same action."""

    def __init__(self, like: Any, index: int) -> None:
        super().__init__(like)
        self.index = index
        self.name = f"static {self.labels[index]}"

    def act(self, **context: float) -> Action:
        return self.actions[self.index]


class PlannerPolicy(_FixedPolicy):
    """The action with the best reward the planning model predicts (ties: the fastest).

    ``sees_all=False`` plans from the link alone (uplink and RTT; nominal device speed, idle
    edge and the nominal power budget), as the planner of earlier releases did;
    ``sees_all=True`` also uses the measured device speed, edge load and power budget (what
    ``PolicyRunner.context`` measures).
    """

    def __init__(self, like: Any, *, sees_all: bool) -> None:
        super().__init__(like)
        self.sees_all = sees_all
        self.name = "planner (every measured feature)" if sees_all else "planner (link only)"

    def act(self, **context: float) -> Action:
        if not self.sees_all:
            context = {**context, **NOMINAL}
        features = {k: context[k] for k in ("throughput_mbps", "rtt_ms", "device_speed", "edge_load", "deadline_ms",
                                            "power_budget_mw")}
        rewards = self.planning_model.predicted_rewards_one(self.objective, **features)
        latency, _ = self.planning_model.predict(throughput_mbps=features["throughput_mbps"],
                                                 rtt_ms=features["rtt_ms"], device_speed=features["device_speed"],
                                                 edge_load=features["edge_load"])
        best = np.flatnonzero(rewards >= rewards.max() - 1e-9)
        return self.actions[int(best[np.argmin(latency[0, best])])]


class _RecordingRunner(PolicyRunner):
    """The shipped loop, remembering the action it chose for each request."""

    last_index: int = -1
    last_probe: bool = False

    def decide(self, policy: Any, context: Any) -> tuple[int, bool]:
        self.last_index, self.last_probe = super().decide(policy, context)
        return self.last_index, self.last_probe


@dataclass
class LiveWorld:
    """Everything the runs share: the broker, the bundle, the device and the world."""

    broker_url: str
    bundle: Bundle
    device: DeviceProfile
    trace: Any
    trace_speedup: float
    world: World
    requests: int
    interval_ms: float
    deadline_ms: float
    xs: np.ndarray
    ys: np.ndarray
    flood: Callable[[bool], None] | None = None
    status: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Contender:
    name: str
    policy: Any
    probes: bool = True  # static actions never probe the link


def run_contender(live: LiveWorld, contender: Contender, *, device_id: str | None = None) -> dict[str, Any]:
    """One run of ``live.requests`` requests with ``contender`` deciding; figures and per-request records."""
    from ..device import DeviceRuntime

    uplink = TraceUplink(live.trace, speedup=live.trace_speedup)
    emulation = Emulation(device=live.device, uplink=uplink)
    records: list[dict[str, Any]] = []
    flooding = False
    with contextlib.ExitStack() as stack:
        runtime = stack.enter_context(DeviceRuntime(
            live.bundle, broker_url=live.broker_url, device_id=device_id or f"live-{uuid.uuid4().hex[:6]}",
            emulation=emulation))
        telemetry = stack.enter_context(attached_telemetry(runtime, live.broker_url, prefix="tflite-edge/v1",
                                                           period_s=1.0))
        options: RunnerOptions = {} if contender.probes else {"probe_every": 10**9}
        # What the device measures besides the link: the edge workers' load reports, and the
        # budget an operator sets (the world hands its messages to the budget's handler).
        tracker = EdgeLoadTracker()
        budget = PowerBudget(NOMINAL["power_budget_mw"], battery_root=None)
        subscriber = ContextSubscriber(live.broker_url, device_id=runtime.device_id, prefix="tflite-edge/v1",
                                       edge_load=tracker, budget=None).start()
        stack.callback(subscriber.stop)
        runner = _RecordingRunner(runtime, PolicySlot(contender.policy), telemetry, deadline_ms=live.deadline_ms,
                                  edge_load_tracker=tracker, budget=budget, **options)
        if live.flood is not None:
            stack.callback(live.flood, False)
        emulation.reset_stats()  # the warm-up is not part of the run
        uplink.restart()  # every run sees the trace from its beginning
        start = time.monotonic()
        for i in range(live.requests):
            time.sleep(max(0.0, start + i * live.interval_ms / 1e3 - time.monotonic()))
            # The world follows the requests' schedule, so every run (on a quiet or a loaded host)
            # meets each change at the same request; the uplink follows the clock.
            t_s = i * live.interval_ms / 1e3 * live.trace_speedup
            emulation.set_speed(live.world.value("device_speed", t_s, 1.0))
            budget_mw = live.world.value("power_budget_mw", t_s, NOMINAL["power_budget_mw"])
            if budget_mw != budget.current()[0]:
                budget.handle(json.dumps({"power_budget_mw": budget_mw}).encode())
            flood_now = live.world.value("edge_load", t_s, 0.0) > FLOOD_LOAD
            if live.flood is not None and flood_now != flooding:
                live.flood(flood_now)
                flooding = flood_now
            x, y = live.xs[i % len(live.xs)], int(live.ys[i % len(live.ys)])
            result = runner.run(x, label=y)
            context = runner.context()
            reward, energy_mj = runner.reward(contender.policy, result, context, y)
            records.append({
                "i": i, "t_s": time.monotonic() - start, "world_s": t_s, "trace_s": uplink.elapsed_trace_s(),
                "estimate_mbps": context.throughput_mbps,
                "top1_class": result.top1_class, "phase": live.world.phase(t_s),
                "bandwidth_mbps": uplink.bandwidth_mbps(),
                "action": contender.policy.labels[runner.last_index], "probe": runner.last_probe,
                "exit": result.exit, "partition": result.partition, "ran_on": result.ran_on,
                "fell_back": result.fell_back, "total_ms": result.total_ms, "device_ms": result.device_ms,
                "met_deadline": result.total_ms <= live.deadline_ms, "correct": result.top1_class == y,
                "reward": reward, "energy_mj": energy_mj, "power_budget_mw": context.power_budget_mw,
                "device_speed": emulation.speed, "flood": flooding, "seen_device_speed": context.device_speed,
                "seen_edge_load": context.edge_load,
            })
            if live.status is not None and (i % 50 == 49 or i == live.requests - 1):
                live.status(f"{contender.name}: request {i + 1}/{live.requests}")
    figures = summarize_run(records, live.world)
    figures["emulation"] = emulation.report()
    return {"figures": figures, "records": records}


def summarize_run(records: Sequence[dict[str, Any]], world: World) -> dict[str, Any]:
    """Deadline-hit rate, accuracy within the deadline, mean reward, energy, and reaction per change."""
    in_time = np.array([r["met_deadline"] for r in records])
    correct = np.array([r["correct"] for r in records])
    latency = np.array([r["total_ms"] for r in records])
    phases = [r["phase"] for r in records]
    reactions = []
    for phase in range(1, len(world.change_times()) + 1):
        if phase not in phases:
            continue
        first = phases.index(phase)
        before = records[first - 1]["action"] if first > 0 else None
        planned = [r for r in records[first:] if r["phase"] == phase and not r["probe"]]
        changed = next((k for k, r in enumerate(planned) if r["action"] != before), None)
        reactions.append({"phase": phase, "at_request": first, "action_before": before,
                          "requests_until_change": changed,
                          "actions": dict(Counter(r["action"] for r in planned).most_common(3))})
    per_phase = {}
    for phase in sorted(set(phases)):
        rows = [r for r in records if r["phase"] == phase]
        per_phase[str(phase)] = {
            "requests": len(rows),
            "accuracy_in_time": float(np.mean([r["correct"] and r["met_deadline"] for r in rows])),
            "actions": dict(Counter(r["action"] for r in rows).most_common(3)),
        }
    return {
        "requests": len(records),
        "deadline_hit_rate": float(in_time.mean()),
        "accuracy": float(correct.mean()),
        "accuracy_in_time": float((correct & in_time).mean()),
        "mean_reward": float(np.mean([r["reward"] for r in records])),
        "energy_per_inference_mj": float(np.mean([r["energy_mj"] for r in records])),
        "offloaded": float(np.mean([r["ran_on"] != "device" for r in records])),
        "fell_back": int(sum(r["fell_back"] for r in records)),
        "p50_ms": float(np.percentile(latency, 50)), "p95_ms": float(np.percentile(latency, 95)),
        "reactions": reactions,
        "phases": per_phase,
        "mix": dict(Counter(r["action"] for r in records).most_common(4)),
    }


def contenders(policy: Any, *, statics: Sequence[int] | None = None) -> list[Contender]:
    """The learned ``policy``, the two planners and the static actions (all, or ``statics``)."""
    indices = range(len(policy.actions)) if statics is None else statics
    return [Contender("learned", policy), Contender("planner-link-only", PlannerPolicy(policy, sees_all=False)),
            Contender("planner-measured", PlannerPolicy(policy, sees_all=True)),
            *(Contender(f"static {policy.labels[i]}", StaticPolicy(policy, i), probes=False) for i in indices)]


def wait_for_edge(broker_url: str, bundle: Bundle, x: np.ndarray, timeout_s: float = 60.0) -> None:
    """Block until an edge worker answers an offloaded request (``InputError`` after ``timeout_s``)."""
    from ..device import DeviceRuntime, Plan

    deadline = time.monotonic() + timeout_s
    with DeviceRuntime(bundle, broker_url=broker_url, device_id=f"probe-{uuid.uuid4().hex[:6]}") as runtime:
        while time.monotonic() < deadline:
            if not runtime.run(x, Plan(partition=0, deadline_ms=1000.0)).fell_back:
                return
            time.sleep(0.2)
    raise InputError(f"no edge worker answered within {timeout_s:.0f} s")


@contextlib.contextmanager
def edge_worker(broker_url: str, bundle: Bundle, log_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """An edge worker process (`tflite-edge edge`) serving ``bundle``, stopped on exit."""
    log: Any = open(log_path, "w") if log_path is not None else subprocess.DEVNULL
    command = [sys.executable, "-m", "tflite_edge", "edge", "--broker", broker_url, "--bundle", str(bundle.path),
               "--group", f"live-{uuid.uuid4().hex[:6]}"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not subprocess.DEVNULL:
            log.close()


@contextlib.contextmanager
def flood_process(broker_url: str, bundle: Bundle, *, log_path: Path | None = None) -> Iterator[Callable[[bool], None]]:
    """A second device (its own process) that floods the edge while switched on: yields ``switch(on)``."""
    scratch = tempfile.TemporaryDirectory(prefix="tflite-edge-flood-")
    ready = Path(scratch.name) / "ready"
    command = [sys.executable, "-m", "tflite_edge.demo.flood", broker_url, str(bundle.path), str(ready)]
    log: Any = open(log_path, "w") if log_path is not None else subprocess.DEVNULL
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log, text=True)
    try:
        assert process.stdin is not None
        give_up = time.monotonic() + FLOOD_START_TIMEOUT_S
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > give_up:
                raise InputError(f"the flooding device did not start (exit code {process.poll()})")
            time.sleep(0.05)

        def switch(on: bool) -> None:
            if process.poll() is None and process.stdin is not None:
                process.stdin.write("on\n" if on else "off\n")
                process.stdin.flush()

        yield switch
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not subprocess.DEVNULL:
            log.close()
        scratch.cleanup()
