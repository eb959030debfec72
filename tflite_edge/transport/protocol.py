"""The co-inference request/reply protocol over MQTT 5, as pure logic (no sockets, no threads).

Topics (``prefix`` defaults to ``tflite-edge/v1`` and is configurable)::

    {prefix}/req/{bundle_id}                 device -> edge: an activation frame
    $share/{group}/{prefix}/req/+            what edge workers subscribe to (load shared)
    {prefix}/dev/{device_id}/res             edge -> device: replies (the request's ResponseTopic)
    {prefix}/dev/{device_id}/telemetry|status|experience   used by the telemetry subsystem

A request is a PUBLISH whose payload is one activation frame (``wire.py``) and whose MQTT 5
properties carry ``ResponseTopic``, ``CorrelationData`` (the request id),
``MessageExpiryInterval`` (so the broker drops requests nobody could answer in time) and
user properties ``rid``, ``dev``, ``exit``, optionally ``deadline_ms``, ``thr`` and
``thr_kind``. A reply carries the same ``CorrelationData`` and user properties ``status``
(``ok`` or ``error``), ``rid``, and either ``exit`` + ``edge_us`` with the exit's output frame
as payload, or ``code`` + ``message`` with an empty payload.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..errors import ProtocolError, RemoteError, TopicError, UnknownBundleError

__all__ = [
    "DEFAULT_PREFIX",
    "DEVICE_CHANNELS",
    "CONTENT_TYPE",
    "ErrorCode",
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
    "expiry_seconds",
    "pairs_to_dict",
]

DEFAULT_PREFIX = "tflite-edge/v1"
DEVICE_CHANNELS = ("res", "telemetry", "status", "experience")
CONTENT_TYPE = "application/x-tflite-edge-activation"
MAX_LEVEL_BYTES = 128
MAX_PROPERTY_BYTES = 1024  # user property values we accept; the rest of the reply is the frame
MAX_EXIT_NAMES = 64


class ErrorCode:
    """Error codes an edge puts in ``code`` of an error reply."""

    UNKNOWN_BUNDLE = "unknown_bundle"
    BAD_REQUEST = "bad_request"
    EXPIRED = "expired"
    INTERNAL = "internal"
    # WireFormatError subclasses supply their own ``code`` (bad_frame, truncated, ...).


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

    def shared_request_filter(self, group: str) -> str:
        """The MQTT 5 shared subscription edge workers of ``group`` use."""
        return f"$share/{validate_topic_level(group, 'group')}/{self.request_filter}"

    def device(self, device_id: str, channel: str) -> str:
        if channel not in DEVICE_CHANNELS:
            raise TopicError(f"unknown device channel {channel!r}; one of {', '.join(DEVICE_CHANNELS)}")
        return f"{self.prefix}/dev/{validate_device_id(device_id)}/{channel}"

    def reply(self, device_id: str) -> str:
        return self.device(device_id, "res")

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


def _parse_thresholds(text: str) -> dict[str, float]:
    result: dict[str, float] = {}
    if not text:
        return result
    items = text.split(";")
    if len(items) > MAX_EXIT_NAMES:
        raise ProtocolError(f"too many thresholds ({len(items)})")
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number):
            raise ProtocolError(f"threshold {item!r} is not NAME=NUMBER")
        result[name] = number
    return result


@dataclass(frozen=True)
class RequestHeader:
    """What a request says besides its frame."""

    request_id: str
    device_id: str
    exit: str
    deadline_ms: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    threshold_kind: str = "top1"

    def to_pairs(self) -> list[tuple[str, str]]:
        pairs = [("rid", self.request_id), ("dev", self.device_id), ("exit", self.exit)]
        if self.deadline_ms is not None:
            pairs.append(("deadline_ms", f"{self.deadline_ms:.3f}"))
        if self.thresholds:
            pairs.append(("thr", _threshold_text(self.thresholds)))
            pairs.append(("thr_kind", self.threshold_kind))
        return pairs

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> RequestHeader:
        missing = [k for k in ("rid", "dev", "exit") if not props.get(k)]
        if missing:
            raise ProtocolError(f"request lacks user propert{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}")
        deadline: float | None = None
        if "deadline_ms" in props:
            try:
                deadline = float(props["deadline_ms"])
            except ValueError as e:
                raise ProtocolError(f"deadline_ms {props['deadline_ms']!r} is not a number") from e
            if not math.isfinite(deadline) or deadline < 0:
                raise ProtocolError(f"deadline_ms {deadline} must be a finite number >= 0")
        kind = props.get("thr_kind", "top1")
        if kind not in ("top1", "entropy"):
            raise ProtocolError(f"thr_kind {kind!r} is not 'top1' or 'entropy'")
        return cls(
            request_id=props["rid"],
            device_id=props["dev"],
            exit=props["exit"],
            deadline_ms=deadline,
            thresholds=_parse_thresholds(props.get("thr", "")),
            threshold_kind=kind,
        )


@dataclass(frozen=True)
class ReplyHeader:
    """What a reply says besides its frame: success with the exit used, or an error."""

    request_id: str
    ok: bool
    exit: str = ""
    edge_us: int = 0
    code: str = ""
    message: str = ""

    @classmethod
    def success(cls, request_id: str, exit_name: str, edge_us: int) -> ReplyHeader:
        return cls(request_id, True, exit=exit_name, edge_us=edge_us)

    @classmethod
    def failure(cls, request_id: str, code: str, message: str) -> ReplyHeader:
        return cls(request_id, False, code=code, message=message[:MAX_PROPERTY_BYTES])

    def to_pairs(self) -> list[tuple[str, str]]:
        if self.ok:
            return [("status", "ok"), ("rid", self.request_id), ("exit", self.exit), ("edge_us", str(self.edge_us))]
        return [("status", "error"), ("rid", self.request_id), ("code", self.code), ("message", self.message)]

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> ReplyHeader:
        status = props.get("status")
        rid = props.get("rid", "")
        if status == "ok":
            try:
                edge_us = int(props.get("edge_us", "0"))
            except ValueError as e:
                raise ProtocolError(f"edge_us {props.get('edge_us')!r} is not an integer") from e
            if not props.get("exit"):
                raise ProtocolError("ok reply lacks the user property 'exit'")
            return cls.success(rid, props["exit"], max(edge_us, 0))
        if status == "error":
            return cls.failure(rid, props.get("code", ErrorCode.INTERNAL), props.get("message", ""))
        raise ProtocolError(f"reply status {status!r} is not 'ok' or 'error'")

    def raise_for_error(self) -> None:
        """Raise the matching ``RemoteError`` when this is an error reply."""
        if not self.ok:
            raise remote_error(self.code, self.message)


def remote_error(code: str, message: str) -> RemoteError:
    """The exception a device raises (or records) for an edge's error reply."""
    if code == ErrorCode.UNKNOWN_BUNDLE:
        return UnknownBundleError(f"edge error ({code}): {message}", code)
    return RemoteError(f"edge error ({code}): {message}", code)


def request_properties(
    header: RequestHeader, *, response_topic: str, correlation: bytes, expiry_s: int | None = None
) -> Properties:
    """MQTT 5 PUBLISH properties of a request."""
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    props.ContentType = CONTENT_TYPE
    if expiry_s is not None:
        props.MessageExpiryInterval = max(1, int(expiry_s))
    props.UserProperty = header.to_pairs()
    return props


def reply_properties(header: ReplyHeader, *, correlation: bytes | None) -> Properties:
    """MQTT 5 PUBLISH properties of a reply, echoing the request's correlation data."""
    props = Properties(PacketTypes.PUBLISH)
    if correlation is not None:
        props.CorrelationData = correlation
    if header.ok:
        props.ContentType = CONTENT_TYPE
    props.UserProperty = header.to_pairs()
    return props


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

