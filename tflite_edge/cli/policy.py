"""tflite-edge policy: simulate exit/offload policies over bandwidth traces and compare them."""

from __future__ import annotations

import argparse

from .common import add_backend_options, print_json, progress

SIMULATE_EPILOG = """\
examples:
  tflite-edge profile bundle --json -o profile.json
  tflite-edge policy simulate --bundle bundle --profile profile.json \\
      --traces ../shared/data/bandwidth-traces/norway-3g --objective accuracy
  tflite-edge policy simulate --bundle bundle --synthetic 20 --objective energy --accuracy-floor 0.9 --json

Policies: device-only, edge-only, best-static (in hindsight), neurosurgeon, edgent,
planner (predicted-reward argmax), linucb (online bandit, ANS-style), oracle (knows the
true bandwidth during each transfer). Objectives: accuracy (Edgent: accuracy under the
deadline), energy (AutoScale: energy under deadline and accuracy floor), latency
(Neurosurgeon), edgeml (accuracy only when both latency and energy budgets hold).
"""


TRAIN_EPILOG = """\
example:
  tflite-edge policy train --bundle bundle --profile profile.json \\
      --traces ../shared/data/bandwidth-traces/norway-3g --objective accuracy -o policy
  tflite-edge policy evaluate --bundle bundle --profile profile.json \\
      --traces ../shared/data/bandwidth-traces/norway-3g --objective accuracy --policy policy
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "policy", help="simulate and compare exit/offload policies over bandwidth traces",
        description="Choose the exit and the partition per request: simulate policies on bandwidth traces.",
    )
    commands = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    simulate = commands.add_parser(
        "simulate", help="compare the baselines and the oracle on traces (a table, or --json)",
        description="Simulate requests over bandwidth traces with the bundle's profile and compare policies: "
                    "mean reward, accuracy, deadline-miss rate, latency, energy and the most used action.",
        epilog=SIMULATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_simulation_options(simulate)
    simulate.add_argument("--policy", action="append", metavar="NAME",
                          help="a baseline name or a trained POLICY_DIR to include (repeatable; "
                               "default: every baseline and the oracle)")
    simulate.add_argument("--json", action="store_true", help="print JSON")
    simulate.set_defaults(func=run_simulate)

    train = commands.add_parser(
        "train", help="train a policy with TF-Agents and export it to TFLite",
        description="Train a contextual-bandit policy (TF-Agents) on simulated requests over the training "
                    "traces and export POLICY_DIR/policy.tflite and policy.json. A share of the traces "
                    "(--held-out) is never used in training; `policy evaluate` reports on it. Training "
                    "resumes from POLICY_DIR/checkpoints when they were made with the same bundle, objective, "
                    "agent and scenario (raise --steps to train longer); otherwise it stops, unless --restart.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_simulation_options(train)
    train.add_argument("-o", "--output", required=True, metavar="POLICY_DIR", help="policy directory to write")
    train.add_argument("--agent", choices=("neural-epsilon-greedy", "linucb"), default="neural-epsilon-greedy",
                       help="TF-Agents agent (default neural-epsilon-greedy)")
    train.add_argument("--steps", type=int, default=8000, help="training steps (default 8000)")
    train.add_argument("--batch-size", type=int, default=256, help="requests per training step (default 256)")
    train.add_argument("--held-out", type=float, default=0.25, metavar="F",
                       help="share of the traces kept out of training for evaluation (default 0.25; 0 uses all)")
    train.add_argument("--restart", action="store_true",
                       help="discard checkpoints in POLICY_DIR and train from scratch")
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser(
        "evaluate", help="compare a trained policy with every baseline and the oracle on held-out traces",
        description="Evaluate POLICY_DIR (policy.tflite, run through the TFLite interpreter as a device would) "
                    "against every baseline and the oracle on traces it was not trained on. Use the same "
                    "simulation options as for training.",
    )
    add_simulation_options(evaluate)
    evaluate.add_argument("--policy", required=True, metavar="POLICY_DIR", help="a directory from `policy train`")
    evaluate.add_argument("--all-traces", action="store_true",
                          help="also evaluate on traces used in training (default: held-out traces only)")
    evaluate.add_argument("--plots", metavar="DIR", help="write reward-over-time and action-vs-throughput plots")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(func=run_evaluate)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def add_simulation_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the policy subcommands: bundle, profile, traces, platforms, objective."""
    from ..agents.objectives import OBJECTIVES

    parser.add_argument("--bundle", required=True, metavar="B", help="bundle directory")
    parser.add_argument("--profile", metavar="P.json",
                        help="latency profile from `tflite-edge profile B --json` (default: measure it now)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--traces", metavar="DIR", help="directory of `time_s <tab> Mbit/s` bandwidth traces")
    source.add_argument("--synthetic", type=int, metavar="N", help="use N seeded Markov-regime synthetic traces")
    parser.add_argument("--objective", choices=OBJECTIVES, default="accuracy",
                        help="what to optimise (default accuracy)")
    parser.add_argument("--accuracy-floor", type=float, default=0.0, metavar="A",
                        help="energy objective: minimum exit accuracy (default 0)")
    parser.add_argument("--miss-penalty", type=float, default=0.0, metavar="P",
                        help="extra negative reward for a missed deadline or budget (default 0)")
    parser.add_argument("--device", default="rpi3-edgent", metavar="PLATFORM",
                        help="device platform: rpi3-edgent (default) or host")
    parser.add_argument("--device-slowdown", type=float, metavar="X",
                        help="device latency = X × profiled latency (overrides the platform's figure)")
    parser.add_argument("--device-power-mw", type=float, metavar="MW", help="device compute power (mW)")
    parser.add_argument("--edge-slowdown", type=float, default=1.0, metavar="X",
                        help="edge latency = X × profiled latency (default 1: the edge is this machine)")
    parser.add_argument("--radio", choices=("3g", "lte", "wifi"), default="3g",
                        help="uplink radio model (default 3g)")
    parser.add_argument("--rtt-ms", type=float, nargs=2, metavar=("LOW", "HIGH"), help="range of base RTT per trace")
    parser.add_argument("--deadline-ms", type=float, nargs="+", metavar="MS",
                        help="deadlines drawn per request (default: 0.5, 1, 2 × device-only latency)")
    parser.add_argument("--interval-s", type=float, default=0.5, metavar="S",
                        help="time between requests (default 0.5)")
    parser.add_argument("--scenario", metavar="FILE.json",
                        help="schedules of device_speed, edge_load, power_budget_mw and rtt_ms over trace time "
                             "(format in docs/policy.md); default: random throttling, load bursts and budget drops")
    parser.add_argument("--data", metavar="D.npz",
                        help="labelled data (x, y) for per-sample correctness and early-exit thresholds")
    parser.add_argument("--thresholds", type=float, nargs="+", metavar="T",
                        help="early-exit confidence thresholds to offer as actions (needs --data)")
    parser.add_argument("--requests", type=int, metavar="N",
                        help="requests per trace (default: trace length / interval)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes (default 0)")
    add_backend_options(parser, threads=False)


def build_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(simulator, traces, objective) described by the shared options."""
    from dataclasses import replace

    from ..agents import Objective, Scenario, load_traces, markov_trace
    from ..agents.from_bundle import collect_exit_samples, profile_for_bundle, simulator_for_bundle
    from ..agents.profiles import Platform, get_platform, load_profile
    from ..agents.scenario import load_scenario_file
    from ..arrays import load_labeled
    from ..bundle import load_bundle

    # The small files first, so a bad scenario or data file is reported before any long work
    # (profiling, simulation) starts.
    schedules = load_scenario_file(args.scenario) if args.scenario else {}
    labelled = load_labeled(args.data, what="--data") if args.data else None
    bundle = load_bundle(args.bundle)
    if args.profile:
        profile = load_profile(args.profile, bundle.manifest)
    else:
        progress("profiling the bundle on this machine (pass --profile to reuse a profile)")
        profile = profile_for_bundle(bundle, backend=args.backend)
    device = get_platform(args.device)
    if args.device_slowdown is not None or args.device_power_mw is not None:
        device = replace(
            device, name="custom",
            slowdown=device.slowdown if args.device_slowdown is None else args.device_slowdown,
            compute_power_mw=device.compute_power_mw if args.device_power_mw is None else args.device_power_mw,
        )
    edge = Platform("edge", args.edge_slowdown, 0.0)
    scenario = Scenario(request_interval_s=args.interval_s)
    if schedules:
        scenario = replace(scenario, schedules=schedules)
    if args.rtt_ms:
        scenario = replace(scenario, rtt_ms=tuple(args.rtt_ms))
    if args.deadline_ms:
        scenario = replace(scenario, deadline_ms=tuple(args.deadline_ms))
    samples = None
    if labelled is not None:
        x, y = labelled
        progress(f"running the bundle on {min(len(x), 500)} samples for per-sample exit results")
        samples = collect_exit_samples(bundle, x, y, backend=args.backend)
    if args.traces:
        traces = load_traces(args.traces)
    else:
        traces = [markov_trace(seed=args.seed * 1000 + i) for i in range(args.synthetic)]
    simulator = simulator_for_bundle(bundle, profile, device=device, edge=edge, radio=args.radio, scenario=scenario,
                                     samples=samples, thresholds=tuple(args.thresholds or ()))
    objective = Objective(args.objective, args.accuracy_floor, args.miss_penalty)
    return simulator, traces, objective


def run_simulate(args: argparse.Namespace) -> int:
    import os

    from ..agents import compare, format_table
    from ..agents.tflite_policy import TFLitePolicy

    simulator, traces, objective = build_from_args(args)
    policies = [TFLitePolicy(p, backend=args.backend) if os.path.isdir(p) else p for p in args.policy or []]
    results = compare(simulator, traces, objective, policies or None, seed=args.seed, requests=args.requests)
    if args.json:
        print_json({
            "bundle_id": simulator.manifest.bundle_id,
            "objective": objective.name,
            "traces": len(traces),
            "device": {"name": simulator.device.name, "slowdown": simulator.device.slowdown,
                       "compute_power_mw": simulator.device.compute_power_mw},
            "edge_slowdown": simulator.edge.slowdown,
            "radio": simulator.radio.name,
            "actions": simulator.action_labels(),
            "results": [r.to_dict() for r in results],
        })
        return 0
    print(f"bundle {simulator.manifest.bundle_id}: {len(traces)} traces, objective {objective.name}, "
          f"device {simulator.device.name} (×{simulator.device.slowdown:.1f}), radio {simulator.radio.name}, "
          f"{len(simulator.actions)} actions")
    print(format_table(results))
    return 0


def _simulation_record(args: argparse.Namespace) -> dict[str, object]:
    keys = ("objective", "accuracy_floor", "miss_penalty", "device", "device_slowdown", "device_power_mw",
            "edge_slowdown", "radio", "rtt_ms", "deadline_ms", "interval_s", "scenario", "thresholds", "requests",
            "seed")
    return {k: getattr(args, k) for k in keys}


def run_train(args: argparse.Namespace) -> int:
    from ..agents import split_traces
    from ..agents.training import TrainConfig, train_policy

    simulator, traces, objective = build_from_args(args)
    held_out: list = []
    if args.held_out > 0:
        traces, held_out = split_traces(traces, held_out=args.held_out, seed=args.seed)
    config = TrainConfig(agent=args.agent, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    progress(f"training {config.agent} on {len(traces)} traces ({len(held_out)} held out), {config.steps} steps")
    result = train_policy(
        simulator, traces, objective, args.output, config,
        progress=lambda step, loss: progress(f"step {step}/{config.steps}  loss {loss:.5f}"),
        record={"simulation": _simulation_record(args), "held_out_traces": [t.name for t in held_out]},
        restart=args.restart,
        on_resume=lambda step: progress(f"resuming from step {step} (checkpoints in {args.output}/checkpoints)"),
    )
    if result.resumed_from >= config.steps:
        print(f"wrote {result.policy_dir / 'policy.tflite'} ({result.tflite_bytes:,} B) and policy.json: the "
              f"checkpoints already hold {result.steps} steps, nothing more to train (raise --steps to continue)")
    else:
        print(f"wrote {result.policy_dir / 'policy.tflite'} ({result.tflite_bytes:,} B) and policy.json: "
              f"{result.steps - result.resumed_from} steps in {result.seconds:.1f} s"
              f"{f' ({result.steps} in all)' if result.resumed_from else ''}, final loss {result.final_loss:.5f}")
    print("evaluate it: " + evaluate_command(args, result.policy_dir))
    return 0


def evaluate_command(args: argparse.Namespace, policy_dir: object) -> str:
    """The `policy evaluate` command line that matches the options of this training run."""
    import shlex

    shared = argparse.ArgumentParser(add_help=False)
    add_simulation_options(shared)
    words = ["tflite-edge", "policy", "evaluate"]
    for action in shared._actions:  # every simulation option the user changed, spelt as given
        value = getattr(args, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        words.append(max(action.option_strings, key=len))
        if action.nargs != 0:
            words += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    words += ["--policy", str(policy_dir)]
    return " ".join(shlex.quote(w) for w in words)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..agents import BASELINES, compare, format_table
    from ..agents.tflite_policy import TFLitePolicy
    from ..errors import PolicyError

    simulator, traces, objective = build_from_args(args)
    policy = TFLitePolicy(args.policy, backend=args.backend)
    trained_on = set(policy.metadata.get("training_traces", []))
    if not args.all_traces:
        traces = [t for t in traces if t.name not in trained_on]
        if not traces:
            raise PolicyError("every trace was used in training; pass other traces or --all-traces")
    results = compare(simulator, traces, objective, [policy, *BASELINES], seed=args.seed, requests=args.requests)
    if args.plots:
        from ..agents.plots import plot_evaluation

        for path in plot_evaluation(simulator, traces, objective, policy, args.plots, seed=args.seed):
            progress(f"wrote {path}")
    oracle = next(r for r in results if r.policy == "oracle").mean_reward
    best = max((r for r in results if r.policy not in ("oracle", policy.name)), key=lambda r: r.mean_reward)
    learned = results[0]
    if args.json:
        print_json({
            "policy": str(args.policy), "objective": objective.name, "traces": [t.name for t in traces],
            "held_out_only": not args.all_traces, "results": [r.to_dict() for r in results],
            "learned_vs_oracle": learned.mean_reward / oracle if oracle > 0 else None,
            "best_baseline": best.policy,
        })
        return 0
    print(f"policy {args.policy} ({policy.backend_name}) on {len(traces)} "
          f"{'held-out ' if not args.all_traces else ''}traces, objective {objective.name}")
    print(format_table(results))
    if oracle > 0:
        print(f"learned/oracle mean reward: {learned.mean_reward / oracle:.1%}; best baseline: {best.policy} "
              f"({best.mean_reward:.4f})")
    return 0
