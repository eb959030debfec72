"""Demo steps 4–5: the TF-Agents policy trained for the emulated device, then live runs over MQTT.

The device runs in this process through the shipped loop (``PolicyRunner`` on a
``DeviceRuntime``, what ``tflite-edge device --policy`` runs), emulating a fixed device
profile on an uplink that follows a bandwidth trace, while the world changes: the device
slows down, a second device floods the edge worker, the power budget drops
(``tflite_edge.demo.world``). The same requests run with the learned policy, a planner that
sees only the link, a planner that sees every measured feature, and every static action.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..agents import Trace, markov_trace
from ..device.emulation import DeviceProfile
from ..telemetry.subscriber import Received, TelemetrySubscriber
from ..transport.broker import MosquittoBroker
from .prepare import Prepared
from .world import World

__all__ = ["LiveConfig", "LiveOutcome", "default_trace", "run_live"]

DEVICE_ID = "demo-pi"


@dataclass(frozen=True)
class LiveConfig:
    requests: int
    interval_ms: float
    deadline_ms: float
    trace: Trace
    trace_speedup: float
    device: DeviceProfile
    world: World
    objective: str = "edgeml"
    policy_steps: int = 1000
    broker_url: str | None = None
    training_traces: Path | None = None


@dataclass(frozen=True)
class LiveOutcome:
    records: list[dict[str, Any]]  # the learned policy's requests
    results: dict[str, Any]  # every contender's figures
    training_seconds: float | None  # None: the policy was reused


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


def train(prepared: Prepared, config: LiveConfig, out: Path) -> tuple[Path, float | None]:
    """Train the policy for this device, deadline and world (reused when already trained so)."""
    from .train_policy import train_or_reuse

    traces = config.training_traces
    if traces is None:  # no real traces: seeded synthetic ones, in the `time_s <tab> Mbit/s` format
        traces = out / "training-traces"
        traces.mkdir(exist_ok=True)
        for seed in range(12):
            trace = markov_trace(seed=100 + seed)
            (traces / f"synthetic-{seed}.txt").write_text(
                "".join(f"{t:.3f}\t{v:.4f}\n" for t, v in zip(trace.times_s, trace.mbps, strict=True)))
    settings = {
        "bundle": str(prepared.bundle.path), "bundle_id": prepared.bundle.manifest.bundle_id,
        "host_profile": {"segments": prepared.profile["segments"]}, "device": config.device.to_dict(),
        "traces": str(traces), "objective": config.objective, "steps": config.policy_steps,
        "deadline_ms": config.deadline_ms, "interval_ms": config.interval_ms, "trace_speedup": config.trace_speedup,
        "device_speed": [0.3, 1.0], "edge_load": [0.0, 0.9], "power_budget_mw": [600.0, 3000.0],
        "policy_dir": str(out / "policy"),
    }
    return train_or_reuse(settings)


def run_live(prepared: Prepared, config: LiveConfig, policy_dir: Path, out: Path, say: Callable[[str], None],
             status: Callable[[str], None]) -> dict[str, Any]:
    """Every contender's run; writes requests.jsonl (the learned policy's) and live_results.json."""
    from ..agents.tflite_policy import TFLitePolicy
    from .world import LiveWorld, contenders, edge_worker, flood_process, run_contender, wait_for_edge

    bundle = prepared.bundle
    policy = TFLitePolicy(policy_dir)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_broker(config.broker_url, say))
        stack.enter_context(edge_worker(url, bundle, out / "edge.log"))
        say("started an edge worker process")
        wait_for_edge(url, bundle, prepared.x_val[0])
        flood = stack.enter_context(flood_process(url, bundle, log_path=out / "flood.log"))
        say("started a second device (its own process) that floods the edge when the world says so")
        live = LiveWorld(url, bundle, config.device, config.trace, config.trace_speedup, config.world,
                         config.requests, config.interval_ms, config.deadline_ms,
                         prepared.x_val.astype(np.float32), prepared.y_val, flood=flood, status=status)
        for contender in contenders(policy):
            if contender.name == "learned":
                with _recorder(url, out / "telemetry.jsonl"):
                    done = run_contender(live, contender, device_id=DEVICE_ID)
                (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in done["records"]))
            else:
                done = run_contender(live, contender)
            results[contender.name] = done["figures"]
            f = done["figures"]
            say(f"{contender.name:<28} deadline met {f['deadline_hit_rate']:.1%}, accuracy within the deadline "
                f"{f['accuracy_in_time']:.1%}, {f['energy_per_inference_mj']:.1f} mJ per inference")
    (out / "live_results.json").write_text(json.dumps(results, indent=2))
    return results


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
