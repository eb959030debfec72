"""TelemetryPublisher against a real Mosquitto on loopback."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tflite_edge.errors import TelemetryError
from tflite_edge.telemetry import EstimatedPowerSensor, RequestObservation, TelemetryPublisher, validate
from tflite_edge.telemetry.schema import decode, encode


def observations(n: int) -> list[RequestObservation]:
    out = []
    for i in range(n):
        offloaded = i % 2 == 1
        out.append(
            RequestObservation(
                exit="exit_2" if offloaded else "exit_0",
                partition=1,
                total_ms=20.0 + i,
                device_compute_ms=5.0,
                transfer_ms=4.0 if offloaded else 0.0,
                edge_compute_ms=2.0 if offloaded else 0.0,
                rtt_ms=10.0 if offloaded else None,
                bytes_sent=5_000 if offloaded else 0,  # 5 kB in 4 ms = 10 Mbit/s
                deadline_ms=25.0,
                deadline_met=20.0 + i <= 25.0,
                segment_ms={"0": 5.0},
            )
        )
    return out


def test_publishes_status_telemetry_and_experience(broker, collector_factory):
    sub = collector_factory()
    publisher = TelemetryPublisher(
        "dev-a", broker_url=broker.url, period_s=0.2, experience_interval_s=0.05, power_sensor=EstimatedPowerSensor()
    )
    with publisher:
        for obs in observations(10):
            publisher.observe_result(obs)
        publisher.record_experience(
            context={"uplink_mbps": 10.0, "power_mw": None}, action={"exit": "exit_0", "partition": 1},
            reward=1.0, latency_ms=20.0, deadline_ms=25.0, deadline_met=True,
        )
        sub.wait_for(lambda s: any(d["requests"]["count"] for d in s.docs("/telemetry")) and s.docs("/experience"))
        sub.wait_for(lambda s: publisher.broker_rtt_ms is not None)
    sub.wait_for(lambda s: any(d["state"] == "offline" for d in s.docs("/status")))
    for topic, payload, _ in sub.messages:
        message = decode(payload)
        assert topic == f"tflite-edge/v1/dev/dev-a/{topic.rsplit('/', 1)[1]}"
        assert message.device_id == "dev-a"
    states = [(d["state"], d["reason"]) for d in sub.docs("/status")]
    assert states[0] == ("online", None) and states[-1] == ("offline", "shutdown")
    busy = [d for d in sub.docs("/telemetry") if d["requests"]["count"]][0]
    assert busy["requests"] == {
        "count": 10, "deadline_met": 6, "deadline_missed": 4, "failed": 0,
        "exits": {"exit_0": 5, "exit_2": 5}, "partitions": {"1": 10},
    }
    assert busy["latency"]["total_p50_ms"] == pytest.approx(24.5)
    assert busy["latency"]["transfer_mean_ms"] == 4.0
    assert busy["link"]["uplink_mbps"] == pytest.approx(10.0)
    assert busy["link"]["rtt_ms"] == pytest.approx(10.0)
    assert busy["link"]["bytes_sent"] == 25_000
    assert busy["power"]["estimated"] is True and busy["power"]["source"] == "model:wifi"
    assert busy["power"]["energy_per_inference_mj"] > 0
    seqs = [d["seq"] for d in sub.docs("/telemetry")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    record = sub.docs("/experience")[0]["records"][0]
    assert record["action"] == {"exit": "exit_0", "partition": 1} and record["context"]["power_mw"] is None
    assert publisher.broker_rtt_ms < 1000
    context = publisher.context()
    assert context["uplink_mbps"] == pytest.approx(10.0) and context["rtt_ms"] == pytest.approx(10.0)
    assert context["loss_ratio"] == 0.0 and context["power_mw"] is not None


def test_late_subscriber_sees_the_retained_status(broker, collector_factory):
    with TelemetryPublisher("dev-b", broker_url=broker.url, period_s=10, power_sensor=EstimatedPowerSensor()):
        late = collector_factory("tflite-edge/v1/dev/dev-b/status")
        late.wait_for(lambda s: bool(s.messages))
        topic, payload, retained = late.messages[0]
        assert retained and decode(payload).state == "online"


def test_observing_never_waits_for_the_network():
    publisher = TelemetryPublisher(
        "dev-c", broker_url="mqtt://127.0.0.1:9", period_s=10, power_sensor=EstimatedPowerSensor(),
        max_pending_observations=1000,
    )
    # Never started, nobody listening on the port: observing is pure bookkeeping.
    batch = observations(10) * 500
    start = time.perf_counter()
    for obs in batch:
        publisher.observe_result(obs)
    per_call_us = (time.perf_counter() - start) / len(batch) * 1e6
    assert per_call_us < 500
    message = publisher.build_telemetry()
    assert message.requests.count == 1000  # the queue is bounded: the oldest were dropped
    validate(json.loads(encode(message)))


def test_an_invalid_experience_record_is_refused_at_once():
    from tflite_edge.errors import TelemetrySchemaError

    publisher = TelemetryPublisher("d", broker_url="mqtt://127.0.0.1:9", power_sensor=EstimatedPowerSensor())
    with pytest.raises(TelemetrySchemaError, match="reward"):
        publisher.record_experience(context={}, action={"exit": "e", "partition": 0}, reward=float("nan"),
                                    latency_ms=1.0)
    with pytest.raises(TelemetrySchemaError, match="partition"):
        publisher.record_experience(context={}, action={"exit": "e"}, reward=0.0, latency_ms=1.0)
    publisher.record_experience(context={"x": 1}, action={"exit": "e", "partition": 0}, reward=0.0, latency_ms=1.0)
    import numpy as np

    publisher.record_experience(context={"x": np.float32(0.5)}, action={"exit": "e", "partition": np.int64(2)},
                                reward=np.float64(1.0), latency_ms=1.0)
    assert len(publisher._experience) == 2 and type(publisher._experience[1].action["partition"]) is int


def test_configuration_errors():
    with pytest.raises(TelemetryError, match="exactly one"):
        TelemetryPublisher("d", power_sensor=EstimatedPowerSensor())
    with pytest.raises(TelemetryError, match="period_s"):
        TelemetryPublisher("d", broker_url="mqtt://127.0.0.1:1", period_s=0.0, power_sensor=EstimatedPowerSensor())
    from tflite_edge.errors import TopicError

    with pytest.raises(TopicError):
        TelemetryPublisher("a/b", broker_url="mqtt://127.0.0.1:1", power_sensor=EstimatedPowerSensor())


def test_online_again_after_a_broker_restart(broker, collector_factory):
    with TelemetryPublisher("dev-d", broker_url=broker.url, period_s=0.2, power_sensor=EstimatedPowerSensor()) as p:
        broker.restart()  # persistence is off: the retained status is gone with the old process
        sub = collector_factory("tflite-edge/v1/dev/dev-d/status")
        sub.wait_for(lambda s: any(decode(m[1]).state == "online" for m in s.messages), timeout_s=15)
        before = p.published["telemetry"]
        sub2 = collector_factory("tflite-edge/v1/dev/dev-d/telemetry")
        sub2.wait_for(lambda s: len(s.messages) >= 1)
        assert p.published["telemetry"] > before


DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tflite_edge.telemetry import EstimatedPowerSensor, TelemetryPublisher
    p = TelemetryPublisher("dev-will", broker_url=sys.argv[1], period_s=0.2, power_sensor=EstimatedPowerSensor())
    p.start()
    print("started", flush=True)
    time.sleep(60)
    """
)


def test_last_will_says_offline_when_the_device_process_dies(broker, collector_factory):
    sub = collector_factory("tflite-edge/v1/dev/dev-will/status")
    proc = subprocess.Popen([sys.executable, "-c", DEVICE_SCRIPT, broker.url], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        sub.wait_for(lambda s: any(decode(m[1]).state == "online" for m in s.messages))
        os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: the broker must publish the will
        proc.wait(timeout=10)
        sub.wait_for(lambda s: decode(s.messages[-1][1]).state == "offline")
        last = decode(sub.messages[-1][1])
        assert last.reason == "connection lost"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    late = collector_factory("tflite-edge/v1/dev/dev-will/status")
    late.wait_for(lambda s: bool(s.messages))
    assert late.messages[0][2] and decode(late.messages[0][1]).state == "offline"  # retained


def test_attach_chains_the_runtime_hook():
    class Runtime:
        on_result = None

    seen = []
    runtime = Runtime()
    runtime.on_result = seen.append
    publisher = TelemetryPublisher("dev-e", broker_url="mqtt://127.0.0.1:9", power_sensor=EstimatedPowerSensor())
    publisher.attach(runtime)
    runtime.on_result(observations(1)[0])
    assert len(seen) == 1 and publisher.build_telemetry().requests.count == 1
