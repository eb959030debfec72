"""tflite-edge firmware: microcontrollers as the first stage (export, simulate, bridge)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from .common import add_homeassistant_option, add_prefix_option, add_request_options, exit_rule, homeassistant_of

EPILOG = """\
examples:
  tflite-edge firmware export bundle --segment 0 -o firmware/model_data.cc
  tflite-edge firmware simulate --pty --arena-bytes 32768 --baud 115200
  tflite-edge firmware bridge --port /dev/pts/5 --bundle bundle --id mcu-1 \\
      --broker mqtt://127.0.0.1:1883 --input x.npy --partition 1 --json

The wire protocol is described in docs/serial-protocol.md; a C codec for firmware is in
tflite_edge/firmware_bridge/c/.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "firmware", help="microcontrollers as the first stage: export a segment, simulate an MCU, run the bridge",
        description="Run the first segment of a bundle on a microcontroller (TensorFlow Lite Micro) behind a "
                    "serial link, with this machine as the gateway to the edge.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="firmware_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    export = sub.add_parser(
        "export", help="write a segment as a C array for firmware, after checking TFLite Micro runs it",
        description="Load segment N in TensorFlow Lite Micro, run it once, then write it as an aligned C array "
                    "(OUTPUT.cc) and a header (OUTPUT.h) with its length, tensors and the tensor arena it needs.",
    )
    export.add_argument("bundle", help="bundle directory")
    export.add_argument("--segment", type=int, default=0, metavar="N", help="segment index (default: 0)")
    export.add_argument("-o", "--output", default="model_data.cc", metavar="FILE.cc",
                        help="source file to write; the header goes beside it (default: model_data.cc)")
    export.add_argument("--name", default="g_model", help="C name of the array (default: g_model)")
    export.add_argument("--json", action="store_true", help="print the report as JSON")
    export.set_defaults(func=run_export)

    simulate = sub.add_parser(
        "simulate", help="a simulated MCU that speaks the protocol and runs segments in TFLite Micro",
        description="Serve the bridge protocol like a microcontroller would, running loaded segments with the "
                    "TFLite Micro interpreter (real TFLM kernels) under an arena limit, with a modelled link "
                    "speed and a synthetic power signal. Runs until interrupted.",
    )
    where = simulate.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="create a pseudo-terminal and print its path")
    where.add_argument("--port", metavar="URL", help="serve on a pyserial port or URL (e.g. /dev/ttyUSB0)")
    where.add_argument("--tcp", type=int, metavar="PORT",
                       help="listen on 127.0.0.1:PORT; the host connects with socket://127.0.0.1:PORT")
    simulate.add_argument("--arena-bytes", type=int, default=64 * 1024, help="tensor arena limit (default: 65536)")
    simulate.add_argument("--baud", type=int, default=0,
                          help="modelled link speed in baud, 10 bits per byte (default: 0, no delay)")
    simulate.add_argument("--slots", type=int, default=1, help="model slots (default: 1)")
    simulate.add_argument("--max-payload", type=int, default=1024, metavar="BYTES",
                          help="largest frame payload the MCU accepts (default: 1024)")
    simulate.add_argument("--max-model-bytes", type=int, default=256 * 1024, help="model memory (default: 262144)")
    simulate.add_argument("--slowdown", type=float, default=1.0, metavar="X",
                          help="the MCU computes X times slower than this host (default: 1)")
    simulate.add_argument("--idle-mw", type=float, default=12.0, help="synthetic idle power (default: 12)")
    simulate.add_argument("--active-mw", type=float, default=45.0, help="synthetic power while invoking (default: 45)")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the power signal's noise (default: 0)")
    simulate.set_defaults(func=run_simulate)

    bridge = sub.add_parser(
        "bridge", help="the gateway: segment 0 on the MCU, the rest here or on the edge, MCU telemetry to MQTT",
        description="Load segment 0 of the bundle onto the microcontroller at PORT, then answer each sample of "
                    "X.npy: the MCU runs segment 0, this gateway runs segments [1, K) and the edge the rest "
                    "(the device runtime's plan, deadline and local fallback apply). The MCU's power readings "
                    "are published with the device telemetry on PREFIX/dev/ID/telemetry. Without --input the "
                    "gateway only publishes telemetry, until interrupted.",
    )
    bridge.add_argument("--port", required=True, metavar="PORT",
                        help="serial port or pyserial URL: /dev/ttyACM0, a pty path, socket://HOST:PORT, loop://")
    bridge.add_argument("--baud", type=int, default=115200, help="baud rate (default: 115200)")
    bridge.add_argument("--broker", metavar="URL", help="MQTT broker, mqtt://HOST[:PORT]; omit to run locally")
    bridge.add_argument("--bundle", required=True, help="bundle directory")
    bridge.add_argument("--id", default="mcu-gateway", metavar="ID", help="device id (default: mcu-gateway)")
    bridge.add_argument("--input", metavar="X.npy", help="float32 samples, (N, ...) or one sample")
    bridge.add_argument("--exit", metavar="NAME", help="target exit (default: the last)")
    bridge.add_argument("--partition", type=int, default=None, metavar="K",
                        help="segments [0, K) run on the MCU and here, the rest on the edge; K >= 1 "
                             "(default: 1 with --broker, else every segment)")
    add_request_options(bridge)
    bridge.add_argument("--timeout-s", type=float, default=2.0, help="serial reply timeout (default: 2)")
    bridge.add_argument("--retries", type=int, default=3, help="serial retries per request (default: 3)")
    bridge.add_argument("--telemetry", action=argparse.BooleanOptionalAction, default=None,
                        help="publish status and telemetry (with the MCU's power) on {prefix}/dev/ID/...: on "
                             "whenever --broker is given; --no-telemetry turns it off")
    bridge.add_argument("--telemetry-period-s", type=float, default=5.0, help="telemetry period (default: 5)")
    add_homeassistant_option(bridge)
    bridge.add_argument("--duration-s", type=float, help="without --input: stop after this many seconds")
    add_prefix_option(bridge)
    bridge.add_argument("--json", action="store_true", help="one JSON object per result on stdout")
    bridge.set_defaults(func=run_bridge)


def run_export(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle
    from ..firmware_bridge.export import export_segment

    report = export_segment(load_bundle(args.bundle), args.segment, args.output, array_name=args.name)
    if args.json:
        from .common import print_json

        print_json({
            "source": str(report.source), "header": str(report.header), "array": report.array_name,
            "model_bytes": report.model_bytes, "arena_used_bytes": report.arena_used_bytes,
            "arena_bytes": report.arena_bytes, "operators": list(report.operators),
        })
    else:
        print(f"wrote {report.source} and {report.header}: {report.array_name}, {report.model_bytes} bytes")
        print(f"TFLite Micro ran segment {args.segment}: operators {', '.join(report.operators)}")
        print(f"tensor arena needed: {report.arena_used_bytes} bytes (use {report.arena_bytes})")
    return 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM inside the block; the previous handlers come back after it."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_simulate(args: argparse.Namespace) -> int:
    from ..firmware_bridge.simulator import PowerModel, SimulatedMcu

    if args.arena_bytes <= 0 or args.slots <= 0 or not 16 <= args.max_payload <= 0xFFFF:
        raise InputError("--arena-bytes and --slots must be positive, --max-payload within 16..65535")
    mcu = SimulatedMcu(
        arena_bytes=args.arena_bytes, model_slots=args.slots, max_payload_bytes=args.max_payload,
        max_model_bytes=args.max_model_bytes, cpu_slowdown=args.slowdown,
        power=PowerModel(idle_mw=args.idle_mw, active_mw=args.active_mw, seed=args.seed),
    )
    with _stop_on_signals() as stop:
        _simulate(mcu, args, stop)
    return 0


def _simulate(mcu: Any, args: argparse.Namespace, stop: threading.Event) -> None:
    import socket

    from ..firmware_bridge.simulator import FdLink, SocketLink, open_pty, serve

    baud = args.baud or None
    if args.pty:
        master, slave, path = open_pty()
        print(f"pty: {path}", flush=True)
        try:
            serve(mcu, FdLink(master), stop, baud=baud)
        finally:
            os.close(master)
            os.close(slave)
    elif args.tcp is not None:
        with socket.create_server(("127.0.0.1", args.tcp)) as server:
            server.settimeout(0.2)
            print(f"listening: socket://127.0.0.1:{server.getsockname()[1]}", flush=True)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    try:
                        serve(mcu, SocketLink(conn), stop, baud=baud)
                    except OSError:
                        pass  # the host went away; wait for the next connection
    else:
        serve(mcu, _PyserialLink(args.port, args.baud or 115200), stop, baud=baud)


class _PyserialLink:
    """A pyserial port as the simulator's byte link."""

    def __init__(self, url: str, baud: int) -> None:
        import serial

        from ..errors import SerialPortError

        try:
            self.port: Any = serial.serial_for_url(url, baudrate=baud, timeout=0.05)
        except (serial.SerialException, ValueError) as e:
            raise SerialPortError(f"cannot open {url!r}: {e}") from e

    def read(self, timeout_s: float) -> bytes:
        return bytes(self.port.read(max(1, self.port.in_waiting)))

    def write(self, data: bytes) -> None:
        self.port.write(data)


def run_bridge(args: argparse.Namespace) -> int:
    import numpy as np

    from ..arrays import load_array
    from ..firmware_bridge.gateway import Gateway
    from .device import finish
    from .summary import FallbackSummary

    # Checked before the MCU and the broker are touched.
    x = load_array(args.input, what="--input") if args.input is not None else None
    partition = args.partition
    rule = exit_rule(args)
    if args.broker is None and (args.telemetry or args.homeassistant is not None):
        raise InputError("--telemetry and --homeassistant need --broker")
    if args.homeassistant is not None and args.telemetry is False:
        raise InputError("--homeassistant points Home Assistant at the telemetry: drop --no-telemetry")
    with Gateway(
        args.bundle, args.port, device_id=args.id, broker_url=args.broker, baud=args.baud, timeout_s=args.timeout_s,
        retries=args.retries, telemetry_period_s=args.telemetry_period_s, prefix=args.prefix,
        telemetry=args.telemetry is not False, homeassistant=homeassistant_of(args),
    ) as gateway:
        info = gateway.model_info
        caps = gateway.client.capabilities
        assert caps is not None
        print(f"MCU {caps.board} ({caps.firmware}): segment 0 loaded, arena {info.arena_used_bytes} of "
              f"{caps.arena_bytes} bytes", file=sys.stderr, flush=True)
        if partition is None:
            partition = 1 if args.broker else gateway.bundle.manifest.num_segments
        if x is None:
            # Telemetry only: the publisher thread reads the MCU's power every period.
            deadline = time.monotonic() + args.duration_s if args.duration_s else None
            with _stop_on_signals() as stop:
                while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    stop.wait(0.2)
            return 0
        sample_shape = gateway.bundle.manifest.input.shape[1:]
        samples = x[np.newaxis] if x.shape == sample_shape else x
        summary = FallbackSummary()
        for result in gateway.run_many(samples, exit=args.exit, partition=partition, deadline_ms=args.deadline_ms,
                                       rule=rule):
            summary.add(result)
            mcu_us = gateway.runner.last_mcu_latency_us
            if args.json:
                doc = result.to_dict()
                doc["mcu_latency_us"] = mcu_us
                doc["mcu_round_trip_ms"] = round(gateway.runner.last_round_trip_ms or 0.0, 3)
                import json

                print(json.dumps(doc, separators=(",", ":")), flush=True)
            else:
                print(f"{result.request_id}  exit {result.exit}  class {result.top1_class} ({result.top1_score:.3f})  "
                      f"total {result.total_ms:.2f} ms (MCU {mcu_us} µs on chip)  on {result.ran_on}"
                      + (" (fell back)" if result.fell_back else ""), flush=True)
    return finish(summary, args.broker is not None, gateway.bundle.bundle_id)
