"""A Prometheus exporter for the fleet: MQTT telemetry in, ``/metrics`` out.

``FleetMetrics`` keeps, per device, what the telemetry, status and experience messages
said, and per edge worker what its retained presence message says; it is a
``prometheus_client`` collector, so every scrape renders the state at that moment. Series
follow Prometheus conventions: base units (seconds, bytes, watts, joules, ratios),
``_total`` for counters, one ``device`` label (and ``exit``, ``partition``, ``quantile``,
``kind``...).

A device whose status says ``offline`` (its last will included), or that sent no telemetry
for three of its windows (at least ``min_stale_s``), is shown as
``tflite_edge_device_up 0`` and every other series of it disappears from the next scrape,
so Prometheus marks them stale instead of repeating the last value; its counters start
again from zero when it comes back (Prometheus reads that as a counter reset).

``serve_metrics`` starts the HTTP endpoint on its own ``CollectorRegistry``.
``prometheus_client`` is imported here only: devices never need it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, TelemetryError
from .schema import ExperienceBatch, StatusMessage, TelemetryMessage
from .subscriber import Received

__all__ = ["FleetMetrics", "MetricsServer", "parse_listen_address", "serve_metrics"]

log = logging.getLogger(__name__)

NAMESPACE = "tflite_edge"


@dataclass
class _Device:
    online: bool = False
    last_seen_s: float = 0.0  # monotonic time of the last telemetry message
    window_s: float = 5.0
    last: TelemetryMessage | None = None
    software: str = ""
    requests: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    partitions: Counter[str] = field(default_factory=Counter)
    edge_load: float | None = None  # the edge load the device's policy saw last

    def reset(self) -> None:
        self.last = None
        self.requests.clear()
        self.exits.clear()
        self.partitions.clear()
        self.edge_load = None


@dataclass(frozen=True)
class _Worker:
    group: str
    bundles: int


@dataclass(frozen=True)
class _Load:
    group: str
    figures: dict[str, float]  # load, busy_share, compute_ratio, requests_per_s
    window_s: float
    received_s: float


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300
    return float(value) if ok else None


def _worker_from(payload: bytes) -> _Worker | None:
    """A presence message's content; None when it is not a presence document."""
    from ..transport.presence import MAX_PRESENCE_BYTES

    if len(payload) > MAX_PRESENCE_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("bundles"), list):
        return None
    group = doc.get("group")
    return _Worker(group if isinstance(group, str) else "", len(doc["bundles"]))


def _load_from(payload: bytes, received_s: float) -> _Load | None:
    """A worker's load report (``edge.load``); None when it is not one."""
    from ..edge.load import EDGE_LOAD_SCHEMA

    if len(payload) > 64 * 1024:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != EDGE_LOAD_SCHEMA:
        return None
    window_s = _number(doc.get("window_s"))
    figures = {k: _number(doc.get(k)) for k in ("load", "busy_share", "compute_ratio")}
    requests = _number(doc.get("requests"))
    if window_s and requests is not None:
        figures["requests_per_s"] = requests / window_s
    group = doc.get("group")
    return _Load(group if isinstance(group, str) else "", {k: v for k, v in figures.items() if v is not None},
                 window_s or 2.0, received_s)


class FleetMetrics:
    """The fleet's state from MQTT messages, rendered as Prometheus metrics at each scrape.

    ``update`` takes the subscriber's ``Received`` messages and ``update_edge`` the edge
    presence messages (both thread-safe); ``collect`` is the ``prometheus_client`` collector
    method. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(self, *, min_stale_s: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_stale_s = min_stale_s
        self.clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._workers: dict[str, _Worker] = {}
        self._loads: dict[str, _Load] = {}

    # ------------------------------------------------------------ input

    def update(self, received: Received) -> None:
        message = received.message
        with self._lock:
            device = self._devices.setdefault(message.device_id, _Device())
            if isinstance(message, StatusMessage):
                device.software = message.software
                if message.state == "online":
                    if not self._fresh(device):
                        device.reset()  # back after an outage: its counters start again
                    device.online = True
                    device.last_seen_s = self.clock()  # telemetry may take a window to come
                else:
                    device.online = False
                    device.reset()
            elif isinstance(message, TelemetryMessage):
                if not self._fresh(device):
                    device.reset()  # back after a silence: its counters start again
                device.online = True
                device.last_seen_s = self.clock()
                device.window_s = message.window_s or device.window_s
                device.last = message
                r = message.requests
                device.requests.update({"count": r.count, "failed": r.failed, "met": r.deadline_met,
                                        "missed": r.deadline_missed, "bytes": message.link.bytes_sent})
                device.exits.update(r.exits)
                device.partitions.update(r.partitions)
            elif isinstance(message, ExperienceBatch) and message.records:
                load = message.records[-1].context.get("edge_load")
                device.edge_load = None if load is None else float(load)

    def update_edge(self, topic: str, payload: bytes) -> None:
        """One edge message: a retained presence on ``{prefix}/edge/{worker}`` (empty: the worker
        left) or a load report on ``{prefix}/edge/{worker}/load``."""
        levels = topic.split("/")
        with self._lock:
            if levels[-1] == "load" and len(levels) >= 2:
                load = _load_from(payload, self.clock())
                if load is None:
                    log.warning("not an edge load report on %s: ignored", topic)
                else:
                    self._loads[levels[-2]] = load
                return
            worker = levels[-1]
            if not payload:
                self._workers.pop(worker, None)
                self._loads.pop(worker, None)
                return
            parsed = _worker_from(payload)
            if parsed is None:
                log.warning("not an edge presence message on %s: ignored", topic)
                return
            self._workers[worker] = parsed

    def _fresh(self, device: _Device) -> bool:
        stale_s = max(3.0 * device.window_s, self.min_stale_s)
        return device.online and self.clock() - device.last_seen_s <= stale_s

    # ------------------------------------------------------------ output (prometheus_client collector)

    def describe(self) -> list[Any]:
        return []  # the series depend on the fleet: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        def gauge(name: str, doc: str, labels: list[str]) -> Any:
            return GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=["device", *labels])

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return CounterMetricFamily(f"{NAMESPACE}_{name}", doc, labels=["device", *labels])

        up = gauge("device_up", "1 while the device is online and its telemetry is current, else 0", [])
        info = gauge("device_info", "the software a device runs (value 1)", ["software"])
        seen = gauge("device_last_telemetry_timestamp_seconds", "wall-clock time of the last telemetry window", [])
        requests = counter("requests", "requests finished, failed ones included", [])
        failed = counter("requests_failed", "requests that failed", [])
        by_exit = counter("requests_by_exit", "successful requests per answering exit", ["exit"])
        by_partition = counter("requests_by_partition",
                               "successful requests per partition (segments run on the device)", ["partition"])
        met = counter("deadline_met", "successful requests that met their deadline", [])
        missed = counter("deadline_missed", "successful requests that missed their deadline", [])
        latency = gauge("request_latency_seconds",
                        "end-to-end latency in the last window (quantile 1 is the maximum)", ["quantile"])
        parts = gauge("request_part_seconds", "mean time per request in the last window, by part", ["part"])
        uplink = gauge("uplink_throughput_bytes_per_second", "estimated uplink throughput to the edge", [])
        sent = counter("uplink_sent_bytes", "activation bytes uploaded to the edge", [])
        rtt = gauge("edge_rtt_seconds", "smoothed request-to-reply time to the edge", [])
        rtt_min = gauge("edge_rtt_min_seconds", "minimum recent request-to-reply time to the edge", [])
        broker_rtt = gauge("broker_rtt_seconds", "telemetry publish-to-acknowledgement time", [])
        timeouts = counter("link_timeouts", "offloads that got no reply in time, since the device started", [])
        errors = counter("link_errors", "offloads that failed, since the device started", [])
        loss = gauge("link_loss_ratio", "share of the last offloads that got no answer", [])
        power = gauge("power_watts", "device power (kind: measured by a sensor, or estimated by the model)",
                      ["kind", "source"])
        energy = gauge("energy_per_inference_joules", "mean device energy per request in the last window",
                       ["kind"])
        cpu = gauge("cpu_load_ratio", "CPU load over the last window (0..1)", [])
        temperature = gauge("cpu_temperature_celsius", "CPU temperature", [])
        memory = gauge("memory_used_ratio", "memory in use (0..1)", [])
        policy = gauge("policy_version", "version of the learned policy deciding on the device", [])
        edge_load = gauge("policy_edge_load_ratio", "the edge load the device's policy decided on last", [])
        device_families = [up, info, seen, requests, failed, by_exit, by_partition, met, missed, latency, parts,
                           uplink, sent, rtt, rtt_min, broker_rtt, timeouts, errors, loss, power, energy, cpu,
                           temperature, memory, policy, edge_load]
        workers = GaugeMetricFamily(f"{NAMESPACE}_edge_worker_up", "1 for every edge worker online",
                                    labels=["worker", "group"])
        worker_bundles = GaugeMetricFamily(f"{NAMESPACE}_edge_worker_bundles", "bundles an edge worker serves",
                                           labels=["worker", "group"])
        worker_figures = {
            "load": GaugeMetricFamily(f"{NAMESPACE}_edge_worker_load_ratio",
                                      "the load an edge worker reports (0..1, what the policies decide on)",
                                      labels=["worker", "group"]),
            "busy_share": GaugeMetricFamily(f"{NAMESPACE}_edge_worker_busy_ratio",
                                            "share of its last window an edge worker spent answering",
                                            labels=["worker", "group"]),
            "compute_ratio": GaugeMetricFamily(f"{NAMESPACE}_edge_worker_compute_ratio",
                                               "an edge worker's compute time against the fastest it has seen",
                                               labels=["worker", "group"]),
            "requests_per_s": GaugeMetricFamily(f"{NAMESPACE}_edge_worker_requests_per_second",
                                                "requests an edge worker answered per second in its last window",
                                                labels=["worker", "group"]),
        }

        def put(family: Any, device_id: str, labels: list[str], value: float | None, scale: float = 1.0) -> None:
            if value is not None:
                family.add_metric([device_id, *labels], value * scale)

        with self._lock:
            for device_id, d in sorted(self._devices.items()):
                fresh = self._fresh(d)
                up.add_metric([device_id], 1.0 if fresh else 0.0)
                if not fresh:
                    continue  # every other series of a down device goes stale
                if d.software:
                    info.add_metric([device_id, d.software], 1.0)
                put(edge_load, device_id, [], d.edge_load)
                requests.add_metric([device_id], d.requests["count"])
                failed.add_metric([device_id], d.requests["failed"])
                met.add_metric([device_id], d.requests["met"])
                missed.add_metric([device_id], d.requests["missed"])
                sent.add_metric([device_id], d.requests["bytes"])
                for name, n in sorted(d.exits.items()):
                    by_exit.add_metric([device_id, name], n)
                for name, n in sorted(d.partitions.items()):
                    by_partition.add_metric([device_id, name], n)
                t = d.last
                if t is None:
                    continue
                seen.add_metric([device_id], t.time_unix_s)
                for quantile, value in (("0.5", t.latency.total_p50_ms), ("0.95", t.latency.total_p95_ms),
                                        ("1", t.latency.total_max_ms)):
                    put(latency, device_id, [quantile], value, 1e-3)
                for part, value in (("device", t.latency.device_compute_mean_ms),
                                    ("transfer", t.latency.transfer_mean_ms),
                                    ("edge", t.latency.edge_compute_mean_ms)):
                    put(parts, device_id, [part], value, 1e-3)
                put(uplink, device_id, [], t.link.uplink_mbps, 1e6 / 8)
                put(rtt, device_id, [], t.link.rtt_ms, 1e-3)
                put(rtt_min, device_id, [], t.link.rtt_min_ms, 1e-3)
                put(broker_rtt, device_id, [], t.link.broker_rtt_ms, 1e-3)
                timeouts.add_metric([device_id], t.link.timeouts)
                errors.add_metric([device_id], t.link.errors)
                loss.add_metric([device_id], t.link.loss_ratio)
                kind = "estimated" if t.power.estimated else "measured"
                put(power, device_id, [kind, t.power.source], t.power.power_mw, 1e-3)
                put(energy, device_id, [kind], t.power.energy_per_inference_mj, 1e-3)
                put(cpu, device_id, [], t.system.cpu_load_percent, 1e-2)
                put(temperature, device_id, [], t.system.cpu_temperature_c)
                put(memory, device_id, [], t.system.memory_used_percent, 1e-2)
                put(policy, device_id, [], None if t.policy_version is None else float(t.policy_version))
            for worker, w in sorted(self._workers.items()):
                workers.add_metric([worker, w.group], 1.0)
                worker_bundles.add_metric([worker, w.group], w.bundles)
            now = self.clock()
            for worker, report in sorted(self._loads.items()):
                if now - report.received_s > max(3.0 * report.window_s, self.min_stale_s):
                    continue  # a worker that stopped reporting: its load goes stale
                for name, value in report.figures.items():
                    worker_figures[name].add_metric([worker, report.group], value)
        yield from device_families
        yield from (workers, worker_bundles, *worker_figures.values())


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, all interfaces) for the metrics endpoint; ``InputError`` otherwise."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InputError(f"--prometheus {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464 (or :9464 for all "
                         "interfaces)")
    return host or "0.0.0.0", int(port_text)


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` stops it."""

    host: str
    port: int
    metrics: FleetMetrics
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(metrics: FleetMetrics, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` on http://HOST:PORT/metrics from a registry of its own (port 0: any free port)."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as e:
        raise TelemetryError("the Prometheus exporter needs prometheus-client: pip install "
                             "'tflite-edge[prometheus]'") from e
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)  # type: ignore[arg-type]
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise TelemetryError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
    return MetricsServer(host, server.server_port, metrics, server, thread)
