"""FleetMetrics as pure logic: messages in, Prometheus text out (no broker, a fake clock)."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tflite_edge.errors import InputError  # noqa: E402
from tflite_edge.telemetry.prometheus import FleetMetrics, parse_listen_address, serve_metrics  # noqa: E402
from tflite_edge.telemetry.schema import (  # noqa: E402
    LatencyStats,
    LinkStats,
    PowerStats,
    RequestStats,
    StatusMessage,
    SystemStats,
    TelemetryMessage,
)
from tflite_edge.telemetry.subscriber import Received  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def telemetry(device: str, *, count: int = 10, estimated: bool = True, policy_version: int | None = None,
              window_s: float = 5.0) -> Received:
    message = TelemetryMessage(
        device_id=device, seq=1, time_unix_s=1.7e9, window_s=window_s,
        requests=RequestStats(count, 7, 1, 1, {"exit_1": 6, "final": 3}, {"1": 5, "3": 4}),
        latency=LatencyStats(12.0, 40.0, 51.0, 4.0, 6.5, 1.25),
        link=LinkStats(9.5, 7.0, 0.4, 8.0, 75264, 2, 1, 0.1, None, None),
        power=PowerStats(3250.0, 5080.0, 640.0, "model:wifi" if estimated else "hwmon:ina219", estimated, 41.5),
        system=SystemStats(37.5, None, 41.0),
        policy_version=policy_version,
    )
    return Received(f"tflite-edge/v1/dev/{device}/telemetry", 0.0, message, {})


def status(device: str, state: str) -> Received:
    message = StatusMessage(device, state, 1.7e9, None if state == "online" else "shutdown", "tflite-edge 0.1.0")
    return Received(f"tflite-edge/v1/dev/{device}/status", 0.0, message, {})


def scrape(metrics: FleetMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition text parsed back: {(sample name, sorted labels): value}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return samples[(name, tuple(sorted(labels.items())))]


def test_series_in_base_units_with_device_labels() -> None:
    metrics = FleetMetrics(clock=Clock())
    metrics.update(status("pi-1", "online"))
    metrics.update(telemetry("pi-1", policy_version=4))
    metrics.update(telemetry("pi-1", estimated=False))
    s = scrape(metrics)
    assert value(s, "tflite_edge_device_up", device="pi-1") == 1
    assert value(s, "tflite_edge_requests_total", device="pi-1") == 20  # counters add the windows up
    assert value(s, "tflite_edge_requests_by_exit_total", device="pi-1", exit="exit_1") == 12
    assert value(s, "tflite_edge_requests_by_partition_total", device="pi-1", partition="3") == 8
    assert value(s, "tflite_edge_deadline_met_total", device="pi-1") == 14
    assert value(s, "tflite_edge_deadline_missed_total", device="pi-1") == 2
    assert value(s, "tflite_edge_request_latency_seconds", device="pi-1", quantile="0.95") == pytest.approx(0.040)
    assert value(s, "tflite_edge_uplink_throughput_bytes_per_second", device="pi-1") == pytest.approx(1e6)
    assert value(s, "tflite_edge_uplink_sent_bytes_total", device="pi-1") == 2 * 75264
    assert value(s, "tflite_edge_edge_rtt_seconds", device="pi-1") == pytest.approx(0.0095)
    # The latest window is measured: the label says so.
    assert value(s, "tflite_edge_power_watts", device="pi-1", kind="measured", source="hwmon:ina219") == 3.25
    assert value(s, "tflite_edge_energy_per_inference_joules", device="pi-1", kind="measured") == 0.0415
    assert value(s, "tflite_edge_cpu_load_ratio", device="pi-1") == 0.375
    # Not measured (no temperature) and not deciding with a policy in the latest window: no series at all.
    assert not [k for k in s if k[0] in ("tflite_edge_cpu_temperature_celsius", "tflite_edge_policy_version")]


def test_an_offline_device_is_down_and_its_series_disappear() -> None:
    clock = Clock()
    metrics = FleetMetrics(clock=clock)
    metrics.update(telemetry("pi-1"))
    metrics.update(telemetry("pi-2"))
    metrics.update(status("pi-1", "offline"))
    s = scrape(metrics)
    assert value(s, "tflite_edge_device_up", device="pi-1") == 0
    assert value(s, "tflite_edge_device_up", device="pi-2") == 1
    assert not [k for k in s if ("device", "pi-1") in k[1] and k[0] != "tflite_edge_device_up"]
    # Silent for three windows (without a last will reaching anyone): down as well.
    clock.now += 16.0
    s = scrape(metrics)
    assert value(s, "tflite_edge_device_up", device="pi-2") == 0
    assert ("tflite_edge_requests_total", (("device", "pi-2"),)) not in s
    # Back: counting starts again (a counter reset for Prometheus), not from the frozen total.
    metrics.update(status("pi-2", "online"))
    metrics.update(telemetry("pi-2", count=3))
    assert value(scrape(metrics), "tflite_edge_requests_total", device="pi-2") == 3


def test_edge_workers_from_presence_and_load_messages() -> None:
    from tflite_edge.edge.load import EdgeLoad

    clock = Clock()
    metrics = FleetMetrics(clock=clock)
    metrics.update_edge("tflite-edge/v1/edge/w1", json.dumps({"bundles": ["b1", "b2"], "group": "g"}).encode())
    metrics.update_edge("tflite-edge/v1/edge/w1/load", EdgeLoad(0.42, 0.3, 1.2, 17, 2.0).to_message("w1", "g"))
    metrics.update_edge("tflite-edge/v1/edge/w3", b"not json")  # ignored, logged
    metrics.update_edge("tflite-edge/v1/edge/w3/load", b"{}")  # ignored, logged
    s = scrape(metrics)
    assert value(s, "tflite_edge_edge_worker_up", worker="w1", group="g") == 1
    assert value(s, "tflite_edge_edge_worker_bundles", worker="w1", group="g") == 2
    assert value(s, "tflite_edge_edge_worker_load_ratio", worker="w1", group="g") == 0.42
    assert value(s, "tflite_edge_edge_worker_busy_ratio", worker="w1", group="g") == 0.3
    assert value(s, "tflite_edge_edge_worker_requests_per_second", worker="w1", group="g") == 8.5
    assert not [k for k in s if ("worker", "w3") in k[1]]
    clock.now += 16.0  # no load report for longer than three windows (and 15 s): stale
    s = scrape(metrics)
    assert ("tflite_edge_edge_worker_load_ratio", (("group", "g"), ("worker", "w1"))) not in s
    assert value(s, "tflite_edge_edge_worker_up", worker="w1", group="g") == 1
    metrics.update_edge("tflite-edge/v1/edge/w1", b"")  # the worker left (its presence was cleared)
    assert not [k for k in scrape(metrics) if ("worker", "w1") in k[1]]


def test_listen_address_and_endpoint() -> None:
    assert parse_listen_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen_address(":9464") == ("0.0.0.0", 9464)
    for bad in ("9464", "host:", "host:http", "host:70000"):
        with pytest.raises(InputError, match="HOST:PORT"):
            parse_listen_address(bad)
    metrics = FleetMetrics(clock=Clock())
    metrics.update(telemetry("pi-1"))
    server = serve_metrics(metrics, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    assert 'tflite_edge_device_up{device="pi-1"} 1.0' in text
    assert "python_gc" not in text  # its own registry: only the fleet's series
