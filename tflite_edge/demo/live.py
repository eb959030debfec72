"""Demo steps 4–6: a broker, an edge worker and a device with a policy, live over MQTT.

The device runs in this process: a ``DeviceRuntime`` that emulates a Raspberry Pi 3-class
CPU (its segments' measured time stretched by the platform's slowdown) on an uplink that
follows a bandwidth trace, with telemetry attached. Per request, the policy reads the
measured context (the uplink rate of the last transfers and the broker round trip the
telemetry measures) and picks the exit and the
partition; the request then really runs: segments on the device, the activation over MQTT,
the tail on the edge worker process.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..agents import Trace, get_objective, get_platform, markov_trace
from ..agents.from_bundle import simulator_for_bundle
from ..agents.planning import PlanningModel
from ..device import DeviceRuntime, Plan
from ..device.emulation import Emulation, TraceUplink
from ..errors import TfliteEdgeError
from ..telemetry import TelemetryPublisher, ThroughputEstimator
from ..telemetry.subscriber import Received, TelemetrySubscriber
from ..transport.broker import MosquittoBroker
from .prepare import Prepared

__all__ = ["LiveConfig", "run_live"]

DEVICE_ID = "demo-pi"
# A request that has not offloaded for this many requests offloads once to refresh the
# uplink estimate (the estimate comes from measured transfers; without them it goes stale).
PROBE_EVERY = 15
# The policy acts on the last few transfers: the link changes faster than a long window follows.
THROUGHPUT_WINDOW = 3
DEFAULT_RTT_MS = 1.0  # until the telemetry has measured the broker round trip
# A probe trades its own deadline for a measurement: it may take this many deadlines.
PROBE_DEADLINE_FACTOR = 4.0
PRIOR_UPLINK_MBPS = 1.0  # until the first transfer has been measured


@dataclass(frozen=True)
class LiveConfig:
    requests: int
    interval_ms: float
    deadline_ms: float
    trace: Trace
    trace_speedup: float
    device_platform: str = "rpi3-edgent"
    objective: str = "energy"
    accuracy_floor: float = 0.9
    power_budget_mw: float = 5000.0
    broker_url: str | None = None


class DemoError(TfliteEdgeError):
    """The demo could not run one of its steps."""


@contextlib.contextmanager
def _broker(url: str | None, say: Callable[[str], None]) -> Iterator[str]:
    if url is not None:
        say(f"using the broker at {url}")
        yield url
        return
    with MosquittoBroker() as broker:
        say(f"started a private Mosquitto broker on {broker.url}")
        yield broker.url


@contextlib.contextmanager
def _edge_worker(url: str, bundle_path: Path, log_path: Path, say: Callable[[str], None]) -> Iterator[None]:
    group = f"demo-{uuid.uuid4().hex[:6]}"
    command = [sys.executable, "-m", "tflite_edge", "edge", "--broker", url, "--bundle", str(bundle_path),
               "--group", group]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        say(f"started an edge worker (pid {process.pid}, shared-subscription group {group})")
        try:
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def _recorder(url: str, path: Path) -> Iterator[TelemetrySubscriber]:
    lock = threading.Lock()
    with open(path, "w") as stream:

        def write(received: Received) -> None:
            with lock:
                stream.write(received.to_json() + "\n")

        subscriber = TelemetrySubscriber(url, write, device=DEVICE_ID, experience=True).start()
        try:
            yield subscriber
        finally:
            time.sleep(0.3)  # let the last window and the offline status arrive
            subscriber.stop()


def _wait_for_edge(runtime: DeviceRuntime, x: np.ndarray, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = runtime.run(x, Plan(partition=0, deadline_ms=1000.0))
        if not result.fell_back:
            return
        time.sleep(0.2)
    raise DemoError(f"the edge worker did not answer within {timeout_s:.0f} s; see edge.log in the output folder")


def run_live(prepared: Prepared, config: LiveConfig, out: Path, say: Callable[[str], None],
             status: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run the live session and return one record per request."""
    bundle = prepared.bundle
    manifest = bundle.manifest
    platform = get_platform(config.device_platform)
    simulator = simulator_for_bundle(bundle, prepared.profile, device=platform)
    planner = PlanningModel.from_simulator(simulator)
    objective = get_objective(config.objective, accuracy_floor=config.accuracy_floor)
    actions = simulator.actions
    labels = simulator.action_labels()
    uplink = TraceUplink(config.trace, speedup=config.trace_speedup)
    segment_ms = tuple(s["median_ms"] for s in prepared.profile["segments"])
    emulation = Emulation(compute_slowdown=platform.slowdown, uplink=uplink, segment_ms=segment_ms)

    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_broker(config.broker_url, say))
        stack.enter_context(_edge_worker(url, bundle.path, out / "edge.log", say))
        stack.enter_context(_recorder(url, out / "telemetry.jsonl"))
        runtime = stack.enter_context(DeviceRuntime(bundle, broker_url=url, device_id=DEVICE_ID, emulation=emulation))
        _wait_for_edge(runtime, prepared.x_val[0])
        telemetry = TelemetryPublisher(DEVICE_ID, broker_url=url, period_s=1.0).start()
        # The policy's own uplink estimate: a transfer's time minus the broker round trip is
        # the time its bytes spent on the uplink (the telemetry's figure is an effective rate
        # that includes the round trip, which the planner already adds).
        uplink_rates = ThroughputEstimator(THROUGHPUT_WINDOW)
        stack.callback(telemetry.stop)
        telemetry.attach(runtime)
        say(f"device {DEVICE_ID}: emulating {platform.name} (compute x{platform.slowdown:.0f}) on the uplink of "
            f"trace {config.trace.name} played {config.trace_speedup:g}x faster; deadline {config.deadline_ms:g} ms")

        mix: Counter[str] = Counter()
        since_offload = 0
        start = time.monotonic()
        for i in range(config.requests):
            slot = start + i * config.interval_ms / 1e3
            time.sleep(max(0.0, slot - time.monotonic()))
            context = telemetry.context()
            estimate = uplink_rates.mbps
            rtt_ms = context["broker_rtt_ms"] or DEFAULT_RTT_MS
            # The runtime's own reserve at its measured (emulated) segment speed.
            reserve_ms = np.array([runtime.fallback_reserve_ms(a.partition) if planner.offloaded[i] else 0.0
                                   for i, a in enumerate(actions)])
            choice = _plan(planner, objective, reserve_ms, estimate or PRIOR_UPLINK_MBPS, rtt_ms, config.deadline_ms,
                           config.power_budget_mw)
            probe = since_offload >= PROBE_EVERY
            probe_choice = planner.probe_action()
            if probe and not planner.offloaded[choice] and probe_choice is not None:
                choice = probe_choice
            action = actions[choice]
            sample = i % len(prepared.x_val)
            deadline_ms = config.deadline_ms * (PROBE_DEADLINE_FACTOR if probe else 1.0)
            result = runtime.run(
                prepared.x_val[sample],
                Plan(exit=manifest.exits[action.exit].name, partition=action.partition, deadline_ms=deadline_ms),
            )
            since_offload = 0 if result.offloaded or planner.offloaded[choice] else since_offload + 1
            if result.offloaded and result.request_bytes:
                uplink_rates.add(result.request_bytes, max(result.transfer_ms - rtt_ms, 0.1 * result.transfer_ms) / 1e3)
            elif result.fell_back and result.request_bytes:
                # The bytes did not get through in the whole request time: a rate bound, counted as a sample.
                uplink_rates.add(result.request_bytes, result.total_ms / 1e3)
            correct = result.top1_class == int(prepared.y_val[sample])
            telemetry.record_experience(
                context={"uplink_mbps": estimate, "rtt_ms": rtt_ms, "deadline_ms": config.deadline_ms},
                action={"exit": result.exit, "partition": action.partition, "label": labels[choice]},
                reward=float(correct) if result.met_deadline else 0.0, latency_ms=result.total_ms,
                deadline_ms=config.deadline_ms, deadline_met=result.met_deadline, request_id=result.request_id,
            )
            records.append({
                "t_s": time.monotonic() - start, "trace_position_s": uplink.position_s(),
                "bandwidth_mbps": uplink.bandwidth_mbps(), "estimate_mbps": estimate, "action": labels[choice],
                **result.to_dict(), "probe": bool(probe), "correct": bool(correct),
                "met_deadline": result.total_ms <= config.deadline_ms,
            })
            mix[labels[choice]] += 1
            if i % 20 == 19 or i == config.requests - 1:
                latencies = [r["total_ms"] for r in records[-100:]]
                top = ", ".join(f"{k} {v}" for k, v in mix.most_common(3))
                seen = "none yet" if estimate is None else f"{estimate:.2f}"
                status(f"request {i + 1}/{config.requests}  uplink {uplink.bandwidth_mbps():.2f} Mbit/s "
                       f"(estimate {seen})  p50 {np.median(latencies):.1f} ms  choices: {top}")
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _plan(planner: PlanningModel, objective: Any, reserve_ms: np.ndarray, throughput_mbps: float, rtt_ms: float,
          deadline_ms: float, power_budget_mw: float = 5000.0) -> int:
    """The action with the best predicted reward (ties: the fastest), where an offload only
    counts as on time if it can return before the runtime's local reserve is due."""
    latency, energy = planner.predict(throughput_mbps=throughput_mbps, rtt_ms=rtt_ms, device_speed=1.0, edge_load=0.0)
    effective = latency + planner.offloaded * reserve_ms
    accuracy = planner.accuracy[None, :]
    rewards = objective.reward(latency_ms=effective, energy_mj=energy, correct=accuracy, exit_accuracy=accuracy,
                               deadline_ms=np.array([[deadline_ms]]),
                               energy_budget_mj=np.array([[power_budget_mw * deadline_ms / 1e3]]))[0]
    best = np.flatnonzero(rewards >= rewards.max() - 1e-9)
    return int(best[np.argmin(latency[0, best])])


def default_trace(traces_dir: Path | None, seed: int = 0) -> Trace:
    """A real 3G trace when the shared traces are present, else a synthetic Markov trace."""
    from ..agents import load_traces

    if traces_dir is not None and traces_dir.is_dir():
        traces = load_traces(traces_dir)
        if traces:
            # A trace with long good and long poor stretches shows the policy at work.
            def balance(t: Trace) -> float:
                widths = np.diff(np.append(t.times_s, t.duration_s))
                good = float(widths[t.mbps >= 2.5].sum()) / t.duration_s
                poor = float(widths[t.mbps <= 1.0].sum()) / t.duration_s
                return min(good, poor)

            return max(traces, key=lambda t: (balance(t), t.name))
    return markov_trace(seed=seed)
