"""Measured telemetry: power, link quality, latency and decisions, published over MQTT.

The device runtime hands each request's result to ``TelemetryPublisher.observe_result``;
the publisher summarises them per window together with the link estimate
(``link.LinkMonitor``), the power sensor (``power.discover_power_sensor``) and the system
load (``system.SystemMonitor``), and publishes messages that follow ``schema``.
"""

from .energy import RADIO_MODELS, ComputePowerModel, EstimatedPowerSensor, RadioPowerModel
from .link import LinkMonitor, LinkSnapshot, RttTracker, ThroughputEstimator, read_wifi_signal
from .power import HwmonPowerSensor, PowerReading, PowerSensor, RaplPowerSensor, discover_power_sensor
from .publisher import DEFAULT_PREFIX, QOS, TelemetryPublisher, status_will
from .schema import (
    EXPERIENCE_SCHEMA,
    STATUS_SCHEMA,
    TELEMETRY_SCHEMA,
    ExperienceBatch,
    StatusMessage,
    TelemetryMessage,
    decode,
    encode,
    validate,
)
from .system import SystemMonitor
from .window import RequestObservation, observation_from_result

__all__ = [
    "DEFAULT_PREFIX",
    "EXPERIENCE_SCHEMA",
    "QOS",
    "RADIO_MODELS",
    "STATUS_SCHEMA",
    "TELEMETRY_SCHEMA",
    "ComputePowerModel",
    "EstimatedPowerSensor",
    "ExperienceBatch",
    "HwmonPowerSensor",
    "LinkMonitor",
    "LinkSnapshot",
    "PowerReading",
    "PowerSensor",
    "RadioPowerModel",
    "RaplPowerSensor",
    "RequestObservation",
    "RttTracker",
    "StatusMessage",
    "SystemMonitor",
    "TelemetryMessage",
    "TelemetryPublisher",
    "ThroughputEstimator",
    "decode",
    "discover_power_sensor",
    "encode",
    "observation_from_result",
    "read_wifi_signal",
    "status_will",
    "validate",
]
