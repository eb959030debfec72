"""tflite-edge demo: the whole product end to end, in a few minutes, no prompts."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Run the whole product end to end and write a report with plots:

  1. train a 3-exit CNN on scikit-learn's digits and convert it to an int8 segment bundle
  2. fix the emulated device (a device profile: Edgent's Raspberry Pi 3 regressions on the
     bundle's layers, or --device-profile), the uplink (a real 3G bandwidth trace from
     ../shared/data/bandwidth-traces, else synthetic) and the world (the device slows down,
     a second device floods the edge, the power budget drops; or --scenario)
  3. train a TF-Agents policy for that device on the other traces (reused when present)
  4. start a private Mosquitto (or use --broker), an edge worker process, the flooding
     device, and the device running PolicyRunner (the loop of `tflite-edge device --policy`):
     the same requests with the learned policy, a planner that sees only the link, a planner
     that sees every measured feature, and every static (exit, partition) action
  5. replay the same trace in the simulator with every baseline policy
  6. write OUT/report.md and PNG plots; the figures go to standard output, progress to stderr

A first run trains the CNN and the policy; later runs reuse both from OUT.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole product end to end and write a report with plots", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default out/demo)")
    parser.add_argument("--broker", metavar="URL", help="use this MQTT 5 broker instead of a private Mosquitto")
    parser.add_argument("--requests", type=int, default=200, help="requests per live run (default 200)")
    parser.add_argument("--interval-ms", type=float, default=40.0, help="time between requests (default 40)")
    parser.add_argument("--deadline-ms", type=float,
                        help="per-request deadline (default: 120%% of the device-only latency)")
    parser.add_argument("--trace", metavar="FILE", help="bandwidth trace (time_s <tab> Mbit/s) for the uplink")
    parser.add_argument("--trace-speedup", type=float, default=10.0,
                        help="play the trace this many times faster than real time (default 10)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs when no trained model is cached")
    parser.add_argument("--device-profile", metavar="FILE",
                        help="emulate this device profile (`tflite-edge profile BUNDLE -o FILE --power-mw MW` run "
                             "on the device) instead of Edgent's Raspberry Pi 3 regressions")
    parser.add_argument("--scenario", metavar="FILE",
                        help="world schedules over trace time (JSON: device_speed, edge_load, power_budget_mw)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, run_demo
    from ..errors import InputError

    if args.requests < 1 or args.interval_ms < 0 or args.trace_speedup <= 0:
        raise InputError("--requests must be >= 1, --interval-ms >= 0 and --trace-speedup > 0")
    result = run_demo(DemoOptions(
        out=Path(args.out), broker_url=args.broker, requests=args.requests, interval_ms=args.interval_ms,
        deadline_ms=args.deadline_ms, trace_path=Path(args.trace) if args.trace else None,
        trace_speedup=args.trace_speedup, epochs=args.epochs,
        device_profile=Path(args.device_profile) if args.device_profile else None,
        scenario_path=Path(args.scenario) if args.scenario else None,
    ))
    print("\n".join(result.lines))
    return 0
