"""The demo's steps in order, with progress on stderr."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["DemoOptions", "run_demo"]

STEPS = 7
# The Norway 3G traces ship beside the repository in ../shared (not in the package).
SHARED_TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bandwidth-traces" / "norway-3g"


@dataclass(frozen=True)
class DemoOptions:
    out: Path = Path("out/demo")
    broker_url: str | None = None
    requests: int = 600
    interval_ms: float = 50.0
    deadline_ms: float | None = None
    trace_path: Path | None = None
    trace_speedup: float = 10.0
    epochs: int = 12


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


def run_demo(options: DemoOptions, progress: Progress | None = None) -> Path:
    """Run the whole demo; returns the report path."""
    from ..agents import Scenario, compare, format_table, get_objective, get_platform
    from ..agents.from_bundle import simulator_for_bundle
    from .live import LiveConfig, run_live
    from .prepare import prepare
    from .report import write_report

    p = progress or Progress()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("telemetry", "telemetry.jsonl", "requests.jsonl"):
        target = out / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)

    p.begin("a multi-exit model and its int8 segment bundle")
    prepared = prepare(out, p.say, epochs=options.epochs)
    p.begin("the bundle")
    m = prepared.bundle.manifest
    for e in m.exits:
        p.say(f"{e.name}: segment {e.segment}, top-1 {e.accuracy:.1%} (float Keras {e.float_accuracy:.1%})")
    p.say("segment latency on this machine: " + ", ".join(f"{s['median_ms'] * 1e3:.0f} µs"
                                                           for s in prepared.profile["segments"]))
    platform = get_platform("rpi3-edgent")
    device_only_ms = sum(s["median_ms"] for s in prepared.profile["segments"]) * platform.slowdown
    deadline_ms = options.deadline_ms or round(1.2 * device_only_ms, 1)

    p.begin("the link")
    trace = _load_trace(options, p.say)

    p.begin("broker, edge worker, device and telemetry, live")
    config = LiveConfig(requests=options.requests, interval_ms=options.interval_ms, deadline_ms=deadline_ms,
                        trace=trace, trace_speedup=options.trace_speedup, broker_url=options.broker_url)
    records = run_live(prepared, config, out, p.say, p.status)

    p.begin("the same trace in the simulator, every baseline")
    scenario = Scenario(request_interval_s=options.interval_ms / 1e3 * options.trace_speedup, rtt_ms=(1.0, 2.0),
                        rtt_jitter_ms=0.2, deadline_ms=(deadline_ms,), device_speed=(1.0, 1.0), edge_load=(0.0, 0.0),
                        power_budget_mw=(config.power_budget_mw, config.power_budget_mw))
    simulator = simulator_for_bundle(prepared.bundle, prepared.profile, device=platform, scenario=scenario)
    objective = get_objective(config.objective, accuracy_floor=config.accuracy_floor)
    table = format_table(compare(simulator, [trace], objective, requests=options.requests))
    p.say(f"simulated, objective {objective.name} (accuracy floor {config.accuracy_floor:.0%}):")
    for line in table.splitlines():
        p.say("  " + line)

    p.begin("report and plots")
    setup = {
        "model": "3-exit CNN, scikit-learn digits upscaled to 32x32",
        "device": f"this machine emulating a Raspberry Pi 3 (compute x{platform.slowdown:.0f}, Edgent's regressions)",
        "uplink": f"trace {trace.name}, played {options.trace_speedup:g}x faster than real time",
        "deadline_ms": deadline_ms,
        "requests": f"{options.requests}, one every {options.interval_ms:g} ms",
        "policy": "plans each request from the measured uplink (the rate of the last 3 transfers) and the "
                  "broker round trip: the (exit, partition) predicted to use the least device energy while "
                  f"meeting the deadline with an exit of at least {config.accuracy_floor:.0%} validation "
                  "accuracy (AutoScale's objective); after 15 requests without an offload, one request "
                  "offloads with a relaxed deadline to measure the uplink",
        "broker": options.broker_url or "private Mosquitto on loopback",
    }
    report, summary, plots = write_report(out, prepared.bundle, records, setup=setup, simulated=table)
    p.begin("done")
    p.say(f"{summary['requests']} requests, {summary['requests'] - summary['answered']} lost, accuracy "
          f"{summary['accuracy']:.1%}, deadline met {summary['deadline_met']:.0%} "
          f"({summary['deadline_met_planned']:.0%} without the uplink probes), p50 {summary['p50_ms']:.1f} ms")
    for row in summary["rows"]:
        p.say(f"  {row['exit']:<7} K={row['partition']} on {row['ran_on']:<6} {row['requests']:>4} requests  "
              f"accuracy {row['accuracy']:.1%}  p50 {row['p50_ms']:.1f} ms  deadline met {row['deadline_met']:.0%}")
    p.say(f"report: {report}")
    p.say("plots: " + ", ".join(str(path) for path in plots))
    return report
