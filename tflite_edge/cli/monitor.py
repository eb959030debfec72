"""tflite-edge monitor: the demo's bundle running live, watched by a real Prometheus."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, TelemetryError

DESCRIPTION = """\
After `make demo`: run the demo's bundle as a small live fleet and watch it in Prometheus.
Starts a private Mosquitto (or uses --broker), an edge worker, two devices replaying the
demo's validation samples (demo-pi-1 decides with the demo's TF-Agents policy when
DEMO_DIR/policy exists, demo-pi-2 cycles through the partitions), the Prometheus exporter
(`tflite-edge telemetry --prometheus`) and a Prometheus server scraping it every 5 s, with
its data in DEMO_DIR/prometheus. Prints the addresses and runs until Ctrl-C.
Grafana: import docs/grafana/tflite-edge.json with this Prometheus as data source.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "monitor", help="run the demo's bundle as a live fleet, with the Prometheus exporter and a Prometheus server",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  make demo && tflite-edge monitor out/demo      # then open http://127.0.0.1:9091",
    )
    parser.add_argument("demo_dir", nargs="?", default="out/demo", metavar="DEMO_DIR",
                        help="the output folder of `tflite-edge demo` (default: out/demo)")
    parser.add_argument("--broker", metavar="URL", help="use this MQTT 5 broker instead of a private Mosquitto")
    parser.add_argument("--metrics", default="127.0.0.1:9464", metavar="HOST:PORT",
                        help="where the exporter serves /metrics (default: 127.0.0.1:9464)")
    parser.add_argument("--prometheus-port", type=int, default=9091, metavar="PORT",
                        help="loopback port of the Prometheus server (default: 9091, beside a system Prometheus on "
                             "9090); 0: do not start one")
    parser.add_argument("--interval-ms", type=float, default=50.0, metavar="MS",
                        help="time between a device's requests (default: 50)")
    parser.add_argument("--deadline-ms", type=float, default=200.0, metavar="MS", help="deadline (default: 200)")
    parser.add_argument("--duration-s", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    parser.set_defaults(func=run)


def _device_loop(runtime: Any, samples: Any, stop: threading.Event, step: Any, interval_ms: float) -> None:
    i = 0
    while not stop.is_set():
        step(samples[i % len(samples)], i)
        i += 1
        stop.wait(interval_ms / 1e3)


def run(args: argparse.Namespace) -> int:
    import contextlib

    import numpy as np

    from ..bundle import load_bundle
    from ..device import DeviceRuntime, Plan
    from ..device.policy_loop import attached_telemetry, policy_session
    from ..edge import EdgeWorker
    from ..telemetry.prometheus import FleetMetrics, parse_listen_address, serve_metrics
    from ..telemetry.prometheus_server import PrometheusServer
    from ..telemetry.subscriber import TelemetrySubscriber
    from ..transport.broker import MosquittoBroker

    demo = Path(args.demo_dir)
    if not (demo / "bundle").is_dir() or not (demo / "validation.npz").is_file():
        raise InputError(f"{demo} has no bundle/ and validation.npz: run `make demo` (or `tflite-edge demo --out "
                         f"{demo}`) first")
    if args.interval_ms < 0 or args.deadline_ms <= 0 or (args.duration_s is not None and args.duration_s <= 0):
        raise InputError("--interval-ms must be >= 0, --deadline-ms and --duration-s positive")
    host, port = parse_listen_address(args.metrics)
    bundle = load_bundle(demo / "bundle")
    with np.load(demo / "validation.npz", allow_pickle=False) as data:
        samples = np.asarray(data["x"], np.float32)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with contextlib.ExitStack() as stack:
        broker_url = args.broker or stack.enter_context(MosquittoBroker()).url
        metrics = FleetMetrics()
        server = serve_metrics(metrics, host, port)
        stack.callback(server.close)
        subscriber = TelemetrySubscriber(broker_url, metrics.update, experience=True, on_edge=metrics.update_edge)
        stack.enter_context(subscriber)
        stack.enter_context(EdgeWorker(broker_url, [bundle]))
        prometheus = None
        if args.prometheus_port:
            target = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{server.port}"
            prometheus = stack.enter_context(PrometheusServer(demo / "prometheus", [target],
                                                              port=args.prometheus_port))

        # demo-pi-1: the demo's policy (the loop of `tflite-edge device --policy`), else partition 1.
        first = stack.enter_context(DeviceRuntime(bundle, broker_url=broker_url, device_id="demo-pi-1"))
        runner = None
        if (demo / "policy").is_dir():
            runner = stack.enter_context(policy_session(first, broker_url=broker_url, deadline_ms=args.deadline_ms,
                                                        policy_dir=str(demo / "policy")))
        else:
            stack.enter_context(attached_telemetry(first, broker_url, prefix="tflite-edge/v1"))
        # demo-pi-2: every partition in turn, so each shows in the partition panels.
        second = stack.enter_context(DeviceRuntime(bundle, broker_url=broker_url, device_id="demo-pi-2"))
        stack.enter_context(attached_telemetry(second, broker_url, prefix="tflite-edge/v1"))
        segments = bundle.manifest.num_segments

        def step_1(x: Any, i: int) -> None:
            if runner is not None:
                runner.run(x)
            else:
                first.run(x, Plan(partition=1, deadline_ms=args.deadline_ms))

        def step_2(x: Any, i: int) -> None:
            second.run(x, Plan(partition=i % (segments + 1), deadline_ms=args.deadline_ms))

        # Unwound first: the device loops stop before their runtimes close.
        def join_all() -> None:
            for thread in threads:
                thread.join(timeout=30)

        stack.callback(join_all)
        stack.callback(stop.set)
        for runtime, step in ((first, step_1), (second, step_2)):
            thread = threading.Thread(target=_device_loop, args=(runtime, samples, stop, step, args.interval_ms),
                                      name=f"monitor-{runtime.device_id}", daemon=True)
            thread.start()
            threads.append(thread)

        print(f"broker: {broker_url}", file=sys.stderr)
        print(f"metrics: {server.url}", file=sys.stderr)
        if prometheus is not None:
            print(f"Prometheus: {prometheus.url}  (try: sum(rate(tflite_edge_requests_total[1m])) by (device))",
                  file=sys.stderr)
        print("Grafana: import docs/grafana/tflite-edge.json; Ctrl-C stops", file=sys.stderr, flush=True)
        deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
        try:
            while deadline is None or time.monotonic() < deadline:
                if not all(t.is_alive() for t in threads):
                    raise TelemetryError("a device loop stopped; see the log above")
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0
