"""Learned policy vs every baseline and the oracle on held-out real traces.

For each objective: train the TF-Agents policy on 75% of the Norway 3G traces, export it
to TFLite, and evaluate it (through the TFLite interpreter, as a device runs it) with
every baseline and the oracle on the other 25%, which training never saw. Prints one
table per objective, the learned/oracle ratio, the policy size and the decision time.

The bundle is the MobileNetV2-like manifest of bench_simulator.py (DESIGN.md's activation
sizes and 9.8 ms host latency) on the rpi3-edgent device profile with the 3G radio.
Needs the traces in ../shared (exits with a message when absent) and TF-Agents.

    .venv/bin/python bench/bench_policy.py [--steps 8000] [--objective accuracy ...] [--agent linucb] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulator import NORWAY, mobilenet_like_manifest  # noqa: E402

from tflite_edge.agents import (  # noqa: E402
    BASELINES,
    OBJECTIVES,
    LatencyProfile,
    Objective,
    Simulator,
    compare,
    format_table,
    load_traces,
    split_traces,
)
from tflite_edge.agents.tflite_policy import TFLitePolicy  # noqa: E402
from tflite_edge.agents.training import TrainConfig, train_policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--objective", action="append", choices=OBJECTIVES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agent", choices=("neural-epsilon-greedy", "linucb"), default="neural-epsilon-greedy")
    parser.add_argument("--out", help="directory for policy.json (figures)")
    args = parser.parse_args()
    if not NORWAY.is_dir():
        print(f"skipped: real bandwidth traces not found at {NORWAY}")
        return
    simulator = Simulator(mobilenet_like_manifest(), LatencyProfile((4.0, 3.5, 2.3)))
    train, held_out = split_traces(load_traces(NORWAY), held_out=0.25, seed=args.seed)
    print(f"{len(train)} training traces, {len(held_out)} held-out traces; device {simulator.device.name} "
          f"(x{simulator.device.slowdown:.1f}), radio {simulator.radio.name}, {len(simulator.actions)} actions")
    figures: dict[str, dict[str, object]] = {}
    for name in args.objective or OBJECTIVES:
        objective = Objective(name)
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(agent=args.agent, steps=args.steps, seed=args.seed)
            result = train_policy(simulator, train, objective, tmp, config)
            policy = TFLitePolicy(tmp)
            x = np.zeros(policy.num_features, np.float32)
            policy.decide_index(x)
            start = time.perf_counter()
            for _ in range(2000):
                policy.decide_index(x)
            decision_us = (time.perf_counter() - start) / 2000 * 1e6
            results = compare(simulator, held_out, objective, [policy, *BASELINES], seed=args.seed + 1)
        rewards = {r.policy: r.mean_reward for r in results}
        best = max((p for p in rewards if p not in ("learned", "oracle")), key=rewards.__getitem__)
        print(f"\nobjective {name}: trained {result.steps} steps in {result.seconds:.1f} s; policy.tflite "
              f"{result.tflite_bytes:,} B, {decision_us:.1f} µs per decision ({policy.backend_name})")
        print(format_table(results))
        # Rewards are costs (negative) under the latency objective: compare the costs instead.
        if rewards["oracle"] > 0:
            ratio = rewards["learned"] / rewards["oracle"]
        elif rewards["learned"] < 0:
            ratio = rewards["oracle"] / rewards["learned"]
        else:
            ratio = float("nan")
        print(f"learned/oracle {ratio:.1%}; best baseline {best} {rewards[best]:.4f}; "
              f"learned - best baseline {rewards['learned'] - rewards[best]:+.4f}")
        figures[name] = {"rewards": rewards, "best_baseline": best, "learned_vs_oracle": ratio,
                         "tflite_bytes": result.tflite_bytes, "decision_us": decision_us,
                         "train_seconds": result.seconds}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "policy.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
