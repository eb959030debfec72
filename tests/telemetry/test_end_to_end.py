"""End to end: the standard mosquitto_sub client sees valid telemetry from a running device."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.support.waiting import read_until
from tflite_edge.telemetry import EstimatedPowerSensor, RequestObservation, TelemetryPublisher
from tflite_edge.telemetry.schema import decode

CHANNELS = ("status", "telemetry", "experience")

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto_sub is not installed")


class MosquittoSub:
    """``mosquitto_sub -v`` in a subprocess; every output line is ``TOPIC PAYLOAD``."""

    def __init__(self, port: int, device_id: str) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        # Not dev/{id}/#: that would include the binary replies on dev/{id}/res.
        topics = [arg for ch in CHANNELS for arg in ("-t", f"tflite-edge/v1/dev/{device_id}/{ch}")]
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1", "-v", *topics],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                # Kept undecoded-safe: a stray byte must fail the schema check, not this thread.
                self.lines.append(line.rstrip(b"\n").decode("utf-8", errors="replace"))
                self._cond.notify_all()

    def wait_for(self, text: str, timeout_s: float = 15.0, count: int = 1) -> None:
        """Block until ``count`` printed lines contain ``text``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while sum(text in line for line in self.lines) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else b""
                    raise AssertionError(f"mosquitto_sub never printed {text!r}: {self.lines[-5:]} {err}")
                self._cond.wait(min(remaining, 0.2))

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> list[tuple[str, dict]]:
        """Stop mosquitto_sub and return its messages, each checked against the schema."""
        self.terminate()
        messages = []
        for line in self.lines:
            topic, _, payload = line.partition(" ")
            messages.append((topic, payload))
        # Every line must be a valid message of the kind its topic names.
        checked = []
        for topic, payload in messages:
            message = decode(payload)
            assert topic.endswith("/" + message.schema.split("/")[1]), (topic, message.schema)
            checked.append((topic, json.loads(payload)))
        return checked


@pytest.fixture
def mosquitto_sub(broker):
    made: list[MosquittoSub] = []

    def start(device_id: str) -> MosquittoSub:
        made.append(MosquittoSub(broker.port, device_id))
        return made[-1]

    yield start
    for sub in made:
        sub.terminate()


def test_mosquitto_sub_sees_only_valid_messages(broker, mosquitto_sub):
    publisher = TelemetryPublisher(
        "sub-check", broker_url=broker.url, period_s=0.1, experience_interval_s=0.05,
        power_sensor=EstimatedPowerSensor(),
    )
    publisher.start()
    sub = mosquitto_sub("sub-check")
    try:
        sub.wait_for('"state":"online"')  # the retained status: mosquitto_sub is subscribed
        for i in range(20):
            publisher.observe_result(
                RequestObservation("exit_1", 2, 3.0 + i, 1.0, 1.5, 0.5, rtt_ms=2.0, bytes_sent=400, deadline_ms=10.0,
                                   deadline_met=3.0 + i <= 10.0)
            )
            publisher.record_experience(context={"i": i}, action={"exit": "exit_1", "partition": 2}, reward=-1.0,
                                        latency_ms=3.0 + i)
        sub.wait_for("/telemetry ", count=3)  # several windows (every 0.1 s)
    finally:
        publisher.stop()
    sub.wait_for('"state":"offline"')
    messages = sub.close()
    telemetry = [doc for topic, doc in messages if topic.endswith("/telemetry")]
    assert sum(doc["requests"]["count"] for doc in telemetry) == 20
    assert sum(len(doc["records"]) for topic, doc in messages if topic.endswith("/experience")) == 20
    assert len(telemetry) >= 3


@pytest.mark.slow
def test_running_device_publishes_valid_telemetry(broker, mosquitto_sub, digits_bundle, digits_split):
    from tflite_edge.device import DeviceRuntime, Plan
    from tflite_edge.edge.worker import EdgeWorker

    _, _, x_val, _ = digits_split
    publisher = TelemetryPublisher("pi-e2e", broker_url=broker.url, period_s=0.25, power_sensor=None)
    # Both standard mosquitto_sub and `tflite-edge telemetry --json` watch the device.
    watcher = subprocess.Popen(
        [sys.executable, "-m", "tflite_edge", "telemetry", "--broker", broker.url, "--device", "pi-e2e", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert watcher.stderr is not None and watcher.stderr.readline().startswith("listening on")
        with EdgeWorker(broker.url, [digits_bundle]) as _worker, publisher:
            sub = mosquitto_sub("pi-e2e")
            sub.wait_for('"state":"online"')

            def on_result(result) -> None:
                publisher.observe_result(result)
                publisher.record_experience(
                    context={"uplink_mbps": publisher.link.throughput.mbps},
                    action={"exit": result.exit, "partition": result.partition},
                    reward=1.0 if result.met_deadline else -1.0, latency_ms=result.total_ms,
                    deadline_ms=result.deadline_ms, deadline_met=result.met_deadline, request_id=result.request_id,
                )

            plans = [Plan(partition=k, deadline_ms=2000.0) for k in (1, None, 0)]
            with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="pi-e2e", on_result=on_result) as device:
                for i in range(30):
                    device.run(np.asarray(x_val[i : i + 1], np.float32), plans[i % 3])
        sub.wait_for('"state":"offline"')  # published last, when the publisher stops
        messages = sub.close()
        seen = read_until(watcher, lambda line: '"state":"offline"' in line.replace(" ", ""))
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
        out = seen + out
        assert watcher.returncode == 0, err
        seen_by_cli = [json.loads(line)["message"] for line in out.splitlines()]
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    telemetry = [doc for topic, doc in messages if topic.endswith("/telemetry")]
    assert [d for d in seen_by_cli if d["schema"] == "tflite-edge/telemetry/1"] == telemetry
    assert sum(doc["requests"]["count"] for doc in telemetry) == 30
    partitions: dict[str, int] = {}
    for doc in telemetry:
        for key, n in doc["requests"]["partitions"].items():
            partitions[key] = partitions.get(key, 0) + n
    assert partitions == {"0": 10, "1": 10, "3": 10}
    busy = [doc for doc in telemetry if doc["requests"]["count"]]
    assert all(doc["latency"]["total_p95_ms"] >= doc["latency"]["total_p50_ms"] > 0 for doc in busy)
    assert any(doc["link"]["uplink_mbps"] for doc in busy) and any(doc["link"]["rtt_ms"] for doc in busy)
    # No sensor on this machine is readable by the discovery, or one is: either way it is labelled.
    assert all(isinstance(doc["power"]["estimated"], bool) for doc in telemetry)
    records = [r for topic, doc in messages if topic.endswith("/experience") for r in doc["records"]]
    assert len(records) == 30
