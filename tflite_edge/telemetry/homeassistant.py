"""Home Assistant MQTT discovery: a device's telemetry as Home Assistant sensors, no YAML.

With discovery on, the device publishes one retained message per sensor on
``{discovery_prefix}/sensor/{node}/{object}/config`` (``discovery_prefix`` is Home
Assistant's, ``homeassistant`` by default; ``node`` is the device id reduced to the
characters Home Assistant accepts). Each payload points Home Assistant at the device's
telemetry topic with a ``value_template`` that picks one field of the JSON message, takes
availability from the retained status topic (``online``/``offline``, the last will
included), and carries a ``device`` block so every sensor of one device groups under it.
With discovery off, the device publishes an empty retained payload on the same topics,
which is how Home Assistant removes a discovered entity.

Pure: ``discovery_messages`` returns (topic, payload) pairs; the publisher sends them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["SENSORS", "HomeAssistant", "Sensor", "discovery_messages", "node_id"]

DEFAULT_DISCOVERY_PREFIX = "homeassistant"


@dataclass(frozen=True)
class HomeAssistant:
    """Whether the device announces itself to Home Assistant (``enabled``) or withdraws (not)."""

    enabled: bool
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX


@dataclass(frozen=True)
class Sensor:
    """One Home Assistant sensor: ``template`` reads it from the telemetry message (``value_json``)."""

    object_id: str
    name: str
    template: str
    unit: str | None = None
    device_class: str | None = None
    icon: str | None = None
    precision: int | None = None


def _field(path: str, scale: str = "") -> str:
    # A figure the device did not measure is JSON null: the sensor shows "unknown", not 0.
    value = f"value_json.{path}"
    return f"{{{{ ({value}{scale}) | round(3) if {value} is not none else none }}}}"


#: the sensors announced per device; power in W and latency in ms, as Home Assistant shows them
SENSORS: tuple[Sensor, ...] = (
    Sensor("latency_p50", "Latency p50", _field("latency.total_p50_ms"), "ms", "duration", precision=1),
    Sensor("latency_p95", "Latency p95", _field("latency.total_p95_ms"), "ms", "duration", precision=1),
    Sensor("requests", "Requests per window", "{{ value_json.requests.count }}", None, None, "mdi:counter"),
    Sensor(
        "deadline_hit", "Deadline hit rate",
        "{% set r = value_json.requests %}{% set n = r.deadline_met + r.deadline_missed %}"
        "{{ (100 * r.deadline_met / n) | round(1) if n else none }}",
        "%", None, "mdi:timer-check-outline", precision=1,
    ),
    Sensor("uplink", "Uplink throughput", _field("link.uplink_mbps"), "Mbit/s", "data_rate", precision=2),
    Sensor("rtt", "Edge round trip", _field("link.rtt_ms"), "ms", "duration", precision=1),
    Sensor("power", "Power", _field("power.power_mw", " / 1000"), "W", "power", precision=2),
    Sensor("energy_per_inference", "Energy per inference", _field("power.energy_per_inference_mj"), "mJ", None,
           "mdi:lightning-bolt", precision=1),
    Sensor("cpu_temperature", "CPU temperature", _field("system.cpu_temperature_c"), "°C", "temperature",
           precision=1),
    Sensor("policy_version", "Policy version", "{{ value_json.policy_version }}", None, None, "mdi:source-branch"),
)


def node_id(device_id: str) -> str:
    """The device id as a discovery topic level: Home Assistant allows only ``[a-zA-Z0-9_-]``."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", device_id)


def config_topic(discovery_prefix: str, device_id: str, sensor: Sensor) -> str:
    return f"{discovery_prefix}/sensor/{node_id(device_id)}/{sensor.object_id}/config"


def sensor_config(
    sensor: Sensor, *, device_id: str, telemetry_topic: str, status_topic: str, software: str, expire_after_s: int
) -> dict[str, object]:
    """The discovery payload of one sensor (keys from Home Assistant's MQTT sensor documentation)."""
    unique = f"tflite_edge_{node_id(device_id)}_{sensor.object_id}"
    config: dict[str, object] = {
        "name": sensor.name,
        "unique_id": unique,
        "state_topic": telemetry_topic,
        "value_template": sensor.template,
        "state_class": "measurement",
        # A device that stops publishing without its last will reaching anyone still goes unavailable.
        "expire_after": expire_after_s,
        "availability_topic": status_topic,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "device": {
            "identifiers": [f"tflite_edge_{node_id(device_id)}"],
            "name": device_id,
            "manufacturer": "tflite-edge",
            "model": "tflite-edge device",
            "sw_version": software,
        },
        "origin": {"name": "tflite-edge", "sw_version": software},
    }
    if sensor.unit is not None:
        config["unit_of_measurement"] = sensor.unit
    if sensor.device_class is not None:
        config["device_class"] = sensor.device_class
    if sensor.icon is not None:
        config["icon"] = sensor.icon
    if sensor.precision is not None:
        config["suggested_display_precision"] = sensor.precision
    return config


def discovery_messages(
    options: HomeAssistant, *, device_id: str, telemetry_topic: str, status_topic: str, software: str,
    period_s: float,
) -> list[tuple[str, bytes]]:
    """The retained (topic, payload) pairs to publish: configs when enabled, empty payloads when not."""
    expire_after_s = max(int(3 * period_s) + 1, 10)  # three missed windows
    messages = []
    for sensor in SENSORS:
        topic = config_topic(options.discovery_prefix, device_id, sensor)
        if not options.enabled:
            messages.append((topic, b""))
            continue
        config = sensor_config(sensor, device_id=device_id, telemetry_topic=telemetry_topic,
                               status_topic=status_topic, software=software, expire_after_s=expire_after_s)
        messages.append((topic, json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode()))
    return messages
