"""The telemetry messages: one schema per topic, as frozen dataclasses plus a strict validator.

Three message kinds, told apart by their ``schema`` field (docs/telemetry.md shows a full
example of each):

* ``tflite-edge/telemetry/1`` on ``{prefix}/dev/{id}/telemetry``: one window's statistics.
* ``tflite-edge/status/1`` on ``{prefix}/dev/{id}/status``: retained online/offline.
* ``tflite-edge/experience/1`` on ``{prefix}/dev/{id}/experience``: (context, action,
  reward) records for online learning, batched.

``validate(doc)`` checks a decoded JSON document exactly: every documented field present,
no unknown field, the right JSON type (a boolean is not a number), numbers finite, counts
and durations non-negative. Units are in the field names (``_ms``, ``_mw``, ``_mj``...).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import TelemetrySchemaError
from .checks import (
    boolean,
    integer,
    list_of,
    map_of,
    nullable,
    number,
    obj,
    one_of,
    string,
)

__all__ = [
    "EXPERIENCE_SCHEMA",
    "MAX_MESSAGE_BYTES",
    "STATUS_SCHEMA",
    "TELEMETRY_SCHEMA",
    "ExperienceBatch",
    "ExperienceRecord",
    "LatencyStats",
    "LinkStats",
    "PowerStats",
    "RequestStats",
    "StatusMessage",
    "SystemStats",
    "TelemetryMessage",
    "check_record",
    "decode",
    "encode",
    "validate",
]

TELEMETRY_SCHEMA = "tflite-edge/telemetry/1"
STATUS_SCHEMA = "tflite-edge/status/1"
EXPERIENCE_SCHEMA = "tflite-edge/experience/1"
#: no telemetry message is larger; bigger payloads are refused before json parsing
MAX_MESSAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class RequestStats:
    """Requests finished in the window; ``exits``/``partitions`` count how often each was used.

    ``exits`` is keyed by exit index, ``partitions`` by the number of segments the device ran
    (equal to the segment count when nothing was offloaded), both as JSON object keys.
    """

    count: int
    deadline_met: int
    deadline_missed: int
    failed: int
    exits: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LatencyStats:
    """End-to-end latency percentiles and the mean of each part; None when no request finished."""

    total_p50_ms: float | None
    total_p95_ms: float | None
    total_max_ms: float | None
    device_compute_mean_ms: float | None
    transfer_mean_ms: float | None
    edge_compute_mean_ms: float | None
    device_segments_mean_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkStats:
    """``rtt_ms`` is the smoothed request->reply time to the edge; ``broker_rtt_ms`` the last
    publish->acknowledgement time to the broker, which keeps measuring while no request runs."""

    rtt_ms: float | None
    rtt_min_ms: float | None
    broker_rtt_ms: float | None
    uplink_mbps: float | None
    bytes_sent: int
    timeouts: int
    errors: int
    loss_ratio: float
    wifi_signal_dbm: float | None
    wifi_link_quality: float | None


@dataclass(frozen=True)
class PowerStats:
    """``estimated`` is True when the figures come from the energy model, not a sensor."""

    power_mw: float | None
    voltage_mv: float | None
    current_ma: float | None
    source: str
    estimated: bool
    energy_per_inference_mj: float | None


@dataclass(frozen=True)
class SystemStats:
    cpu_load_percent: float | None
    cpu_temperature_c: float | None
    memory_used_percent: float | None


@dataclass(frozen=True)
class TelemetryMessage:
    device_id: str
    seq: int
    time_unix_s: float
    window_s: float
    requests: RequestStats
    latency: LatencyStats
    link: LinkStats
    power: PowerStats
    system: SystemStats
    schema: str = TELEMETRY_SCHEMA
    #: the version of the learned policy deciding on the device (0: loaded from a local
    #: directory); None when no policy decides (fixed exit and partition)
    policy_version: int | None = None


@dataclass(frozen=True)
class StatusMessage:
    """``state`` is ``online`` or ``offline``; the last will says ``offline`` with reason ``connection lost``."""

    device_id: str
    state: str
    time_unix_s: float
    reason: str | None
    software: str
    schema: str = STATUS_SCHEMA


@dataclass(frozen=True)
class ExperienceRecord:
    """One decision and what came of it: the policy's input, its choice, and the reward."""

    time_unix_s: float
    context: dict[str, float | None]
    action: dict[str, int | float | str]
    reward: float
    latency_ms: float
    deadline_ms: float | None
    deadline_met: bool | None
    energy_mj: float | None
    request_id: str | None = None


@dataclass(frozen=True)
class ExperienceBatch:
    device_id: str
    seq: int
    time_unix_s: float
    records: list[ExperienceRecord]
    schema: str = EXPERIENCE_SCHEMA


# ---------------------------------------------------------------- the validator

def _action_value(value: Any, where: str) -> None:
    # exit names are strings, partitions integers; policies may add numbers (thresholds, hold steps).
    if isinstance(value, str):
        string(value, where)
    else:
        number()(value, where)


_MS = nullable(number(0))
_COMMON = {"device_id": string, "time_unix_s": number(0)}

_TELEMETRY = obj(
    {
        "schema": one_of(TELEMETRY_SCHEMA),
        **_COMMON,
        "seq": integer,
        "window_s": number(0),
        "policy_version": nullable(integer),
        "requests": obj(
            {
                "count": integer,
                "deadline_met": integer,
                "deadline_missed": integer,
                "failed": integer,
                "exits": map_of(integer),
                "partitions": map_of(integer),
            }
        ),
        "latency": obj(
            {
                "total_p50_ms": _MS,
                "total_p95_ms": _MS,
                "total_max_ms": _MS,
                "device_compute_mean_ms": _MS,
                "transfer_mean_ms": _MS,
                "edge_compute_mean_ms": _MS,
                "device_segments_mean_ms": map_of(number(0)),
            }
        ),
        "link": obj(
            {
                "rtt_ms": _MS,
                "rtt_min_ms": _MS,
                "broker_rtt_ms": _MS,
                "uplink_mbps": nullable(number(0)),
                "bytes_sent": integer,
                "timeouts": integer,
                "errors": integer,
                "loss_ratio": number(0, 1),
                "wifi_signal_dbm": nullable(number(-200, 100)),
                "wifi_link_quality": nullable(number(0)),
            }
        ),
        "power": obj(
            {
                "power_mw": nullable(number(0)),
                "voltage_mv": nullable(number()),
                "current_ma": nullable(number()),
                "source": string,
                "estimated": boolean,
                "energy_per_inference_mj": nullable(number(0)),
            }
        ),
        "system": obj(
            {
                "cpu_load_percent": nullable(number(0, 100)),
                "cpu_temperature_c": nullable(number(-100, 200)),
                "memory_used_percent": nullable(number(0, 100)),
            }
        ),
    }
)

_STATUS = obj(
    {
        "schema": one_of(STATUS_SCHEMA),
        **_COMMON,
        "state": one_of("online", "offline"),
        "reason": nullable(string),
        "software": string,
    }
)

_RECORD = obj(
    {
        "time_unix_s": number(0),
        "request_id": nullable(string),
        "context": map_of(nullable(number())),
        "action": map_of(_action_value),
        "reward": number(),
        "latency_ms": number(0),
        "deadline_ms": nullable(number(0)),
        "deadline_met": nullable(boolean),
        "energy_mj": nullable(number(0)),
    }
)

#: most records in one experience message (the publisher splits larger batches)
MAX_EXPERIENCE_RECORDS = 256

_EXPERIENCE = obj(
    {
        "schema": one_of(EXPERIENCE_SCHEMA),
        **_COMMON,
        "seq": integer,
        "records": list_of(_RECORD, MAX_EXPERIENCE_RECORDS),
    }
)

_VALIDATORS = {TELEMETRY_SCHEMA: _TELEMETRY, STATUS_SCHEMA: _STATUS, EXPERIENCE_SCHEMA: _EXPERIENCE}


def validate(doc: Any) -> str:
    """Check a decoded message strictly; return its schema name or raise ``TelemetrySchemaError``."""
    if not isinstance(doc, dict):
        raise TelemetrySchemaError(f"a message must be a JSON object, got {type(doc).__name__}")
    schema = doc.get("schema")
    if not isinstance(schema, str) or schema not in _VALIDATORS:  # a list or object is unhashable
        raise TelemetrySchemaError(f"schema: unknown {schema!r}; expected one of {sorted(_VALIDATORS)}")
    _VALIDATORS[schema](doc, "")
    # Cross-field facts a type check cannot see.
    if schema == TELEMETRY_SCHEMA:
        req = doc["requests"]
        if req["deadline_met"] + req["deadline_missed"] > req["count"]:
            raise TelemetrySchemaError("requests: deadline_met + deadline_missed exceeds count")
        for name in ("exits", "partitions"):
            if sum(req[name].values()) > req["count"]:
                raise TelemetrySchemaError(f"requests.{name}: counts add up to more than requests.count")
    elif schema == EXPERIENCE_SCHEMA:
        for i, record in enumerate(doc["records"]):
            action = record["action"]
            if "exit" not in action or "partition" not in action:
                raise TelemetrySchemaError(f"records[{i}].action: must name both 'exit' and 'partition'")
            if not isinstance(action["exit"], str):
                raise TelemetrySchemaError(f"records[{i}].action.exit: expected the exit's name, a string")
            partition = action["partition"]
            if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
                raise TelemetrySchemaError(f"records[{i}].action.partition: expected an integer >= 0")
    return str(schema)


def check_record(record: ExperienceRecord) -> None:
    """Validate one experience record on its own (the publisher does this when it is recorded)."""
    batch = {"schema": EXPERIENCE_SCHEMA, "device_id": "-", "seq": 0, "time_unix_s": 0.0,
             "records": [_rounded(dataclasses.asdict(record))]}
    validate(batch)


def _rounded(value: Any) -> Any:
    # Four decimals are below every sensor's resolution and keep the messages short.
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _to_dict(message: Any) -> dict[str, Any]:
    doc = dataclasses.asdict(message)
    # The schema name first, so a human reading a raw message knows what follows.
    return _rounded({"schema": doc.pop("schema"), **doc})


def encode(message: TelemetryMessage | StatusMessage | ExperienceBatch) -> bytes:
    """A message as compact UTF-8 JSON, validated first so that nothing invalid is ever published."""
    doc = _to_dict(message)
    validate(doc)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _build(cls: Any, doc: Mapping[str, Any]) -> Any:
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in doc.items():
        nested = {
            "requests": RequestStats,
            "latency": LatencyStats,
            "link": LinkStats,
            "power": PowerStats,
            "system": SystemStats,
        }.get(name)
        if nested is not None and cls is TelemetryMessage:
            value = _build(nested, value)
        elif name == "records" and cls is ExperienceBatch:
            value = [_build(ExperienceRecord, r) for r in value]
        if name in hints:
            kwargs[name] = value
    return cls(**kwargs)


def decode(payload: bytes | str) -> TelemetryMessage | StatusMessage | ExperienceBatch:
    """Parse and validate one message; the size is bounded before parsing."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise TelemetrySchemaError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as e:  # RecursionError: nested thousands of levels deep
        raise TelemetrySchemaError(f"not JSON: {e}") from e
    schema = validate(doc)
    cls = {TELEMETRY_SCHEMA: TelemetryMessage, STATUS_SCHEMA: StatusMessage, EXPERIENCE_SCHEMA: ExperienceBatch}[schema]
    return _build(cls, doc)  # type: ignore[no-any-return]
