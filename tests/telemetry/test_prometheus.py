"""The Prometheus exporter against a real Prometheus server, a real broker, edge and device.

Prometheus (the Debian package, installed by `make setup`) is started on a free loopback
port by ``PrometheusServer`` (as `tflite-edge monitor` starts it), scraping
`tflite-edge telemetry --prometheus` every second while `tflite-edge device` runs a learned
policy against an edge worker. The test reads the series back through Prometheus's HTTP
API, runs every panel query of the Grafana dashboard, and stops the device to see it
reported down with its series gone stale.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tflite_edge.telemetry.prometheus_server import PrometheusServer, instant_query

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "grafana" / "tflite-edge.json"
DEVICE = "prom-1"

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus is not installed (make setup installs the Debian package)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Process:
    """A CLI command in a subprocess whose stderr lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "tflite_edge", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for_line(self, prefix: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no line starting {prefix!r}: {self.lines[-20:]}")
                self._cond.wait(min(remaining, 0.5))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return int(self.proc.returncode)


@pytest.fixture
def exporter(broker) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`tflite-edge telemetry --prometheus` on a free port; yields HOST:PORT of its /metrics."""
    process = Process("telemetry", "--broker", broker.url, "--prometheus", "127.0.0.1:0")
    try:
        line = process.wait_for_line("serving Prometheus metrics on ")
        yield line.split("http://", 1)[1].split("/", 1)[0]
    finally:
        process.stop()


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard panel, with the dashboard's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "15s").replace("$device", DEVICE)
            queries.append((panel["title"], expr))
    return queries


@pytest.mark.slow
def test_prometheus_scrapes_a_device_running_a_policy(  # type: ignore[no-untyped-def]
    broker, exporter, digits_bundle, digits_split, trained_policy, tmp_path
) -> None:
    from tflite_edge.edge import EdgeWorker

    _, _, x_val, _ = digits_split
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.concatenate([x_val] * 6).astype(np.float32))  # far more than the test needs
    prometheus = PrometheusServer(tmp_path / "prometheus", [exporter], port=free_port(), interval_s=1.0)
    device = None
    try:
        with EdgeWorker(broker.url, [digits_bundle]):
            # Telemetry is on by default: no --telemetry flag.
            device = Process("device", "--broker", broker.url, "--bundle", str(digits_bundle.path), "--id", DEVICE,
                             "--input", str(inputs), "--deadline-ms", "200", "--policy", str(trained_policy),
                             "--telemetry-period-s", "0.5", "--interval-ms", "10")
            wait_until(lambda: prometheus.query(f'tflite_edge_device_up{{device="{DEVICE}"}} == 1'),
                       "the device to be up in Prometheus")
            for name in ("requests_total", "deadline_met_total", "requests_by_exit_total",
                         "requests_by_partition_total", "request_latency_seconds", "uplink_throughput_bytes_per_second",
                         "edge_rtt_seconds", "power_watts", "energy_per_inference_joules", "policy_version"):
                wait_until(lambda name=name: prometheus.query(f'tflite_edge_{name}{{device="{DEVICE}"}}'),
                           f"tflite_edge_{name} of {DEVICE}")
            power = prometheus.query(f'tflite_edge_power_watts{{device="{DEVICE}"}}')
            assert {series["metric"]["kind"] for series in power} <= {"measured", "estimated"}
            assert prometheus.query(f'tflite_edge_policy_version{{device="{DEVICE}"}} == 0')  # a local policy
            assert prometheus.query('tflite_edge_edge_worker_up == 1')
            quantiles = {s["metric"]["quantile"] for s in
                         prometheus.query(f'tflite_edge_request_latency_seconds{{device="{DEVICE}"}}')}
            assert {"0.5", "0.95"} <= quantiles
            # Every panel of the Grafana dashboard has data.
            for title, expr in panel_queries():
                wait_until(lambda expr=expr: prometheus.query(expr), f"data for the panel {title!r}: {expr}")
            # Stopped: shown as down, and its other series go stale instead of freezing.
            assert device.stop() == 128 + signal.SIGTERM
            wait_until(lambda: prometheus.query(f'tflite_edge_device_up{{device="{DEVICE}"}} == 0'),
                       "the device to be down in Prometheus")
            wait_until(lambda: not prometheus.query(f'tflite_edge_requests_total{{device="{DEVICE}"}}'),
                       "the stopped device's series to go stale")
            assert not prometheus.query(f'tflite_edge_power_watts{{device="{DEVICE}"}}')
    finally:
        if device is not None:
            device.stop()
        prometheus.close()


@pytest.mark.slow
def test_monitor_puts_the_demo_into_prometheus(digits_bundle, digits_split, trained_policy,  # type: ignore[no-untyped-def]
                                               tmp_path) -> None:
    """`make demo` then `tflite-edge monitor out/demo`: metrics in a real Prometheus."""
    demo = tmp_path / "demo"
    shutil.copytree(digits_bundle.path, demo / "bundle")
    shutil.copytree(trained_policy, demo / "policy")  # as `make demo` leaves it
    np.savez(demo / "validation.npz", x=digits_split[2][:50], y=digits_split[3][:50])
    port = free_port()
    monitor = Process("monitor", str(demo), "--metrics", "127.0.0.1:0", "--prometheus-port", str(port),
                      "--interval-ms", "20")
    try:
        monitor.wait_for_line("Grafana: ")
        url = f"http://127.0.0.1:{port}"  # the Prometheus the monitor started
        wait_until(lambda: instant_query(url, "sum(tflite_edge_device_up) == 2"), "two devices up in Prometheus")
        wait_until(lambda: len(instant_query(url, "tflite_edge_requests_by_partition_total")) >= 3,
                   "every partition of demo-pi-2 in Prometheus")
        wait_until(lambda: instant_query(url, "tflite_edge_edge_worker_up == 1"), "the edge worker in Prometheus")
        wait_until(lambda: instant_query(url, 'tflite_edge_policy_version{device="demo-pi-1"} == 0'),
                   "demo-pi-1 deciding with the demo's policy")
    finally:
        assert monitor.stop() in (0, 128 + signal.SIGTERM), monitor.lines[-20:]
    assert (demo / "prometheus" / "prometheus.yml").is_file()
