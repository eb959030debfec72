"""The co-inference request/reply protocol over MQTT 5, as pure logic (no sockets, no threads).

Topics (``prefix`` defaults to ``tflite-edge/v1`` and is configurable)::

    {prefix}/req/{bundle_id}                 device -> edge: an activation frame
    $share/{group}/{prefix}/req/{bundle_id}  what edge workers subscribe to, one per bundle served
                                             (load shared within a group; a request reaches only
                                             the groups that serve its bundle)
    {prefix}/dev/{device_id}/res             edge -> device: replies (the request's ResponseTopic)
    {prefix}/dev/{device_id}/telemetry|status|experience   used by the telemetry subsystem
    {prefix}/dev/{device_id}/budget          operator -> device: the power budget (retained)
    {prefix}/edge/{worker_id}                edge -> devices: a worker's retained presence (presence.py)
    {prefix}/edge/{worker_id}/load           edge -> devices: a worker's load (edge/load.py)

A request is a PUBLISH whose payload is one activation frame (``wire.py``) and whose MQTT 5
properties carry ``ResponseTopic``, ``CorrelationData`` (the request id, UTF-8),
``MessageExpiryInterval`` when the request has a deadline (so the broker drops requests
nobody could answer in time) and the user property ``exit``, plus ``thr`` and ``thr_kind``
when early-exit thresholds apply, and ``dl_us`` (the absolute time, in the edge's clock,
after which nobody waits for the answer) once the device knows the clock offset. A reply
carries the same ``CorrelationData`` and either the user properties ``edge_us`` and
``rx_us`` with the answering exit's output frame as payload (the frame's tensor name is
the exit), or ``error`` (a code) and ``message`` with an empty payload. An edge drops a
request whose ``dl_us`` has passed without computing or answering it.

The property set is deliberately small: every property costs time on both sides of every
request, even with ``transport.properties`` packing and parsing them instead of paho-mqtt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from paho.mqtt.properties import Properties

from ..errors import ErrorCode, ProtocolError, RemoteError, TopicError, UnknownBundleError
from .properties import PackedProperties

__all__ = [
    "DEFAULT_PREFIX",
    "DEVICE_CHANNELS",
    "DEVICE_CONNECTIONS",
    "device_login",
    "ErrorCode",
    "ThresholdKind",
    "Topics",
    "RequestHeader",
    "ReplyHeader",
    "validate_topic_level",
    "validate_device_id",
    "validate_prefix",
    "request_properties",
    "reply_properties",
    "user_properties",
    "remote_error",
    "request_id_of",
    "expiry_seconds",
    "pairs_to_dict",
    "now_us",
]

DEFAULT_PREFIX = "tflite-edge/v1"
DEVICE_CHANNELS = ("res", "telemetry", "status", "experience", "budget")
# A device's MQTT connections besides its request connection ("" names that one). Brokers set
# up by `broker-config` give each its own login, bound to a client id of the same name.
DEVICE_CONNECTIONS = ("", "telemetry", "policy", "context")
MAX_LEVEL_BYTES = 128
MAX_PROPERTY_BYTES = 1024  # user property values we accept; the rest of the reply is the frame
MAX_EXIT_NAMES = 64
MAX_REQUEST_ID_BYTES = 128
MAX_TIME_US = 2**62  # Unix microseconds: far beyond any real clock, well inside int64


def now_us() -> int:
    """This machine's wall clock in Unix microseconds (the unit of ``dl_us`` and ``rx_us``)."""
    return time.time_ns() // 1000


def _time_us(props: Mapping[str, str], key: str) -> int | None:
    """A non-negative integer microsecond property, None when absent; ``ProtocolError`` if malformed."""
    text = props.get(key)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError as e:
        raise ProtocolError(f"{key} {text!r} is not an integer") from e
    if not 0 <= value <= MAX_TIME_US:
        raise ProtocolError(f"{key} {value} is outside 0..{MAX_TIME_US}")
    return value


class ThresholdKind(StrEnum):
    """How an early-exit threshold is compared (``thr_kind``): top-1 probability at least the
    threshold, or entropy (nats) at most the threshold."""

    TOP1 = "top1"
    ENTROPY = "entropy"


def validate_topic_level(value: str, what: str) -> str:
    """``value`` if it can be one MQTT topic level: non-empty, no ``/ + #``, no NUL, no leading ``$``."""
    if not isinstance(value, str) or not value:
        raise TopicError(f"{what} must be a non-empty string")
    bad = sorted({c for c in value if c in "/+#\x00"})
    if bad:
        raise TopicError(f"{what} {value!r} must not contain {' '.join(repr(c) for c in bad)} (MQTT topic syntax)")
    if value.startswith("$"):
        raise TopicError(f"{what} {value!r} must not start with '$' (reserved for broker topics)")
    if value != value.strip() or any(ord(c) < 32 for c in value):
        raise TopicError(f"{what} {value!r} must not contain whitespace at its ends or control characters")
    if len(value.encode("utf-8")) > MAX_LEVEL_BYTES:
        raise TopicError(f"{what} is longer than {MAX_LEVEL_BYTES} bytes")
    return value


def validate_device_id(device_id: str) -> str:
    """A device id usable as a topic level (see ``validate_topic_level``)."""
    return validate_topic_level(device_id, "device id")


def device_login(user: str, connection: str = "") -> str:
    """Login name and client id of a device's ``connection`` (one of ``DEVICE_CONNECTIONS``):
    ``user`` for its requests, ``{user}-{connection}`` for the others."""
    if connection not in DEVICE_CONNECTIONS:
        raise TopicError(f"unknown device connection {connection!r}; one of {', '.join(map(repr, DEVICE_CONNECTIONS))}")
    return f"{user}-{connection}" if connection else user


def validate_prefix(prefix: str) -> str:
    """A topic prefix of one or more valid levels, without leading or trailing ``/``."""
    if not isinstance(prefix, str) or not prefix:
        raise TopicError("topic prefix must be a non-empty string such as 'tflite-edge/v1'")
    for level in prefix.split("/"):
        validate_topic_level(level, f"topic prefix level in {prefix!r}")
    return prefix


@dataclass(frozen=True)
class Topics:
    """Topic names for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    def request(self, bundle_id: str) -> str:
        return f"{self.prefix}/req/{validate_topic_level(bundle_id, 'bundle id')}"

    @property
    def request_filter(self) -> str:
        """All request topics (one level per bundle)."""
        return f"{self.prefix}/req/+"

    def shared_request_filter(self, group: str, bundle_id: str | None = None) -> str:
        """The MQTT 5 shared subscription edge workers of ``group`` use for ``bundle_id``
        (for every bundle when None: only for tools that watch all requests)."""
        topic = self.request(bundle_id) if bundle_id is not None else self.request_filter
        return f"$share/{validate_topic_level(group, 'group')}/{topic}"

    def device(self, device_id: str, channel: str) -> str:
        if channel not in DEVICE_CHANNELS:
            raise TopicError(f"unknown device channel {channel!r}; one of {', '.join(DEVICE_CHANNELS)}")
        return f"{self.prefix}/dev/{validate_device_id(device_id)}/{channel}"

    def reply(self, device_id: str) -> str:
        return self.device(device_id, "res")

    def edge_presence(self, worker_id: str) -> str:
        """Where an edge worker keeps its retained presence (cleared by its last will)."""
        return f"{self.prefix}/edge/{validate_topic_level(worker_id, 'worker id')}"

    @property
    def edge_presence_filter(self) -> str:
        return f"{self.prefix}/edge/+"

    def edge_load(self, worker_id: str) -> str:
        """Where an edge worker publishes its load."""
        return f"{self.edge_presence(worker_id)}/load"

    @property
    def edge_load_filter(self) -> str:
        return f"{self.prefix}/edge/+/load"

    def bundle_of(self, request_topic: str) -> str:
        """The bundle id a request topic names; ``ProtocolError`` for any other topic."""
        head = f"{self.prefix}/req/"
        if not request_topic.startswith(head):
            raise ProtocolError(f"{request_topic!r} is not a request topic under {self.prefix!r}")
        try:
            return validate_topic_level(request_topic[len(head):], "bundle id")
        except TopicError as e:
            raise ProtocolError(f"request topic {request_topic!r}: {e}") from e


def user_properties(properties: Properties | None) -> dict[str, str]:
    """User properties of a received message as a dict (bounded; first value of a key wins)."""
    pairs = getattr(properties, "UserProperty", None) or []
    found: dict[str, str] = {}
    for pair in pairs[:32]:
        if isinstance(pair, (tuple, list)) and len(pair) == 2:
            key, value = str(pair[0]), str(pair[1])
            if len(value) <= MAX_PROPERTY_BYTES:
                found.setdefault(key, value)
    return found


def _threshold_text(thresholds: Mapping[str, float]) -> str:
    return ";".join(f"{name}={value!r}" for name, value in thresholds.items())


def parse_threshold(item: str) -> tuple[str, float] | None:
    """``NAME=NUMBER`` to ``(name, number)``; None when malformed or not finite."""
    name, sep, value = item.partition("=")
    try:
        number = float(value)
    except ValueError:
        return None
    if not sep or not name or not math.isfinite(number):
        return None
    return name, number


def _parse_thresholds(text: str) -> dict[str, float]:
    result: dict[str, float] = {}
    if not text:
        return result
    items = text.split(";")
    if len(items) > MAX_EXIT_NAMES:
        raise ProtocolError(f"too many thresholds ({len(items)})")
    for item in items:
        parsed = parse_threshold(item)
        if parsed is None:
            raise ProtocolError(f"threshold {item!r} is not NAME=NUMBER")
        result[parsed[0]] = parsed[1]
    return result


def request_id_of(correlation: bytes | None) -> str:
    """The request id carried in ``CorrelationData``; ``ProtocolError`` when absent or not text."""
    if not correlation:
        raise ProtocolError("request lacks CorrelationData (the request id)")
    if len(correlation) > MAX_REQUEST_ID_BYTES:
        raise ProtocolError(f"CorrelationData is longer than {MAX_REQUEST_ID_BYTES} bytes")
    try:
        return bytes(correlation).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("CorrelationData is not UTF-8 text") from e


@dataclass(frozen=True)
class RequestHeader:
    """What a request says besides its frame and its reply address."""

    request_id: str
    exit: str
    thresholds: Mapping[str, float] = field(default_factory=dict)
    threshold_kind: ThresholdKind = ThresholdKind.TOP1
    deadline_us: int | None = None  # in the edge's clock (Unix µs); past it, nobody waits for the answer

    def to_pairs(self) -> list[tuple[str, str]]:
        pairs = [("exit", self.exit)]
        if self.thresholds:
            pairs.append(("thr", _threshold_text(self.thresholds)))
            pairs.append(("thr_kind", self.threshold_kind))
        if self.deadline_us is not None:
            pairs.append(("dl_us", str(self.deadline_us)))
        return pairs

    @classmethod
    def from_message(cls, props: Mapping[str, str], correlation: bytes | None) -> RequestHeader:
        """Parse a received request's user properties and correlation data."""
        request_id = request_id_of(correlation)
        if not props.get("exit"):
            raise ProtocolError("request lacks the user property 'exit'")
        try:
            kind = ThresholdKind(props.get("thr_kind", ThresholdKind.TOP1))
        except ValueError as e:
            raise ProtocolError(f"thr_kind {props['thr_kind']!r} is not 'top1' or 'entropy'") from e
        return cls(
            request_id=request_id,
            exit=props["exit"],
            thresholds=_parse_thresholds(props.get("thr", "")),
            threshold_kind=kind,
            deadline_us=_time_us(props, "dl_us"),
        )


@dataclass(frozen=True)
class ReplyHeader:
    """What a reply says besides its frame: success with the edge's compute time, or an error."""

    request_id: str
    ok: bool
    edge_us: int = 0
    code: str = ""
    message: str = ""
    rx_us: int | None = None  # the edge's clock (Unix µs) when it took the request: for the clock offset

    @classmethod
    def success(cls, request_id: str, edge_us: int, rx_us: int | None = None) -> ReplyHeader:
        return cls(request_id, True, edge_us=edge_us, rx_us=rx_us)

    @classmethod
    def failure(cls, request_id: str, code: str, message: str) -> ReplyHeader:
        return cls(request_id, False, code=code, message=message[:MAX_PROPERTY_BYTES])

    def to_pairs(self) -> list[tuple[str, str]]:
        if self.ok:
            pairs = [("edge_us", str(self.edge_us))]
            if self.rx_us is not None:
                pairs.append(("rx_us", str(self.rx_us)))
            return pairs
        return [("error", self.code), ("message", self.message)]

    @classmethod
    def from_message(cls, props: Mapping[str, str], correlation: bytes | None) -> ReplyHeader:
        """Parse a received reply's user properties and correlation data."""
        request_id = request_id_of(correlation)
        if "error" in props:
            return cls.failure(request_id, props["error"] or ErrorCode.INTERNAL, props.get("message", ""))
        try:
            edge_us = int(props["edge_us"])
        except KeyError as e:
            raise ProtocolError("reply has neither 'edge_us' nor 'error'") from e
        except ValueError as e:
            raise ProtocolError(f"edge_us {props['edge_us']!r} is not an integer") from e
        return cls.success(request_id, max(edge_us, 0), _time_us(props, "rx_us"))

    def raise_for_error(self) -> None:
        """Raise the matching ``RemoteError`` when this is an error reply."""
        if not self.ok:
            raise remote_error(self.code, self.message)


def remote_error(code: str, message: str) -> RemoteError:
    """The exception a device raises (or records) for an edge's error reply."""
    if code == ErrorCode.UNKNOWN_BUNDLE:
        return UnknownBundleError(f"edge error ({code}): {message}", code)
    return RemoteError(f"edge error ({code}): {message}", code)


def request_properties(header: RequestHeader, *, response_topic: str, expiry_s: int | None = None) -> Properties:
    """MQTT 5 PUBLISH properties of a request (the correlation data is the request id)."""
    return PackedProperties(
        response_topic=response_topic,
        correlation=header.request_id.encode("utf-8"),
        expiry_s=None if expiry_s is None else max(1, int(expiry_s)),
        user=header.to_pairs(),
    )


def reply_properties(header: ReplyHeader, *, correlation: bytes | None) -> Properties:
    """MQTT 5 PUBLISH properties of a reply, echoing the request's correlation data as is."""
    return PackedProperties(correlation=None if correlation is None else bytes(correlation), user=header.to_pairs())


def expiry_seconds(deadline_ms: float | None) -> int | None:
    """``MessageExpiryInterval`` for a deadline: whole seconds, rounded up, at least 1."""
    if deadline_ms is None:
        return None
    return max(1, math.ceil(deadline_ms / 1000.0))


def pairs_to_dict(pairs: Sequence[tuple[str, str]] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """User property pairs as a dict (first value wins), for tests and pure callers."""
    found: dict[str, str] = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found

