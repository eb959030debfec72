"""The learned policy live, end to end, against the best static (exit, partition) choice.

A real device runtime, a real Mosquitto broker, a real edge worker process and real TFLite
interpreters; every request really runs its segments and really sends its activation over
MQTT. What is emulated (``tflite_edge.device.emulation``), and only by adding time:

- the device's compute: every segment takes ``--slowdown`` times its median latency on this
  machine (``Emulation.compute_slowdown`` with the bundle's profile), standing in for a
  device much slower than this host;
- the device's uplink: every offload request is held for the time its bytes need on a link
  that follows a real Norway 3G/HSDPA bandwidth trace (``TraceUplink``, played
  ``--speedup`` times faster than real time), from ../shared/data/bandwidth-traces. The
  broker round trip itself is loopback.

The bundle is the digits model at 32x32 (the demo's: scikit-learn digits upscaled, three
exits, cuts after blocks 1 and 2; 1 KB input, 8 KB and 4 KB activations), trained and
converted on the spot (about 30 s). The policy is trained with TF-Agents (``train_policy``, in a
subprocess) on simulated requests over the other 79 Norway traces with the same slowdown,
deadline and pacing and loopback-like round trips (``scenario_for``), so the trace used live
is held out.

Then the same labelled requests, paced every ``--interval-ms``, run:
1. with the learned policy deciding per request from live telemetry (``PolicyRunner``), and
2. with every static (exit, partition) action (or the ``--static-candidates`` the simulator
   ranks best on this trace); the best of them measured live, in hindsight, is "best static".
Each run starts the trace from its beginning, so all runs see the same bandwidth.

Prints, per run: deadline-hit rate, accuracy, accuracy within the deadline (the
`accuracy` objective's mean reward), offload share, mean and p95 latency.

    .venv/bin/python bench/bench_live_policy.py [--requests 400] [--slowdown 300] [--deadline-ms 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NORWAY = REPO.parent / "shared" / "data" / "bandwidth-traces" / "norway-3g"


def build_bundle(out: Path) -> tuple[Any, dict[str, Any], np.ndarray, np.ndarray]:
    from tflite_edge import zoo
    from tflite_edge.converters import convert
    from tflite_edge.runtime.profile import profile_bundle

    x_train, y_train, x_val, y_val = zoo.digits_data()
    x_train, x_val = zoo.upscale(x_train), zoo.upscale(x_val)
    model = zoo.train_digits_model(zoo.build_digits32_model(), x_train, y_train, epochs=12)
    bundle = convert(model, out / "bundle", cuts=("block_1_out", "block_2_out"), quantize="int8",
                     calibration=x_train[:200], validation=(x_val, y_val), overwrite=True)
    profile = profile_bundle(bundle, repeats=50, warmup=5).to_dict()
    (out / "profile.json").write_text(json.dumps(profile))
    return bundle, profile, x_val.astype(np.float32), y_val


TRAIN_SCRIPT = r"""
import json, sys
from dataclasses import replace
from pathlib import Path
import numpy as np
from tflite_edge.agents import Objective, get_platform, load_traces
from tflite_edge.agents.from_bundle import simulator_for_bundle
from tflite_edge.agents.training import TrainConfig, train_policy
from tflite_edge.bundle import load_bundle
sys.path.insert(0, sys.argv[1])
from bench_live_policy import scenario_for
args = json.loads(sys.argv[2])
out = Path(args["out"])
bundle = load_bundle(out / "bundle")
simulator = simulator_for_bundle(
    bundle, json.loads((out / "profile.json").read_text()),
    device=replace(get_platform("host"), name="emulated", slowdown=args["slowdown"]),
    scenario=scenario_for(args["deadline_ms"], args["interval_ms"] / 1e3 * args["speedup"]),
)
result = train_policy(simulator, load_traces(out / "training-traces"), Objective("accuracy"), out / "policy",
                      TrainConfig(steps=args["steps"]))
print(result.seconds)
"""


def scenario_for(deadline_ms: float, interval_s: float) -> Any:
    """The simulated requests that match the live run: this deadline and pacing, the emulated
    device at its nominal speed, an idle edge, and loopback round trips."""
    from tflite_edge.agents import Scenario

    return Scenario(request_interval_s=interval_s, rtt_ms=(1.0, 4.0), rtt_jitter_ms=1.0, deadline_ms=(deadline_ms,),
                    device_speed=(1.0, 1.0), edge_load=(0.0, 0.05), drift=0.0)


def train(out: Path, args: argparse.Namespace) -> Path:
    """Train in a fresh process (TF-Agents needs tf.keras = tf-keras; this process used Keras 3)."""
    started = time.perf_counter()
    settings = {**vars(args), "out": str(out)}
    done = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(Path(__file__).parent), json.dumps(settings)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    print(f"trained the policy in {time.perf_counter() - started:.0f} s ({args.steps} steps)", flush=True)
    return out / "policy"


def static_candidates(bundle: Any, profile: dict[str, Any], trace: Any, args: argparse.Namespace) -> list[int]:
    """Action indices ranked by the simulator's mean reward on this trace (hindsight)."""
    from dataclasses import replace

    from tflite_edge.agents import Objective, get_platform
    from tflite_edge.agents.evaluate import episodes_for
    from tflite_edge.agents.from_bundle import simulator_for_bundle

    device = replace(get_platform("host"), name="emulated", slowdown=args.slowdown)
    scenario = scenario_for(args.deadline_ms, args.interval_ms / 1e3 * args.speedup)
    simulator = simulator_for_bundle(bundle, profile, device=device, scenario=scenario)
    episode = episodes_for(simulator, [trace], requests=args.requests)[0]
    rewards = simulator.rewards(episode, simulator.outcomes(episode), Objective("accuracy")).mean(axis=0)
    ranked = [int(i) for i in np.argsort(-rewards)]
    return ranked[: args.static_candidates] if args.static_candidates > 0 else ranked


def run_once(bundle: Any, url: str, emulation_args: tuple[Any, float, tuple[float, ...], float], xs: np.ndarray,
             ys: np.ndarray, args: argparse.Namespace, *, policy_dir: Path | None = None,
             action: Any = None) -> dict[str, Any]:
    from tflite_edge.device import DeviceRuntime, Plan
    from tflite_edge.device.emulation import Emulation, TraceUplink
    from tflite_edge.device.policy_loop import policy_session

    trace, speedup, segment_ms, slowdown = emulation_args
    emulation = Emulation(compute_slowdown=slowdown, uplink=TraceUplink(trace, speedup=speedup),
                          segment_ms=segment_ms)
    manifest = bundle.manifest
    records = []
    mix: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        runtime = stack.enter_context(DeviceRuntime(bundle, broker_url=url, device_id=f"bench-{uuid.uuid4().hex[:6]}",
                                                    emulation=emulation))
        runner = None
        if policy_dir is not None:
            runner = stack.enter_context(policy_session(runtime, broker_url=url, deadline_ms=args.deadline_ms,
                                                        policy_dir=str(policy_dir), telemetry_period_s=1.0))
        emulation.uplink = TraceUplink(trace, speedup=speedup)  # the trace starts with the first request
        start = time.monotonic()
        for i in range(args.requests):
            time.sleep(max(0.0, start + i * args.interval_ms / 1e3 - time.monotonic()))
            x, y = xs[i % len(xs)], int(ys[i % len(ys)])
            if runner is not None:
                result = runner.run(x, label=y)
            else:
                result = runtime.run(x, Plan(exit=manifest.exits[action.exit].name, partition=action.partition,
                                             deadline_ms=args.deadline_ms))
            mix[f"{result.exit}@{result.partition}{' fallback' if result.fell_back else ''}"] += 1
            records.append((result.total_ms, result.top1_class == y, result.offloaded))
    latency = np.array([r[0] for r in records])
    correct = np.array([r[1] for r in records])
    in_time = latency <= args.deadline_ms
    return {
        "deadline_hit_rate": float(in_time.mean()), "accuracy": float(correct.mean()),
        "accuracy_in_time": float((correct & in_time).mean()), "offloaded": float(np.mean([r[2] for r in records])),
        "mean_ms": float(latency.mean()), "p95_ms": float(np.percentile(latency, 95)),
        "mix": dict(mix.most_common(4)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--interval-ms", type=float, default=60.0)
    parser.add_argument("--slowdown", type=float, default=300.0, help="emulated device compute slowdown")
    parser.add_argument("--deadline-ms", type=float, default=30.0)
    parser.add_argument("--speedup", type=float, default=10.0, help="how much faster than real time the trace plays")
    parser.add_argument("--steps", type=int, default=3000, help="policy training steps")
    parser.add_argument("--static-candidates", type=int, default=0,
                        help="run only the N static actions the simulator ranks best (default 0: every action)")
    parser.add_argument("--out", help="keep the bundle, policy and figures here")
    args = parser.parse_args()
    if not NORWAY.is_dir():
        print(f"skipped: real bandwidth traces not found at {NORWAY}")
        return
    from tflite_edge.agents import load_traces
    from tflite_edge.demo.live import default_trace
    from tflite_edge.transport.broker import MosquittoBroker

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        trace = default_trace(NORWAY)
        training = out / "training-traces"
        training.mkdir(exist_ok=True)
        for path in NORWAY.iterdir():  # every trace but the one played live
            if path.is_file() and path.stem != trace.name and path.name != "LICENSE":
                (training / path.name).write_bytes(path.read_bytes())
        print(f"live trace {trace.name} ({trace.duration_s:.0f} s, mean "
              f"{float(np.mean(trace.mbps)):.2f} Mbit/s) played {args.speedup:g}x; "
              f"{len(load_traces(training))} other traces for training", flush=True)
        bundle, profile, xs, ys = build_bundle(out)
        segment_ms = tuple(s["median_ms"] for s in profile["segments"])
        print(f"bundle {bundle.manifest.bundle_id}: segments {', '.join(f'{ms * 1e3:.0f}' for ms in segment_ms)} µs "
              f"here, x{args.slowdown:g} = {', '.join(f'{ms * args.slowdown:.1f}' for ms in segment_ms)} ms emulated; "
              f"exits {', '.join(f'{e.name} {e.accuracy:.3f}' for e in bundle.manifest.exits)}", flush=True)
        policy_dir = train(out, args)
        from tflite_edge.agents.tflite_policy import TFLitePolicy

        policy = TFLitePolicy(policy_dir)
        candidates = static_candidates(bundle, profile, trace, args)
        emulation_args = (trace, args.speedup, segment_ms, args.slowdown)
        results: dict[str, dict[str, Any]] = {}
        with MosquittoBroker() as broker:
            edge = subprocess.Popen([sys.executable, "-m", "tflite_edge", "edge", "--broker", broker.url,
                                     "--bundle", str(bundle.path)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                time.sleep(8.0)  # the edge loads TensorFlow Lite and subscribes
                print(f"{args.requests} requests every {args.interval_ms:g} ms, deadline {args.deadline_ms:g} ms",
                      flush=True)
                results["learned"] = run_once(bundle, broker.url, emulation_args, xs, ys, args,
                                              policy_dir=policy_dir)
                for index in candidates:
                    label = f"static {policy.labels[index]}"
                    results[label] = run_once(bundle, broker.url, emulation_args, xs, ys, args,
                                              action=policy.actions[index])
            finally:
                edge.terminate()
                edge.wait(10)
        best = max((k for k in results if k.startswith("static")), key=lambda k: results[k]["accuracy_in_time"])
        print(f"\n{'run':<28} {'hit rate':>8} {'accuracy':>8} {'acc.in time':>11} {'offload':>7} "
              f"{'mean ms':>8} {'p95 ms':>7}  most frequent outcomes")
        for name, r in results.items():
            tag = " (best static)" if name == best else ""
            print(f"{name + tag:<28} {r['deadline_hit_rate']:>8.3f} {r['accuracy']:>8.3f} "
                  f"{r['accuracy_in_time']:>11.3f} {r['offloaded']:>7.2f} {r['mean_ms']:>8.1f} {r['p95_ms']:>7.1f}  "
                  f"{r['mix']}")
        learned, static = results["learned"], results[best]
        print(f"\nlearned vs best static ({best}): deadline-hit rate {learned['deadline_hit_rate']:.3f} vs "
              f"{static['deadline_hit_rate']:.3f}, accuracy {learned['accuracy']:.3f} vs {static['accuracy']:.3f}, "
              f"accuracy within the deadline {learned['accuracy_in_time']:.3f} vs {static['accuracy_in_time']:.3f}")
        (out / "live_policy.json").write_text(json.dumps({"args": vars(args), "trace": trace.name,
                                                          "results": results, "best_static": best}, indent=2))


if __name__ == "__main__":
    main()
