"""The learned policy live, through the shipped loop, in a changing world, against planners and static actions.

A real device runtime driven by ``PolicyRunner`` (what ``tflite-edge device --policy``
runs), a real Mosquitto broker, a real edge worker process and real TFLite interpreters;
every request really runs its segments and really sends its activation over MQTT. What is
emulated (``tflite_edge.device.emulation``), only by adding time:

- the device: a fixed **device profile** (absolute per-segment latency and compute power),
  by default Edgent's Raspberry Pi 3 per-layer regressions applied to each segment's
  layers (``edgent_rpi3_profile``), or ``--device-profile FILE`` (``tflite-edge profile
  BUNDLE -o FILE --power-mw MW`` run on the real device). Each segment lasts its profiled
  latency whatever this host's load (host time is part of the target; late wake-ups are
  off the device's clock); the figures say how many segments the host could not keep up with;
- the uplink: a bandwidth trace (``--trace``, default the Norway 3G trace
  ``default_trace`` picks, held out of training), played ``--speedup`` times faster;
- the world (``--scenario FILE``, default ``default_world``): the device slows down, a
  second device floods the edge with real requests, the power budget drops.

The bundle is the demo's (digits at 32x32, three exits, cuts after blocks 1 and 2; trained,
converted and profiled on the spot, reused from ``--out``). The TF-Agents policy is trained
in a subprocess on the other Norway traces with the same device profile, deadline and
pacing, over the ranges of device speed, edge load and budget the world visits.

Runs, each with the same labelled requests and the trace from its start: the learned
policy, a planner that sees only the link, a planner that sees every measured feature, and
every static (exit, partition) action. Per run: deadline-hit rate, accuracy within the
deadline, mean reward under the objective, energy per inference, and requests from each
world change until the policy changed its action; plus the emulated latency per segment.

    .venv/bin/python bench/bench_live_policy.py [--trace FILE] [--scenario FILE] [--json OUT] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NORWAY = REPO.parent / "shared" / "data" / "bandwidth-traces" / "norway-3g"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=40.0)
    parser.add_argument("--deadline-ms", type=float, default=30.0)
    parser.add_argument("--speedup", type=float, default=10.0, help="how much faster than real time the trace plays")
    parser.add_argument("--trace", metavar="FILE", help="uplink bandwidth trace (default: a held-out Norway 3G trace)")
    parser.add_argument("--scenario", metavar="FILE", help="world schedules over trace time (default: default_world)")
    parser.add_argument("--device-profile", metavar="FILE",
                        help="device profile JSON (default: Edgent's Raspberry Pi 3 regressions on this bundle)")
    parser.add_argument("--objective", default="edgeml", help="reward objective (default edgeml)")
    parser.add_argument("--steps", type=int, default=1000, help="policy training steps")
    parser.add_argument("--static-candidates", type=int, nargs="*", metavar="INDEX",
                        help="run only these static action indices (default: every action)")
    parser.add_argument("--no-flood", action="store_true", help="no second device flooding the edge")
    parser.add_argument("--json", metavar="OUT", help="write every run's figures to OUT")
    parser.add_argument("--out", help="keep the bundle, profiles, policy and records here (reused when present)")
    args = parser.parse_args()
    if not NORWAY.is_dir():
        print(f"skipped: real bandwidth traces not found at {NORWAY}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(args.out) if args.out else Path(tmp))


def run(args: argparse.Namespace, out: Path) -> None:
    from tflite_edge.agents import load_trace
    from tflite_edge.agents.tflite_policy import TFLitePolicy
    from tflite_edge.demo.live import default_trace
    from tflite_edge.demo.prepare import prepare
    from tflite_edge.demo.train_policy import train_or_reuse
    from tflite_edge.demo.world import (
        LiveWorld,
        contenders,
        default_world,
        edge_worker,
        flood_process,
        load_world,
        run_contender,
        wait_for_edge,
    )
    from tflite_edge.device.emulation import DeviceProfile, edgent_rpi3_profile
    from tflite_edge.transport.broker import MosquittoBroker

    out.mkdir(parents=True, exist_ok=True)
    trace = load_trace(args.trace) if args.trace else default_trace(NORWAY)
    training = out / "training-traces"
    training.mkdir(exist_ok=True)
    for path in NORWAY.iterdir():  # every trace but the one played live
        if path.is_file() and path.stem != trace.name and path.name != "LICENSE":
            (training / path.name).write_bytes(path.read_bytes())
    duration_s = args.requests * args.interval_ms / 1e3 * args.speedup
    world = load_world(args.scenario) if args.scenario else default_world(duration_s)
    prepared = prepare(out, lambda message: print(message, flush=True))
    bundle = prepared.bundle
    if args.device_profile:
        device = DeviceProfile.load(args.device_profile)
        device.check(bundle.manifest.num_segments, bundle.manifest.bundle_id)
    else:
        device = edgent_rpi3_profile(bundle)
    device.save(out / "device_profile.json")
    print(f"device profile: {device.describe()}", flush=True)
    print(f"live trace {trace.name} ({trace.duration_s:.0f} s, mean {float(np.mean(trace.mbps)):.2f} Mbit/s) played "
          f"{args.speedup:g}x; world {world.name}: {json.dumps(world.to_dict())}", flush=True)
    settings = {
        "bundle": str(bundle.path), "bundle_id": bundle.manifest.bundle_id,
        "host_profile": {"segments": prepared.profile["segments"]},
        "device": device.to_dict(), "traces": str(training), "objective": args.objective, "steps": args.steps,
        "deadline_ms": args.deadline_ms, "interval_ms": args.interval_ms, "trace_speedup": args.speedup,
        "device_speed": [0.3, 1.0], "edge_load": [0.0, 0.9], "power_budget_mw": [600.0, 3000.0],
        "policy_dir": str(out / "policy"),
    }
    started = time.perf_counter()
    policy_dir, seconds = train_or_reuse(settings)
    print("reused the trained policy" if seconds is None else
          f"trained the policy in {time.perf_counter() - started:.0f} s ({args.steps} steps)", flush=True)
    policy = TFLitePolicy(policy_dir)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(MosquittoBroker())
        stack.enter_context(edge_worker(broker.url, bundle))
        wait_for_edge(broker.url, bundle, prepared.x_val[0])
        flood = None if args.no_flood else stack.enter_context(flood_process(broker.url, bundle))
        live = LiveWorld(broker.url, bundle, device, trace, args.speedup, world, args.requests, args.interval_ms,
                         args.deadline_ms, prepared.x_val.astype(np.float32), prepared.y_val, flood=flood)
        print(f"{args.requests} requests every {args.interval_ms:g} ms, deadline {args.deadline_ms:g} ms, "
              f"objective {args.objective}", flush=True)
        for contender in contenders(policy, statics=args.static_candidates):
            done = run_contender(live, contender)
            results[contender.name] = done["figures"]
            (out / f"records-{contender.name.replace(' ', '_').replace('/', '-')}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in done["records"]))
            print(f"  {contender.name}: {_line(done['figures'])}", flush=True)
    report(results, device, args)
    document = {"args": vars(args), "trace": trace.name, "world": world.to_dict(), "device_profile": device.to_dict(),
                "training_seconds": seconds, "results": results}
    (out / "live_policy.json").write_text(json.dumps(document, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2))


def _line(r: dict[str, Any]) -> str:
    reactions = ", ".join("-" if x["requests_until_change"] is None else str(x["requests_until_change"])
                          for x in r["reactions"])
    return (f"hit {r['deadline_hit_rate']:.3f}  acc.in time {r['accuracy_in_time']:.3f}  "
            f"reward {r['mean_reward']:.3f}  "
            f"energy {r['energy_per_inference_mj']:.1f} mJ  offload {r['offloaded']:.2f}  reaction [{reactions}]  "
            f"{r['mix']}")


def report(results: dict[str, Any], device: Any, args: argparse.Namespace) -> None:
    print(f"\n{'run':<30} {'hit rate':>8} {'acc.in time':>11} {'reward':>7} {'mJ/inf':>7} {'offload':>7} "
          f"{'p95 ms':>7}  requests until the action changed, per world change")
    for name, r in results.items():
        reactions = ", ".join("-" if x["requests_until_change"] is None else str(x["requests_until_change"])
                              for x in r["reactions"])
        print(f"{name:<30} {r['deadline_hit_rate']:>8.3f} {r['accuracy_in_time']:>11.3f} {r['mean_reward']:>7.3f} "
              f"{r['energy_per_inference_mj']:>7.1f} {r['offloaded']:>7.2f} {r['p95_ms']:>7.1f}  {reactions}")
    statics = [k for k in results if k.startswith("static")]
    best = max(statics, key=lambda k: results[k]["accuracy_in_time"]) if statics else None
    learned = results.get("learned")
    if learned is not None:
        for other in ("planner-link-only", "planner-measured", best):
            if other in results:
                delta = (learned["accuracy_in_time"] - results[other]["accuracy_in_time"]) * 100
                print(f"learned vs {other}: accuracy within the deadline {learned['accuracy_in_time']:.3f} vs "
                      f"{results[other]['accuracy_in_time']:.3f} ({delta:+.1f} points)")
    print(f"\nemulated device: {device.describe()}")
    for name, r in results.items():
        emulation = r["emulation"]
        per_segment = ", ".join(f"{s['median_ratio_to_target']:.3f}" for s in emulation["segments"])
        wall = ", ".join(f"{s['median_wall_ratio_to_target']:.3f}" for s in emulation["segments"])
        print(f"  {name:<30} emulated/profile per segment (median) {per_segment}; wall clock/profile {wall}; "
              f"host overruns "
              f"{emulation['overruns']}; host lag taken off the device clock {emulation['host_lag_ms']:.0f} ms")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
