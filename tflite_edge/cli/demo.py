"""tflite-edge demo: the whole product end to end, in a few minutes, no prompts."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Run the whole product end to end and write a report with plots:

  1. train a 3-exit CNN on scikit-learn's digits and convert it to an int8 segment bundle
  2. show the bundle (exits, accuracy, latency per segment)
  3. pick the uplink: a real 3G bandwidth trace (../shared/data/bandwidth-traces), else synthetic
  4. start a private Mosquitto (or use --broker), an edge worker process and a device that
     emulates a Raspberry Pi 3 on that uplink; a policy picks exit and partition per request
     from the measured link; telemetry is recorded from MQTT
  5. replay the same trace in the simulator with every baseline policy
  6. write OUT/report.md and PNG plots

Takes about 2-4 minutes on 2 cores (less when the trained model is reused from OUT).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole product end to end and write a report with plots", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default out/demo)")
    parser.add_argument("--broker", metavar="URL", help="use this MQTT 5 broker instead of a private Mosquitto")
    parser.add_argument("--requests", type=int, default=600, help="requests in the live session (default 600)")
    parser.add_argument("--interval-ms", type=float, default=50.0, help="time between requests (default 50)")
    parser.add_argument("--deadline-ms", type=float,
                        help="per-request deadline (default: 120%% of the device-only latency)")
    parser.add_argument("--trace", metavar="FILE", help="bandwidth trace (time_s <tab> Mbit/s) for the uplink")
    parser.add_argument("--trace-speedup", type=float, default=10.0,
                        help="play the trace this many times faster than real time (default 10)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs when no trained model is cached")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, run_demo
    from ..errors import InputError

    if args.requests < 1 or args.interval_ms < 0 or args.trace_speedup <= 0:
        raise InputError("--requests must be >= 1, --interval-ms >= 0 and --trace-speedup > 0")
    run_demo(DemoOptions(
        out=Path(args.out), broker_url=args.broker, requests=args.requests, interval_ms=args.interval_ms,
        deadline_ms=args.deadline_ms, trace_path=Path(args.trace) if args.trace else None,
        trace_speedup=args.trace_speedup, epochs=args.epochs,
    ))
    return 0
