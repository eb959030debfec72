"""The demo's steps in order, with progress on stderr (the results are returned for stdout)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

STEPS = 7
# The Norway 3G traces ship beside the repository in ../shared (not in the package).
SHARED_TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bandwidth-traces" / "norway-3g"


@dataclass(frozen=True)
class DemoOptions:
    out: Path = Path("out/demo")
    broker_url: str | None = None
    requests: int = 200
    interval_ms: float = 40.0
    deadline_ms: float | None = None
    trace_path: Path | None = None
    trace_speedup: float = 10.0
    epochs: int = 12
    device_profile: Path | None = None
    scenario_path: Path | None = None
    policy_steps: int = 1000


class Progress:
    """Numbered step lines; a status line that updates in place on a terminal."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.step = 0
        self.started = time.monotonic()
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self._status_shown = False

    def _clear_status(self) -> None:
        if self._status_shown:
            self.stream.write("\n")
            self._status_shown = False

    def begin(self, title: str) -> None:
        self._clear_status()
        self.step += 1
        elapsed = time.monotonic() - self.started
        self.stream.write(f"[{self.step}/{STEPS}] {title}  ({elapsed:.0f} s)\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        self._clear_status()
        self.stream.write(f"      {message}\n")
        self.stream.flush()

    def status(self, message: str) -> None:
        if self._tty:
            self.stream.write(f"\r      {message}\x1b[K")
            self._status_shown = True
        else:
            self.stream.write(f"      {message}\n")
        self.stream.flush()


def _load_trace(options: DemoOptions, say: Callable[[str], None]) -> Any:
    from ..agents import load_trace
    from .live import default_trace

    if options.trace_path is not None:
        if not options.trace_path.is_file():
            raise InputError(f"trace {options.trace_path} does not exist")
        return load_trace(options.trace_path)
    trace = default_trace(SHARED_TRACES)
    if SHARED_TRACES.is_dir():
        say(f"uplink follows the real 3G trace {trace.name} "
            f"({trace.duration_s:.0f} s, mean {trace.mean_mbps:.2f} Mbit/s)")
    else:
        say(f"{SHARED_TRACES} is absent: the uplink follows a synthetic Markov trace instead")
    return trace


@dataclass(frozen=True)
class DemoResult:
    report: Path
    lines: list[str]  # the results, for the terminal


def _training_traces(trace: Any, out: Path) -> Path | None:
    """The shared traces except the one played live (held out), copied into OUT; None without them."""
    if not SHARED_TRACES.is_dir():
        return None
    folder = out / "training-traces"
    folder.mkdir(exist_ok=True)
    for path in SHARED_TRACES.iterdir():
        if path.is_file() and path.stem != trace.name and path.name != "LICENSE":
            (folder / path.name).write_bytes(path.read_bytes())
    return folder


def run_demo(options: DemoOptions, progress: Progress | None = None) -> DemoResult:
    """Run the whole demo; returns the report path and the result lines."""
    from ..agents import Scenario, compare, format_table, get_objective
    from ..device.emulation import DeviceProfile, edgent_rpi3_profile
    from .live import LiveConfig, run_live, train
    from .prepare import prepare
    from .report import live_lines, write_report
    from .world import default_world, load_world, simulator_for_device

    p = progress or Progress()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("telemetry", "telemetry.jsonl", "requests.jsonl", "live_results.json"):
        target = out / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)

    p.begin("a multi-exit model and its int8 segment bundle")
    prepared = prepare(out, p.say, epochs=options.epochs)
    m = prepared.bundle.manifest
    for e in m.exits:
        p.say(f"{e.name}: segment {e.segment}, top-1 {e.accuracy:.1%} (float Keras {e.float_accuracy:.1%})")
    p.say("segment latency on this machine: " + ", ".join(f"{s['median_ms'] * 1e3:.0f} µs"
                                                           for s in prepared.profile["segments"]))

    p.begin("the emulated device, the link and the world")
    if options.device_profile is not None:
        device = DeviceProfile.load(options.device_profile)
        device.check(m.num_segments, m.bundle_id)
    else:
        device = edgent_rpi3_profile(prepared.bundle)
    device.save(out / "device_profile.json")
    p.say(f"device: {device.describe()}")
    deadline_ms = options.deadline_ms or round(1.2 * device.total_ms, 1)
    trace = _load_trace(options, p.say)
    duration_s = options.requests * options.interval_ms / 1e3 * options.trace_speedup
    world = load_world(options.scenario_path) if options.scenario_path else default_world(duration_s)
    changes = _describe_world(world)
    p.say("world over trace time: " + "; ".join(changes))
    config = LiveConfig(requests=options.requests, interval_ms=options.interval_ms, deadline_ms=deadline_ms,
                        trace=trace, trace_speedup=options.trace_speedup, device=device, world=world,
                        broker_url=options.broker_url, training_traces=_training_traces(trace, out),
                        policy_steps=options.policy_steps)

    p.begin("a TF-Agents policy for this device, deadline and world")
    policy_dir, seconds = train(prepared, config, out)
    p.say(f"reusing the policy in {policy_dir} (trained with the same settings)" if seconds is None else
          f"trained {config.policy_steps} steps in {seconds:.0f} s on simulated requests over the other traces")

    p.begin("broker, edge worker, a flooding second device, and the device through PolicyRunner, live")
    p.say(f"{options.requests} requests per run, one every {options.interval_ms:g} ms, deadline {deadline_ms:g} ms, "
          f"objective {config.objective}")
    results = run_live(prepared, config, policy_dir, out, p.say, p.status)
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]

    p.begin("the same trace in the simulator, every baseline")
    scenario = Scenario(request_interval_s=options.interval_ms / 1e3 * options.trace_speedup, rtt_ms=(1.0, 2.0),
                        rtt_jitter_ms=0.2, deadline_ms=(deadline_ms,), device_speed=(1.0, 1.0), edge_load=(0.0, 0.0),
                        power_budget_mw=(2000.0, 2000.0))
    simulator = simulator_for_device(prepared.bundle, prepared.profile, device, scenario=scenario)
    objective = get_objective(config.objective)
    table = format_table(compare(simulator, [trace], objective, requests=options.requests))

    p.begin("report and plots")
    setup = {
        "model": "3-exit CNN, scikit-learn digits upscaled to 32x32",
        "device": f"this machine emulating a fixed device profile: {device.describe()} "
                  f"(`device_profile.json`)",
        "uplink": f"trace {trace.name}, played {options.trace_speedup:g}x faster than real time",
        "world": "; ".join(changes),
        "deadline_ms": deadline_ms,
        "requests": f"{options.requests} per run, one every {options.interval_ms:g} ms",
        "policy": f"TF-Agents {policy_dir} run by PolicyRunner (the loop of `tflite-edge device --policy`), "
                  f"objective {config.objective}: an answer counts when it meets the deadline and the energy "
                  "budget (power budget x deadline)",
        "broker": options.broker_url or "private Mosquitto on loopback",
    }
    report, summary, plots = write_report(out, prepared.bundle, records, setup=setup, simulated=table,
                                          live=live_lines(results, changes))
    p.begin("done")
    lines = [f"{'run':<34} {'deadline met':>12} {'acc. in time':>12} {'mJ/inference':>12}  "
             "requests until the action changed"]
    for name, r in results.items():
        reaction = ", ".join("-" if x["requests_until_change"] is None else str(x["requests_until_change"])
                             for x in r["reactions"])
        lines.append(f"{name:<34} {r['deadline_hit_rate']:>12.1%} {r['accuracy_in_time']:>12.1%} "
                     f"{r['energy_per_inference_mj']:>12.1f}  {reaction}")
    overruns = sum(r["emulation"]["overruns"] for r in results.values())
    lines.append(f"emulated device: {device.describe()}; segments this host could not keep up with: {overruns}")
    lines.append(f"learned policy: {summary['requests']} requests, accuracy {summary['accuracy']:.1%}, deadline met "
                 f"{summary['deadline_met']:.0%}, p50 {summary['p50_ms']:.1f} ms")
    lines.append(f"report: {report}")
    lines.append("plots: " + ", ".join(str(path) for path in plots))
    return DemoResult(report, lines)


def _describe_world(world: Any) -> list[str]:
    """One line per stretch of constant world."""
    names = {"device_speed": "device speed", "edge_load": "edge load", "power_budget_mw": "power budget mW",
             "rtt_ms": "RTT ms"}
    starts = [0.0, *world.change_times()]
    return [f"from {t:g} s: " + ", ".join(f"{names[k]} {world.value(k, t, float('nan')):g}"
                                          for k in world.schedules) for t in starts]
