"""Simulator throughput: simulated requests per second on one core.

Figures printed:
  * whole-episode evaluation of every action at once (what the oracle, best-static and
    the environment's reset use), in requests/s and request-actions/s;
  * one chosen action per request (a policy's evaluation);
  * the Gymnasium-style step loop (reset + step per request);
  * the full baseline comparison on the real traces.

Uses the real Norway 3G traces from ../shared (skipped with a message when absent) and
synthetic Markov traces. The bundle is a manifest with MobileNetV2-224's int8 activation
sizes at block_5/block_12 and 9.8 ms of compute split over three segments (the figures in
DESIGN.md); the simulator needs no TFLite files.

    .venv/bin/python bench/bench_simulator.py [--out out/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from tflite_edge.agents import CoInferenceEnv, LatencyProfile, Objective, Simulator, compare, load_traces, markov_trace
from tflite_edge.bundle.manifest import CutSpec, ExitSpec, Manifest, SegmentSpec, TensorSpec

REPO = Path(__file__).resolve().parents[1]
NORWAY = REPO.parent / "shared" / "data" / "bandwidth-traces" / "norway-3g"


def mobilenet_like_manifest() -> Manifest:
    shapes = [(1, 224, 224, 3), (1, 28, 28, 32), (1, 14, 14, 96)]
    tensors = [TensorSpec(f"t{i}", s, "int8", 0.02, 0) for i, s in enumerate(shapes)]
    segments = []
    for i in range(3):
        outputs = [TensorSpec(f"exit_{i}", (1, 1000), "int8", 1 / 256, -128)]
        if i < 2:
            outputs.append(tensors[i + 1])
        segments.append(SegmentSpec(i, f"segment_{i}.tflite", f"{i:064x}", 1, (tensors[i],), tuple(outputs)))
    return Manifest(
        model_name="mobilenet_like", quantization="int8", input=TensorSpec("t0", shapes[0], "float32"),
        segments=tuple(segments),
        exits=tuple(ExitSpec(f"exit_{i}", i, 1000, a) for i, a in enumerate((0.62, 0.78, 0.90))),
        cuts=tuple(CutSpec(f"t{i + 1}", i, tensors[i + 1].bytes) for i in range(2)),
        converter_version="bench", tensorflow_version="-",
    )


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="directory for simulator.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says

    sim = Simulator(mobilenet_like_manifest(), LatencyProfile((4.0, 3.5, 2.3)))
    objective = Objective("accuracy")
    traces = load_traces(NORWAY) if NORWAY.is_dir() else []
    if not traces:
        print(f"(real traces not found at {NORWAY}; using synthetic traces only)")
    synthetic = [markov_trace(seed=i, duration_s=600) for i in range(20)]
    figures: dict[str, float] = {}

    # Whole-episode, every action: 20 synthetic episodes of 1,200 requests.
    episodes = [sim.episode(t, seed=i) for i, t in enumerate(synthetic)]
    requests = sum(len(e) for e in episodes)
    start = time.perf_counter()
    for e in episodes:
        e._cache.clear()
        sim.rewards(e, sim.outcomes(e), objective)
    elapsed = time.perf_counter() - start
    figures["all_actions_requests_per_s"] = rate(requests, elapsed)
    figures["all_actions_request_actions_per_s"] = rate(requests * len(sim.actions), elapsed)

    # Episode generation + one chosen action per request (a fresh episode each time, no cache).
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i, t in enumerate(synthetic):
        e = sim.episode(t, seed=100 + i)
        chosen = rng.integers(len(sim.actions), size=len(e))
        sim.rewards(e, sim._evaluate(e, np.arange(len(sim.actions))).take(chosen), objective)
    figures["episode_and_evaluation_requests_per_s"] = rate(requests, time.perf_counter() - start)

    # Gymnasium-style loop: reset + one step per request.
    env = CoInferenceEnv(sim, synthetic, objective, seed=0)
    steps = 0
    start = time.perf_counter()
    for episode in range(10):
        env.reset(seed=episode)
        done = False
        while not done:
            _, _, done, _, _ = env.step(steps % env.action_space.n)
            steps += 1
    figures["env_steps_per_s"] = rate(steps, time.perf_counter() - start)

    if traces:
        start = time.perf_counter()
        results = compare(sim, traces, objective)
        elapsed = time.perf_counter() - start
        total = results[0].requests
        figures["compare_all_baselines_norway_s"] = elapsed
        figures["compare_requests_per_policy"] = total
        figures["compare_policy_requests_per_s"] = rate(total * len(results), elapsed)

    print(f"simulator, one core, {len(sim.actions)} actions")
    for key, value in figures.items():
        print(f"  {key:<40} {value:>14,.0f}" if value >= 100 else f"  {key:<40} {value:>14.3f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "simulator.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
