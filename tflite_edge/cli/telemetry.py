"""tflite-edge telemetry: watch devices' telemetry live, as a table or as JSON lines, and record it."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from .common import add_prefix_option

DESCRIPTION = """\
Subscribe to the telemetry of all devices (or one) and show it live: a table that
updates in place with each device's status, exit and partition mix, p50/p95 latency,
uplink throughput, RTT, power and energy per inference. Power marked with ~ is a
model-based estimate (the device has no power sensor). With --json, one validated
message per line instead, as {"topic", "received_unix_s", "message"}. --record FILE
saves the same lines to FILE for `tflite-edge plot`.

With --prometheus HOST:PORT, serve the fleet as Prometheus metrics on
http://HOST:PORT/metrics instead of the table (needs prometheus-client): per device
requests by exit and partition, deadlines met and missed, latency, uplink, RTT, power,
energy per inference, online status and policy version, and the edge workers' presence.
docs/tutorials/telemetry.md sets up Prometheus, Grafana and Home Assistant.
"""

EPILOG = """\
examples:
  tflite-edge telemetry --broker mqtt://127.0.0.1:1883
  tflite-edge telemetry --broker mqtt://edge:1883 --device pi-1 --json | jq .message.latency
  tflite-edge telemetry --broker mqtt://edge:1883 --record session.jsonl --duration 600
  tflite-edge plot session.jsonl -o plots/
  tflite-edge telemetry --broker mqtt://edge:1883 --prometheus 127.0.0.1:9464
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "telemetry", help="watch device telemetry live (table or JSON lines) and record it",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--broker", required=True, metavar="URL",
                        help="MQTT broker, mqtt://[USER:PASS@]HOST[:PORT] or mqtts://...")
    parser.add_argument("--device", metavar="ID", help="only this device (default: all devices)")
    add_prefix_option(parser)
    parser.add_argument("--json", action="store_true", help="print each message as one JSON line instead of a table")
    parser.add_argument("--record", metavar="FILE", help="also append every message to FILE as JSON lines")
    parser.add_argument("--experience", action="store_true",
                        help="include the experience topic (context, action, reward records)")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    parser.add_argument("--refresh-s", type=float, default=1.0, metavar="S",
                        help="table refresh interval (default: 1)")
    parser.add_argument("--prometheus", metavar="HOST:PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics instead of the table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..telemetry.subscriber import FleetView, Received, TelemetrySubscriber, render_table, write_received

    if args.duration is not None and args.duration <= 0:
        raise InputError("--duration must be positive")
    if args.refresh_s <= 0:
        raise InputError("--refresh-s must be positive")
    record = None
    if args.record:
        try:
            record = open(args.record, "a", encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot write --record {args.record}: {e.strerror or e}") from e
    fleet = FleetView()
    lock = threading.Lock()
    changed = threading.Event()
    metrics = server = None
    if args.prometheus is not None:
        from ..telemetry.prometheus import FleetMetrics, parse_listen_address, serve_metrics

        host, port = parse_listen_address(args.prometheus)
        metrics = FleetMetrics()

    def on_message(received: Received) -> None:
        fleet.update(received)
        if metrics is not None:
            metrics.update(received)
        with lock:
            if record is not None:
                write_received(record, received)
            if args.json:
                sys.stdout.write(received.to_json() + "\n")
                sys.stdout.flush()
        changed.set()

    # A live table redraws in place on a terminal; piped, it prints a new table per change.
    live = not args.json and sys.stdout.isatty() and metrics is None
    shown_lines = 0
    deadline = None if args.duration is None else time.monotonic() + args.duration
    subscriber = TelemetrySubscriber(
        args.broker, on_message, prefix=args.prefix, device=args.device,
        experience=args.experience or args.json or metrics is not None,
        on_edge=None if metrics is None else metrics.update_edge,
    )
    try:
        if metrics is not None:
            server = serve_metrics(metrics, host, port)
        with subscriber:
            # On stderr, so that it never mixes with the JSON lines on stdout.
            print(f"listening on {', '.join(subscriber.filters)}", file=sys.stderr, flush=True)
            if server is not None:
                print(f"serving Prometheus metrics on {server.url}", file=sys.stderr, flush=True)
            while deadline is None or time.monotonic() < deadline:
                wait_s = args.refresh_s if deadline is None else min(args.refresh_s, deadline - time.monotonic())
                time.sleep(max(wait_s, 0.0))
                if args.json or metrics is not None or not changed.is_set():
                    continue
                changed.clear()
                table = render_table(fleet.snapshot())
                if live and shown_lines:
                    sys.stdout.write(f"\x1b[{shown_lines}F\x1b[J")  # back to the table's first line, clear below
                sys.stdout.write(table + "\n" + ("" if live else "\n"))
                sys.stdout.flush()
                shown_lines = table.count("\n") + 1
    except KeyboardInterrupt:
        pass
    finally:
        if record is not None:
            record.close()
        if server is not None:
            server.close()
    if subscriber.invalid:
        print(f"{subscriber.invalid} message(s) failed schema validation (see the log)", file=sys.stderr)
    return 0
