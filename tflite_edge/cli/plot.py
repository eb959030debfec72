"""tflite-edge plot: figures of a recorded telemetry session."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw latency, link, power and exit/partition figures of a telemetry recording",
        description=(
            "Read a recording made with `tflite-edge telemetry --record FILE` and write four PNG figures to "
            "DIR: latency.png (p50/p95 and where the time goes), link.png (uplink throughput, round trips, "
            "losses), power.png (power, energy per inference, CPU load and temperature; model-based "
            "estimates are drawn dashed) and decisions.png (exit and partition mix per window)."
        ),
        epilog="example:\n  tflite-edge plot session.jsonl -o plots/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recording", metavar="FILE", help="JSON lines written by `tflite-edge telemetry --record`")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the PNG files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..telemetry.plot import plot_recording

    for path in plot_recording(args.recording, args.output):
        print(path)
    return 0
