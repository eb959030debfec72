"""Home Assistant MQTT discovery through a real broker: the retained configs, their keys and
templates, and their removal when discovery is off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tflite_edge.telemetry import EstimatedPowerSensor, RequestObservation, TelemetryPublisher
from tflite_edge.telemetry.homeassistant import SENSORS, HomeAssistant, node_id

# The configuration variables Home Assistant documents for an MQTT sensor and for the
# device and origin blocks of a discovery payload
# (https://www.home-assistant.io/integrations/sensor.mqtt/ and
# https://www.home-assistant.io/integrations/mqtt/#discovery-messages).
SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "default_entity_id",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture",
    "expire_after", "force_update", "icon", "json_attributes_template", "json_attributes_topic",
    "last_reset_value_template", "name", "object_id", "options", "origin", "payload_available",
    "payload_not_available", "platform", "qos", "state_class", "state_topic", "suggested_display_precision",
    "unique_id", "unit_of_measurement", "value_template",
}
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id", "name",
    "serial_number", "suggested_area", "sw_version", "via_device",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
# Device classes used here and the units Home Assistant accepts for them.
DEVICE_CLASS_UNITS = {
    "duration": {"d", "h", "min", "s", "ms", "µs"},
    "data_rate": {"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "B/s", "kB/s", "MB/s", "GB/s", "KiB/s", "MiB/s", "GiB/s"},
    "power": {"mW", "W", "kW", "MW", "GW", "TW"},
    "temperature": {"°C", "°F", "K"},
}


def wait_for(collector, predicate, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    collector.wait_for(predicate, timeout_s)


def configs(collector, device_id: str) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """The latest payload per discovery topic of ``device_id`` that ``collector`` saw."""
    head = f"homeassistant/sensor/{node_id(device_id)}/"
    latest: dict[str, bytes] = {}
    for topic, payload, _ in list(collector.messages):
        if topic.startswith(head):
            latest[topic] = payload
    return latest


def retained_after_subscribing(broker, collector_factory, topic_filter: str) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    """The retained messages a new subscriber gets: every one arrives before a marker that is
    published once the subscription is active (the broker queues retained messages at
    subscription time, and delivers one client's messages in order)."""
    from tflite_edge.transport.mqtt import connect_and_start, make_client

    fresh = collector_factory(topic_filter)
    marker = make_client(broker.url, f"marker-{time.monotonic_ns()}")
    connect_and_start(marker)
    def arrived(c) -> bool:  # type: ignore[no-untyped-def]
        return any(t.endswith("/marker/config") for t, _, _ in c.messages)

    try:
        deadline = time.monotonic() + 15
        while True:  # until the subscription is active, the marker goes nowhere: publish again
            marker.publish("homeassistant/sensor/test/marker/config", b"marker", qos=1).wait_for_publish(5)
            try:
                fresh.wait_for(arrived, 0.5)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
    finally:
        marker.disconnect()
        marker.loop_stop()
    return [(t, p) for t, p, retained in fresh.messages if retained]


def render(template: str, message: dict) -> str:  # type: ignore[type-arg]
    """A value_template rendered as Home Assistant does, with ``value_json`` the telemetry message."""
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(value_json=message)


def check_config(config: dict, device_id: str, telemetry_topic: str, status_topic: str) -> None:  # type: ignore[type-arg]
    assert set(config) <= SENSOR_KEYS, set(config) - SENSOR_KEYS
    assert set(config["device"]) <= DEVICE_KEYS and set(config["origin"]) <= ORIGIN_KEYS
    assert config["state_topic"] == telemetry_topic and config["availability_topic"] == status_topic
    assert {config["payload_available"], config["payload_not_available"]} == {"online", "offline"}
    assert config["state_class"] in STATE_CLASSES and config["name"] and config["unique_id"]
    assert config["device"]["identifiers"] and config["device"]["name"] == device_id
    device_class = config.get("device_class")
    if device_class is not None:
        assert config["unit_of_measurement"] in DEVICE_CLASS_UNITS[device_class], config


def test_discovery_configs_point_at_the_telemetry_and_are_removed(broker, collector_factory) -> None:  # type: ignore[no-untyped-def]
    device_id = "ha.pi-1"  # a '.' is not allowed in a discovery topic level
    watch = collector_factory("homeassistant/#")
    telemetry = collector_factory(f"tflite-edge/v1/dev/{device_id}/#")
    publisher = TelemetryPublisher(device_id, broker_url=broker.url, period_s=0.2,
                                   power_sensor=EstimatedPowerSensor(), homeassistant=HomeAssistant(True))
    with publisher:
        wait_for(watch, lambda c: len(configs(c, device_id)) == len(SENSORS))
        for i in range(10):
            publisher.observe_result(RequestObservation("exit_1", 1, 5.0 + i, 2.0, 2.0, 1.0, rtt_ms=3.0,
                                                        bytes_sent=1000, deadline_ms=10.0, deadline_met=i < 8))
        wait_for(telemetry, lambda c: any(d.get("requests", {}).get("count") for d in c.docs("/telemetry")))
    status_topic, telemetry_topic = (f"tflite-edge/v1/dev/{device_id}/{ch}" for ch in ("status", "telemetry"))
    busy = next(d for d in telemetry.docs("/telemetry") if d["requests"]["count"])
    # As a device running a policy, on a board with a temperature sensor, would send it.
    busy = {**busy, "policy_version": 3, "system": {**busy["system"], "cpu_temperature_c": 51.5}}
    idle = {**busy, "latency": {k: None if k.startswith("total") else v for k, v in busy["latency"].items()},
            "requests": {**busy["requests"], "deadline_met": 0, "deadline_missed": 0}}
    status = telemetry.docs("/status")[0]
    retained = dict(retained_after_subscribing(broker, collector_factory, "homeassistant/#"))
    assert set(retained) == set(configs(watch, device_id))  # retained, for a Home Assistant that starts later
    for topic, payload in retained.items():
        assert topic.startswith("homeassistant/sensor/ha_pi-1/") and topic.endswith("/config")
        config = json.loads(payload)
        check_config(config, device_id, telemetry_topic, status_topic)
        assert render(config["availability_template"], status) == "online"
        value = render(config["value_template"], busy)
        float(value)  # every sensor has a number for a busy window
        # A figure the device did not measure renders as None, which Home Assistant shows as unknown.
        assert render(config["value_template"], idle) in {"None", value} or config["unique_id"].endswith("requests")
    by_id = {json.loads(p)["unique_id"].rsplit("_", 1)[-1]: json.loads(p) for p in retained.values()}
    requests = busy["requests"]
    hit_percent = 100 * requests["deadline_met"] / (requests["deadline_met"] + requests["deadline_missed"])
    assert float(render(by_id["hit"]["value_template"], busy)) == pytest.approx(hit_percent, abs=0.1)
    assert float(render(by_id["power"]["value_template"], busy)) == pytest.approx(busy["power"]["power_mw"] / 1000,
                                                                                   abs=1e-3)

    # Discovery off: every config is replaced by an empty retained payload, which removes it.
    with TelemetryPublisher(device_id, broker_url=broker.url, period_s=5.0, power_sensor=EstimatedPowerSensor(),
                            homeassistant=HomeAssistant(False)):
        wait_for(watch, lambda c: all(p == b"" for p in configs(c, device_id).values()))
    left = [t for t, _ in retained_after_subscribing(broker, collector_factory, "homeassistant/#")
            if t.startswith("homeassistant/sensor/ha_pi-1/")]
    assert left == []


@pytest.mark.slow
def test_device_command_announces_and_withdraws(broker, collector_factory, digits_bundle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((2, 8, 8, 1), np.float32))
    watch = collector_factory("homeassistant/#")

    def device(*extra: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "tflite_edge", "device", "--broker", broker.url, "--bundle",
             str(digits_bundle.path), "--id", "ha-cli", "--input", str(inputs), *extra],
            capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert done.returncode == 0, done.stderr[-2000:]

    device("--homeassistant")
    wait_for(watch, lambda c: len(configs(c, "ha-cli")) == len(SENSORS)
             and all(p for p in configs(c, "ha-cli").values()))
    device()  # without the flag: withdrawn
    wait_for(watch, lambda c: all(p == b"" for p in configs(c, "ha-cli").values()))
