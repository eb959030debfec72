"""Faults against a real Mosquitto on loopback: a broker outage in the middle of a stream of
requests, a burst and an overload of 100 simulated devices against one edge process, and
QoS 1 experience records across a broker restart.

Each test prints one ``FIGURES`` line (run with ``-s`` to see it); docs/reliability.md
records them. (Killing an edge worker mid-stream and a single-request outage are covered
in tests/coinference/test_end_to_end.py, telemetry windows across a broker restart in
tests/telemetry/test_publisher.py, serial re-plugging in tests/firmware/.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import psutil
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.transport.broker import MosquittoBroker
from tflite_edge.transport.mqtt import connect_and_start, make_client
from tflite_edge.transport.protocol import RequestHeader, Topics, request_properties, user_properties
from tflite_edge.transport.wire import encode_tensor

pytestmark = pytest.mark.slow

TOPICS = Topics()


def test_broker_outage_mid_stream(broker: MosquittoBroker, digits_bundle: Bundle, digits_split: Any) -> None:
    """Requests keep flowing while the broker is down for 1.5 s: each is answered (by the edge,
    or locally) without waiting beyond its deadline; offloading and telemetry resume."""
    from tflite_edge.device import DeviceRuntime, InferenceResult
    from tflite_edge.edge import EdgeWorker
    from tflite_edge.telemetry.publisher import TelemetryPublisher

    samples = digits_split[2][:8].astype(np.float32)
    deadline_ms = 200.0
    results: list[tuple[float, InferenceResult]] = []
    telemetry_seen: list[float] = []
    listener = make_client(broker.url, "telemetry-listener", min_reconnect_delay_s=1, max_reconnect_delay_s=2)
    listener.on_connect = lambda c, *a: c.subscribe(TOPICS.device("pi-1", "telemetry"))
    listener.on_message = lambda c, u, m: telemetry_seen.append(time.monotonic())
    connect_and_start(listener)
    try:
        with EdgeWorker(broker.url, [digits_bundle], group="g"), \
                DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="pi-1") as device:
            publisher = TelemetryPublisher("pi-1", broker_url=broker.url, period_s=0.2).attach(device).start()
            try:
                stop_at = restarted_at = None
                start = time.monotonic()
                n = 0
                while time.monotonic() - start < 12.0:
                    now = time.monotonic()
                    if stop_at is None and now - start > 2.0:
                        broker.stop()
                        stop_at = now
                    if stop_at is not None and restarted_at is None and now - stop_at > 1.5:
                        broker.start()
                        restarted_at = time.monotonic()
                    results.append((time.monotonic(), device.infer(samples[n % 8], partition=1,
                                                                   deadline_ms=deadline_ms)))
                    n += 1
                    time.sleep(0.01)
            finally:
                publisher.stop()
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert stop_at is not None and restarted_at is not None
    worst_ms = max(r.total_ms for _, r in results)
    assert all(r.probabilities is not None for _, r in results)  # every request has an answer
    # No request waited for the edge beyond its budget (what the device decided, not wall
    # time, which scheduling on a busy host stretches; the exact budgets are checked with a
    # manual clock in tests/device/test_runtime_logic.py).
    waits = [float(m.group(1)) for _, r in results if (m := re.search(r"within ([0-9.]+) ms", r.error or ""))]
    assert all(w <= deadline_ms for w in waits)
    during = [r for t, r in results if stop_at <= t < restarted_at]
    assert during and all(r.fell_back for r in during)
    back = [t for t, r in results if t >= restarted_at and r.offloaded and not r.fell_back]
    assert back, "requests never offloaded again after the restart"
    recovery_s = back[0] - restarted_at
    telemetry_after = [t for t in telemetry_seen if t >= restarted_at]
    assert telemetry_after, "telemetry did not resume after the restart"
    fell_back = sum(r.fell_back for _, r in results)
    print("FIGURES " + json.dumps({
        "fault": "broker outage 1.5 s mid-stream", "requests": len(results), "unanswered": 0,
        "fell_back": fell_back, "worst_total_ms": round(worst_ms, 1), "deadline_ms": deadline_ms,
        "offload_recovery_s": round(recovery_s, 2),
        "telemetry_recovery_s": round(telemetry_after[0] - restarted_at, 2),
    }))


class _Fleet:
    """``count`` simulated devices: one MQTT client each, sending pre-encoded requests."""

    def __init__(self, url: str, count: int) -> None:
        self.replies: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.last_reply = 0.0
        self._lock = threading.Lock()
        self.clients = []
        subscribed = threading.Semaphore(0)
        for i in range(count):
            device = f"sim-{i:03d}"
            client = make_client(url, device)
            client.on_message = self._on_reply
            client.on_subscribe = lambda *args: subscribed.release()
            connect_and_start(client)
            client.subscribe(TOPICS.reply(device), qos=0)
            self.clients.append((device, client))
        for _ in range(count):  # every SUBACK in before the burst, or replies would go nowhere
            assert subscribed.acquire(timeout=30)

    def _on_reply(self, client: Any, userdata: Any, message: Any) -> None:
        props = user_properties(message.properties)
        with self._lock:
            target = self.errors if "error" in props else self.replies
            rid = message.properties.CorrelationData.decode()
            target[rid] = target.get(rid, 0) + 1
            self.last_reply = time.monotonic()

    def burst(self, bundle: Bundle, per_device: int, *, expiry_s: int = 60) -> list[str]:
        manifest = bundle.manifest
        spec = manifest.segments[1].inputs[0]
        frame = encode_tensor(np.zeros(spec.shape, spec.dtype), spec, bundle_id=manifest.bundle_id, segment=1)
        sent = []
        for n in range(per_device):
            for device, client in self.clients:
                rid = f"{device}-{n}"
                header = RequestHeader(request_id=rid, exit=manifest.exits[-1].name)
                props = request_properties(header, response_topic=TOPICS.reply(device), expiry_s=expiry_s)
                client.publish(TOPICS.request(manifest.bundle_id), frame, qos=0, properties=props)
                sent.append(rid)
        return sent

    def close(self) -> None:
        for _, client in self.clients:
            client.disconnect()
            client.loop_stop()


def _drain(stream: Any) -> None:
    for _ in stream:
        pass
    stream.close()


def _start_edge(url: str, bundle: Bundle) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tflite_edge", "edge", "--broker", url, "--bundle", str(bundle.path), "--group", "g"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if "ready" in line:
            # Keep draining stderr so the child never blocks on a full pipe; close it at the end.
            threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError("the edge process did not become ready")


def test_burst_of_100_devices_against_one_edge(broker: MosquittoBroker, digits_bundle: Bundle) -> None:
    """2,000 requests from 100 devices at once: every one is answered, the edge's memory stays
    bounded (TCP back pressure leaves the queue in the broker, bounded by max_queued_messages)."""
    edge = _start_edge(broker.url, digits_bundle)
    fleet = None
    try:
        proc = psutil.Process(edge.pid)
        fleet = _Fleet(broker.url, 100)
        fleet.burst(digits_bundle, 1)  # warm-up round: interpreters allocated, buffers at working size
        _wait(lambda: len(fleet.replies) >= 100, 30)  # type: ignore[union-attr]
        baseline_mb = proc.memory_info().rss / 2**20
        peak = [baseline_mb]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        sent = fleet.burst(digits_bundle, 20)
        sent_s = time.monotonic() - start
        _wait(lambda: sum(1 for r in sent if r in fleet.replies or r in fleet.errors) == len(sent), 90)  # type: ignore[union-attr]
        drained_s = fleet.last_reply - start
        done.set()
        sampler.join()
        answered = sum(1 for r in sent if r in fleet.replies)
        errors = sum(1 for r in sent if r in fleet.errors)
        assert answered == len(sent) and errors == 0
        growth_mb = peak[0] - baseline_mb
        assert growth_mb < 64, f"edge RSS grew by {growth_mb:.1f} MiB during the burst"
        assert edge.poll() is None
        print("FIGURES " + json.dumps({
            "fault": "burst of 100 devices x 20 requests", "requests": len(sent), "answered": answered,
            "lost": len(sent) - answered - errors, "send_s": round(sent_s, 2), "drain_s": round(drained_s, 2),
            "throughput_rps": round(len(sent) / drained_s), "edge_rss_baseline_mib": round(baseline_mb, 1),
            "edge_rss_peak_mib": round(peak[0], 1), "edge_rss_growth_mib": round(growth_mb, 1),
        }))
    finally:
        if fleet is not None:
            fleet.close()
        edge.terminate()
        try:
            edge.wait(10)
        except subprocess.TimeoutExpired:
            edge.kill()
            edge.wait(5)
        _wait(lambda: edge.stderr is None or edge.stderr.closed, 5)


def _wait(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.05)


def test_overload_of_5000_requests_keeps_edge_memory_bounded(broker: MosquittoBroker, digits_bundle: Bundle) -> None:
    """5,000 requests (1 s expiry) from 100 devices at once. The edge reads one request at a
    time, so TCP back pressure leaves the backlog in the broker and the edge's memory stays
    flat; the broker's resident memory is measured as well."""
    edge = _start_edge(broker.url, digits_bundle)
    fleet = None
    mosquitto = [p for p in psutil.Process().children() if p.name().startswith("mosquitto")]
    try:
        proc = psutil.Process(edge.pid)
        fleet = _Fleet(broker.url, 100)
        fleet.burst(digits_bundle, 1)
        _wait(lambda: len(fleet.replies) >= 100, 30)  # type: ignore[union-attr]
        fleet.replies.clear()
        baseline_mb = proc.memory_info().rss / 2**20
        broker_mb = [p.memory_info().rss / 2**20 for p in mosquitto]
        peak, broker_peak = [baseline_mb], list(broker_mb)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
                for i, p in enumerate(mosquitto):
                    broker_peak[i] = max(broker_peak[i], p.memory_info().rss / 2**20)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        sent = fleet.burst(digits_bundle, 50, expiry_s=1)
        # Quiet for 2 s: everything still queued has expired or been answered by then.
        _wait(lambda: time.monotonic() - max(fleet.last_reply, start) > 2.0, 120)  # type: ignore[union-attr]
        done.set()
        sampler.join()
        answered = sum(1 for r in sent if r in fleet.replies)
        assert all(fleet.replies[r] == 1 for r in sent if r in fleet.replies)  # never answered twice
        assert answered > 0 and not fleet.errors
        assert peak[0] - baseline_mb < 64
        assert all(b - before < 256 for b, before in zip(broker_peak, broker_mb, strict=True))
        assert edge.poll() is None
        print("FIGURES " + json.dumps({
            "fault": "overload: 100 devices x 50 requests, 1 s expiry", "requests": len(sent), "answered": answered,
            "not_answered": len(sent) - answered, "last_answer_after_s": round(fleet.last_reply - start, 2),
            "edge_rss_growth_mib": round(peak[0] - baseline_mb, 1),
            "broker_rss_peak_mib": [round(b, 1) for b in broker_peak],
            "broker_rss_before_mib": [round(b, 1) for b in broker_mb],
        }))
    finally:
        if fleet is not None:
            fleet.close()
        edge.terminate()
        try:
            edge.wait(10)
        except subprocess.TimeoutExpired:
            edge.kill()
            edge.wait(5)
        _wait(lambda: edge.stderr is None or edge.stderr.closed, 5)


def test_experience_at_qos1_survives_a_broker_restart(tmp_path: Any) -> None:
    """Experience records (training data, QoS 1, queued while offline) recorded before, during
    and after a broker restart all reach a subscriber with a persistent session."""
    import os

    from tflite_edge.telemetry import EstimatedPowerSensor
    from tflite_edge.telemetry.publisher import TelemetryPublisher

    # Root Mosquitto drops to the mosquitto user, which cannot write pytest's private tmp_path.
    keep_user = "user root\n" if os.geteuid() == 0 else ""
    config = f"{keep_user}persistence true\npersistence_location {tmp_path}/\n"
    seen: set[str] = set()
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        with lock:
            seen.update(r["request_id"] for r in json.loads(message.payload)["records"])

    with MosquittoBroker(extra_config=config) as broker:
        collector = make_client(broker.url, "experience-collector", session_expiry_s=600,
                                min_reconnect_delay_s=1, max_reconnect_delay_s=2)
        collector.on_connect = lambda c, *a: c.subscribe(TOPICS.device("pi-7", "experience"), qos=1)
        collector.on_message = on_message
        connect_and_start(collector)
        publisher = TelemetryPublisher("pi-7", broker_url=broker.url, period_s=0.5, experience_interval_s=0.05,
                                       power_sensor=EstimatedPowerSensor()).start()
        recorded: list[str] = []
        stop_at = restart_at = 0.0
        try:
            start = time.monotonic()
            while time.monotonic() - start < 6.0:
                rid = f"r{len(recorded)}"
                publisher.record_experience(context={"uplink_mbps": 1.0}, action={"exit": "final", "partition": 1},
                                            reward=1.0, latency_ms=5.0, request_id=rid)
                recorded.append(rid)
                if not stop_at and time.monotonic() - start > 1.5:
                    broker.stop()
                    stop_at = time.monotonic()
                if stop_at and not restart_at and time.monotonic() - stop_at > 1.5:
                    broker.start()
                    restart_at = time.monotonic()
                time.sleep(0.02)
            _wait(lambda: set(recorded) <= seen, 15)  # queued records go out once reconnected
        finally:
            publisher.stop()
            collector.disconnect()
            collector.loop_stop()
    assert publisher.dropped_experience == 0
    print("FIGURES " + json.dumps({
        "fault": "broker restart, QoS 1 experience records", "records": len(recorded),
        "lost": len(set(recorded) - seen), "outage_s": round(restart_at - stop_at, 2),
    }))
